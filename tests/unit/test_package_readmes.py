"""The Python examples in core-saga's README run as written, and their asserts hold.

Each fenced ``python`` block runs on its own, in a fresh namespace; the test cases a block
defines (a Hypothesis state machine's ``TestCase``) are run too.
"""

from __future__ import annotations

import unittest
from pathlib import Path

import pytest

from tests.examples import package_readme, python_blocks

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
