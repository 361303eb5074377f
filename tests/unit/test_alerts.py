"""The alert rules: loaded by Prometheus, each one tested, each pointing at a runbook section.

Whether every metric they read is exported is checked against running services in
tests/e2e/test_dashboards.py; whether each fires when it should, by ``promtool test rules``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests import ROOT
from tests.unit.test_infra import COMPOSE_FILE, INFRA, promql_metric_names

pytestmark = pytest.mark.unit

PROMETHEUS = INFRA / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"page", "ticket"}
# Series that come from Prometheus itself and from postgres-exporter, not from the services.
NOT_FROM_SERVICES = re.compile(r"^(up|pg_.*)$")


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_metric_names() -> set[str]:
    """What the alerts read from the services (tests/e2e/test_dashboards.py checks them)."""
    names = set().union(*(promql_metric_names(rule["expr"]) for rule in alert_rules()))
    return {name for name in names if not NOT_FROM_SERVICES.match(name)}


def compose_services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text())["services"])


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens (a ``#`` line
    inside a code block is a comment, not a heading)."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", prose, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_prometheus_loads_the_rules_the_compose_mounts_beside_its_config() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    volumes = compose_services()["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    assert any(v.endswith(":/etc/prometheus/prometheus.yml:ro") for v in volumes)


def test_postgres_exporter_is_scraped_for_the_database_alerts() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "postgres"]
    [targets] = job["static_configs"]
    assert targets["targets"] == ["postgres-exporter:9187"]
    exporter = compose_services()["postgres-exporter"]
    assert "@postgres:5432/" in exporter["environment"]["DATA_SOURCE_NAME"]


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section_that_exists() -> None:
    anchors = heading_anchors(RUNBOOK.read_text())
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/runbook.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {path}"


def test_every_alert_is_exercised_by_the_promtool_tests() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    exercised = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]  # firing at least once, not only silent
    }
    assert {rule["alert"] for rule in alert_rules()} == exercised


def test_the_alerts_read_service_metrics() -> None:
    assert {"dead_letters_total", "outbox_oldest_unpublished_age_seconds"} <= alert_metric_names()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_alerts_fire_as_promtool_tests_expect() -> None:
    """Prometheus' own evaluator (Debian: apt install prometheus) on the rules and cases."""
    result = subprocess.run(
        ["promtool", "test", "rules", "alerts.test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
