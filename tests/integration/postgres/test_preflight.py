"""``commerce run``'s preflight: one line when the database is unreachable or not migrated;
``commerce up``'s: one line naming what failed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from adapters_kafka.embedded import free_port
from adapters_postgres.embedded import EmbeddedPostgres, running_on, stop_abandoned
from adapters_postgres.engine import create_engine, plain_url
from commerce_apps.platform import Platform, PlatformConfig, PlatformError
from commerce_apps.service import preflight
from commerce_apps.settings import SERVICES, Settings
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration


async def test_a_migrated_database_passes(new_database: DatabaseFactory) -> None:
    await preflight("order", Settings(database_url=await new_database.create("order")))


async def test_an_empty_database_is_not_migrated(new_database: DatabaseFactory) -> None:
    settings = Settings(database_url=await new_database.create())
    not_migrated = r"^order database is not migrated: run 'commerce migrate order'"
    with pytest.raises(PlatformError, match=not_migrated):
        await preflight("order", settings)


async def test_an_unreachable_server_is_one_line() -> None:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:9/nowhere")
    with pytest.raises(PlatformError, match=r"^order database unreachable: ") as failure:
        await preflight("order", settings, seconds=5)
    assert "\n" not in str(failure.value)


async def test_a_server_that_refuses_to_create_the_databases_says_so(
    postgres_admin_url: str, tmp_path: Path
) -> None:
    """``commerce up --database-url`` with a role that may log in but not create databases:
    the server answered, so not "unreachable" (as it said for any failure before)."""
    role = f"no_createdb_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_admin_url, poolclass=NullPool)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw' NOCREATEDB"))
        url = make_url(postgres_admin_url).set(username=role, password="pw")
        config = PlatformConfig(
            database_url=url.render_as_string(hide_password=False),
            database_prefix=f"{role}_",
            data_dir=tmp_path,
            ports={service: free_port() for service in SERVICES},  # checked before the database
        )
        refused = r"^creating the databases on .+ failed: permission denied to create database$"
        with pytest.raises(PlatformError, match=refused):
            await Platform(config).start()
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        await admin.dispose()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's base temp directory, which it keeps at 0700 (pgserver runs the
    server as another user, see ``adapters_postgres.embedded``)."""
    directory = Path(tempfile.mkdtemp(prefix="commerce-test-up-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def embedded_config(data_dir: Path, *, reset: bool) -> PlatformConfig:
    return PlatformConfig(
        data_dir=data_dir,
        reset=reset,
        kafka_bootstrap_servers="127.0.0.1:1",  # never reached: the database fails first
        ports={service: free_port() for service in SERVICES},
    )


async def test_reset_refuses_to_delete_the_data_of_a_running_server(data_dir: Path) -> None:
    """``commerce up --reset`` beside a platform still running on that directory deleted
    its data under it (and failed with a traceback from initdb)."""
    async with EmbeddedPostgres(data_dir / "postgres") as running:
        refused = r"^--reset would delete .+, but PostgreSQL \(pid \d+\) still runs on it: "
        with pytest.raises(PlatformError, match=refused):
            await Platform(embedded_config(data_dir, reset=True)).start()
        assert (data_dir / "postgres" / "PG_VERSION").exists()
        conn = await asyncpg.connect(plain_url(running.admin_url))
        try:
            assert await conn.fetchval("SELECT 1") == 1  # still serving
        finally:
            await conn.close()


HOLDER = """
import sys, time
from adapters_postgres.embedded import EmbeddedPostgres
EmbeddedPostgres(sys.argv[1]).start()
print("up", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def held_elsewhere(directory: Path) -> Iterator[subprocess.Popen[str]]:
    """The server on ``directory`` started and held by another process, as another
    ``commerce up`` holds it; stopped after, whatever became of that process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "up\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        stop_abandoned(directory)


async def test_a_second_platform_on_a_running_data_dir_is_refused(data_dir: Path) -> None:
    """It joined the first one's PostgreSQL beside an empty broker of its own, which nothing
    published to (its relays stood by for the first platform's)."""
    with held_elsewhere(data_dir / "postgres") as holder:
        refused = rf"^another platform \(pid {holder.pid}\) runs on .+: stop it first, "
        with pytest.raises(PlatformError, match=refused):
            await Platform(embedded_config(data_dir, reset=False)).start()


async def test_a_server_its_killed_platform_left_is_taken_over(data_dir: Path) -> None:
    """A platform killed outright leaves its server running with no living holder: the next
    ``commerce up`` goes on with it (here to the broker, which this config never reaches)."""
    with held_elsewhere(data_dir / "postgres") as holder:
        holder.kill()
        holder.wait()
        assert running_on(data_dir / "postgres") is not None
        with pytest.raises(PlatformError, match=r"^broker unreachable at 127\.0\.0\.1:1: "):
            await Platform(embedded_config(data_dir, reset=False)).start()


async def test_a_data_dir_that_holds_no_cluster_is_one_line(data_dir: Path) -> None:
    (data_dir / "postgres").mkdir()
    (data_dir / "postgres" / "notes.txt").write_text("not a database")
    failed = r"^embedded PostgreSQL did not start on .+; .+ --reset to delete it$"
    with pytest.raises(PlatformError, match=failed) as failure:
        await Platform(embedded_config(data_dir, reset=False)).start()
    assert "\n" not in str(failure.value)
    assert (data_dir / "postgres" / "notes.txt").exists()  # nothing deleted without --reset


def test_a_pid_file_naming_another_program_is_no_running_server(data_dir: Path) -> None:
    """After a crash the pid in ``postmaster.pid`` may belong to another program by now:
    ``--reset`` refused for ever, and ``stop_abandoned`` would have interrupted it."""
    (data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n{data_dir}\n")  # this pytest
    assert running_on(data_dir) is None
    assert not stop_abandoned(data_dir)
