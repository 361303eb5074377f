"""Ports for listeners: outside the range outgoing connections take, and never twice."""

from __future__ import annotations

import contextlib
import socket

import pytest
from adapters_kafka import embedded
from adapters_kafka.embedded import _ephemeral_range, free_port


def test_a_listener_port_is_outside_the_ephemeral_range_and_bindable() -> None:
    low, high = _ephemeral_range()
    port = free_port()
    assert not low <= port <= high
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_ports_chosen_in_a_row_all_differ() -> None:
    ports = [free_port() for _ in range(100)]
    assert len(set(ports)) == 100


def test_a_port_something_listens_on_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    low, high = _ephemeral_range()
    ten = [port for port in range(20_000, 65_536) if not low <= port <= high][:10]
    monkeypatch.setattr(embedded, "_LISTEN_PORTS", ten)
    monkeypatch.setattr(embedded, "_handed_out", set())
    held: list[socket.socket] = []
    try:
        for port in ten[:-1]:
            sock = socket.socket()
            held.append(sock)
            with contextlib.suppress(OSError):  # already taken by someone else: fine too
                sock.bind(("127.0.0.1", port))
                sock.listen()
        assert free_port() == ten[-1]
        with pytest.raises(embedded.EmbeddedBrokerError, match="no free port"):
            free_port()
    finally:
        for sock in held:
            sock.close()
