"""Verification of the audit chain: recompute every hash from the stored bytes.

The stored ``hash`` column is never trusted: each event's hash is recomputed from the hash
recomputed for its predecessor (:mod:`audit.chain`); a stored hash is only used to *classify*
damage once the recomputation disagrees with it. Signed checkpoints (database table and the
external file) whose signature verifies with the keyring pin the chain at their sequence
numbers, which catches what a self-consistent chain cannot show: truncation and rewriting.

Damage kinds (the first, by sequence number, is reported):

- ``deleted``: a sequence number is missing (or later events were renumbered down).
- ``edited``: an event's bytes changed (its successor still chains from its stored hash).
- ``inserted``: an event that was never appended sits in the chain (later ones renumbered up),
  or events lie beyond the head.
- ``reordered``: an event's bytes belong at another position.
- ``truncated``: the newest events are gone (the head or a signed checkpoint is beyond them).
- ``rewritten-without-key``: the chain is self-consistent but contradicts a signed checkpoint,
  or a checkpoint's signature does not verify (someone without the key re-signed or altered it).
"""

from __future__ import annotations

import multiprocessing
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice, pairwise
from typing import Any

import psycopg
import psycopg.sql
from blake3 import blake3

from audit.chain import GENESIS, link_hash
from audit.checkpoint import Checkpoint, load_checkpoints
from audit.keys import Keyring
from audit.store import Head, read_head

__all__ = ["Damage", "DamageKind", "VerifyReport", "scan_chain", "verify"]

Row = tuple[int, bytes, bytes]
"""(seq, stored hash, canonical bytes) as read from ``audit_event``."""

_SEQ_LEN = struct.Struct(">QQ")
_LOOK_AHEAD = 10_000
_NEAR = 64
_MIN_SEGMENT = 50_000
PARALLEL_FROM = 200_000
"""Chains at least this long are verified by several processes when a DSN is given."""


class DamageKind(StrEnum):
    EDITED = "edited"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    REWRITTEN = "rewritten-without-key"


@dataclass(frozen=True)
class Damage:
    kind: DamageKind
    seq: int
    """First bad sequence number."""
    detail: str


@dataclass
class ScanResult:
    count: int = 0
    last_seq: int = 0
    last_hash: bytes = GENESIS
    damage: Damage | None = None
    last_matching_checkpoint: int = 0
    start_hash: bytes = GENESIS


