"""Connection settings shared by the producer, the consumer and the admin client."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from aiokafka.helpers import create_ssl_context


@dataclass(frozen=True)
class KafkaSettings:
    """Where the brokers are and how to authenticate; maps onto aiokafka's client options.

    ``sasl_mechanism`` is one of aiokafka's (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512). TLS is
    used for ``SSL`` and ``SASL_SSL``: ``ssl_context`` when given, else one built from the
    CA file and the optional client certificate. ``namespace`` prefixes every topic and
    consumer group this package names on the broker (``named``), so that platforms sharing a
    cluster (staging beside test, or one test platform beside another) never read each
    other's events; callers keep using the saga's own names (``order-events``).
    """

    bootstrap_servers: str
    client_id: str = "commerce"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_context: ssl.SSLContext | None = None
    request_timeout_ms: int = 30_000
    namespace: str = ""

    def named(self, name: str) -> str:
        """The broker's name for a saga topic, dead-letter topic or consumer group."""
        return f"{self.namespace}{name}"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments accepted alike by AIOKafkaProducer, -Consumer and -AdminClient."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self.ssl_context or create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        return options
