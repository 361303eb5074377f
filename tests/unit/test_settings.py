"""Settings as an operator writes them, and what the services make of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from commerce_apps.container import retry_policy
from commerce_apps.settings import Settings
from pydantic import ValidationError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("retries", "attempts"), [(3, 4), (0, 1)])
def test_consumer_retries_are_retries_after_the_first_attempt(retries: int, attempts: int) -> None:
    """DESIGN §4: a domain error is "retried (default 3 times)" before the DLT."""
    assert Settings().consumer_retries == 3
    policy = retry_policy(Settings(consumer_retries=retries, consumer_retry_backoff=0.5))
    assert (policy.attempts, policy.backoff) == (attempts, 0.5)


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValidationError, match="consumer_retries"):
        Settings(consumer_retries=-1)


@pytest.mark.parametrize("level", ["debug", "Warning", "ERROR"])
def test_a_log_level_is_one_logging_knows_in_any_case(level: str) -> None:
    assert Settings(log_level=level).log_level == level.upper()


def test_an_unknown_log_level_is_refused_with_the_settings() -> None:
    """Before, it passed here and failed once logging was configured, with a traceback."""
    with pytest.raises(ValidationError, match="not a log level: 'LOUD'"):
        Settings(log_level="LOUD")


def test_a_kafka_ca_file_that_is_not_there_is_refused_naming_it(tmp_path: Path) -> None:
    """It failed at the first connection as "broker unreachable", naming no file."""
    missing = tmp_path / "ca.pem"
    with pytest.raises(
        ValidationError, match=f"(?s)kafka_ssl_cafile.*no readable file at {missing}"
    ):
        Settings(kafka_ssl_cafile=str(missing))
    with pytest.raises(ValidationError, match="no readable file at"):
        Settings(kafka_ssl_cafile=str(tmp_path))  # a directory: IsADirectoryError at connect
    missing.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Settings(kafka_ssl_cafile=str(missing)).kafka_ssl_cafile == str(missing)


def test_printing_settings_shows_no_secret() -> None:
    settings = Settings(
        database_url="postgresql://app:s3cret@db/orders", kafka_sasl_password="s3cret"
    )
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert settings.database_url == "postgresql://app:s3cret@db/orders"  # still there to use
