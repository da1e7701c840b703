"""The receiver's audit events survive a database outage in a durable local buffer.

What each event kind does while PostgreSQL cannot be reached:

=============================================  =================================================
event                                          during an outage
=============================================  =================================================
``received``, ``study-reopened``               the action is refused: they commit with the
                                               instance row, so the C-STORE is answered 0xA700
``association-accepted`` / ``-rejected``,      buffered here, chained once the database is back,
``refused`` (data set not understood),         in the order they happened
connection refused before association
=============================================  =================================================

The buffer is one append-only file per receiver process under ``<data_dir>/audit-buffer``:
records of ``length (u32, big endian) + canonical event bytes`` (:meth:`AuditEvent.to_bytes`),
each fsynced before :meth:`BufferedAuditWriter.write` returns. Its size is bounded
(:data:`MAX_BUFFER_BYTES` per process); when it is full, events are dropped with an ERROR log
line per event and ``radiogate_audit_buffer_full`` is 1 (the alarm). Once a write reaches
PostgreSQL again, or every :data:`RETRY_SECONDS` from a background thread, buffered events
are enqueued in one transaction — those of receiver processes that died first (their files are
no longer locked), then this process's own — and the files are emptied.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
from pathlib import Path

from psycopg_pool import ConnectionPool

import audit
from audit import AuditEvent
from dicom_nodes.audit_events import AuditWriter

__all__ = [
    "MAX_BUFFER_BYTES",
    "RETRY_SECONDS",
    "BufferedAuditWriter",
    "buffer_state",
]

LOGGER = logging.getLogger(__name__)

MAX_BUFFER_BYTES = 64 << 20
"""Largest buffer file of one receiver process (a few hundred thousand events)."""
RETRY_SECONDS = 2.0
"""How often a non-empty buffer tries the database; writes in between go to the buffer."""
_LEN = struct.Struct(">I")


def _read_records(path: Path) -> list[bytes]:
    """Complete records of *path* (a torn last record from a crash is ignored)."""
    data = path.read_bytes()
    out: list[bytes] = []
    pos = 0
    while pos + 4 <= len(data):
        (size,) = _LEN.unpack_from(data, pos)
        if pos + 4 + size > len(data):
            break
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


def buffer_state(directory: Path) -> tuple[int, bool]:
    """(bytes buffered, whether any process's buffer is full) for metrics."""
    total, full = 0, False
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.endswith(".audit"):
                size = entry.stat().st_size
                total += size
                full = full or size >= MAX_BUFFER_BYTES
    return total, full


class BufferedAuditWriter(AuditWriter):
    """:class:`AuditWriter` that buffers what cannot reach PostgreSQL (see the module doc)."""

    def __init__(
        self,
        pool: ConnectionPool,
        node: str,
        directory: Path,
        timeout: float = 2.0,
        max_bytes: int = MAX_BUFFER_BYTES,
    ) -> None:
        super().__init__(pool, node, timeout)
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{time.time_ns():020d}-{os.getpid()}.audit"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # ours while we live; a dead process's is free
        self._lock = threading.Lock()
        self._size = 0
        self._next_try = 0.0
        self._others = True  # files of dead processes may wait from before
        self._stopped = threading.Event()
        threading.Thread(target=self._retry_loop, name="audit-buffer", daemon=True).start()

    def close(self) -> None:
        """Stop retrying and release the buffer file (a later process records what is left).
        A second call does nothing (the descriptor's number may belong to another file by then)."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            os.close(self._fd)

    def write(self, event: AuditEvent) -> bool:
        """Enqueue *event* in PostgreSQL, after anything buffered; buffer it when that fails.
        Returns whether it reached the database."""
        with self._lock:
            if (self._size or self._others) and not self._flush_locked():
                self._buffer(event)
                return False
            try:
                with self.pool.connection(timeout=self.timeout) as conn:
                    audit.enqueue(conn, event)
            except Exception as exc:
                LOGGER.warning(
                    "audit event %s buffered locally: %s", event.step.value, type(exc).__name__
                )
                self._buffer(event)
                return False
            return True

    def flush(self) -> bool:
        """Move buffered events to PostgreSQL; True when nothing is left buffered."""
        with self._lock:
            self._next_try = 0.0
            return self._flush_locked()

    def _buffer(self, event: AuditEvent) -> None:
        body = event.to_bytes()
        record = _LEN.pack(len(body)) + body
        if self._size + len(record) > self.max_bytes:
            LOGGER.error(
                "audit buffer full (%d bytes): event %s dropped; restore the database",
                self._size, event.step.value,
            )  # fmt: skip
            return
        os.write(self._fd, record)
        os.fsync(self._fd)
        self._size += len(record)
        if self._next_try == 0.0:
            self._next_try = time.monotonic() + RETRY_SECONDS

    def _flush_locked(self) -> bool:
        if time.monotonic() < self._next_try:
            return False
        others = self._dead_files() if self._others else []
        events: list[AuditEvent] = []
        for path, _fd in others:
            events += [AuditEvent.from_bytes(r) for r in _read_records(path)]
        if self._size:
            events += [AuditEvent.from_bytes(r) for r in _read_records(self.path)]
        try:
            if events:
                with self.pool.connection(timeout=self.timeout) as conn:
                    audit.enqueue_many(conn, events)
        except Exception as exc:
            LOGGER.warning("audit buffer not flushed yet: %s", type(exc).__name__)
            self._next_try = time.monotonic() + RETRY_SECONDS
            for _path, fd in others:
                os.close(fd)
            return False
        for path, fd in others:
            path.unlink(missing_ok=True)
            os.close(fd)
        if self._size:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._size = 0
        self._others = False
        self._next_try = 0.0
        if events:
            LOGGER.info("%d buffered audit events recorded", len(events))
        return True

    def _dead_files(self) -> list[tuple[Path, int]]:
        """Buffer files of processes that are gone (their lock is free), oldest first."""
        out = []
        for path in sorted(self.directory.glob("*.audit")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            out.append((path, fd))
        return out

    def _retry_loop(self) -> None:
        while not self._stopped.wait(RETRY_SECONDS):
            if self._size or self._others:
                with self._lock, contextlib.suppress(Exception):
                    if not self._stopped.is_set():
                        self._flush_locked()
