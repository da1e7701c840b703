"""dicom_nodes.scp.transport: PDU reads in one system call, bounded allocation."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from dicom_nodes.scp import transport


def _reader(sock: socket.socket, quickack: bool = False) -> transport._FastAssociationSocket:
    fast = transport._FastAssociationSocket.__new__(transport._FastAssociationSocket)
    fast.socket = sock
    fast.quickack = quickack
    return fast


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_reads_exactly_the_requested_bytes(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.sendall(b"0123456789abcdef")
    reader = _reader(a)
    assert reader.recv(6) == b"012345"
    assert reader.recv(10) == b"6789abcdef"


def test_waits_for_data_sent_in_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    payload = bytes(range(256)) * 12_000  # ~3 MiB: larger than what is allocated up front

    def send_slowly() -> None:
        for i in range(0, len(payload), 700_000):
            b.sendall(payload[i : i + 700_000])
            time.sleep(0.01)

    thread = threading.Thread(target=send_slowly)
    thread.start()
    got = _reader(a).recv(len(payload))
    thread.join()
    assert got == payload


def test_connection_closed_early_returns_what_arrived(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.sendall(b"short")
    b.shutdown(socket.SHUT_WR)
    assert _reader(a).recv(100) == b"short"


def test_bogus_length_allocates_only_what_arrives(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.sendall(b"x" * 10)
    b.shutdown(socket.SHUT_WR)
    got = _reader(a).recv(0xFFFFFFFF)  # a 4 GiB "PDU length" from the peer
    assert got == b"x" * 10


def test_quickack_rearm_on_tcp() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    try:
        client.sendall(b"abcdef")
        assert _reader(conn, quickack=True).recv(6) == b"abcdef"
    finally:
        for s in (client, conn, server):
            s.close()
