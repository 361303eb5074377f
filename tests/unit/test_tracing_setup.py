"""How a service's tracing is set up and stopped: exporter, its timeouts, names, shutdown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from adapters_kafka.embedded import free_port
from commerce_apps import tracing
from commerce_apps.container import container_for
from commerce_apps.platform import PlatformError
from commerce_apps.settings import Settings
from commerce_apps.tracing import tracer_provider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests import ROOT

pytestmark = pytest.mark.unit

OTEL_VARIABLES = [name for name in os.environ if name.startswith("OTEL_")]
GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name)


@pytest.fixture
def silent_collector() -> Iterator[int]:
    """A port that accepts connections and never reads or answers a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


# A service whose database, broker and collector all refuse or never answer: spans made,
# the processor busy exporting the first, the second queued when the service is stopped.
STOPPING_SERVICE = textwrap.dedent(
    """
    import asyncio, sys, time
    from commerce_apps.app import build_app
    from commerce_apps.container import container_for
    from commerce_apps.settings import Settings

    async def main() -> None:
        dead = sys.argv[1]
        settings = Settings(
            database_url=f"postgresql://nobody@127.0.0.1:{dead}/none",
            kafka_bootstrap_servers=f"127.0.0.1:{dead}",
        )
        container = container_for("payment", settings)
        app = build_app(container)
        tracer = container.tracing().get_tracer("test")
        async with app.router.lifespan_context(app):
            with tracer.start_as_current_span("first"):
                pass
            await asyncio.sleep(0.5)
            with tracer.start_as_current_span("second"):
                pass
            print(time.time(), flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("collector", ["refusing", "silent"])
def test_a_service_stops_within_seconds_when_the_collector_is_down(
    collector: str, request: pytest.FixtureRequest
) -> None:
    port = free_port() if collector == "refusing" else request.getfixturevalue("silent_collector")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # the processor exports the first span at once
    child = subprocess.Popen(
        [sys.executable, "-c", STOPPING_SERVICE, str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        stopping = float(child.stdout.readline())
        child.wait(timeout=60)
        took = time.time() - stopping
    finally:
        child.kill()
        child.wait()
    # Measured: 14 s (refusing) and 20 s (silent) with the SDK's defaults; 3 to 5 s now.
    assert took < 10, f"the service took {took:.1f} s to stop"


async def test_shutdown_gives_up_at_its_deadline_however_long_the_export_timeout(
    monkeypatch: pytest.MonkeyPatch, silent_collector: int
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{silent_collector}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    provider = tracer_provider("order")
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span("one"):
        pass
    started = time.monotonic()
    assert not await tracing.shutdown(provider, seconds=1.0)
    assert time.monotonic() - started < 5


class Recording:
    """Stands for an OTLP exporter class: keeps the arguments it was made with."""

    made: list[dict[str, Any]]

    def __init__(self, **kwargs: Any) -> None:
        type(self).made.append(kwargs)

    def shutdown(self) -> None:
        pass


@pytest.fixture
def exporters(monkeypatch: pytest.MonkeyPatch) -> dict[str, type[Recording]]:
    """The HTTP exporter, and a gRPC exporter as if its package were installed."""
    http = type("Http", (Recording,), {"made": []})
    grpc = type("Grpc", (Recording,), {"made": []})
    monkeypatch.setattr(tracing, "OTLPSpanExporter", http)
    module = types.ModuleType(GRPC_EXPORTER)
    module.OTLPSpanExporter = grpc  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, GRPC_EXPORTER, module)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    return {"http": http, "grpc": grpc}


def test_the_export_timeout_is_a_few_seconds_unless_the_environment_sets_one(
    monkeypatch: pytest.MonkeyPatch, exporters: dict[str, type[Recording]]
) -> None:
    tracer_provider("order")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "20")
    tracer_provider("order")
    # the first bounded by us, the second left to the exporter, which reads the variable
    bounded, configured = exporters["http"].made
    assert 0 < bounded["timeout"] <= 5
    assert configured == {"timeout": None}


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_the_grpc_protocol_gets_the_grpc_exporter(
    variable: str, monkeypatch: pytest.MonkeyPatch, exporters: dict[str, type[Recording]]
) -> None:
    monkeypatch.setenv(variable, "grpc")
    tracer_provider("order")
    assert len(exporters["grpc"].made) == 1
    assert exporters["http"].made == []


def test_the_grpc_protocol_without_its_exporter_fails_in_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setitem(sys.modules, GRPC_EXPORTER, None)  # not installed
    with pytest.raises(PlatformError) as failure:
        tracer_provider("order")
    message = str(failure.value)
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in message
    assert "opentelemetry-exporter-otlp-proto-grpc" in message
    assert "\n" not in message


def test_an_unknown_protocol_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(PlatformError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json"):
        tracer_provider("order")


def service_of(service: str) -> str:
    provider = tracer_provider(service, InMemorySpanExporter())
    assert provider is not None
    return str(provider.resource.attributes["service.name"])


def test_a_service_is_traced_under_the_name_it_is_given_else_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``commerce run`` passes ``OTEL_SERVICE_NAME``; services sharing a process (``commerce
    up``) keep their own names whatever the environment says: it named all four alike."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-eu")
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:9/none")
    exporter = InMemorySpanExporter()
    named = container_for("order", settings, service_name="orders-eu", span_exporter=exporter)
    assert named.tracing().resource.attributes["service.name"] == "orders-eu"
    for service in ("order", "inventory", "payment", "notification"):
        assert service_of(service) == f"{service}-service"


def test_a_shared_test_exporter_outlives_the_provider_that_shut_down() -> None:
    exporter = InMemorySpanExporter()
    first = tracer_provider("order", exporter)
    second = tracer_provider("inventory", exporter)
    assert first is not None and second is not None
    first.shutdown()
    with second.get_tracer("test").start_as_current_span("after"):
        pass
    assert [span.name for span in exporter.get_finished_spans()] == ["after"]
