"""The durable spool: content-addressed files that survive power loss once acknowledged.

A received instance becomes durable in this order (the SCP's durability contract):

1. pynetdicom streams the File Meta Information and the received dataset bytes into a temporary
   file under ``<spool>/.incoming`` (same file system as the spool);
2. :meth:`Spool.place` names it by its BLAKE3 (usually computed while it was written) and
   renames it to ``<spool>/<h[:2]>/<h>.dcm``;
3. :meth:`Spool.make_durable` ``fsync``\\ s the file and then that directory, while the caller
   records the instance in PostgreSQL (both wait on the disk and release the GIL, so they
   overlap); the caller answers 0x0000 only after both returned.

Until step 3 has returned, the file is only in the page cache; a process killed in between
leaves it there complete (the kernel still writes it), so only a machine that goes down
(power loss, kernel crash) can lose it, and then the instance was never acknowledged. What a
row recorded in that window means after such a crash is described in
``docs/architecture.md`` (receive path). :meth:`Spool.commit` does both steps for callers
that record nothing in between.

File names are the BLAKE3 of the content, so an identical re-send maps onto the same file and a
re-send with different bytes keeps both. A file found under its name is made durable again
before the re-send is answered (the association that placed it may still be in step 3), and is
replaced when its size is not the content's (a file placed just before a power loss can come
back empty). Temporary files left by a crash were never acknowledged; :meth:`Spool.prepare`
removes them at start-up.

Because identical bytes share one file, a receiver whose instance could not be recorded may not
simply delete the file it created: another association may have recorded the same bytes in
the meantime. :meth:`Spool.discard` marks the file in ``<spool>/.unrecorded``;
:meth:`Spool.sweep_unrecorded` deletes marked files once the database says no row needs them,
and :meth:`Spool.ensure_present` (after recording bytes that were already spooled) puts a file
back that a sweep removed in between. Both run under one lock file, so the two cannot cross.

A process killed after step 2 and before its row commits (``kill -9``, the OOM killer, power
loss) leaves a file no row names and no marker: nobody was answered for it, but it holds
patient data. :meth:`Spool.sweep_orphans` (the worker's housekeeping, one fan-out directory at
a time) deletes files older than :data:`ORPHAN_MIN_AGE` that the database says no row needs,
under the same lock; a writer that finds its bytes already spooled refreshes the file's time
under that lock (:meth:`Spool.commit_bytes`) or puts it back (:meth:`Spool.ensure_present`),
:meth:`Spool.place` replaces a truncated file under it, and a receipt slow enough to meet a
sweep checks its file after its commit (:meth:`Spool.still_present`), so a sweep never takes a
file a row is about to name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blake3 import blake3

from dicom_nodes.errors import OutOfResources

__all__ = ["FANOUT", "ORPHAN_MIN_AGE", "Spool", "SpooledFile"]

LOGGER = logging.getLogger(__name__)
FANOUT = 256
"""Number of fan-out directories (``00`` … ``ff``) under the spool root."""
_CHUNK = 1 << 20
_ORPHAN_BATCH = 500
UNRECORDED_MIN_AGE = 5.0
"""Seconds a file marked unrecorded waits before a sweep may delete it."""
ORPHAN_MIN_AGE = 86400.0
"""Seconds since its last write before an unmarked file no row names may be deleted: far
longer than any worker step takes between writing a file and committing the row that names
it; a receipt that takes longer than half of it checks its file is still there before it
answers (:meth:`Spool.still_present`)."""


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


def _older(entry: os.DirEntry[str], cutoff: float) -> bool:
    """Whether *entry* was last written before *cutoff* (False when it is gone meanwhile)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime < cutoff
    except FileNotFoundError:
        return False


