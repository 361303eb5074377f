"""A watchdog that stops the embedded broker and PostgreSQL when their owner dies unstopped.

SIGKILL or the OOM killer skip every exit handler. The service processes notice (their
stdin closes) and drain, but Tansu would run on, on a port nobody knows, and PostgreSQL would
keep the data directory's server up, counted as held by a process that no longer exists.
The watchdog is a small process in a session of its own (a terminal's Ctrl-C or hang-up does
not reach it) reading a pipe only its owner writes. An owner that stopped what it started
says ``done`` and closes the pipe; end of file without ``done`` means the owner died, and the
watchdog stops what it was told about, last told first (the services before the broker and
PostgreSQL they use). Processes are named by pid and start time, so a pid the system reused
meanwhile is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

_DONE = "done"


class Watchdog:
    """Started by the owner; ``close`` once the owner stopped everything itself."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "commerce_apps.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def stop_process(
        self, pid: int, sig: signal.Signals | None = signal.SIGINT, grace: float = 5.0
    ) -> None:
        """If the owner dies: send ``sig`` to ``pid`` (None: it stops on its own), and SIGKILL
        it if it still runs ``grace`` seconds later."""
        order = {"pid": pid, "started": _start_time(pid), "signal": sig, "grace": grace}
        self._send(order)

    def stop_postgres(self, data_dir: Path) -> None:
        """Stop the embedded PostgreSQL on ``data_dir`` if the owner dies and no one else
        holds it (``adapters_postgres.embedded.stop_abandoned``)."""
        self._send({"postgres": str(data_dir)})

    def close(self) -> None:
        """The owner stopped what it started: the watchdog exits and touches nothing."""
        if self._process.poll() is None:
            self._send(_DONE)
        pipe: IO[str] | None = self._process.stdin
        if pipe is not None and not pipe.closed:
            pipe.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _send(self, order: Any) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(order) + "\n")
        self._process.stdin.flush()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), telling reused pids apart;
    None once it exited (a zombie too: only its entry is left)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _running(pid: int, started: str | None) -> bool:
    """Whether the process registered as ``pid`` (started at ``started``) still runs."""
    if started is not None:
        return _start_time(pid) == started
    try:  # no /proc: the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pid: int, started: str | None, sig: int | None, grace: float) -> None:
    if not _running(pid, started):
        return  # gone, or the pid now names another process
    try:
        if sig is not None:
            os.kill(pid, signal.SIGCONT)  # a paused broker cannot handle SIGINT
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _running(pid, started) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(pid, started):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> None:
    """Read orders until ``done`` (exit) or end of file (the owner died: carry them out)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    orders = []
    for line in sys.stdin:
        order = json.loads(line)
        if order == _DONE:
            return
        orders.append(order)
    for order in reversed(orders):
        if "pid" in order:
            _stop(order["pid"], order["started"], order["signal"], order["grace"])
        else:
            from adapters_postgres.embedded import stop_abandoned

            stop_abandoned(order["postgres"])


if __name__ == "__main__":
    main()
