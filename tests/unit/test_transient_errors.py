"""Which database failures a retry can outlive (``is_transient``): those are retried by
consumers and answered 503 by the API; the others are bugs, never retried. And which broker
failures at connection time may pass by themselves (``broker_may_recover``)."""

from __future__ import annotations

import asyncpg
import pytest
from adapters_kafka.policy import broker_may_recover, refused_login
from adapters_postgres.uow import is_transient
from aiokafka.conn import ScramAuthenticator
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
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
        asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_server_that_stops_starts_or_refuses_for_now_is_transient(error: Exception) -> None:
    assert is_transient(DBAPIError("SELECT 1", (), error))


def test_a_violated_constraint_is_not() -> None:
    error = asyncpg.exceptions.UniqueViolationError("duplicate key value")
    assert not is_transient(IntegrityError("INSERT", (), error))


@pytest.mark.parametrize(
    ("error", "may_recover"),
    [
        (KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (KafkaTimeoutError(), True),
        (NodeNotReadyError(), True),
        (InvalidReplicationFactorError(), False),
        (TopicAuthorizationFailedError(), False),
        (SaslAuthenticationFailed(), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_a_broker_that_is_down_may_recover_one_that_refuses_the_settings_needs_a_fix(
    error: Exception, may_recover: bool
) -> None:
    """The first is a warning while the service retries; the second is logged as an error."""
    assert broker_may_recover(error) is may_recover


def _scram_refusal(server_final: str) -> Exception:
    """What aiokafka's own SCRAM exchange raises on a server's final message."""
    scram = ScramAuthenticator(
        loop=None, sasl_plain_password="pw", sasl_plain_username="u", sasl_mechanism="SCRAM-SHA-512"
    )
    try:
        scram.process_server_final_message(server_final)
    except Exception as exc:
        return exc
    raise AssertionError("the exchange accepted it")


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (SaslAuthenticationFailed("Authentication failed: Invalid username or password"), True),
        (UnsupportedSaslMechanismError("Enabled mechanisms are: ['PLAIN']"), True),
        (_scram_refusal("e=invalid-proof"), True),  # RFC 5802's error in place of the proof
        (_scram_refusal("v=bm90IHRoZSBzaWduYXR1cmU="), True),  # a proof, not the broker's
        (KeyError("v"), False),  # the same class raised anywhere else is no login
        (KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]"), False),
        (TopicAuthorizationFailedError(), False),
    ],
)
def test_a_refused_sasl_login_is_known_however_the_client_reports_it(
    error: Exception, refused: bool
) -> None:
    assert refused_login(error) is refused
