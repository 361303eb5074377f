"""A broker that refuses this client's SASL login: one line naming the login, not "unreachable".

Tansu started with ``--authentication`` has no users (they live in its memory storage, and
creating one takes a login), so every SCRAM login is refused: by RFC 5802's ``e=...`` in
place of the server's proof, which aiokafka's SCRAM exchange fails on with a bare KeyError.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import pytest
from adapters_kafka.embedded import EmbeddedBroker
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from commerce_apps.app import build_app
from commerce_apps.container import container_for
from commerce_apps.platform import PlatformError, on_broker
from commerce_apps.settings import Settings

from tests.fixtures.cli import assert_one_line_error, commerce
from tests.fixtures.postgres import DatabaseFactory

LOGIN = "refused the SASL login (the SCRAM proof was not accepted): check KAFKA_SASL_USERNAME"


@pytest.fixture(scope="module")
def guarded_broker() -> Iterator[str]:
    with EmbeddedBroker(args=["--authentication"]) as broker:
        yield broker.bootstrap_servers


def scram(servers: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": servers,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": "alice",
        "KAFKA_SASL_PASSWORD": "not-her-password",
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_commerce_topics_names_a_refused_login(guarded_broker: str, mechanism: str) -> None:
    """It said ``broker unreachable at ...: 'v'``."""
    result = commerce("topics", **scram(guarded_broker, mechanism))
    assert_one_line_error(result, f"error: the broker at {guarded_broker} {LOGIN}")


async def test_a_publisher_refused_its_login_is_one_line(
    guarded_broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=guarded_broker,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password="not-her-password",
    )
    publisher = KafkaPublisher(settings)
    caplog.set_level(logging.INFO)
    try:
        with pytest.raises(
            PlatformError, match=re.escape(f"the broker at {guarded_broker} {LOGIN}")
        ):
            await on_broker(guarded_broker, publisher.start())
    finally:
        await publisher.stop()
    assert not [r for r in caplog.records if r.name.startswith("aiokafka")]  # said once


def test_an_unreachable_broker_says_why_not_unable_to_bootstrap() -> None:
    """aiokafka raises only "Unable to bootstrap from [(...)]"; its logged reason is named."""
    result = commerce("topics", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert_one_line_error(result, "error: broker unreachable at 127.0.0.1:1: ")
    assert "Connection refused" in result.output
    assert "Unable to bootstrap" not in result.output


async def test_a_service_refused_its_login_says_so_at_error(
    guarded_broker: str, new_database: DatabaseFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A service retries the broker (credentials can be rotated); its ERROR names the login."""
    settings = Settings(
        database_url=await new_database.create("order"),
        kafka_bootstrap_servers=guarded_broker,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="alice",
        kafka_sasl_password="not-her-password",
    )
    app = build_app(container_for("order", settings))
    caplog.set_level(logging.INFO, logger="commerce_apps.jobs")
    async with app.router.lifespan_context(app):
        async with asyncio.timeout(10):
            while not [r for r in caplog.records if r.name == "commerce_apps.jobs"]:
                await asyncio.sleep(0.05)
    [said] = [r for r in caplog.records if r.name == "commerce_apps.jobs"]
    assert said.levelno == logging.ERROR
    assert f"the broker at {guarded_broker} {LOGIN}" in said.getMessage()
