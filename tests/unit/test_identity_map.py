"""The per-transaction identity map of the inventory and payment repositories."""

from __future__ import annotations

from uuid import UUID

from adapters_postgres.identity import IdentityMap

A, B, C = UUID(int=3), UUID(int=1), UUID(int=2)


def test_unread_ids_come_sorted_and_skip_what_was_read() -> None:
    held: IdentityMap[str] = IdentityMap()
    held.known[C] = None
    assert held.unread([A, B, C, A]) == [B, A]


def test_added_then_saved_is_inserted_as_saved_and_never_updated() -> None:
    held: IdentityMap[str] = IdentityMap()
    held.add(A, "reserved")
    held.save(A, "released")
    held.save(B, "sold")
    assert held.new == {A: "released"}
    assert held.changed == {B: "sold"}
    assert held.known == {A: "released", B: "sold"}


def test_written_keeps_what_was_read_and_clear_forgets_it() -> None:
    held: IdentityMap[str] = IdentityMap()
    held.add(A, "x")
    held.save(B, "y")
    held.written()
    assert (held.new, held.changed, held.known) == ({}, {}, {A: "x", B: "y"})
    held.clear()
    assert held.known == {}
