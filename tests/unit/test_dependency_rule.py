"""core_saga imports no I/O library and no adapter (DESIGN §1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = {
    "sqlalchemy",
    "asyncpg",
    "aiokafka",
    "starlette",
    "dependency_injector",
    "opentelemetry",
    "prometheus_client",
    "uvicorn",
    "adapters_postgres",
    "adapters_kafka",
    "commerce_apps",
}
CORE = Path(__file__).resolve().parents[2] / "packages" / "core-saga" / "src" / "core_saga"

pytestmark = pytest.mark.unit


def imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_saga_imports_no_io_library_or_adapter() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert modules, f"no modules found under {CORE}"
    offenders = {
        str(path.relative_to(CORE)): sorted(imported_roots(path.read_text()) & FORBIDDEN)
        for path in modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_rule_catches_a_forbidden_import() -> None:
    assert imported_roots("from sqlalchemy.ext import asyncio\nimport aiokafka") == {
        "sqlalchemy",
        "aiokafka",
    }
