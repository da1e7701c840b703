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

import logging
import os
from dataclasses import dataclass
from pathlib import Path

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
