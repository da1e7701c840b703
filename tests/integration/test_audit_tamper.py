"""Tampering with the audit trail as a superuser is detected by verify, kind and position."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from audit import DamageKind, generate_key, read_head, sign_checkpoint
from audit.chain import chain_hashes, link_hash
from audit.store import Head
from tests.integration._audit_support import Trail

pytestmark = pytest.mark.integration


@pytest.fixture
def trail(fresh_dsn: str, tmp_path: Path) -> Trail:
    """100 events, checkpoints at 25, 50, 75 and 100 (database and file)."""
    t = Trail(fresh_dsn, tmp_path)
    report = t.verify()
    assert report.ok, report.summary()
    assert (report.checked, report.checkpoints_db, report.checkpoints_file) == (100, 4, 4)
    return t


def _damage(trail: Trail) -> tuple[DamageKind, int]:
    report = trail.verify()
    assert not report.ok
    d = report.damage
    assert d is not None
    return d.kind, d.seq


def test_edited_byte(trail: Trail) -> None:
    _h, body = trail.row(37)
    edited = body.replace(b'"outcome":0', b'"outcome":8')
    assert edited != body
    trail.tamper(("UPDATE audit_event SET body = %s WHERE seq = 37", (edited,)))
    assert _damage(trail) == (DamageKind.EDITED, 37)


def test_deleted_middle_row(trail: Trail) -> None:
    trail.tamper("DELETE FROM audit_event WHERE seq = 40")
    assert _damage(trail) == (DamageKind.DELETED, 40)


def test_deleted_newest_rows_caught_by_checkpoint(trail: Trail) -> None:
    h90, _ = trail.row(90)
    # a careful attacker also moves the head back and removes the newest database checkpoint
    trail.tamper(
        "DELETE FROM audit_event WHERE seq > 90",
        ("UPDATE audit_head SET seq = 90, hash = %s", (h90,)),
        "DELETE FROM audit_checkpoint WHERE seq > 90",
    )
    report = trail.verify()
    assert report.damage is not None
    assert (report.damage.kind, report.damage.seq) == (DamageKind.TRUNCATED, 91)
    assert "signed checkpoint" in report.damage.detail
    assert any(d.kind is DamageKind.DELETED and d.seq == 100 for d in report.damages)


def test_deleted_newest_rows_head_left(trail: Trail) -> None:
    trail.tamper("DELETE FROM audit_event WHERE seq > 95")
    assert _damage(trail) == (DamageKind.TRUNCATED, 96)


def test_inserted_forged_row(trail: Trail) -> None:
    h59, _ = trail.row(59)
    forged = trail.row(10)[1]  # a plausible event, with a correct-looking hash
    trail.tamper(
        "UPDATE audit_event SET seq = seq + 1000000 WHERE seq >= 60",
        "UPDATE audit_event SET seq = seq - 999999 WHERE seq >= 1000000",
        (
            "INSERT INTO audit_event (seq, hash, body, event_time, event_id, step, keys)"
            " VALUES (60, %s, %s, now(), '110104', 'received', '{}')",
            (link_hash(h59, 60, forged), forged),
        ),
        "UPDATE audit_head SET seq = 101",
    )
    assert _damage(trail) == (DamageKind.INSERTED, 60)


def test_inserted_row_beyond_head(trail: Trail) -> None:
    h100, body = trail.row(100)
    trail.tamper(
        (
            "INSERT INTO audit_event (seq, hash, body, event_time, event_id, step, keys)"
            " VALUES (101, %s, %s, now(), '110104', 'received', '{}')",
            (link_hash(h100, 101, body), body),
        )
    )
    assert _damage(trail) == (DamageKind.INSERTED, 101)


def test_swapped_rows(trail: Trail) -> None:
    trail.tamper(
        "UPDATE audit_event SET seq = 1000020 WHERE seq = 20",
        "UPDATE audit_event SET seq = 20 WHERE seq = 21",
        "UPDATE audit_event SET seq = 21 WHERE seq = 1000020",
    )
    assert _damage(trail) == (DamageKind.REORDERED, 20)


def test_rewritten_chain_without_key(trail: Trail, tmp_path: Path) -> None:
    rows = [trail.row(s) for s in range(1, 101)]
    bodies = [b for _h, b in rows]
    bodies[59] = bodies[59].replace(b'"outcome":0', b'"outcome":4')  # event 60 changed
    hashes = chain_hashes(bytes(32), 1, bodies)
    statements: list[str | tuple[str, tuple[object, ...]]] = [
        ("UPDATE audit_event SET body = %s, hash = %s WHERE seq = %s", (b, h, s))
        for s, (b, h) in enumerate(zip(bodies, hashes, strict=True), 1)
        if s >= 60
    ]
    statements.append(("UPDATE audit_head SET hash = %s", (hashes[-1],)))
    trail.tamper(*statements)
    # the chain is self-consistent: only the checkpoint at 75 (and 100) contradicts it
    report = trail.verify()
    assert report.damage is not None
    assert (report.damage.kind, report.damage.seq) == (DamageKind.REWRITTEN, 51)
    assert "51..75" in report.damage.detail


def test_checkpoints_resigned_with_foreign_key(trail: Trail, tmp_path: Path) -> None:
    """Rewriting from seq 1 and re-signing every checkpoint with a key not in the keyring."""
    rows = [trail.row(s) for s in range(1, 101)]
    bodies = [b for _h, b in rows]
    bodies[0] = bodies[0].replace(b'"outcome":0', b'"outcome":4')
    hashes = chain_hashes(bytes(32), 1, bodies)
    forger = generate_key(tmp_path / "forger.pem", tmp_path / "forger.json")
    with psycopg.connect(trail.dsn) as conn:
        chain_id = read_head(conn).chain_id
    statements: list[str | tuple[str, tuple[object, ...]]] = [
        ("UPDATE audit_event SET body = %s, hash = %s WHERE seq = %s", (b, h, s))
        for s, (b, h) in enumerate(zip(bodies, hashes, strict=True), 1)
    ]
    statements.append(("UPDATE audit_head SET hash = %s", (hashes[-1],)))
    statements.append("DELETE FROM audit_checkpoint")
    for seq in (25, 50, 75, 100):
        cp = sign_checkpoint(forger, Head(chain_id, seq, hashes[seq - 1]))
        statements.append(
            (
                "INSERT INTO audit_checkpoint (chain_id, seq, hash, signed_at, key_id, signature)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (cp.chain_id, cp.seq, cp.hash, cp.signed_at, cp.key_id, cp.signature),
            )
        )
    trail.tamper(*statements)
    report = trail.verify()
    assert report.damage is not None
    assert (report.damage.kind, report.damage.seq) == (DamageKind.REWRITTEN, 1)
    assert any("unknown key" in d.detail for d in report.damages)
