"""free_port hands out ports that no other process is handed meanwhile."""

from __future__ import annotations

import socket

from auditlog_service.devdb import _ephemeral_range, free_port


def test_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    first, _ = _ephemeral_range()
    for _ in range(20):
        port = free_port()
        # The kernel's bind(0) and outgoing connections draw from the range; a port below it
        # stays free until the process it was chosen for binds it.
        assert 1024 <= port < first
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_handed_out() -> None:
    first, _ = _ephemeral_range()
    taken = []
    try:
        # Occupy a block of the candidate ports; free_port must skip every one of them.
        for port in range(first - 300, first):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:
                sock.close()
                continue
            taken.append(sock)
        ports = {sock.getsockname()[1] for sock in taken}
        assert not ports & {free_port() for _ in range(200)}
    finally:
        for sock in taken:
            sock.close()
