"""The watchdog: what a killed owner started is stopped, what a closing owner keeps is kept."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from adapters_postgres.embedded import EmbeddedPostgres

from tests.e2e.platform import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc"),
]

OWNER = """
import subprocess, sys, time
from commerce_apps.watchdog import Watchdog
watchdog = Watchdog()
sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
watchdog.stop_process(sleeper.pid)
print(sleeper.pid, flush=True)
if sys.argv[1] == "close":
    watchdog.close()
    print("closed", flush=True)
time.sleep(300)
"""

HOLDER = """
import sys, time
from adapters_postgres.embedded import EmbeddedPostgres
server = EmbeddedPostgres(sys.argv[1])
server.start()
print(server.pid, flush=True)
time.sleep(300)
"""

PLATFORM = """
import asyncio, json, sys
from pathlib import Path
from commerce_apps.console import run_async
from commerce_apps.platform import Platform, PlatformConfig
from typer import Exit

async def main():
    ports = json.loads(sys.argv[2])
    processes = sys.argv[3] == "processes"
    config = PlatformConfig(data_dir=Path(sys.argv[1]), ports=ports, processes=processes)
    platform = Platform(config)
    await platform.start()
    try:
        print(json.dumps({**platform.embedded_pids, **platform.pids}), flush=True)
        await asyncio.Event().wait()
    finally:
        await platform.stop()

try:
    run_async(main)  # as `commerce up`: signals stop it
except Exit as end:
    sys.exit(end.exit_code)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited child whose parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until_stopped(pids: Iterable[int], seconds: float) -> set[int]:
    """The pids still running after ``seconds`` (empty once all stopped)."""
    deadline = time.monotonic() + seconds
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {pid for pid in left if running(pid)}
        time.sleep(0.1)
    return left


@pytest.fixture
def owners() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for owner in started:
        owner.kill()
        owner.wait()


def owner(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )


def test_a_killed_owners_process_is_stopped(owners: list[subprocess.Popen[str]]) -> None:
    owners.append(process := owner(OWNER, "stay"))
    assert process.stdout is not None
    sleeper = int(process.stdout.readline())
    assert running(sleeper)
    process.kill()
    assert wait_until_stopped([sleeper], 10) == set()


def test_an_owner_that_closes_keeps_its_processes(owners: list[subprocess.Popen[str]]) -> None:
    owners.append(process := owner(OWNER, "close"))
    assert process.stdout is not None
    sleeper = int(process.stdout.readline())
    assert process.stdout.readline().strip() == "closed"
    process.kill()
    try:
        assert wait_until_stopped([sleeper], 1) == {sleeper}
    finally:
        os.kill(sleeper, signal.SIGKILL)


@pytest.mark.skipif(
    bool(os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")), reason="the broker is not embedded"
)
@pytest.mark.parametrize(
    ("sig", "status", "mode"),
    [(signal.SIGKILL, -signal.SIGKILL, "processes"), (signal.SIGHUP, 0, "single-process")],
    ids=["kill", "hup"],
)
def test_a_killed_or_hung_up_platform_leaves_nothing_running(
    owners: list[subprocess.Popen[str]], sig: signal.Signals, status: int, mode: str
) -> None:
    """`commerce up` killed outright (the watchdog stops what it started) or hung up on (it
    stops cleanly, exit 0): its services, the broker and PostgreSQL all stop, and the next
    start on the same data directory owns the server alone."""
    base = Path(tempfile.mkdtemp(prefix="commerce-test-watchdog-"))
    ports = {service: free_port() for service in ("order", "inventory", "payment", "notification")}
    try:
        owners.append(process := owner(PLATFORM, str(base), json.dumps(ports), mode))
        assert process.stdout is not None
        pids = json.loads(process.stdout.readline())
        assert {"broker", "postgres", "order", "notification"} <= pids.keys()
        pids = {name: pid for name, pid in pids.items() if pid != process.pid}
        assert all(running(pid) for pid in pids.values())
        process.send_signal(sig)
        assert process.wait(90) == status
        assert wait_until_stopped(pids.values(), 90) == set()

        assert_owned_alone_and_stopped(base / "postgres")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_server_whose_holder_was_killed_is_stopped_by_the_next_holder(
    owners: list[subprocess.Popen[str]],
) -> None:
    """Without a watchdog: the killed holder's handle is forgotten at the next start, so the
    next holder's stop stops the server instead of leaving it to a process long gone."""
    base = Path(tempfile.mkdtemp(prefix="commerce-test-holder-"))
    try:
        owners.append(process := owner(HOLDER, str(base / "data")))
        assert process.stdout is not None
        postmaster = int(process.stdout.readline())
        process.kill()
        process.wait()
        assert running(postmaster)
        assert_owned_alone_and_stopped(base / "data")
        assert wait_until_stopped([postmaster], 10) == set()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def assert_owned_alone_and_stopped(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        assert json.loads((data_dir / ".handle_pids.json").read_text()) == [os.getpid()]
    finally:
        server.stop()
    assert not (data_dir / "postmaster.pid").exists()
