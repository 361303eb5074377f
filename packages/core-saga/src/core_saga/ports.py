"""The ports: what the use cases need from the outside world, as ``typing.Protocol``s.

A unit of work is one transaction on one service's database. Use it as
``async with factory() as uow: ...; await uow.commit()``; leaving the block without
``commit`` rolls everything back (outbox rows, inbox rows and business rows alike).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable
from uuid import UUID

from core_saga.inventory import Product, Reservation
from core_saga.messages import Envelope, encode
from core_saga.notifications import Notification
from core_saga.orders import Order
from core_saga.payments import ChargeResult, Payment

# --- messages in and out -------------------------------------------------------------------


@dataclass(frozen=True)
class OutboundMessage:
    """A message ready for the broker: what an outbox row holds and the relay sends."""

    event_id: UUID
    topic: str
    key: str
    event_type: str
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_envelope(
        cls, envelope: Envelope, headers: Mapping[str, str] | None = None
    ) -> OutboundMessage:
        """The outbox row for ``envelope``: its topic, the order id as key, encoded value."""
        return cls(
            event_id=envelope.event_id,
            topic=envelope.topic,
            key=envelope.key,
            event_type=envelope.event_type,
            value=encode(envelope),
            headers=dict(headers or {}),
        )


@dataclass(frozen=True)
class PendingMessage:
    """An unpublished outbox row, claimed by the relay; ``position`` is its outbox id."""

    position: int
    message: OutboundMessage
    created_at: datetime


class Outbox(Protocol):
    """Events written in the business transaction; they leave only if it commits."""

    async def add(self, envelope: Envelope, headers: Mapping[str, str] | None = None) -> None: ...

    def context(self) -> Mapping[str, str]:
        """The headers ``add`` writes now beside those it is given (the current trace
        context), kept for events written later, outside this moment's context."""
        ...


class OutboxStore(Protocol):
    """The relay's side of the outbox (one active relay per database)."""

    async def claim_batch(self, limit: int, skip: Sequence[int] = ()) -> Sequence[PendingMessage]:
        """The oldest unpublished rows, in outbox id order, but none at a ``skip`` position
        (a batch still at the broker)."""
        ...

    async def mark_published(self, positions: Sequence[int], at: datetime) -> None:
        """Mark a published batch in one statement."""
        ...

    async def delete_published_before(self, cutoff: datetime) -> int: ...

    async def requeue_published(self, since: datetime | None = None) -> int:
        """Mark the rows still kept that were published at or after ``since`` (all of them
        by default) unpublished again, for the relay to resend: after a broker lost events
        it had acknowledged. The consumers' inboxes skip what they applied. Return how many."""
        ...

    async def oldest_unpublished_age(self, now: datetime) -> float:
        """Seconds since the oldest unpublished row was written; 0 when none waits."""
        ...


class Inbox(Protocol):
    """Processed event ids, written first in the handler's transaction."""

    async def mark_processed(self, event_id: UUID, event_type: str) -> bool:
        """Record the event; False when it was already processed (a duplicate: skip it)."""
        ...

    async def mark_all(self, events: Sequence[tuple[UUID, str]]) -> set[UUID]:
        """``mark_processed`` for each (event id, type) at once; the ids that were new.

        Ids are recorded in ascending order, so two transactions marking overlapping sets
        wait for each other instead of deadlocking.
        """
        ...


class EventPublisher(Protocol):
    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        """Send all messages; return only when the broker acknowledged every one."""
        ...


class PublishError(Exception):
    """The broker did not acknowledge; the relay backs off and retries the same rows."""


# --- idempotency ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    status_code: int | None  # None while the first request is still in flight
    body: Any


class IdempotencyStore(Protocol):
    async def claim(
        self,
        key: str,
        request_hash: str,
        now: datetime,
        expires_at: datetime,
        response: tuple[int, Any] | None = None,
    ) -> StoredResponse | None:
        """Claim ``key`` for this request; None means it is ours, else what is stored.

        Concurrent claims of one key are serialised: the later one waits for the earlier
        transaction and then sees its stored response. An expired key counts as absent.
        ``response`` (status code, body), when known before the work, is stored with the
        claim: one write instead of a claim and a ``save_response``.
        """
        ...

    async def save_response(self, key: str, status_code: int, body: Any) -> None: ...


