"""Which database failures a retry can outlive (``is_transient``): those are retried by
consumers and answered 503 by the API; the others are bugs, never retried."""

from __future__ import annotations

import asyncpg
import pytest
from adapters_postgres.uow import is_transient
from sqlalchemy.exc import DBAPIError, IntegrityError


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.CrashShutdownError("terminating connection due to crash"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_server_that_stops_starts_or_refuses_for_now_is_transient(error: Exception) -> None:
    assert is_transient(DBAPIError("SELECT 1", (), error))


def test_a_violated_constraint_is_not() -> None:
    error = asyncpg.exceptions.UniqueViolationError("duplicate key value")
    assert not is_transient(IntegrityError("INSERT", (), error))
