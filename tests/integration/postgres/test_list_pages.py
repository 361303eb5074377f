"""A list page after a cursor is read along the ``(created_at, id)`` index: no sort, no filter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from adapters_postgres.sql import newest_page_query
from adapters_postgres.tables import notifications, payments
from adapters_postgres.uow import notification_uow_factory, payment_uow_factory
from sqlalchemy import Table, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.contract.builders import new_notification, new_payment

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 1, tzinfo=UTC)
ROWS, TIED, LIMIT = 400, 40, 10  # every TIED rows share a created_at


async def _store(table: Table, engine: AsyncEngine) -> None:
    instants = [T0 + timedelta(seconds=i // TIED) for i in range(ROWS)]
    if table is payments:
        async with payment_uow_factory(engine)() as uow:
            for at in instants:
                await uow.payments.add(new_payment(at))
            await uow.commit()
    else:
        async with notification_uow_factory(engine)() as uow:
            for at in instants:
                await uow.notifications.add(new_notification(at))
            await uow.commit()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


@pytest.mark.parametrize("table", [payments, notifications], ids=lambda table: table.name)
async def test_a_page_before_a_cursor_is_a_backward_index_scan_from_it(
    table: Table, payment_engine: AsyncEngine, notification_engine: AsyncEngine
) -> None:
    """The row-value comparison bounds the scan of the ``(created_at, id)`` index: it starts
    at the cursor (inside a run of equal created_at) and stops after ``limit`` entries."""
    engine = payment_engine if table is payments else notification_engine
    await _store(table, engine)
    ordered = select(table.c.created_at, table.c.id).order_by(table.c.created_at, table.c.id)
    async with engine.connect() as conn:
        await conn.execute(text(f"ANALYZE {table.name}"))
        cut = (await conn.execute(ordered.offset(ROWS // 2 + TIED // 4).limit(1))).one()
        page = newest_page_query(table, None, LIMIT, (cut.created_at, cut.id))
        sql = page.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        [plan] = await conn.scalar(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))
    top = plan["Plan"]
    [scan] = top["Plans"]
    assert (top["Node Type"], scan["Node Type"]) == ("Limit", "Index Scan")
    assert scan["Index Name"] == f"{table.name}_created_at_idx"
    assert scan["Scan Direction"] == "Backward"
    assert scan["Index Cond"].startswith("(ROW(created_at, id) < ROW(")
    assert "Filter" not in scan
    assert scan["Actual Rows"] == LIMIT
    assert not [node for node in _nodes(top) if "Sort" in node["Node Type"]]
