"""The examples in the adapters' READMEs run as written against the test's PostgreSQL and broker.

Each runs in a process of its own, as a reader would run it, with ``DATABASE_URL`` a fresh
empty database and ``KAFKA_BOOTSTRAP_SERVERS`` the test broker (in a namespace of its own).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import pytest

from tests.examples import ROOT, package_readme, python_blocks
from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration

EXAMPLES = [
    pytest.param(package, number, code, id=f"{package}-{number}")
    for package in ("adapters-postgres", "adapters-kafka")
    for number, code in enumerate(python_blocks(package_readme(package)), start=1)
]


def test_each_adapter_readme_has_an_example() -> None:
    assert {param.values[0] for param in EXAMPLES} == {"adapters-postgres", "adapters-kafka"}


@pytest.mark.parametrize(("package", "number", "code"), EXAMPLES)
async def test_the_example_runs(
    package: str, number: int, code: str, new_database: DatabaseFactory, kafka_bootstrap: str
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": await new_database.create(),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_NAMESPACE": f"readme-{uuid.uuid4().hex[:8]}.",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"{package} example {number}:\n{stderr.decode()[-3000:]}"
