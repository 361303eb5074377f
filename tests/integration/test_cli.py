"""The commerce CLI on real infrastructure: dead letters listed and replayed, one-line errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path

import pytest
from adapters_kafka import headers as h
from adapters_kafka.embedded import free_port
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from adapters_kafka.topics import ensure_topics
from adapters_postgres.engine import create_engine, with_database
from adapters_postgres.outbox import PostgresOutboxStore
from adapters_postgres.uow import order_uow_factory
from commerce_apps import bench as _bench  # noqa: F401  (registers the bench commands)

from tests.fixtures.cli import assert_one_line_error, commerce
from tests.fixtures.kafka import unique_name
from tests.fixtures.postgres import DatabaseFactory
from tests.integration.kafka.support import read_topic
from tests.integration.postgres.conftest import order_created

pytestmark = pytest.mark.integration


async def test_dead_letters_are_listed_with_their_reason_and_replayed(
    kafka_settings: KafkaSettings, kafka_publisher: KafkaPublisher
) -> None:
    topic = unique_name("cli-topic")
    await ensure_topics(kafka_settings, [topic], partitions=1)
    event_id = str(uuid.uuid4())
    original = {h.EVENT_ID: event_id, h.EVENT_TYPE: "OrderCreated"}
    reason = {
        h.DLT_ORIGINAL_TOPIC: topic,
        h.DLT_ORIGINAL_PARTITION: "0",
        h.DLT_ORIGINAL_OFFSET: "7",
        h.DLT_ERROR_TYPE: "core_saga.messages.InvalidEvent",
        h.DLT_ERROR_MESSAGE: "invalid OrderCreated: items: too short",
        h.DLT_ATTEMPTS: "3",
        h.DLT_CONSUMER_GROUP: "inventory-service",  # each group dead-letters its own copy
    }
    for key, extra in ((b"other", {h.EVENT_ID: "someone-else"}), (b"order-1", original)):
        await kafka_publisher.send(
            f"{topic}.DLT",
            b'{"poison": true}',
            key=key,
            headers=h.encode_headers({**extra, **reason}),
        )
    servers = kafka_settings.bootstrap_servers

    listed = await asyncio.to_thread(
        commerce, "dlt", "list", topic, KAFKA_BOOTSTRAP_SERVERS=servers, COLUMNS="300"
    )
    assert listed.exit_code == 0, listed.output
    assert "2 dead letter(s)" in listed.output
    assert event_id in listed.output
    assert "invalid OrderCreated: items: too short" in listed.output
    assert "inventory-service" in listed.output

    by_dlt_name = await asyncio.to_thread(
        commerce, "dlt", "list", f"{topic}.DLT", KAFKA_BOOTSTRAP_SERVERS=servers, COLUMNS="300"
    )
    assert by_dlt_name.exit_code == 0, by_dlt_name.output
    assert f"2 dead letter(s) on {topic}.DLT" in by_dlt_name.output
    assert event_id in by_dlt_name.output

    replayed = await asyncio.to_thread(
        commerce,
        "dlt",
        "replay",
        f"{topic}.DLT",  # the DLT's own name works as well as the topic's
        "--event-id",
        event_id,
        KAFKA_BOOTSTRAP_SERVERS=servers,
    )
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 record" in replayed.output
    (record,) = await read_topic(kafka_settings, topic, 1)
    assert (record.key, record.value) == (b"order-1", b'{"poison": true}')
    assert h.decode_headers(record.headers) == original  # the dead-letter headers are gone

    unknown = await asyncio.to_thread(
        commerce, "dlt", "replay", topic, "--event-id", "nope", KAFKA_BOOTSTRAP_SERVERS=servers
    )
    assert unknown.exit_code == 1
    assert "no dead letter with event id nope" in unknown.output


@pytest.mark.parametrize("command", ["list", "replay"])
def test_a_topic_without_a_dead_letter_topic_is_one_line_and_exit_1(
    kafka_bootstrap: str, command: str
) -> None:
    """A typo, the wrong broker or a platform never started: not "0 dead letters"."""
    topic = unique_name("no-such-topic")
    result = commerce("dlt", command, topic, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    assert_one_line_error(result, f"error: no topic {topic}.DLT on the broker at {kafka_bootstrap}")


async def test_outbox_resend_marks_what_was_published_for_the_relay_to_send_again(
    new_database: DatabaseFactory,
) -> None:
    url = await new_database.create("order")
    engine = create_engine(url)
    try:
        async with order_uow_factory(engine)() as uow:
            for envelope in (order_created(), order_created(), order_created()):
                await uow.outbox.add(envelope)
            await uow.commit()
        store = PostgresOutboxStore(engine)
        sent = await store.claim_batch(2)
        await store.mark_published([p.position for p in sent], datetime.now(UTC))

        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        none = await asyncio.to_thread(
            commerce, "outbox", "resend", "order", "--since", later, DATABASE_URL=url
        )
        assert none.exit_code == 0, none.output
        assert none.output.strip() == "order: 0 event(s) to send again"

        resent = await asyncio.to_thread(commerce, "outbox", "resend", "order", DATABASE_URL=url)
        assert resent.exit_code == 0, resent.output
        assert resent.output.strip() == "order: 2 event(s) to send again"
        assert len(await store.claim_batch(10)) == 3
    finally:
        await engine.dispose()


@pytest.mark.parametrize("command", [("migrate",), ("outbox", "resend")])
def test_commerce_database_url_in_dotenv_is_read_like_every_setting(
    command: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was ignored: "name a service (with DATABASE_URL) or set COMMERCE_DATABASE_URL"."""
    monkeypatch.setenv("COMMERCE_DATABASE_URL", "set, so that undoing removes it")
    monkeypatch.delenv("COMMERCE_DATABASE_URL")  # the command sets it from .env
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("COMMERCE_DATABASE_URL=postgresql://u:p@127.0.0.1:1/postgres\n")
    result = commerce(*command)
    assert result.exit_code == 1
    assert "unreachable" in result.output, result.output  # the server of .env was tried


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("order", "--since", "yesterday"), "error: --since is not an ISO 8601 time"),
        (("shipping",), "error: unknown service 'shipping'"),
        ((), "error: name a service (with DATABASE_URL) or set COMMERCE_DATABASE_URL"),
    ],
)
def test_bad_outbox_resend_input_is_one_line_and_exit_1(
    args: tuple[str, ...], message: str
) -> None:
    result = commerce("outbox", "resend", *args, DATABASE_URL="postgresql://u:p@127.0.0.1:1/x")
    assert result.exit_code == 1
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "env", "source"),
    [
        (("run", "payment"), {"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        (("migrate", "payment"), {"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        (("outbox", "resend", "order"), {"DATABASE_URL": "mysql://u:secret@h/db"}, "DATABASE_URL"),
        (("migrate", "order"), {"DATABASE_URL": "postgresql//user:s3cret@host/db"}, "DATABASE_URL"),
        (
            ("migrate",),
            {"COMMERCE_DATABASE_URL": "mysql://user:se/cret@h/db"},
            "COMMERCE_DATABASE_URL",
        ),
        (("migrate", "--database-url", "postgresql://user:p@ss@host:abc/db"), {}, "--database-url"),
        (("migrate",), {"COMMERCE_DATABASE_URL": "not a url"}, "COMMERCE_DATABASE_URL"),
        (("migrate", "--database-url", "not-a-url"), {}, "--database-url"),
        (("up", "--database-url", "not-a-url"), {}, "--database-url"),
        (("up",), {"COMMERCE_DATABASE_URL": "not-a-url"}, "COMMERCE_DATABASE_URL"),
        (("bench", "relay", "--database-url", "x", "--kafka", "127.0.0.1:1"), {}, "--database-url"),
    ],
)
def test_a_database_url_that_does_not_parse_is_one_line_and_exit_1(
    args: tuple[str, ...], env: dict[str, str], source: str, tmp_path: Path
) -> None:
    where = ("--data-dir", str(tmp_path)) if args[0] == "up" else ()  # nothing may start
    result = commerce(*args, *where, **env)
    assert_one_line_error(result, f"error: {source} is not a PostgreSQL URL: ")
    assert "cret" not in result.output  # a password is never echoed (secret, s3cret, se/cret)
    assert "p@ss" not in result.output
    assert result.output.rstrip().endswith("expected postgresql://user:password@host:port/database")


def test_a_url_of_another_database_names_its_scheme_only() -> None:
    result = commerce("migrate", "order", DATABASE_URL="mysql://user:se/cret@h/db")
    assert_one_line_error(
        result, "error: DATABASE_URL is not a PostgreSQL URL: the scheme is 'mysql'; expected "
    )


@pytest.mark.parametrize(
    "args", [("run", "payment"), ("migrate", "payment"), ("outbox", "resend", "payment")]
)
def test_a_missing_database_is_one_line_naming_the_service(
    postgres_admin_url: str, args: tuple[str, ...]
) -> None:
    url = with_database(postgres_admin_url, "nosuchdb")
    result = commerce(*args, DATABASE_URL=url, PORT="18998")
    assert_one_line_error(
        result, 'error: payment database unreachable: database "nosuchdb" does not exist'
    )


def four_free_ports() -> int:
    """A base port with the three after it free too, outside the range outgoing connections
    take (a port the kernel picked from it was taken by another test's connection in CI)."""
    while True:
        base = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + 4):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return base