class Spool:
    """Content-addressed durable spool rooted at *root*."""

    def __init__(
        self,
        root: Path,
        *,
        min_free_bytes: int = 0,
        min_free_percent: float = 0.0,
        fsync: bool = True,
        unrecorded_min_age: float = UNRECORDED_MIN_AGE,
    ) -> None:
        self.root = root
        self.unrecorded_min_age = unrecorded_min_age
        self.incoming = root / ".incoming"
        self.unrecorded = root / ".unrecorded"
        self._marked = True  # until a sweep finds none (markers survive restarts)
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self.fsync = fsync

    def prepare(self) -> int:
        """Create the spool layout durably and remove stale temporary files; return their count."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(exist_ok=True)
        self.unrecorded.mkdir(exist_ok=True)
        for i in range(FANOUT):
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

    def commit(self, temp_path: Path, written: tuple[bytes, int] | None = None) -> SpooledFile:
        """Make *temp_path* durable in the spool: :meth:`place`, then :meth:`make_durable`."""
        spooled = self.place(temp_path, written)
        self.make_durable(spooled)
        return spooled

    def place(self, temp_path: Path, written: tuple[bytes, int] | None = None) -> SpooledFile:
        """Put *temp_path* under its content name, not yet durable: hash it (unless *written*
        gives the BLAKE3 and size computed while it was written) and rename it; when the name
        exists with the content's size, leave *temp_path* where it is (``created`` False).
        :meth:`make_durable` must return before the instance is acknowledged."""
        try:
            digest, size = written if written is not None else _hash_file(temp_path)
            target = self.path_for(digest)
            try:
                found = os.stat(target).st_size
            except FileNotFoundError:
                found = None
            if found == size:
                return SpooledFile(target, digest, size, created=False)
            if found is None:
                os.replace(temp_path, target)
            else:
                # Placed just before the machine went down, never made durable: the name is
                # right, the content did not survive. Nobody was answered 0x0000 for it.
                LOGGER.warning("spool file %s is %d bytes, not %d: replaced",
                               target.name, found, size)  # fmt: skip
                with self._locked():  # not between a sweep's look at the old file and its unlink
                    os.replace(temp_path, target)
        except OSError as exc:
            raise OutOfResources(f"spool write failed: {exc.strerror}") from exc
        return SpooledFile(target, digest, size, created=True)

    def make_durable(self, spooled: SpooledFile) -> None:
        """``fsync`` a placed file, then its directory (for a file found already there too: the
        association that placed it may not have synced it yet). Blocks on the disk with the GIL
        released, so it can run in a thread beside the database commit. A found file that a
        sweep removed meanwhile is left to :meth:`ensure_present` (which syncs what it puts
        back)."""
        try:
            self._fsync_file(spooled.path)
            self._fsync_dir(spooled.path.parent)
        except FileNotFoundError:
            if spooled.created:
                raise OutOfResources("spool write failed: the placed file vanished") from None
        except OSError as exc:
            raise OutOfResources(f"spool write failed: {exc.strerror}") from exc

    def _fsync_file(self, path: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

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
                if target.exists() and self._keep(target):
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
        """Undo :meth:`commit` of a file that could not be recorded, or that no row needs: if
        it created the file, mark it for :meth:`sweep_unrecorded` (identical bytes recorded by
        another association share it, so only the database can say it may go)."""
        if spooled.created:
            try:
                self.unrecorded.mkdir(exist_ok=True)
                (self.unrecorded / spooled.path.name).touch()
                self._marked = True
            except OSError:
                LOGGER.warning("could not mark unrecorded spool file %s", spooled.path.name)

    @property
    def has_unrecorded(self) -> bool:
        """Whether files may be marked for :meth:`sweep_unrecorded`."""
        return self._marked

    def sweep_unrecorded(self, unreferenced: Callable[[list[str]], list[str]]) -> int:
        """Delete marked files that *unreferenced* (the database) says no row needs; return
        how many. Markers younger than :attr:`unrecorded_min_age` seconds wait (a COMMIT cut
        in flight has long finished on the server by then). Exceptions of *unreferenced*
        propagate and leave every marker in place."""
        with self._locked():
            now = time.time()
            try:
                entries = [e for e in os.scandir(self.unrecorded) if e.name.endswith(".dcm")]
            except FileNotFoundError:
                entries = []
            marks = [e.name for e in entries if now - e.stat().st_mtime >= self.unrecorded_min_age]
            if not marks:
                self._marked = len(entries) > 0
                return 0
            paths = {str(self.root / name[:2] / name): name for name in marks}
            free = set(unreferenced(sorted(paths)))
            removed = 0
            for path, name in paths.items():
                if path in free:
                    with contextlib.suppress(FileNotFoundError):
                        Path(path).unlink()
                        removed += 1
                (self.unrecorded / name).unlink(missing_ok=True)
            self._marked = len(entries) > len(marks)
        if removed:
            LOGGER.info("removed %d spool files no recorded instance needs", removed)
        return removed

    def _keep(self, target: Path) -> bool:
        """Whether *target* is spooled already; if so its modification time is now, so that
        :meth:`sweep_orphans` leaves it to the row about to name it."""
        with self._locked():
            try:
                os.utime(target)
            except FileNotFoundError:
                return False
            return True

    def sweep_orphans(
        self,
        fanout: int,
        unreferenced: Callable[[list[str]], list[str]],
        min_age: float = ORPHAN_MIN_AGE,
    ) -> int:
        """Delete the files of fan-out directory *fanout* (0 … :data:`FANOUT` - 1) last
        written more than *min_age* seconds ago that *unreferenced* (the database) says no row
        needs; return how many. Exceptions of *unreferenced* propagate and delete nothing."""
        directory = self.root / f"{fanout:02x}"
        cutoff = time.time() - min_age
        try:
            with os.scandir(directory) as entries:
                old = [e.path for e in entries if e.name.endswith(".dcm") and _older(e, cutoff)]
        except FileNotFoundError:
            return 0
        removed = 0
        for start in range(0, len(old), _ORPHAN_BATCH):
            with self._locked():
                for path in unreferenced(sorted(old[start : start + _ORPHAN_BATCH])):
                    try:
                        if os.stat(path).st_mtime >= cutoff:
                            continue  # a writer found its bytes here since the scan
                        os.unlink(path)
                    except FileNotFoundError:
                        continue
                    removed += 1
        if removed:
            LOGGER.info("removed %d spool files in %s that no row names (older than %.0f s)",
                        removed, directory.name, min_age)  # fmt: skip
        return removed

    def still_present(self, spooled: SpooledFile) -> bool:
        """Whether a placed file is still there, looked at under the sweeps' lock: after its
        row committed, a sweep sees the row, so the answer holds (for a receipt that took so
        long that a sweep may have taken the file before its row committed)."""
        with self._locked():
            return spooled.path.exists()

    def sweep_temp(self, name: str, older_than: float = ORPHAN_MIN_AGE) -> int:
        """Delete files in ``<spool>/<name>`` (a writer's temporary directory) last written
        more than *older_than* seconds ago: left by a writer killed before its rename. A file
        that cannot be looked at or removed is left for the next sweep."""
        cutoff = time.time() - older_than
        removed = 0
        try:
            with os.scandir(self.root / name) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        if entry.is_file(follow_symlinks=False) and _older(entry, cutoff):
                            os.unlink(entry.path)
                            removed += 1
        except FileNotFoundError:
            return 0
        return removed

    def ensure_present(self, spooled: SpooledFile, temp_path: Path) -> None:
        """After recording bytes that were already spooled (``created`` False): if a sweep
        removed the file meanwhile, put it back from *temp_path* (the same bytes)."""
        with self._locked():
            if spooled.path.exists():
                return
            try:
                os.link(temp_path, spooled.path)
                if self.fsync:
                    fd = os.open(spooled.path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                self._fsync_dir(spooled.path.parent)
            except OSError as exc:
                raise OutOfResources(f"spool write failed: {exc.strerror}") from exc
            LOGGER.warning("spool file %s restored after a concurrent sweep", spooled.path.name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / ".unrecorded.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _fsync_dir(self, directory: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
