"""The durable spool: content-addressed files that survive power loss once acknowledged.

A received instance becomes durable in this order (the SCP's durability contract):

1. pynetdicom streams the File Meta Information and the received dataset bytes into a temporary
   file under ``<spool>/.incoming`` (same file system as the spool);
2. :meth:`Spool.commit` hashes it (BLAKE3), ``fsync``\\ s it, renames it to
   ``<spool>/<h[:2]>/<h>.dcm`` and ``fsync``\\ s that directory;
3. the caller records it in PostgreSQL and only then answers 0x0000.

File names are the BLAKE3 of the content, so an identical re-send maps onto the same file and a
re-send with different bytes keeps both. Temporary files left by a crash were never
acknowledged; :meth:`Spool.prepare` removes them at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blake3 import blake3

from dicom_nodes.errors import OutOfResources

__all__ = ["Spool", "SpooledFile"]

LOGGER = logging.getLogger(__name__)
_FANOUT = 256
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class SpooledFile:
    """A file committed to the spool."""

    path: Path
    blake3: bytes
    size: int
    created: bool
    """False when identical bytes were already spooled (nothing new on disk)."""


_LIBC: Any = None


def _syncfs(path: Path) -> bool:
    """``syncfs(2)`` of the file system holding *path*: every dirty page and directory entry
    of it reaches the disk. False where the call is unavailable (non-Linux)."""
    global _LIBC  # noqa: PLW0603 - loaded once
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _LIBC.syncfs.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    return True


def _hash_file(path: Path) -> tuple[bytes, int]:
    """BLAKE3 and size of *path*, read through a fixed buffer (no mapping: a 1 GB object must
    not show up as 1 GB of resident memory)."""
    hasher = blake3(max_threads=1)
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    size = 0
    with path.open("rb", buffering=0) as fh:
        while True:
            got = fh.readinto(buf)
            if not got:
                break
            hasher.update(view[:got])
            size += got
    view.release()
    return hasher.digest(), size


class Spool:
    """Content-addressed durable spool rooted at *root*."""

    def __init__(
        self,
        root: Path,
        *,
        min_free_bytes: int = 0,
        min_free_percent: float = 0.0,
        fsync: bool = True,
    ) -> None:
        self.root = root
        self.incoming = root / ".incoming"
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self.fsync = fsync

    def prepare(self) -> int:
        """Create the spool layout durably and remove stale temporary files; return their count."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(exist_ok=True)
        for i in range(_FANOUT):
            (self.root / f"{i:02x}").mkdir(exist_ok=True)
        self._fsync_dir(self.root)
        stale = 0
        for entry in self.incoming.iterdir():
            if entry.is_file():
                entry.unlink()
                stale += 1
        if stale:
            self._fsync_dir(self.incoming)
            LOGGER.info("removed %d unacknowledged temporary files from the spool", stale)
        return stale

    def path_for(self, digest: bytes) -> Path:
        """Spool path of content with BLAKE3 *digest*."""
        hexdigest = digest.hex()
        return self.root / hexdigest[:2] / f"{hexdigest}.dcm"

    def check_space(self) -> None:
        """Raise :class:`OutOfResources` when free space is under either watermark."""
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            raise OutOfResources(f"spool not accessible: {exc.strerror}") from exc
        free = st.f_bavail * st.f_frsize
        total = st.f_blocks * st.f_frsize
        if free < self.min_free_bytes or (total and 100.0 * free / total < self.min_free_percent):
            raise OutOfResources(
                f"spool free space {free} bytes is under the watermark "
                f"({self.min_free_bytes} bytes / {self.min_free_percent}%)"
            )

    def commit(self, temp_path: Path) -> SpooledFile:
        """Make *temp_path* durable in the spool (hash, fsync, rename, fsync directory)."""
        try:
            digest, size = _hash_file(temp_path)
            target = self.path_for(digest)
            if target.exists():
                return SpooledFile(target, digest, size, created=False)
            if self.fsync:
                fd = os.open(temp_path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.rename(temp_path, target)
            self._fsync_dir(target.parent)
        except OSError as exc:
            raise OutOfResources(f"spool write failed: {exc.strerror}") from exc
        return SpooledFile(target, digest, size, created=True)

    def commit_bytes(self, datas: Sequence[bytes], temp_dir: Path) -> list[SpooledFile]:
        """Make many in-memory files durable at once (files the node makes itself, such as
        de-identified copies): hash in memory, skip what is already spooled, write and rename
        the rest, then one ``syncfs`` of the spool's file system instead of two fsyncs per file
        (falls back to them where ``syncfs`` is unavailable). Returns once all are durable."""
        out: list[SpooledFile] = []
        written: list[Path] = []
        try:
            for data in datas:
                digest = blake3(data, max_threads=1).digest()
                target = self.path_for(digest)
                if target.exists():
                    out.append(SpooledFile(target, digest, len(data), created=False))
                    continue
                temp = temp_dir / f"{os.getpid()}-{digest.hex()[:16]}.tmp"
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                os.rename(temp, target)
                written.append(target)
                out.append(SpooledFile(target, digest, len(data), created=True))
            if written and self.fsync and not _syncfs(self.root):
                for path in written:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                for directory in {path.parent for path in written}:
                    self._fsync_dir(directory)
        except OSError as exc:
            raise OutOfResources(f"spool write failed: {exc.strerror}") from exc
        return out

    def discard(self, spooled: SpooledFile) -> None:
        """Undo :meth:`commit` of a file that could not be recorded (if it created the file)."""
        if spooled.created:
            try:
                spooled.path.unlink()
                self._fsync_dir(spooled.path.parent)
            except OSError:
                LOGGER.warning("could not remove unrecorded spool file %s", spooled.path.name)

    def _fsync_dir(self, directory: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
