"""Hypothesis drives the whole saga: random orders, interleavings, duplicates, crashes, time.

Whatever the schedule, once every message is delivered every DESIGN §3 invariant holds;
stock conservation and "at most one charge per order" hold after every step.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest
from core_saga.inventory import SEED_PRODUCTS
from core_saga.memory import SagaHarness, ScriptedGateway, order_request
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

pytestmark = pytest.mark.property

T = TypeVar("T")
PRODUCTS = [product.id for product in SEED_PRODUCTS]


class SagaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.harness = SagaHarness()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    @initialize(
        rate=st.sampled_from([0.0, 0.5, 0.8, 1.0]),
        partitions=st.integers(1, 3),
    )
    def start(self, rate: float, partitions: int) -> None:
        numbers = itertools.count(1)
        self.harness = SagaHarness(
            partitions=partitions,
            gateway=ScriptedGateway(rate),
            new_order_id=lambda: UUID(int=next(numbers)),  # repeatable partitions and outcomes
        )

    @rule(
        quantities=st.dictionaries(st.sampled_from(PRODUCTS), st.integers(1, 40), min_size=1),
        outcome=st.sampled_from([None, True, False]),
    )
    def place_order(self, quantities: dict[Any, int], outcome: bool | None) -> None:
        created = self.run(self.harness.place_order(order_request(quantities)))
        assert created.kind == "created"
        if outcome is not None:
            self.harness.gateway.decide(self.harness.order_ids[-1], outcome)

    @rule(service=st.sampled_from([None, "order", "inventory", "payment"]))
    def relay(self, service: str | None) -> None:
        self.run(self.harness.relay(service))

    @precondition(lambda self: bool(self.harness.pending()))
    @rule(data=st.data(), crash=st.sampled_from([False, False, False, True]))
    def deliver(self, data: st.DataObject, crash: bool) -> None:
        cursor = data.draw(st.sampled_from(self.harness.pending()), label="cursor")
        self.run(self.harness.deliver(cursor, crash_before_commit=crash))

    @precondition(lambda self: bool(self.harness.pending()))
    @rule(
        data=st.data(), size=st.integers(2, 8), crash=st.sampled_from([False, False, False, True])
    )
    def deliver_batch(self, data: st.DataObject, size: int, crash: bool) -> None:
        cursor = data.draw(st.sampled_from(self.harness.pending()), label="cursor")
        self.run(self.harness.deliver_batch(cursor, size, crash_before_commit=crash))

    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        """Relay and deliver until quiet, partitions served in an order Hypothesis picks."""
        priority = data.draw(st.permutations(self.harness.cursors()), label="priority")
        for _ in range(500):
            self.run(self.harness.relay())
            pending = set(self.harness.pending())
            if not pending:
                return
            cursor = next(cursor for cursor in priority if cursor in pending)
            self.run(self.harness.deliver(cursor))

    @precondition(lambda self: bool(self.harness.records()))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        record = data.draw(st.sampled_from(self.harness.records()), label="record")
        self.harness.duplicate(*record)

    @rule()
    def broker_restarts_empty(self) -> None:
        """Whatever it held is lost; the outboxes send again what they kept."""
        self.run(self.harness.restart_broker())

    @rule(seconds=st.integers(1, 40))
    def advance_and_sweep(self, seconds: int) -> None:
        self.harness.clock.advance(timedelta(seconds=seconds))
        self.run(self.harness.sweep())

    @rule(fails=st.sampled_from(["no", "before acting", "after acting"]))
    def gateway_outage(self, fails: str) -> None:
        """Charges and refunds fail while it lasts, before the gateway acts or after (the
        answer lost): payments stay due until swept."""
        self.harness.gateway.down = fails == "before acting"
        self.harness.gateway.answers_lost = fails == "after acting"

    @rule()
    def settle_payments(self) -> None:
        self.run(self.harness.settle_payments())

    @rule(fails=st.sampled_from(["no", "before acting", "after acting"]))
    def notifier_outage(self, fails: str) -> None:
        """Sends fail while it lasts, before the notifier acts or after: notifications stay
        unsent until swept."""
        self.harness.notifier.down = fails == "before acting"
        self.harness.notifier.answers_lost = fails == "after acting"

    @rule()
    def send_notifications(self) -> None:
        self.run(self.harness.send_notifications())

    @invariant()
    def stock_is_conserved_and_no_order_is_charged_twice(self) -> None:
        assert self.run(self.harness.conservation()) == []

    def teardown(self) -> None:
        try:
            self.harness.gateway.down = self.harness.gateway.answers_lost = False
            self.harness.notifier.down = self.harness.notifier.answers_lost = False
            self.run(self.harness.run_until_quiet())
            assert self.run(self.harness.violations()) == []
            for order in self.run(self.harness.snapshot()).orders.values():
                assert order is not None
                event(f"{order.status}: {order.cancellation_reason or 'paid'}"[:40])
        finally:
            self.loop.close()


SagaMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    report_multiple_bugs=False,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSaga = SagaMachine.TestCase
