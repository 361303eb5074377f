"""How the consumer runner classifies and retries failures, and the hooks it reports to."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from core_saga.messages import Envelope
from core_saga.ports import RECOVERY_BACKOFF_MAX, InfrastructureError, PublishError

InfrastructurePredicate = Callable[[BaseException], bool]


@dataclass(frozen=True)
class RetryPolicy:
    """Poison is retried a few times then dead-lettered; infrastructure until it recovers."""

    attempts: int = 3
    backoff: float = 1.0
    infrastructure_backoff: float = 0.5
    infrastructure_backoff_max: float = RECOVERY_BACKOFF_MAX

    def infrastructure_delay(self, failures: int) -> float:
        """Exponential and capped: the wait before retrying after ``failures`` in a row."""
        return min(
            self.infrastructure_backoff * 2.0 ** max(0, failures - 1),
            self.infrastructure_backoff_max,
        )


def is_transient(error: BaseException) -> bool:
    """Failures a later retry of the same message fixes: never a reason to dead-letter.

    core_saga's InfrastructureError, a publish the broker did not acknowledge, and network
    or timeout errors (``ConnectionError`` and ``TimeoutError`` are ``OSError``\\s).
    """
    return isinstance(error, InfrastructureError | PublishError | OSError)


def broker_may_recover(error: BaseException) -> bool:
    """Whether connecting again may succeed: the broker is down or slow (a network error, a
    timeout, an error Kafka marks retriable), not refusing the settings (a replication factor
    above the brokers, a failed authentication, a denied ACL), which an operator must fix."""
    return isinstance(error, OSError | TimeoutError | KafkaTimeoutError) or bool(
        getattr(error, "retriable", False)
    )


SASL_REFUSALS = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)
_SCRAM_STEPS = frozenset({"process_server_first_message", "process_server_final_message"})


def refused_login(error: BaseException) -> bool:
    """Whether the broker turned down this client's SASL login (credentials or mechanism).

    Kafka answers a wrong password with an error code (``SaslAuthenticationFailed``). A
    broker that answers SCRAM as RFC 5802 has it, with ``e=...`` instead of its proof (Tansu),
    fails aiokafka's SCRAM exchange with a bare ``KeyError``/``ValueError``: that one is known
    by where it was raised.
    """
    if isinstance(error, SASL_REFUSALS):
        return True
    trace = error.__traceback__
    while trace is not None:
        code = trace.tb_frame.f_code
        if code.co_name in _SCRAM_STEPS and trace.tb_frame.f_globals["__name__"] == "aiokafka.conn":
            return True
        trace = trace.tb_next
    return False


class ConsumerHooks:
    """Observation points for metrics and tracing; each does nothing here: override some."""

    def assigned(self, partitions: frozenset[tuple[str, int]]) -> None:
        """The group gave this member these (topic, partition)s (after every rebalance)."""

    def handling(
        self, topic: str, envelope: Envelope, headers: Mapping[str, str]
    ) -> AbstractContextManager[object]:
        """Wraps every handler attempt, e.g. in a span continuing the message's trace.

        A failed attempt's ``failed`` and its retry's log line come inside it, and one
        message at a time the handler's error does not raise through it (mark the span in
        ``failed``); in a batch it wraps the event's effect, inside ``handling_batch``, and
        the error does. An error of the hook itself ends the delivery, as a bug there should.
        """
        return nullcontext()

    def handling_batch(
        self, topic: str, headers: Sequence[Mapping[str, str]]
    ) -> AbstractContextManager[object]:
        """Wraps a batch's whole transaction (locks, inbox, effects, commit) and its log
        lines; ``headers`` are its messages', in order."""
        return nullcontext()

    def handled(self, topic: str, event_type: str, seconds: float) -> None:
        """The handler applied the event (its transaction committed); in a batch,
        ``seconds`` is the batch's time divided among its events."""

    def handled_batch(self, topic: str, count: int, seconds: float) -> None:
        """The handler applied ``count`` events in one transaction, in ``seconds``."""

    def skipped(self, topic: str, event_type: str) -> None:
        """An event type this service does not subscribe to; committed without handling."""

    def failed(self, topic: str, error: BaseException, *, infrastructure: bool) -> None:
        """One failed attempt; it will be retried (or dead-lettered if poison ran out)."""

    def dead_lettering(
        self,
        topic: str,
        headers: Mapping[str, str],
        envelope: Envelope | None,
        error: BaseException,
    ) -> AbstractContextManager[object]:
        """Wraps sending a message to ``<topic>.DLT`` (``envelope`` is None when it did not
        decode) and the log line saying so."""
        return nullcontext()

    def dead_lettered(self, topic: str, error: BaseException) -> None:
        """The message went to ``<topic>.DLT``."""