@dataclass
class VerifyReport:
    chain_id: str
    head_seq: int
    checked: int
    last_seq: int
    checkpoints_db: int
    checkpoints_file: int
    last_signed_seq: int
    damages: list[Damage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.damages

    @property
    def damage(self) -> Damage | None:
        """The damage with the lowest sequence number."""
        return min(self.damages, key=lambda d: d.seq) if self.damages else None

    def summary(self) -> str:
        if self.ok:
            rate = self.checked / self.elapsed if self.elapsed > 0 else 0.0
            return (
                f"audit chain {self.chain_id} intact: {self.checked} events"
                f" (seq 1..{self.last_seq}), {self.checkpoints_db} checkpoints in the database,"
                f" {self.checkpoints_file} in the file, signed up to seq {self.last_signed_seq};"
                f" {self.elapsed:.1f} s"
                f" ({rate:,.0f} events/s)"
            )
        d = self.damage
        assert d is not None
        return f"audit chain {self.chain_id} DAMAGED: {d.kind.value} at seq {d.seq}: {d.detail}"


def _classify(p2: bytes | None, p: bytes, row: Row, ahead: list[Row]) -> Damage:
    """Explain why event *row* does not chain from *p* (hash at seq-1; *p2* at seq-2)."""
    b, stored, body = row
    nxt = ahead[0] if ahead else None
    if nxt is not None and link_hash(stored, b + 1, nxt[2]) == nxt[1]:
        moved = _body_belongs_elsewhere(body, b, ahead)
        if moved is not None:
            return Damage(DamageKind.REORDERED, b, f"bytes of event {moved} found at seq {b}")
        return Damage(DamageKind.EDITED, b, "event bytes changed (stored hash no longer matches)")
    if nxt is not None and link_hash(stored, b + 2, nxt[2]) == nxt[1]:
        return Damage(DamageKind.DELETED, b, f"event {b} deleted and later events renumbered")
    if p2 is not None and link_hash(p2, b - 1, body) == stored:
        return Damage(DamageKind.INSERTED, b - 1, f"event at seq {b - 1} was not appended here")
    origin = _row_belongs_elsewhere(row, p, ahead)
    if origin is not None:
        return Damage(DamageKind.REORDERED, b, f"event appended as seq {origin} found at seq {b}")
    if nxt is not None and link_hash(p, b, nxt[2]) == nxt[1]:
        after = ahead[1] if len(ahead) > 1 else None
        if after is None or link_hash(nxt[1], b + 1, after[2]) == after[1]:
            return Damage(DamageKind.INSERTED, b, f"event at seq {b} was not appended here")
    return Damage(DamageKind.EDITED, b, "event bytes and stored hash changed")


def _body_belongs_elsewhere(body: bytes, b: int, ahead: list[Row]) -> int | None:
    window = ahead[:_LOOK_AHEAD]
    for prev, cur in pairwise(window):
        if link_hash(prev[1], cur[0], body) == cur[1]:
            return cur[0]
    return None


def _row_belongs_elsewhere(row: Row, p: bytes, ahead: list[Row]) -> int | None:
    """Sequence number at which *row* (bytes with its stored hash) was appended, if elsewhere."""
    b, stored, body = row
    for prev, cur in pairwise(ahead):  # moved forward, predecessor in place
        if link_hash(prev[1], cur[0], body) == stored:
            return cur[0]
    near = ahead[:_NEAR]
    for j in range(b + 1, b + 1 + len(near)):  # swapped with a nearby event
        for cand in (p, *(r[1] for r in near)):
            if link_hash(cand, j, body) == stored:
                return j
    return None


def scan_chain(
    rows: Iterable[Row],
    checkpoints: dict[int, bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    start: tuple[int, bytes, bytes | None] = (1, GENESIS, None),
    stop: int | None = None,
    last_matching_checkpoint: int = 0,
) -> ScanResult:
    """Recompute the chain over *rows* (ordered by seq) and stop at the first damage.

    *checkpoints* maps sequence numbers to hashes from checkpoints whose signature verified.
    *start* is (first seq, hash before it, hash before that or None); *stop* ends the scan
    before that seq (rows after it are read only to classify damage).
    """
    pins = checkpoints or {}
    res = ScanResult(last_matching_checkpoint=last_matching_checkpoint, start_hash=start[1])
    it: Iterator[Row] = iter(rows)
    expected, prev, prev2 = start
    end = stop if stop is not None else -1
    pack = _SEQ_LEN.pack
    for seq, stored, body in it:
        if expected == end:
            break
        if seq != expected:
            res.damage = Damage(
                DamageKind.DELETED,
                expected,
                f"events {expected}..{seq - 1} missing" if seq > expected + 1 else "event missing",
            )
            break
        h = blake3(prev + pack(seq, len(body)) + body).digest()
        if h != stored:
            ahead = list(islice(it, _LOOK_AHEAD))
            res.damage = _classify(prev2, prev, (seq, bytes(stored), bytes(body)), ahead)
            break
        if seq in pins:
            if pins[seq] != h:
                first = res.last_matching_checkpoint + 1
                res.damage = Damage(
                    DamageKind.REWRITTEN,
                    first,
                    f"chain differs from the checkpoint signed at seq {seq}: events "
                    f"{first}..{seq} were rewritten",
                )
                break
            res.last_matching_checkpoint = seq
        prev2, prev = prev, h
        expected = seq + 1
        res.count += 1
        if progress is not None and not seq & 0x3FFF:
            progress(seq)
    res.last_seq = expected - 1
    res.last_hash = prev
    return res


def _rows(conn: psycopg.Connection[Any], batch: int, first: int = 1) -> Iterator[Row]:
    with conn.cursor(name="audit_verify", binary=True) as cur:
        cur.itersize = batch
        cur.execute(
            "SELECT seq, hash, body FROM audit_event WHERE seq >= %s ORDER BY seq", (first,)
        )
        yield from cur


def _scan_segment(
    dsn: str, snapshot: str, first: int, stop: int | None, *, pins: dict[int, bytes], batch: int
) -> ScanResult:
    """Worker process: scan seq *first*..*stop*-1 in the exported *snapshot*.

    The hashes stored before *first* are only a hypothesis; :func:`_scan_parallel` accepts the
    result only if the previous segment recomputed exactly those hashes.
    """
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            conn.execute(
                psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(snapshot))
            )
            known: dict[int, bytes] = dict(
                conn.execute(
                    "SELECT seq, hash FROM audit_event WHERE seq BETWEEN %s AND %s",
                    (first - 2, first - 1),
                ).fetchall()
            )
            prev = bytes(known.get(first - 1, GENESIS)) if first > 1 else GENESIS
            prev2 = bytes(known.get(first - 2, GENESIS)) if first > 1 else None
            before = max((p for p in pins if p < first), default=0)
            return scan_chain(
                _rows(conn, batch, first),
                pins,
                start=(first, prev, prev2),
                stop=stop,
                last_matching_checkpoint=before,
            )


def _scan_parallel(
    conn: psycopg.Connection[Any],
    dsn: str,
    workers: int,
    *,
    pins: dict[int, bytes],
    progress: Callable[[int], None] | None,
    batch: int,
) -> ScanResult:
    """Scan consecutive segments in *workers* processes sharing *conn*'s snapshot."""
    row = conn.execute("SELECT pg_export_snapshot(), coalesce(max(seq), 0) FROM audit_event")
    snapshot, top = row.fetchone() or ("", 0)
    size = max(_MIN_SEGMENT, -(-int(top) // (workers * 2)))
    starts = list(range(1, int(top) + 1, size)) or [1]
    ctx = multiprocessing.get_context("spawn")
    merged = ScanResult()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(
                _scan_segment,
                dsn,
                str(snapshot),
                a,
                starts[i + 1] if i + 1 < len(starts) else None,
                pins=pins,
                batch=batch,
            )
            for i, a in enumerate(starts)
        ]
        for i, fut in enumerate(futures):
            part = fut.result()
            if i and part.count and merged.last_hash != part.start_hash:
                raise RuntimeError("parallel verify: segments do not join")  # pragma: no cover
            merged.count += part.count
            if part.count or part.damage:
                merged.last_seq, merged.last_hash = part.last_seq, part.last_hash
                merged.last_matching_checkpoint = part.last_matching_checkpoint
            if part.damage is not None:
                merged.damage = part.damage
                for f in futures[i + 1 :]:
                    f.cancel()
                break
            if progress is not None:
                progress(merged.last_seq)
    return merged


def verify(
    conn: psycopg.Connection[Any],
    keyring: Keyring,
    external: Sequence[Checkpoint] = (),
    *,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 20_000,
    dsn: str | None = None,
    workers: int = 1,
) -> VerifyReport:
    """Verify the chain, the database checkpoints and *external* ones (read them *before*).

    Runs one REPEATABLE READ, read-only transaction on *conn* (which must not be in one), so
    the head, the events and the checkpoints are one snapshot while appends go on. With *dsn*
    and *workers* > 1, long chains are split into segments recomputed by worker processes
    that import the same snapshot (``pg_export_snapshot``); each segment starts from the
    stored hash before it, and is accepted only if the previous segment recomputed that hash.
    """
    started = time.monotonic()
    saved = conn.isolation_level, conn.read_only
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        with conn.transaction():
            head = read_head(conn)
            pending = conn.execute("SELECT count(*) FROM audit_pending").fetchone()
            db_cps = load_checkpoints(conn)
            report = VerifyReport(head.chain_id, head.seq, 0, 0, len(db_cps), len(external), 0)
            pins = _check_checkpoints(head, keyring, db_cps, external, report)
            tick = None if progress is None else (lambda seq: progress(seq, head.seq))
            if dsn and workers > 1 and head.seq >= PARALLEL_FROM:
                scan = _scan_parallel(conn, dsn, workers, pins=pins, progress=tick, batch=batch)
            else:
                scan = scan_chain(_rows(conn, batch), pins, tick)
    finally:
        conn.isolation_level, conn.read_only = saved
    report.checked = scan.count
    report.last_seq = scan.last_seq
    if scan.damage is not None:
        report.damages.append(scan.damage)
    else:
        _check_tail(head, scan, pins, report)
    if pending and pending[0]:
        report.warnings.append(f"{pending[0]} enqueued events are not sealed into the chain yet")
    report.elapsed = time.monotonic() - started
    return report


def _check_checkpoints(
    head: Head,
    keyring: Keyring,
    db_cps: Sequence[Checkpoint],
    file_cps: Sequence[Checkpoint],
    report: VerifyReport,
) -> dict[int, bytes]:
    """Check signatures; return seq -> hash of the valid ones; record damage in *report*."""
    pins: dict[int, bytes] = {}
    for entry in keyring.entries.values():
        if not keyring.endorsement_ok(entry):
            report.warnings.append(f"keyring: endorsement of key {entry.key_id} does not verify")
    for where, cps in (("database", db_cps), ("file", file_cps)):
        for cp in cps:
            if cp.chain_id != head.chain_id:
                report.damages.append(
                    Damage(
                        DamageKind.REWRITTEN,
                        1,
                        f"{where} checkpoint at seq {cp.seq} is for chain {cp.chain_id}; the "
                        f"database holds chain {head.chain_id} (replaced)",
                    )
                )
            elif not cp.signature_ok(keyring):
                why = "unknown key" if cp.key_id not in keyring.entries else "invalid signature"
                report.damages.append(
                    Damage(
                        DamageKind.REWRITTEN,
                        cp.seq,
                        f"{where} checkpoint at seq {cp.seq}: {why} (key {cp.key_id})",
                    )
                )
            elif pins.setdefault(cp.seq, cp.hash) != cp.hash:
                report.damages.append(
                    Damage(
                        DamageKind.REWRITTEN,
                        cp.seq,
                        f"two validly signed checkpoints disagree at seq {cp.seq}",
                    )
                )
    db_set = {(c.seq, c.hash, c.signature) for c in db_cps}
    file_set = {(c.seq, c.hash, c.signature) for c in file_cps}
    for cp in file_cps:
        if (cp.seq, cp.hash, cp.signature) not in db_set and cp.signature_ok(keyring):
            report.damages.append(
                Damage(
                    DamageKind.DELETED,
                    cp.seq,
                    f"checkpoint at seq {cp.seq} is in the file but was removed from the database",
                )
            )
    if file_cps:
        missing = sum(1 for c in db_cps if (c.seq, c.hash, c.signature) not in file_set)
        if missing:
            report.warnings.append(
                f"{missing} database checkpoints are not in this checkpoint file "
                "(other nodes' files, or publishing failed)"
            )
    report.last_signed_seq = max(pins, default=0)
    return pins


def _check_tail(head: Head, scan: ScanResult, pins: dict[int, bytes], report: VerifyReport) -> None:
    m = scan.last_seq
    beyond = [s for s in pins if s > m]
    if head.seq > m or beyond:
        target = max([head.seq, *beyond])
        why = "the head" if head.seq > m else f"a signed checkpoint (seq {min(beyond)})"
        report.damages.append(
            Damage(
                DamageKind.TRUNCATED,
                m + 1,
                f"events {m + 1}..{target} are missing; {why} records them",
            )
        )
    elif head.seq < m:
        report.damages.append(
            Damage(
                DamageKind.INSERTED,
                head.seq + 1,
                f"events {head.seq + 1}..{m} lie beyond the head (not appended by audit_append)",
            )
        )
    elif head.hash != scan.last_hash:
        report.damages.append(
            Damage(DamageKind.EDITED, m, "the head's hash differs from the last event's")
        )
    if not report.damages and m > report.last_signed_seq:
        report.warnings.append(
            f"events {report.last_signed_seq + 1}..{m} are not yet covered by a signed checkpoint"
        )
