"""What a failed broker call says to an operator, and which failures aiokafka only logs.

aiokafka tries each bootstrap address in turn, logs why each one failed, and raises only
``Unable to bootstrap from [...]``: the reason (a refused connection, a refused login) is in
its ERROR line. The CLI silences those lines for its own one-line error, so it keeps their
exceptions (``BootstrapReasons``) and names the last one instead. ``first_line`` is how
every one-line error of the apps renders an exception.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from adapters_kafka.policy import SASL_REFUSALS, refused_login
from aiokafka.errors import KafkaConnectionError

LOGIN_SETTINGS = "check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """What an exception says, fit for one line (its class when it says nothing)."""
    said = str(exc).strip().split("\n", 1)[0][:limit]
    return said or type(exc).__name__


def login_refused(servers: str, exc: BaseException) -> str | None:
    """The line for a refused SASL login, or None when ``exc`` is another failure."""
    if not refused_login(exc):
        return None
    # aiokafka's SCRAM exchange fails on the missing proof with a bare KeyError: say what it means
    said = first_line(exc) if isinstance(exc, SASL_REFUSALS) else "the SCRAM proof was not accepted"
    return f"the broker at {servers} refused the SASL login ({said}): {LOGIN_SETTINGS}"


class BootstrapReasons(logging.Handler):
    """Keeps the last exception aiokafka logged (a bootstrap address's failure) and drops
    the line, which would repeat the caller's own."""

    def __init__(self) -> None:
        super().__init__()
        self.last: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[-1], BaseException):
            self.last = args[-1]

    def cause(self, exc: BaseException) -> BaseException:
        """Why ``exc`` happened: for aiokafka's bare bootstrap failure, the logged reason."""
        if isinstance(exc, KafkaConnectionError) and self.last is not None:
            return self.last
        return exc


@contextlib.contextmanager
def bootstrap_reasons() -> Iterator[BootstrapReasons]:
    """aiokafka's lines from ERROR up (where it says why an address failed) go to the returned
    handler inside, and not to the application's, whatever its levels."""
    target = logging.getLogger("aiokafka")
    handler, propagate, level = BootstrapReasons(), target.propagate, target.level
    target.addHandler(handler)
    target.propagate = False
    target.setLevel(logging.ERROR)
    try:
        yield handler
    finally:
        target.removeHandler(handler)
        target.propagate, target.level = propagate, level