def test_up_on_a_missing_database_is_one_line(postgres_admin_url: str, tmp_path: Path) -> None:
    """``commerce up --database-url`` names a server and the database it connects to first."""
    base = four_free_ports()
    url = with_database(postgres_admin_url, "nosuchdb")
    result = commerce(
        "up", "--database-url", url, "--base-port", str(base), "--data-dir", str(tmp_path)
    )
    assert_one_line_error(result, "error: database server ")
    assert " unreachable: " in result.output
    assert result.output.rstrip().endswith('database "nosuchdb" does not exist')


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("outbox", "resend"), "error: order database unreachable: "),
        (("migrate",), "error: database server postgresql://postgres:***@127.0.0.1:1/postgres"),
    ],
)
def test_a_database_server_down_is_one_line_naming_what_is_unreachable(
    args: tuple[str, ...], message: str
) -> None:
    server = "postgresql://postgres:secret@127.0.0.1:1/postgres"
    result = commerce(*args, COMMERCE_DATABASE_URL=server)
    assert_one_line_error(result, message)
    assert "secret" not in result.output


def test_an_unreachable_broker_is_one_line_and_exit_1() -> None:
    result = commerce("topics", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: broker unreachable at 127.0.0.1:1")
    assert "Traceback" not in result.output


def test_an_unreachable_database_is_one_line_and_exit_1() -> None:
    result = commerce("run", "order", DATABASE_URL="postgresql://u:p@127.0.0.1:1/x", PORT="18999")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: order database unreachable")


def test_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = commerce(
            "run",
            "order",
            DATABASE_URL="postgresql://u:p@127.0.0.1:1/x",
            PORT=str(port),
            HOST="127.0.0.1",
        )
    assert result.exit_code == 1
    assert result.output.strip() == f"error: port {port} on 127.0.0.1 is already in use"


def test_up_takes_its_ports_from_the_base_port(tmp_path: Path) -> None:
    """The inventory's port is the base + 2, as 8083 is to 8081: taken, it is named."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        inventory = taken.getsockname()[1]
        base = str(inventory - 2)
        result = commerce("up", "--base-port", base, "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: port {inventory} on 127.0.0.1 is already in use "
        "(--base-port moves the four APIs elsewhere)"
    )
    assert not (tmp_path / "postgres").exists()  # refused before starting anything


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PAYMENT_SUCCESS_RATE": "2"}, "error: bad setting PAYMENT_SUCCESS_RATE"),
        ({"SAGA_TIMEOUT": "soon"}, "error: bad setting SAGA_TIMEOUT"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_1(env: dict[str, str], message: str) -> None:
    result = commerce("up", **env)
    assert result.exit_code == 1
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1


def test_an_unknown_service_is_refused() -> None:
    result = commerce("run", "shipping")
    assert result.exit_code == 1
    assert "unknown service 'shipping'" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--stock", "100"), "error: --stock needs --embedded"),
        (("--rate", "0"), "error: --rate must be positive"),
        (("--embedded", "--kafka", "localhost:9092"), "error: --kafka is for a running platform"),
        (  # it was ignored: the run loaded the platform it started, not the one named
            ("--embedded", "--order-url", "http://127.0.0.1:1"),
            "error: --order-url is for a running platform",
        ),
        (
            ("--concurrency", "4", "--rate", "5", "--order-url", "http://127.0.0.1:1"),
            "error: --concurrency is for the closed loop",
        ),
        (("--rate", "5", "--order-url", "http://127.0.0.1:1"), "error: no order service answers"),
    ],
)
def test_bad_bench_options_are_one_line_and_exit_1(args: tuple[str, ...], message: str) -> None:
    result = commerce("bench", *args)
    assert result.exit_code == 1
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1


def test_the_bench_reads_the_broker_security_settings_the_services_read() -> None:
    result = commerce("bench", "--kafka", "localhost:9092", KAFKA_SECURITY_PROTOCOL="SMOKE")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: bad setting KAFKA_SECURITY_PROTOCOL")
    assert len(result.output.strip().splitlines()) == 1


@pytest.fixture
def order_service_stub() -> Iterator[str]:
    """An order service that only says it is alive: enough for the bench to go on."""

    class Alive(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Alive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_bench_names_an_unreachable_broker_in_one_line(order_service_stub: str) -> None:
    result = commerce(
        "bench", "--orders", "10", "--order-url", order_service_stub, "--kafka", "127.0.0.1:1",
        "--json", "--quiet",
    )  # fmt: skip
    assert_one_line_error(result, "error: broker unreachable at 127.0.0.1:1: ")


@pytest.mark.parametrize("command", [("dlt", "list"), ("dlt", "replay")])
def test_help_shows_no_rst_markup(command: tuple[str, ...]) -> None:
    result = commerce(*command, "--help", COLUMNS="200")
    assert result.exit_code == 0
    assert "``" not in result.output


def test_the_relay_bench_help_says_why_its_batch_differs_from_the_services() -> None:
    result = commerce("bench", "relay", "--help", COLUMNS="300")
    assert result.exit_code == 0
    assert "OUTBOX_BATCH_SIZE" in result.output


def test_a_server_named_by_a_variable_says_which_variable() -> None:
    """An ``export`` left from another command made ``up`` skip its embedded server, and its
    error did not say why that server was used."""
    url = "postgresql://u:secret@127.0.0.1:1/postgres"
    port = str(free_port())
    inherited = commerce("up", "--base-port", port, COMMERCE_DATABASE_URL=url)
    assert_one_line_error(inherited, "error: database server postgresql://u:***@127.0.0.1:1/")
    assert inherited.output.strip().endswith(
        "(COMMERCE_DATABASE_URL names it: unset it to start an embedded one)"
    )
    named = commerce("up", "--base-port", port, "--database-url", url)
    assert_one_line_error(named, "error: database server postgresql://u:***@127.0.0.1:1/")
    assert "names it" not in named.output


def test_commerce_version_is_the_installed_distributions() -> None:
    result = commerce("--version")
    assert (result.exit_code, result.output) == (0, f"commerce {version('commerce-apps')}\n")
