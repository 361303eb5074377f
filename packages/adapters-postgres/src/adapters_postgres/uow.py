"""Units of work: one transaction on one service database, with that service's repositories.

``async with factory() as uow: ...; await uow.commit()`` — leaving the block without
``commit`` rolls back business rows, outbox rows and inbox rows together. Database and
network failures inside the block leave it as ``core_saga.ports.InfrastructureError``, so
consumers back off and retry instead of dead-lettering a good message.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Final, Protocol, Self, TypeVar
from uuid import UUID

from core_saga import ports
from core_saga.messages import Envelope
from core_saga.orders import Order
from core_saga.ports import (
    IdempotencyStore,
    Inbox,
    InfrastructureError,
    KeyClaim,
    NotificationRepository,
    OrderRepository,
    Outbox,
    PaymentRepository,
    ProductRepository,
    ReservationRepository,
    StoredResponse,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters_postgres import placing
from adapters_postgres.idempotency import (
    CLAIM_TRIES,
    KeyRaceError,
    PostgresIdempotencyStore,
    claim_params,
)
from adapters_postgres.identity import OrderLocks
from adapters_postgres.inbox import PostgresInbox
from adapters_postgres.inventory_repositories import (
    PostgresProductRepository,
    PostgresReservationRepository,
)
from adapters_postgres.notification_repositories import PostgresNotificationRepository
from adapters_postgres.outbox import (
    HeaderSource,
    PostgresOutbox,
    PostgresOutboxStore,
    outbox_channel,
)
from adapters_postgres.payment_repositories import PostgresPaymentRepository
from adapters_postgres.repositories import PostgresOrderRepository, new_order_params
from adapters_postgres.wakeup import OUTBOX_WAKEUP

# Failures a later retry can succeed after: lost connections, timeouts, serialization
# failures and deadlocks. Constraint violations stay what they are (a bug, not the weather).
TRANSIENT = (OperationalError, InterfaceError, OSError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or _retryable_sqlstate(exc))


# serialization_failure, deadlock_detected; admin_shutdown, crash_shutdown, cannot_connect_now
# (a server stopping, or starting up: "the database system is starting up"); too many
# connections; lock_not_available and query_canceled (a lock_timeout or statement_timeout
# that a database or role sets, or a DBA's pg_cancel_backend: the event is not at fault).
# Class 08 (connection exceptions) counts too.
LOCK_NOT_AVAILABLE: Final = "55P03"  # a lock_timeout ran out
_RETRYABLE = frozenset(
    {"40001", "40P01", "57P01", "57P02", "57P03", "53300", LOCK_NOT_AVAILABLE, "57014"}
)


def _retryable_sqlstate(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(code, str) and (code in _RETRYABLE or code.startswith("08"))


Committed = Callable[[Sequence[Envelope]], None]
"""Told the events a transaction emitted, once it committed (e.g. business counters, which
then count each event once: not again when a relay sends it again)."""


class Deferring(Protocol):
    """A repository that keeps a transaction's writes until its commit (an identity map)."""

    async def flush(self) -> None:
        """Write what the transaction changed; the unit of work's commit calls it first."""
        ...

    def transaction_ended(self) -> None:
        """Forget what was read and noted: the locks are gone, and so is unsaved work."""
        ...


