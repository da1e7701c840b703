"""Verification split over worker processes (one exported snapshot) finds the same damage."""

from __future__ import annotations

import importlib
from pathlib import Path

import psycopg
import pytest

from audit import DamageKind, Keyring, VerifyReport
from audit.checkpoint import read_checkpoint_file
from tests.integration._audit_support import Trail

pytestmark = pytest.mark.integration
verify_module = importlib.import_module("audit.verify")  # the package exports the function


@pytest.fixture
def trail(fresh_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trail:
    """1,000 events, checkpoints every 100; segments of 250 events for 2 workers."""
    monkeypatch.setattr(verify_module, "PARALLEL_FROM", 10)
    monkeypatch.setattr(verify_module, "_MIN_SEGMENT", 100)
    return Trail(fresh_dsn, tmp_path, n=1000, every=100)


def _verify(trail: Trail) -> VerifyReport:
    with psycopg.connect(trail.dsn) as conn:
        report: VerifyReport = verify_module.verify(
            conn,
            Keyring.load(trail.keyring_path),
            read_checkpoint_file(trail.file),
            dsn=trail.dsn,
            workers=2,
        )
        return report


def test_intact_parallel(trail: Trail) -> None:
    seen: list[int] = []
    with psycopg.connect(trail.dsn) as conn:
        report = verify_module.verify(
            conn, Keyring.load(trail.keyring_path), read_checkpoint_file(trail.file),
            dsn=trail.dsn, workers=2, progress=lambda seq, _total: seen.append(seq),
        )  # fmt: skip
    assert report.ok, report.summary()
    assert report.checked == 1000 and report.last_signed_seq == 1000
    assert seen == [250, 500, 750, 1000]


@pytest.mark.parametrize("seq", [251, 600, 1000])
def test_edit_in_a_later_segment(trail: Trail, seq: int) -> None:
    _h, body = trail.row(seq)
    trail.tamper(("UPDATE audit_event SET body = %s WHERE seq = %s", (body + b" ", seq)))
    report = _verify(trail)
    assert report.damage is not None
    assert (report.damage.kind, report.damage.seq) == (DamageKind.EDITED, seq)


def test_delete_at_segment_start(trail: Trail) -> None:
    trail.tamper("DELETE FROM audit_event WHERE seq = 501")
    report = _verify(trail)
    assert report.damage is not None
    assert (report.damage.kind, report.damage.seq) == (DamageKind.DELETED, 501)


def test_delete_at_segment_end(trail: Trail) -> None:
    trail.tamper("DELETE FROM audit_event WHERE seq = 750")
    report = _verify(trail)
    assert report.damage is not None
    assert (report.damage.kind, report.damage.seq) == (DamageKind.DELETED, 750)


def test_rewrite_caught_in_a_later_segment(trail: Trail) -> None:
    from audit.chain import chain_hashes

    rows = [trail.row(s) for s in range(1, 1001)]
    bodies = [b for _h, b in rows]
    bodies[640] = bodies[640] + b" "
    hashes = chain_hashes(bytes(32), 1, bodies)
    trail.tamper(
        *[
            ("UPDATE audit_event SET body = %s, hash = %s WHERE seq = %s", (b, h, s))
            for s, (b, h) in enumerate(zip(bodies, hashes, strict=True), 1)
            if s >= 641
        ],
        ("UPDATE audit_head SET hash = %s", (hashes[-1],)),
    )
    report = _verify(trail)
    assert report.damage is not None
    assert (report.damage.kind, report.damage.seq) == (DamageKind.REWRITTEN, 601)
