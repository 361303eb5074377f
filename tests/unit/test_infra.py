"""The production stack in infra/ hangs together: compose, image, scrape config, dashboards.

No Docker engine is needed: the files are parsed and checked against each other and the README.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from commerce_apps import app, tracing
from commerce_apps.settings import DEFAULT_PORTS, SERVICES

from tests import ROOT

pytestmark = pytest.mark.unit

INFRA = ROOT / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
DASHBOARDS = INFRA / "grafana" / "dashboards"
STACK = (
    "kafka",
    "postgres",
    "migrate",
    "topics",
    "otel-collector",
    "tempo",
    "prometheus",
    "postgres-exporter",
    "grafana",
)
# Every panel family the issue asks the dashboard to show, by the metric it reads.
DASHBOARD_METRICS = {
    "http_server_request_duration_seconds_count",
    "http_server_request_duration_seconds_bucket",
    "orders_created_total",
    "orders_confirmed_total",
    "orders_cancelled_total",
    "saga_duration_seconds_bucket",
    "outbox_oldest_unpublished_age_seconds",
    "outbox_published_total",
    "consumer_lag",
    "dead_letters_total",
    "event_handler_duration_seconds_bucket",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
}

# --- PromQL: the metric names an expression selects (shared with tests/e2e/test_dashboards.py)

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier that is not a function call, not part of a number, label or $variable.
_IDENTIFIER = re.compile(r"(?<![\w:$.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:(])(?!\s*\()")
_NOT_METRICS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "sum", "min", "max", "avg", "count", "group",
    "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "limitk",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Series names selected by a PromQL expression (functions, labels, keywords left out)."""
    bare = _STRINGS.sub('""', expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _RANGES.sub(" ", bare)
    bare = _GROUPING.sub(" ", bare)
    return {name for name in _IDENTIFIER.findall(bare) if name.lower() not in _NOT_METRICS}


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included (rows themselves are headers, not panels)."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def dashboard_queries() -> dict[str, list[str]]:
    """``panel title → PromQL expressions`` over every provisioned dashboard."""
    queries: dict[str, list[str]] = {}
    for path in dashboard_files():
        for panel in dashboard_panels(json.loads(path.read_text())):
            exprs = [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
            queries[f"{path.name}: {panel.get('title')}"] = exprs
    return queries


def dashboard_metric_names() -> set[str]:
    exprs = [e for panel in dashboard_queries().values() for e in panel]
    return {name for e in exprs for name in promql_metric_names(e)}


# --- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def readme_ports() -> dict[str, int]:
    """``Ports: order 8081, payment 8082, ...`` from the README."""
    match = re.search(r"Ports: ([^\n]+)", (ROOT / "README.md").read_text())
    assert match, "README.md names no ports"
    return {name: int(port) for name, port in re.findall(r"(\w+) (\d+)", match.group(1))}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


# --- compose


def test_the_stack_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name in (*STACK, *SERVICES) if name not in services]
    assert not missing


@pytest.mark.parametrize("name", SERVICES)
def test_each_app_service_runs_its_service_with_a_readiness_healthcheck(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert service["command"] == ["run", name]
    assert service["build"]["dockerfile"] == "infra/Dockerfile"
    check = service["healthcheck"]
    assert not check.get("disable")
    assert "/health/ready" in " ".join(check["test"])


@pytest.mark.parametrize("name", SERVICES)
def test_each_app_service_has_time_to_drain_before_it_is_killed(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """Consumer and publisher stops (each bounded while the broker is down) and the last spans:
    Docker's default grace of 10 s killed a service mid-drain."""
    grace = services[name]["stop_grace_period"]
    assert grace.endswith("s"), grace
    assert float(grace[:-1]) > 2 * app.SHUTDOWN_SECONDS + tracing.SHUTDOWN_SECONDS


def test_the_readme_ports_are_the_defaults() -> None:
    assert readme_ports() == DEFAULT_PORTS


@pytest.mark.parametrize("name", SERVICES)
def test_each_app_service_publishes_its_readme_port(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    port = readme_ports()[name]
    assert f"{port}:{port}" in [str(p) for p in services[name]["ports"]]
    assert env_of(services[name])["PORT"] == str(port)


@pytest.mark.parametrize("name", SERVICES)
def test_each_app_service_uses_its_own_database_the_broker_and_the_collector(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = env_of(services[name])
    url = urlsplit(env["DATABASE_URL"])
    assert url.scheme == "postgresql"
    assert url.hostname == "postgres" and url.port == 5432
    assert url.path == f"/{name}"
    [host, port] = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert host == "kafka" and port == "9092"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["OTEL_SERVICE_NAME"].startswith(name)


@pytest.mark.parametrize("name", SERVICES)
def test_each_app_service_waits_for_migrations_topics_and_infrastructure(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends = services[name]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["topics"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["kafka"]["condition"] == "service_healthy"


def test_migrate_and_topics_are_one_shot_commands(services: dict[str, dict[str, Any]]) -> None:
    migrate, topics = services["migrate"], services["topics"]
    assert migrate["command"] == ["migrate"]
    assert urlsplit(env_of(migrate)["COMMERCE_DATABASE_URL"]).hostname == "postgres"
    assert topics["command"] == ["topics"]
    assert env_of(topics)["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    for one_shot in (migrate, topics):
        assert one_shot["restart"] == "no"


def test_kafka_runs_kraft_with_a_listener_for_the_compose_network(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = env_of(kafka)
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "healthcheck" in kafka


def test_postgres_creates_the_four_databases(services: dict[str, dict[str, Any]]) -> None:
    assert services["postgres"]["image"] == "postgres:17"
    [script] = [
        INFRA / mount.split(":")[0]
        for mount in services["postgres"]["volumes"]
        if "/docker-entrypoint-initdb.d/" in mount
    ]
    created = re.findall(r'CREATE DATABASE "(\w+)"', script.read_text(), flags=re.IGNORECASE)
    assert sorted(created) == sorted(SERVICES)


def test_kafka_and_postgres_keep_their_data_on_named_volumes_alike(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    """Kafka's log sat in its container's layer, PostgreSQL's data in an anonymous volume:
    recreating the broker alone lost events the outboxes had marked published."""
    declared = set(compose["volumes"])
    kafka_dir = services["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    assert f"kafka-data:{kafka_dir}" in services["kafka"]["volumes"]
    assert "pg-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert {"kafka-data", "pg-data"} <= declared


def test_every_long_running_container_comes_back_after_a_restart(
    services: dict[str, dict[str, Any]],
) -> None:
    """Only the services restarted: after the host's restart they found no database."""
    one_shot = {"migrate", "topics"}
    assert {name for name, s in services.items() if s.get("restart") != "unless-stopped"} == (
        one_shot
    )


def test_postgres_is_healthy_only_once_it_answers_over_tcp(
    services: dict[str, dict[str, Any]],
) -> None:
    """Its socket answers while the init scripts run on a server that listens on nothing
    else: ``migrate``, which connects once over TCP, could fail the first ``up``."""
    [test] = services["postgres"]["healthcheck"]["test"][1:]
    assert "-h 127.0.0.1" in test


def test_every_file_the_compose_mounts_or_builds_from_exists(
    services: dict[str, dict[str, Any]],
) -> None:
    missing: list[str] = []
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (INFRA / source).resolve().exists():
                missing.append(f"{name}: {source}")
        if "build" in service:
            context = (INFRA / service["build"]["context"]).resolve()
            if not (context / service["build"]["dockerfile"]).is_file():
                missing.append(f"{name}: build {service['build']}")
    assert not missing


# --- image


def test_the_dockerfile_copies_only_what_exists_and_runs_commerce() -> None:
    dockerfile = (INFRA / "Dockerfile").read_text().replace("\\\n", " ")  # join continuations
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, flags=re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    assert "uv sync --all-packages --frozen --no-dev" in dockerfile
    assert 'ENTRYPOINT ["uv", "run", "--no-sync", "commerce"]' in dockerfile
    assert 'CMD ["run", "order"]' in dockerfile
    assert re.search(r"^HEALTHCHECK .*commerce-healthcheck", dockerfile, flags=re.MULTILINE)
    assert "/health/live" in dockerfile


# --- observability


def test_prometheus_scrapes_each_service_on_its_port_with_a_service_label() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "commerce"]
    assert job["metrics_path"] == "/metrics"
    scraped = {sd["names"][0]: sd["port"] for sd in job["dns_sd_configs"]}
    assert scraped == DEFAULT_PORTS
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in job[
        "relabel_configs"
    ]


def test_traces_flow_from_the_collector_to_tempo() -> None:
    collector = yaml.safe_load((INFRA / "otel-collector" / "config.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    traces = collector["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    [exporter] = traces["exporters"]
    assert collector["exporters"][exporter]["endpoint"] == "tempo:4317"
    tempo = yaml.safe_load((INFRA / "tempo" / "tempo.yaml").read_text())
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]
    assert grpc["endpoint"].endswith(":4317")


def test_grafana_provisions_prometheus_tempo_and_the_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    provisioning = INFRA / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    by_type = {s["type"]: s for s in sources["datasources"]}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    assert by_type["tempo"]["url"] == "http://tempo:3200"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())
    [provider] = providers["providers"]
    mounted = {
        v.split(":")[1]: (INFRA / v.split(":")[0]).resolve() for v in services["grafana"]["volumes"]
    }
    assert mounted[provider["options"]["path"]] == DASHBOARDS.resolve()


def test_every_dashboard_parses_and_every_panel_has_a_target() -> None:
    assert dashboard_files()
    uids = {
        s["uid"]
        for s in yaml.safe_load(
            (INFRA / "grafana/provisioning/datasources/datasources.yaml").read_text()
        )["datasources"]
    }
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        panels = dashboard_panels(dashboard)
        assert panels, path.name
        for panel in panels:
            targets = panel.get("targets", [])
            assert targets, f"{path.name}: panel {panel.get('title')!r} has no target"
            assert all(t.get("expr") for t in targets), panel.get("title")
            assert panel["datasource"]["uid"] in uids, panel.get("title")


def test_the_dashboard_shows_every_metric_the_issue_asks_for() -> None:
    assert not DASHBOARD_METRICS - dashboard_metric_names()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.95, sum by (service, le) (rate(x_seconds_bucket{a=~"b|c"}'
            "[$__rate_interval])))",
            {"x_seconds_bucket"},
        ),
        ("sum(rate(a_total[5m])) / sum without (pod) (rate(b_total[5m]))", {"a_total", "b_total"}),
        ('max by (service) (up{job="commerce"}) offset 5m', {"up"}),
        ("sum by (group, topic) (max by (group, topic, partition) (lag))", {"lag"}),
        ("a_total + on(service) group_left b_info", {"a_total", "b_info"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names