class PostgresUnitOfWork:
    """The shared part: connection, transaction, outbox and inbox."""

    service: ClassVar[str]
    outbox: Outbox
    inbox: Inbox

    def __init__(
        self,
        engine: AsyncEngine,
        context: HeaderSource | None = None,
        *,
        read_only: bool = False,
        on_commit: Committed | None = None,
    ) -> None:
        self._engine = engine
        self._context = context
        self._read_only = read_only
        self._on_commit = on_commit
        self._conn: AsyncConnection | None = None

    @property
    def connection(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("use the unit of work inside 'async with'")
        return self._conn

    async def __aenter__(self) -> Self:
        try:
            conn = await self._engine.connect()
        except Exception as exc:
            if is_transient(exc):
                raise InfrastructureError(f"{self.service} database unreachable: {exc}") from exc
            raise
        if self._read_only:  # no BEGIN and ROLLBACK around what is one statement anyway
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            await conn.begin()
        self._conn = conn
        self.inbox = PostgresInbox(conn)
        self._locks = OrderLocks(conn)
        self._deferring: list[Deferring] = []
        self._bind(conn, self._locks)
        self.outbox = self._outbox = outbox = PostgresOutbox(conn, self._context)
        self._deferring.append(outbox)  # its rows at commit, after the business rows
        return self

    def _bind(self, conn: AsyncConnection, locks: OrderLocks) -> None:
        """Create the service's repositories on ``conn``, sharing the transaction's locks.

        Those that defer their writes go in ``_deferring``: flushed at commit, reset at the
        end of every transaction.
        """

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        failure = exc
        try:
            if failure is not None and (
                isinstance(failure, InfrastructureError) or is_transient(failure)
            ):
                # Not back to the pool: a connection whose session was dropped can be left
                # mid-operation in asyncpg ("another operation is in progress"), which
                # SQLAlchemy does not take for a disconnect, and would fail every later use.
                await conn.invalidate(failure)
            elif conn.in_transaction():
                await conn.rollback()
        except Exception as error:  # the connection is gone; closing discards it
            failure = failure or error
        finally:
            with suppress(Exception):
                await conn.close()
        if failure is None or isinstance(failure, InfrastructureError):
            return
        if is_transient(failure):
            raise InfrastructureError(f"{self.service} database failure: {failure}") from failure
        if failure is not exc:
            raise failure

    async def hold(self, order_ids: Collection[UUID]) -> None:
        """Transaction advisory locks on the orders' keys, taken in ascending key order.

        The same keys as the inventory's and the payments' per-order locks, so there a batch
        also excludes the single-event transactions of its orders. Orders themselves are
        serialised by their row lock (``get(for_update=True)``).
        """
        await self._locks.take(order_ids)

    async def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        emitted = self._outbox.added
        for repository in self._deferring:
            await repository.flush()
        await self.connection.commit()
        self._transaction_ended()
        self._committed(emitted)

    def _committed(self, emitted: Sequence[Envelope]) -> None:
        if not emitted:
            return
        # After the commit, not in it: a NOTIFY in the transaction serialised every
        # notifying commit on the server (see ``adapters_postgres.wakeup``).
        OUTBOX_WAKEUP.written(self._engine, outbox_channel(self.service))
        if self._on_commit is not None:
            self._on_commit(emitted)

    async def rollback(self) -> None:
        await self.connection.rollback()
        self._transaction_ended()

    def _transaction_ended(self) -> None:
        self._locks.released()
        for repository in self._deferring:
            repository.transaction_ended()


class PostgresOrderUnitOfWork(PostgresUnitOfWork):
    service = "order"
    orders: OrderRepository
    idempotency: IdempotencyStore

    def _bind(self, conn: AsyncConnection, locks: OrderLocks) -> None:
        self.orders = self._orders = PostgresOrderRepository(conn)
        self.idempotency = self._idempotency = PostgresIdempotencyStore(conn)
        self._deferring.append(self._orders)

    async def hold(self, order_ids: Collection[UUID]) -> None:
        """The batch's keys, then its orders, locked and read at once for ``orders.get``."""
        await super().hold(order_ids)
        await self._orders.lock_all(order_ids)

    async def place(
        self, order: Order, created: Envelope, claim: KeyClaim
    ) -> StoredResponse | None:
        """One statement outside a transaction (``adapters_postgres.placing``)."""
        params = {
            **claim_params(claim),
            **new_order_params(order),
            **self._outbox.params([created]),
        }
        for _ in range(CLAIM_TRIES):
            if await placing.place(self.connection, params):
                self._transaction_ended()
                self._committed([created])
                return None
            stored = await self._idempotency.stored(claim.key)
            if stored is not None:
                return stored
            # Purged since the claim lost: claim again, outside a transaction as before.
            await self.connection.rollback()
            await self.connection.begin()
        raise KeyRaceError(claim.key)


class PostgresInventoryUnitOfWork(PostgresUnitOfWork):
    service = "inventory"
    products: ProductRepository
    reservations: ReservationRepository

    def _bind(self, conn: AsyncConnection, locks: OrderLocks) -> None:
        self.products = products = PostgresProductRepository(conn)
        self.reservations = self._reservations = PostgresReservationRepository(conn, locks)
        self._deferring += (products, self._reservations)

    async def hold(self, order_ids: Collection[UUID]) -> None:
        """The batch's keys, and its reservations read at once (absent ones too)."""
        await self._reservations.lock_all(order_ids)


class PostgresPaymentUnitOfWork(PostgresUnitOfWork):
    service = "payment"
    payments: PaymentRepository

    def _bind(self, conn: AsyncConnection, locks: OrderLocks) -> None:
        self.payments = self._payments = PostgresPaymentRepository(conn, locks)
        self._deferring.append(self._payments)

    async def hold(self, order_ids: Collection[UUID]) -> None:
        """The batch's keys, and its payments and cancellations read at once."""
        await self._payments.lock_all(order_ids)


class PostgresNotificationUnitOfWork(PostgresUnitOfWork):
    service = "notification"
    notifications: NotificationRepository

    def _bind(self, conn: AsyncConnection, locks: OrderLocks) -> None:
        self.notifications = self._notifications = PostgresNotificationRepository(conn, locks)
        self._deferring.append(self._notifications)

    async def hold(self, order_ids: Collection[UUID]) -> None:
        """The batch's keys, and which of its orders already have a notification, read at
        once; the notifications added for them are inserted at commit."""
        await self._notifications.lock_all(order_ids)


U = TypeVar("U", bound=PostgresUnitOfWork)


def uow_factory(
    kind: type[U],
    engine: AsyncEngine,
    context: HeaderSource | None = None,
    *,
    read_only: bool = False,
    on_commit: Committed | None = None,
) -> Callable[[], U]:
    """What a ``core_saga`` handler takes: a new unit of work of ``kind`` per call."""
    return lambda: kind(engine, context, read_only=read_only, on_commit=on_commit)


order_uow_factory = partial(uow_factory, PostgresOrderUnitOfWork)
inventory_uow_factory = partial(uow_factory, PostgresInventoryUnitOfWork)
payment_uow_factory = partial(uow_factory, PostgresPaymentUnitOfWork)
notification_uow_factory = partial(uow_factory, PostgresNotificationUnitOfWork)


if TYPE_CHECKING:  # mypy proves each unit of work satisfies its port

    def _conforms(engine: AsyncEngine) -> None:
        _order: ports.OrderUnitOfWork = PostgresOrderUnitOfWork(engine)
        _inventory: ports.InventoryUnitOfWork = PostgresInventoryUnitOfWork(engine)
        _payment: ports.PaymentUnitOfWork = PostgresPaymentUnitOfWork(engine)
        _notification: ports.NotificationUnitOfWork = PostgresNotificationUnitOfWork(engine)
        _store: ports.OutboxStore = PostgresOutboxStore(engine)