@dataclass(frozen=True)
class KeyClaim:
    """The arguments of ``IdempotencyStore.claim``, for ``OrderUnitOfWork.place``."""

    key: str
    request_hash: str
    now: datetime
    expires_at: datetime
    response: tuple[int, Any] | None = None


# --- repositories --------------------------------------------------------------------------

LIST_LIMIT = 100
"""How many rows a list read returns unless told: none loads a whole table by default."""

Position = tuple[datetime, UUID]
"""A listed row's ``(created_at, id)``: the order lists are read in, hence where a page ends."""


class OrderRepository(Protocol):
    async def add(self, order: Order) -> None: ...

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        """With ``for_update`` the row stays locked until the transaction ends."""
        ...

    async def save(self, order: Order) -> None:
        """Persist status, timestamps, reason and any new history entries."""
        ...

    async def overdue(self, now: datetime, limit: int) -> Sequence[Order]:
        """Non-terminal orders past their deadline, locked and skipped by other sweepers."""
        ...


class ProductRepository(Protocol):
    async def list(self) -> Sequence[Product]: ...

    async def get(self, product_id: UUID) -> Product | None: ...

    async def lock(self, product_ids: Sequence[UUID]) -> dict[UUID, Product]:
        """Lock the known ones among ``product_ids`` in ascending id order; return them."""
        ...

    async def save(self, products: Sequence[Product]) -> None: ...


class ReservationRepository(Protocol):
    async def get(self, order_id: UUID, *, for_update: bool = False) -> Reservation | None: ...

    async def add(self, reservation: Reservation) -> None: ...

    async def save(self, reservation: Reservation) -> None: ...


class PaymentRepository(Protocol):
    async def lock_order(self, order_id: UUID) -> None:
        """Serialise all payment work on one order across replicas until commit."""
        ...

    async def get_by_order(self, order_id: UUID) -> Payment | None: ...

    async def list(
        self,
        order_id: UUID | None = None,
        *,
        limit: int = LIST_LIMIT,
        before: Position | None = None,
    ) -> Sequence[Payment]:
        """The newest ``limit`` payments (of one order, if given), oldest first.

        Newest by ``created_at``, then ``id``, so rows created at the same instant are cut
        and ordered the same way on every read. ``before`` keeps only the rows older than
        that position: given the first row of a page, it reads the page before it, and
        pages read so neither skip nor repeat a row, however many share a ``created_at``.
        """
        ...

    async def add(self, payment: Payment) -> None: ...

    async def save(self, payment: Payment) -> None: ...

    async def mark_cancelled(self, order_id: UUID) -> None:
        """Remember that this order was cancelled, so a later reservation is not charged."""
        ...

    async def was_cancelled(self, order_id: UUID) -> bool: ...

    async def due(
        self, before: datetime, limit: int, *, after: Position | None = None
    ) -> Sequence[Payment]:
        """Up to ``limit`` payments still waiting on the gateway (PENDING or REFUNDING),
        last changed at ``before`` or earlier, the longest waiting first (by ``updated_at``,
        then ``id``); ``after`` keeps those past that position (the last of a page). No lock
        taken."""
        ...


class NotificationRepository(Protocol):
    async def add(self, notification: Notification) -> bool:
        """Store it; False when the order already has a notification."""
        ...

    async def list(
        self,
        order_id: UUID | None = None,
        *,
        limit: int = LIST_LIMIT,
        before: Position | None = None,
    ) -> Sequence[Notification]:
        """The newest ``limit`` notifications (of one order, if given), oldest first.

        Ordered and paged (``before``) as ``PaymentRepository.list``: by ``created_at``, then
        ``id``.
        """
        ...

    async def unsent(
        self, before: datetime, limit: int, *, after: Position | None = None
    ) -> Sequence[Notification]:
        """Up to ``limit`` notifications stored at or before ``before`` and not yet sent,
        oldest first by ``(created_at, id)``, those after ``after`` only (keyset paging).
        Notifications stored by a release that sent them before this one's upgrade count as
        sent."""
        ...

    async def mark_sent(self, notifications: Collection[Notification]) -> None:
        """Record them as sent: ``unsent`` gives them no more."""
        ...


# --- units of work -------------------------------------------------------------------------


