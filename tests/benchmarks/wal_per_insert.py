"""WAL written per inbox insert, UUIDv4 against UUIDv7 event ids, into a table of N rows.

    uv run python -m tests.benchmarks.wal_per_insert --rows 2000000

Each kind gets an inbox-shaped table (``processed_events``: a uuid primary key) filled with
``--rows`` ids made the same way, then a CHECKPOINT, then ``--inserts`` inserts in
transactions of 100 (as a consumer's batch). The WAL between the two LSNs, per insert, is
what the ids cost: after a checkpoint PostgreSQL writes each page's first change whole.
A measurement, not a test (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from collections.abc import Callable

import asyncpg
from adapters_postgres.embedded import EmbeddedPostgres
from adapters_postgres.engine import plain_url
from core_saga.ids import new_id

KINDS: dict[str, Callable[[], uuid.UUID]] = {"uuid4": uuid.uuid4, "uuid7": new_id}
FILL_BATCH = 50_000
INSERT_BATCH = 100


async def wal_per_insert(
    conn: asyncpg.Connection, make: Callable[[], uuid.UUID], rows: int, inserts: int, table: str
) -> float:
    await conn.execute(
        f"CREATE TABLE {table} (event_id uuid PRIMARY KEY, event_type text NOT NULL,"
        " processed_at timestamptz NOT NULL DEFAULT now())"
    )
    for start in range(0, rows, FILL_BATCH):
        batch = [(make(), "OrderCreated") for _ in range(min(FILL_BATCH, rows - start))]
        await conn.copy_records_to_table(table, records=batch, columns=["event_id", "event_type"])
    await conn.execute("CHECKPOINT")
    before = await conn.fetchval("SELECT pg_current_wal_lsn()")
    insert = f"INSERT INTO {table} (event_id, event_type) VALUES ($1, 'OrderCreated')"
    for _ in range(inserts // INSERT_BATCH):
        async with conn.transaction():
            await conn.executemany(insert, [(make(),) for _ in range(INSERT_BATCH)])
    after = await conn.fetchval("SELECT pg_current_wal_lsn()")
    return float(await conn.fetchval("SELECT pg_wal_lsn_diff($1, $2)", after, before)) / inserts


async def main(rows: int, inserts: int) -> None:
    server = EmbeddedPostgres(tempfile.mkdtemp(prefix="wal-bench-"), delete=True)
    server.start()
    try:
        url = (await server.create_databases(["wal_bench"]))["wal_bench"]
        conn = await asyncpg.connect(plain_url(url))
        try:
            for kind, make in KINDS.items():
                wal = await wal_per_insert(conn, make, rows, inserts, f"inbox_{kind}")
                print(f"{kind}: {wal:,.0f} bytes of WAL per insert into {rows:,} rows")
        finally:
            await conn.close()
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--inserts", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.inserts))
