"""Service settings from the environment (and `.env`), validated by pydantic-settings."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ServiceName = Literal["order", "inventory", "payment", "notification"]
SERVICES: tuple[ServiceName, ...] = ("order", "inventory", "payment", "notification")
DEFAULT_PORTS: dict[ServiceName, int] = {
    "order": 8081,
    "payment": 8082,
    "inventory": 8083,
    "notification": 8084,
}


def log_level_name(level: str) -> str:
    """A level ``logging`` knows (DEBUG, INFO, WARNING, ERROR, CRITICAL, any case), upper
    case: a typo failed only once logging was configured, with a traceback."""
    known = logging.getLevelNamesMapping()
    if level.upper() not in known:
        raise ValueError(f"not a log level: {level!r} (one of {', '.join(sorted(known))})")
    return level.upper()


def _readable_file(path: str | None) -> str | None:
    """A CA file that is not there failed only at the first connection, as "broker
    unreachable: [Errno 2] No such file or directory", naming neither file nor setting."""
    if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise ValueError(f"no readable file at {path}")
    return path


class Settings(BaseSettings):
    """One service's configuration. Names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str | None = Field(  # repr=False: it may hold a password
        None, description="postgresql:// URL of this service's own database", repr=False
    )
    database_command_timeout: float = Field(
        30.0, gt=0, description="seconds a statement may wait before it fails, to be retried"
    )
    database_idle_in_transaction_timeout: float = Field(
        60.0, gt=0, description="seconds the server lets a session idle inside a transaction"
    )
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = Field(None, repr=False)
    kafka_ssl_cafile: Annotated[str | None, AfterValidator(_readable_file)] = None
    kafka_namespace: str = Field(
        "",
        pattern=r"^[A-Za-z0-9._-]{0,100}$",
        description="prefix of every topic and consumer group, for platforms sharing a cluster",
    )
    topic_partitions: int = Field(6, ge=1, le=1000)
    topic_replication_factor: int = Field(1, ge=1, le=10)

    host: str = "0.0.0.0"
    port: int | None = Field(None, ge=1, le=65535, description="default: 8081-8084 by service")

    saga_timeout: float = Field(30.0, gt=0, description="seconds before a stuck order is cancelled")
    deadline_sweep_interval: float = Field(1.0, gt=0)
    payment_success_rate: float = Field(0.8, ge=0, le=1)
    payment_force_outcome: Literal["success", "failure"] | None = None
    payment_gateway_latency: float = Field(
        0.0, ge=0, le=60, description="seconds the simulated gateway takes per call"
    )
    payment_gateway_timeout: float = Field(
        10.0, gt=0, description="seconds a gateway call may take; then its payment stays due"
    )
    payment_settle_after: float = Field(
        10.0, gt=0, description="seconds a payment may wait on the gateway before the sweep"
    )
    payment_sweep_interval: float = Field(5.0, gt=0)
    notifier_timeout: float = Field(
        10.0, gt=0, description="seconds a send may take; then its notification stays unsent"
    )
    notification_resend_after: float = Field(
        10.0, gt=0, description="seconds a notification may stay unsent before the sweep"
    )
    notification_sweep_interval: float = Field(5.0, gt=0)
    idempotency_ttl_hours: float = Field(24.0, gt=0)

    outbox_batch_size: int = Field(500, ge=1, le=10_000)
    outbox_poll_interval: float = Field(1.0, gt=0, description="fallback poll, seconds")
    outbox_retention_hours: float = Field(1.0, gt=0)
    inbox_retention_hours: float = Field(
        168.0, gt=0, description="keep processed event ids longer than the broker keeps messages"
    )
    housekeeping_interval: float = Field(3600.0, gt=0, description="seconds between purges")
    consumer_retries: int = Field(3, ge=0, description="retries of a domain error before the DLT")
    consumer_retry_backoff: float = Field(1.0, ge=0)

    log_format: Literal["json", "console"] = "json"
    log_level: Annotated[str, AfterValidator(log_level_name)] = "INFO"

    def port_for(self, service: ServiceName) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[service]