class UnitOfWork(Protocol):
    outbox: Outbox
    inbox: Inbox

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def hold(self, order_ids: Collection[UUID]) -> None:
        """Lock these orders until the transaction ends, always in one global order.

        A transaction that works on several orders (a consumer's batch) takes them all
        first, so two of them running at once wait for each other but never in a cycle.
        """
        ...


class OrderUnitOfWork(UnitOfWork, Protocol):
    orders: OrderRepository
    idempotency: IdempotencyStore

    async def place(
        self, order: Order, created: Envelope, claim: KeyClaim
    ) -> StoredResponse | None:
        """Claim the key and, if it is ours, add the order and its event and commit.

        Answers as ``idempotency.claim`` does: None when the order was placed, else the
        key's stored response, and nothing was written. It is the transaction's only work,
        so a store may send it all as one statement (PostgreSQL: no BEGIN, no COMMIT).
        """
        ...


class InventoryUnitOfWork(UnitOfWork, Protocol):
    products: ProductRepository
    reservations: ReservationRepository


class PaymentUnitOfWork(UnitOfWork, Protocol):
    payments: PaymentRepository


class NotificationUnitOfWork(UnitOfWork, Protocol):
    notifications: NotificationRepository


# --- the outside world ---------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC time."""
        ...


class PaymentGateway(Protocol):
    """Called outside any transaction, and again for a payment whose outcome was not recorded
    (a crash, a timeout): a charge must be deduplicated by order id (a repeat answers the
    first outcome), a refund by payment id. An outage must raise ``InfrastructureError`` (or
    ``OSError``, ``TimeoutError``): the payment stays due and is called again later. Any
    other exception is taken for a bug. A call is given ``PaymentService.gateway_timeout``."""

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult: ...

    async def refund(self, payment_id: UUID, amount: Decimal) -> None: ...


class Notifier(Protocol):
    async def send(self, notification: Notification) -> None:
        """Deliver a stored notification, after its transaction commits.

        At least once: a notification whose send was not recorded (an outage, a timeout, a
        crash before the record) is sent again later, so a notifier deduplicates by the
        notification's ``id`` where its channel allows. An outage is signalled as for
        ``PaymentGateway``: ``InfrastructureError``, ``OSError`` or ``TimeoutError``; any other
        exception is logged as a bug. Either way the notification stays unsent."""
        ...


UnitOfWorkFactory = Callable[[], UnitOfWork]


# --- what a consumer runs ------------------------------------------------------------------


class EventHandler(Protocol):
    """One service's event side: the event types it applies and how.

    ``handle`` is called once per delivered message, in partition order. It opens its own
    unit of work, inserts into the inbox first, and commits before it returns. Event types
    outside ``subscriptions`` are ignored (they share a topic with ones the service needs).
    It raises ``DomainError`` (poison: retry, then dead-letter) or ``InfrastructureError``
    (never dead-lettered: back off and retry the same message).
    """

    subscriptions: frozenset[str]

    async def handle(self, envelope: Envelope) -> None: ...


Around = Callable[[Envelope], AbstractContextManager[object]]
"""Wraps the application of one envelope of a batch, e.g. in its tracing span."""


@runtime_checkable
class BatchEventHandler(EventHandler, Protocol):
    """An ``EventHandler`` that can also apply a partition's backlog in one transaction.

    ``handle_batch`` applies the envelopes in order, each as ``handle`` would (inbox first,
    duplicates skipped), and commits once. Callers pass only ``subscriptions`` types: a
    type the service does not apply is a ``DomainError`` that fails the batch. It is all
    or nothing: on any exception nothing of the batch is kept, and the caller applies the
    envelopes one at a time with ``handle``, which sorts the poison from the good ones.
    """

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None: ...


class DomainError(Exception):
    """A message the domain cannot apply however often it is retried (goes to the DLT)."""


class InfrastructureError(Exception):
    """A database or broker failure: retrying the same message later will succeed."""


RECOVERY_BACKOFF_MAX = 5.0
"""The longest wait, in seconds, between retries against a database or broker that is down.

Well under a saga's deadline (30 s by default): the sagas in flight when it comes back must
resume within seconds, not time out. With 30 s, a 20 s database outage cancelled orders
placed just before it, their retries due 10 s after the server was back."""
