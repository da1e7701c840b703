"""The access journal: a local, append-only file the HTTP filter writes and the recorder reads.

Why a file and not the database: the filter runs on Orthanc's HTTP threads for every request,
so it must neither wait for PostgreSQL nor fail when PostgreSQL is down. Each record is one
line of compact JSON written with a single ``write(2)`` on an ``O_APPEND`` descriptor: it is in
the file (and survives a crash of Orthanc) when the call returns. A background thread fsyncs the
file every ``pacs.journal_sync_interval`` seconds when something was written, so a power loss
can take at most that much. The recorder (:mod:`dicom_nodes.pacs.recorder`) reads complete
lines from its committed offset, chains them into the audit log and commits the new offset in
the same transaction: each record is recorded exactly once, whenever the database is back.

Segments are named ``<ns since epoch>-<pid>.jsonl`` (sorted = written order); a new one starts at
each start and beyond ``pacs.journal_segment_bytes``. A line cut short by a crash is never
complete (it has no newline) and the next record starts on a new line, so it is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["JournalWriter", "read_records", "segments"]

LOGGER = logging.getLogger(__name__)
SUFFIX = ".jsonl"


def segments(directory: Path) -> list[Path]:
    """The journal's segments, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


class JournalWriter:
    """Appends records; thread-safe; fsyncs in the background."""

    def __init__(self, directory: Path, sync_interval: float, segment_bytes: int) -> None:
        self.directory = directory
        self.sync_interval = sync_interval
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._dirty = False
        self._closed = threading.Event()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._open_segment()
        self._syncer = threading.Thread(
            target=self._sync_loop, name="radiogate-journal-sync", daemon=True
        )
        self._syncer.start()

    def _open_segment(self) -> None:
        name = f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name is durable before anything is written to it
        finally:
            os.close(dir_fd)
        old, self._fd, self._size = self._fd, fd, 0
        if old >= 0:
            os.fsync(old)
            os.close(old)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (one line, one ``write``); raises OSError if the disk refuses."""
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._fd < 0:
                raise OSError("the access journal is closed")
            if self._size + len(line) > self.segment_bytes and self._size:
                self._open_segment()
            written = os.write(self._fd, line)
            self._size += written
            self._dirty = True
            if written != len(line):  # a full disk: end the torn line so the next one parses
                os.write(self._fd, b"\n")
                raise OSError("the access journal's disk is full")

    def sync(self) -> None:
        with self._lock:
            fd, dirty, self._dirty = self._fd, self._dirty, False
        if dirty and fd >= 0:
            os.fsync(fd)  # releases the GIL; never holds the append lock

    def _sync_loop(self) -> None:
        while not self._closed.wait(self.sync_interval):
            try:
                self.sync()
            except OSError as exc:
                LOGGER.error("fsync of the access journal failed: %s", exc.strerror)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.fsync(fd)
            os.close(fd)


def read_records(path: Path, offset: int) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Complete records of *path* after byte *offset*: (offset after the line, record or None
    for a line that does not parse)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        position = offset
        for line in fh:
            if not line.endswith(b"\n"):
                return  # still being written (or cut short: a later record ends it)
            position += len(line)
            try:
                record = json.loads(line)
            except ValueError:
                yield position, None
                continue
            yield position, record if isinstance(record, dict) else None
