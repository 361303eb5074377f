"""Ids the platform makes (orders, events, payments, notifications): UUIDv7 (RFC 9562).

A UUIDv7 starts with its Unix time in milliseconds, so ids of later milliseconds sort after
older ones (within one millisecond, and across a wall clock stepping back, in any order) and
each B-tree that indexes them (every inbox, every primary key) takes inserts at its
right-hand edge. Ids read the wall clock, not the ``Clock`` port: their time orders pages,
it decides nothing. A random UUIDv4 lands on any leaf page: at millions of rows nearly
every insert dirties a page no other insert touched since the last checkpoint, and
PostgreSQL writes that whole page to the WAL (docs/benchmarks.md: WAL per inbox insert).
The other 74 bits are random, so ids stay unguessable and unique across replicas without
coordination.

``order_lock_key`` (adapters_postgres.identity) still takes an id's first 8 bytes: for
UUIDv7 that is the millisecond and 12 random bits, so two orders made in the same
millisecond share a lock key once in 4,096 pairs, which only serialises them. Keeping the
key unchanged keeps old and new replicas locking alike during a rolling upgrade.
"""

from __future__ import annotations

import os
import time
from uuid import UUID

_VERSION: int = 0x7 << 76
_VARIANT: int = 0b10 << 62
_RAND_A: int = 0xFFF  # 12 bits beside the version
_RAND_B: int = (1 << 62) - 1  # 62 bits beside the variant


def new_id() -> UUID:
    """A fresh UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    return uuid7_at(time.time_ns() // 1_000_000, int.from_bytes(os.urandom(10), "big"))


def uuid7_at(unix_ms: int, random_bits: int) -> UUID:
    """The UUIDv7 of ``unix_ms`` with the low 74 of ``random_bits`` (pure, for tests)."""
    if not 0 <= unix_ms < 1 << 48:
        raise ValueError(f"a UUIDv7 holds 48 bits of milliseconds, not {unix_ms}")
    rand_a = (random_bits >> 62) & _RAND_A
    return UUID(
        int=(unix_ms << 80) | _VERSION | (rand_a << 64) | _VARIANT | (random_bits & _RAND_B)
    )


def unix_ms_of(uuid7: UUID) -> int:
    """The millisecond a UUIDv7 was made at."""
    if uuid7.version != 7:
        raise ValueError(f"not a UUIDv7: {uuid7}")
    return uuid7.int >> 80
