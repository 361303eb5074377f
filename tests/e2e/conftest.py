"""End-to-end fixtures: platforms on real PostgreSQL and a real broker, used over HTTP only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.platform import PAYMENTS_SUCCEED, RunningPlatform, running_platform


@pytest.fixture(scope="session")
async def succeeding(postgres_admin_url: str) -> AsyncIterator[RunningPlatform]:
    """A platform whose payments always succeed, shared by the modules that need one."""
    async with running_platform(postgres_admin_url, PAYMENTS_SUCCEED) as running:
        yield running
