"""The ``deidentify:<profile>`` route step: spooled original → spooled de-identified copy.

The worker calls :meth:`DeidStep.apply_many` for a routing batch, inside the routing
transaction: the copies are written to the content-addressed spool and made durable together
(:meth:`~dicom_nodes.spool.store.Spool.commit_bytes`, one file system sync) before the
transaction that records them commits. Output is deterministic
(:mod:`dicom_nodes.deid.engine`), so a routing round that is rolled back and run again writes
the same files under the same names.

An instance is *quarantined* instead of copied — held back, audited, listed for admins, never
forwarded — when it may show burned-in text that no mask rule covers, or when it cannot be
de-identified at all (unreadable, undecodable pixel data under a mask rule). An instance is
never forwarded identified because its de-identification failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from config import Settings, data_path
from config.deid import DeidProfile
from dicom_nodes.deid.engine import Deidentifier
from dicom_nodes.deid.model import BurnedIn, VaultEntry
from dicom_nodes.spool.store import Spool

__all__ = ["DeidCopy", "DeidStep", "Quarantine"]

LOGGER = logging.getLogger(__name__)
STALE_AFTER = 600.0
"""Seconds after which a temporary file of an unfinished copy counts as abandoned (writing one
takes milliseconds, a 1 GB object seconds)."""


@dataclass(frozen=True)
class DeidCopy:
    """A de-identified copy in the spool, and the vault entries it needs."""

    spool_path: Path
    transfer_syntax_uid: str
    size: int
    vault: list[VaultEntry]
    note: str = ""


@dataclass(frozen=True)
class Quarantine:
    """The instance is held back for this profile; *reason* is a short code (no PHI)."""

    reason: str
    vault: list[VaultEntry] = field(default_factory=list)


class DeidStep:
    """De-identifies spooled instances under the configured profiles."""

    def __init__(
        self, profiles: list[DeidProfile], secret: bytes, spool: Spool, *, processes: int = 1
    ) -> None:
        self.engines = {p.name: Deidentifier(p, secret) for p in profiles}
        self.spool = spool
        self.processes = processes
        self._init_args = (profiles, secret, spool.root, spool.fsync)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.tmp = spool.root / ".deid"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.sweep()

    def sweep(self, older_than: float = STALE_AFTER) -> int:
        """Remove temporary files of routing rounds that died (at start-up and from the
        worker's housekeeping); younger ones may belong to another worker writing right now.
        Returns how many were removed."""
        return self.spool.sweep_temp(self.tmp.name, older_than)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeidStep:
        from dicom_nodes.deid.secrets import load_site_secret

        spool = Spool(data_path(settings, settings.spool.path), fsync=settings.spool.fsync)
        processes = settings.deid.processes or default_processes()
        return cls(settings.deid.profiles, load_site_secret(settings), spool, processes=processes)

    def apply_many(
        self, pairs: Sequence[tuple[Path, str]]
    ) -> dict[tuple[Path, str], DeidCopy | Quarantine]:
        """:meth:`apply` for many (file, profile) pairs: in ``processes`` worker processes
        when there are several (de-identification is CPU-bound Python), else here."""
        if self.processes <= 1 or len(pairs) < 2:
            return self._store({pair: self.make(*pair) for pair in pairs})
        with self._pool_lock:  # two routing rounds may run at once (routing and triage jobs)
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_start_child,
                    initargs=self._init_args,
                )
            pool = self._pool
        chunk = max(1, len(pairs) // (self.processes * 4))
        try:
            made = list(pool.map(_make_in_child, pairs, chunksize=chunk))
        except BrokenProcessPool:
            LOGGER.error("de-identification processes died; de-identifying in the worker")
            self._pool = None
            return self._store({pair: self.make(*pair) for pair in pairs})
        return self._store(dict(zip(pairs, made, strict=True)))

    def close(self) -> None:
        """Stop the de-identification processes, if any."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def apply(
        self, source: Path, profile: str, *, text_reviewed: bool = False
    ) -> DeidCopy | Quarantine:
        """De-identify the spooled file *source* under *profile*.

        *text_reviewed*: an admin looked at the pixels and found no identifying text
        (``radiogate quarantine release``); burned-in annotation no longer holds it back."""
        made = self.make(source, profile, text_reviewed=text_reviewed)
        if isinstance(made, Quarantine):
            return made
        return self._store({(source, profile): made})[(source, profile)]

    def make(
        self, source: Path, profile: str, *, text_reviewed: bool = False
    ) -> _Made | Quarantine:
        """The de-identified bytes of *source* (not yet stored), or why it is held back."""
        engine = self.engines[profile]
        try:
            data = source.read_bytes()
            out, result = engine.deidentify_bytes(data)
        except Exception as exc:  # any failure holds the instance back; never PHI in the log
            LOGGER.error("de-identification (%s) failed: %s", profile, type(exc).__name__)
            return Quarantine(f"deid-failed:{type(exc).__name__.lower()}")
        if result.burned_in is BurnedIn.NEEDS_REVIEW and not text_reviewed:
            return Quarantine("burned-in-annotation", result.vault)
        syntax = str(result.dataset.file_meta.TransferSyntaxUID)
        note = "pixel regions masked" if result.burned_in is BurnedIn.MASKED else ""
        return _Made(out, syntax, result.vault, note)

    def _store(
        self, made: dict[tuple[Path, str], _Made | Quarantine]
    ) -> dict[tuple[Path, str], DeidCopy | Quarantine]:
        """Write the copies to the spool, durable together (one file system sync)."""
        copies = [(pair, m) for pair, m in made.items() if isinstance(m, _Made)]
        spooled = self.spool.commit_bytes([m.data for _pair, m in copies], self.tmp)
        out: dict[tuple[Path, str], DeidCopy | Quarantine] = dict(made)  # type: ignore[arg-type]
        for (pair, m), file in zip(copies, spooled, strict=True):
            out[pair] = DeidCopy(file.path, m.syntax, file.size, m.vault, m.note)
        return out


@dataclass(frozen=True)
class _Made:
    """A de-identified file in memory, before it is stored."""

    data: bytes
    syntax: str
    vault: list[VaultEntry]
    note: str


def default_processes() -> int:
    """Processes for de-identification when ``deid.processes`` is 0: one per core beyond the
    two the receiver, database and archive need, at most 4 (1: in the worker process)."""
    cores = os.cpu_count() or 1
    return max(1, min(4, cores - 2))


_CHILD: DeidStep | None = None


def _start_child(profiles: list[DeidProfile], secret: bytes, root: Path, fsync: bool) -> None:
    global _CHILD  # noqa: PLW0603 - one step per pool process, made once
    _CHILD = DeidStep(profiles, secret, Spool(root, fsync=fsync))


def _make_in_child(pair: tuple[Path, str]) -> _Made | Quarantine:
    assert _CHILD is not None
    return _CHILD.make(*pair)
