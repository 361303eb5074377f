"""Shared test set-up: the contract vectors, and the real-infrastructure fixtures as plugins."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests import ROOT

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.kafka"]

# pgserver logs from an atexit hook, after pytest closed its capture streams: without this
# the run would end in a "--- Logging error ---" traceback below the summary line.
logging.raiseExceptions = False


def contract_path() -> Path:
    """``../shared/contract`` beside the checkout, or ``COMMERCE_CONTRACT_DIR``."""
    return Path(os.environ.get("COMMERCE_CONTRACT_DIR", ROOT.parent / "shared" / "contract"))


@pytest.fixture(scope="session")
def contract_dir() -> Path:
    path = contract_path()
    if not (path / "seed-events").is_dir():
        pytest.fail(f"contract test vectors not found at {path}; set COMMERCE_CONTRACT_DIR")
    return path
