"""The Python examples in core-saga's README run as written, and their asserts hold; every
package's examples pass the project's ruff and mypy --strict.

Each fenced ``python`` block runs on its own, in a fresh namespace; the test cases a block
defines (a Hypothesis state machine's ``TestCase``) are run too.
"""

from __future__ import annotations

import subprocess
import sys
import unittest
from pathlib import Path

import pytest

from tests.examples import ROOT, package_readme, python_blocks

pytestmark = pytest.mark.unit

READMES = [package_readme("core-saga")]  # the adapters' need servers: tests/integration

EXAMPLES = [
    pytest.param(readme, number, code, id=f"{readme.parent.name}-{number}")
    for readme in READMES
    for number, code in enumerate(python_blocks(readme), start=1)
]


def test_every_readme_has_examples() -> None:
    assert all(python_blocks(readme) for readme in READMES)


@pytest.mark.parametrize(("readme", "number", "code"), EXAMPLES)
def test_the_example_runs(readme: Path, number: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"{readme.parent.name}_example_{number}"}
    exec(compile(code, f"{readme}:example {number}", "exec"), namespace)
    for value in list(namespace.values()):
        if isinstance(value, type) and issubclass(value, unittest.TestCase):
            result = unittest.TextTestRunner(verbosity=0).run(
                unittest.defaultTestLoader.loadTestsFromTestCase(value)
            )
            assert result.wasSuccessful(), f"{value.__name__}: {result.failures + result.errors}"


def test_every_package_example_is_lint_clean_and_strictly_typed(tmp_path: Path) -> None:
    """The three packages' examples, as a reader copies them: ruff and mypy --strict pass."""
    for package in ("core-saga", "adapters-postgres", "adapters-kafka"):
        for number, code in enumerate(python_blocks(package_readme(package)), start=1):
            (tmp_path / f"{package.replace('-', '_')}_{number}.py").write_text(code)
    config = str(ROOT / "pyproject.toml")
    checks = [
        [sys.executable, "-m", "ruff", "check", "--config", config, str(tmp_path)],
        [sys.executable, "-m", "ruff", "format", "--check", "--config", config, str(tmp_path)],
        [sys.executable, "-m", "mypy", "--config-file", config, "--no-incremental", str(tmp_path)],
    ]
    for command in checks:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(command[2:4])}:\n{done.stdout}{done.stderr}"
