"""Inbox-first, exactly-once application of one event; shared by every service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from core_saga.ids import new_id
from core_saga.messages import Envelope, Event
from core_saga.ports import Around, Clock, UnitOfWork

U = TypeVar("U", bound=UnitOfWork)

Apply = Callable[[U, Envelope], Awaitable[Sequence[Event]]]
Prepare = Callable[[U, Sequence[Envelope]], Awaitable[None]]


def new_envelope(event: Event, occurred_at: datetime, causation_id: UUID | None) -> Envelope:
    """A fresh envelope for ``event``: a new id and the order id as correlation id.

    Events with no causing event (placing an order, the deadline sweep) name the order id
    as their cause, as the seed platform does.
    """
    return Envelope(
        event_id=new_id(),
        occurred_at=occurred_at,
        correlation_id=event.order_id,
        causation_id=event.order_id if causation_id is None else causation_id,
        payload=event,
    )


async def apply_once(
    uow: Callable[[], U], clock: Clock, envelope: Envelope, apply: Apply[U]
) -> bool:
    """Record the event in the inbox, apply it, write its follow-up events; one transaction.

    The order is held first, as ``apply_batch`` holds its orders before its inbox rows: a
    replica on this path and another applying the same event in a batch then queue instead
    of deadlocking (each holding what the other waits for). The inbox row goes next, so a
    duplicate (or a replica racing on the same message) is detected before any effect; it
    returns False and nothing changes. Any exception rolls the whole transaction back, inbox
    row included, so the redelivered message runs again.
    """
    async with uow() as tx:
        await tx.hold({envelope.payload.order_id})
        if not await _apply_in(tx, clock, envelope, apply):
            return False
        await tx.commit()
    return True


async def apply_batch(
    uow: Callable[[], U],
    clock: Clock,
    envelopes: Sequence[Envelope],
    apply: Apply[U],
    *,
    around: Around | None = None,
    prepare: Prepare[U] | None = None,
) -> list[Envelope]:
    """``apply_once`` for each envelope in order, in one transaction; the applied ones.

    The orders of the batch are held first (``UnitOfWork.hold``), then ``prepare`` may take
    the batch's other locks, also in a global order: batches on other partitions or
    replicas then queue behind each other instead of deadlocking. Then the whole batch goes
    into the inbox at once, before any effect; an event already processed, or met earlier
    in the batch, is skipped. One commit for the whole batch is what makes it cheaper than
    one transaction per event. Any exception rolls everything back, inbox rows included.
    """
    applied: list[Envelope] = []
    async with uow() as tx:
        await tx.hold({envelope.payload.order_id for envelope in envelopes})
        if prepare is not None:
            await prepare(tx, envelopes)
        fresh = await tx.inbox.mark_all([(e.event_id, e.event_type) for e in envelopes])
        for envelope in envelopes:
            if envelope.event_id not in fresh:
                continue  # a duplicate
            fresh.discard(envelope.event_id)
            with around(envelope) if around else nullcontext():
                await _effect(tx, clock, envelope, apply)
            applied.append(envelope)
        await tx.commit()
    return applied


async def _apply_in(tx: U, clock: Clock, envelope: Envelope, apply: Apply[U]) -> bool:
    """Inbox first, then the effect and its follow-up events; False for a duplicate."""
    if not await tx.inbox.mark_processed(envelope.event_id, envelope.event_type):
        return False
    await _effect(tx, clock, envelope, apply)
    return True


async def _effect(tx: U, clock: Clock, envelope: Envelope, apply: Apply[U]) -> None:
    """The event's effect and its follow-up events, in the outbox."""
    for event in await apply(tx, envelope):
        await tx.outbox.add(new_envelope(event, clock.now(), envelope.event_id))
