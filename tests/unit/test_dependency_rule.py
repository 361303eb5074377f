"""The dependency rule (DESIGN §1): core_saga imports only pydantic and the standard library;
an adapter imports neither the other adapter nor the apps."""

from __future__ import annotations

import ast
import sys

import pytest

from tests import ROOT

ALLOWED = {*sys.stdlib_module_names, "__future__", "pydantic", "core_saga"}
PACKAGES = ROOT / "packages"
CORE = PACKAGES / "core-saga" / "src" / "core_saga"
ADAPTERS = {"adapters_postgres": "adapters-postgres", "adapters_kafka": "adapters-kafka"}

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
        str(path.relative_to(CORE)): sorted(imported_roots(path.read_text()) - ALLOWED)
        for path in modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_an_adapter_imports_neither_the_other_adapter_nor_the_apps(adapter: str) -> None:
    forbidden = {*ADAPTERS, "commerce_apps"} - {adapter}
    source = PACKAGES / ADAPTERS[adapter] / "src" / adapter
    modules = sorted(source.rglob("*.py"))
    assert modules, f"no modules found under {source}"
    offenders = {
        str(path.relative_to(source)): sorted(imported_roots(path.read_text()) & forbidden)
        for path in modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_rule_catches_a_forbidden_import() -> None:
    roots = imported_roots("from sqlalchemy.ext import asyncio\nimport aiokafka\nimport json")
    assert roots == {"sqlalchemy", "aiokafka", "json"}
    assert roots - ALLOWED == {"sqlalchemy", "aiokafka"}
