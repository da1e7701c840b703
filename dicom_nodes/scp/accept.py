"""One accept queue shared by the receiver processes, and who takes the next connection.

The supervisor binds and listens on the SCP port once (:func:`listen`); the receivers it forks
inherit that socket and all ``accept()`` from its one queue, so a connection waits for
whichever receiver is ready, instead of being assigned at SYN time by ``SO_REUSEPORT``'s hash
of the peer's address and port (which put 4 associations 2:2 on 2 receivers only ~37 % of the
time: each connection independently lands on either process).

Every receiver is woken when a connection is queued (the listening socket is non-blocking;
the one that loses the race gets ``EAGAIN`` and waits again). So that the connection goes to
the receiver with the fewest open connections, each receiver publishes its count on a
:class:`AcceptBoard` (a small shared memory map made before the fork); a receiver that has
more connections than another lets that one take it, for at most :data:`MAX_DEFER` seconds
(a busy or stopped receiver cannot hold a connection back).
"""

from __future__ import annotations

import mmap
import socket
import time

__all__ = ["DEFER_LOOK", "MAX_DEFER", "RETIRED_LOOK", "AcceptBoard", "AcceptTurn", "listen"]

MAX_DEFER = 0.05
"""Longest a receiver leaves a waiting connection to a less busy one (seconds)."""
DEFER_LOOK = 0.001
"""Seconds between looks at a waiting connection left to a less busy receiver."""
RETIRED_LOOK = 0.05
"""Seconds between looks at the listening socket once a receiver is retired (stopping)."""

_RETIRED = 0xFFFF_FFFF
"""Count published by a receiver that no longer accepts (stopping): never deferred to."""


def listen(host: str, port: int, backlog: int = socket.SOMAXCONN) -> socket.socket:
    """The SCP's listening socket (port 0: any free port), non-blocking, to be inherited by
    the receiver processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class AcceptBoard:
    """Open connections per receiver, in memory shared by the supervisor's children."""

    def __init__(self, slots: int) -> None:
        self._map = mmap.mmap(-1, 4 * max(1, slots))
        self._counts = memoryview(self._map).cast("I")
        self.slots = max(1, slots)
        for i in range(self.slots):
            self._counts[i] = _RETIRED

    def publish(self, slot: int, connections: int) -> None:
        """Receiver *slot* has *connections* open."""
        self._counts[slot] = connections

    def retire(self, slot: int) -> None:
        """Receiver *slot* accepts no more connections (stopping, or dead)."""
        self._counts[slot] = _RETIRED

    def retired(self, slot: int) -> bool:
        """Whether receiver *slot* has retired (or not started)."""
        return self._counts[slot] == _RETIRED

    def fewer_elsewhere(self, slot: int) -> bool:
        """Whether another accepting receiver has fewer open connections than *slot*."""
        mine = self._counts[slot]
        return any(self._counts[i] < mine for i in range(self.slots) if i != slot)


class AcceptTurn:
    """One receiver's side of the board: whether to take the waiting connection now."""

    def __init__(self, board: AcceptBoard, slot: int) -> None:
        self.board = board
        self.slot = slot
        self._deferring_since = 0.0
        self._looked = 0.0

    def take_now(self) -> bool:
        """False while a less busy receiver should take the waiting connection (then wait
        a moment before looking again), for at most :data:`MAX_DEFER`; always False once
        this receiver is retired (stopping: the others take what waits)."""
        if self.board.retired(self.slot):
            return False
        if not self.board.fewer_elsewhere(self.slot):
            self._deferring_since = 0.0
            return True
        now = time.monotonic()
        if now - self._looked > MAX_DEFER / 4:
            self._deferring_since = now  # a new waiting connection (the last one was taken)
        self._looked = now
        if now - self._deferring_since >= MAX_DEFER:
            self._deferring_since = 0.0
            return True
        return False

    def pause(self) -> float:
        """Seconds to wait before looking again after :meth:`take_now` said no: a moment
        while deferring to a less busy receiver, :data:`RETIRED_LOOK` once retired (the
        others take what waits; looking every millisecond cost a retiring receiver a third
        of a CPU for as long as a connection waited)."""
        return RETIRED_LOOK if self.board.retired(self.slot) else DEFER_LOOK

    def publish(self, connections: int) -> None:
        self.board.publish(self.slot, connections)

    def retire(self) -> None:
        self.board.retire(self.slot)
