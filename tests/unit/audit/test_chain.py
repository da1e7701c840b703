"""Hash chain and damage classification over synthetic rows (no database)."""

from __future__ import annotations

import pytest

from audit.chain import GENESIS, chain_hashes, link_hash
from audit.verify import DamageKind, Row, scan_chain


def _chain(n: int) -> list[Row]:
    bodies = [b'{"n":%d}' % i for i in range(1, n + 1)]
    hashes = chain_hashes(GENESIS, 1, bodies)
    return [(i + 1, h, b) for i, (h, b) in enumerate(zip(hashes, bodies, strict=True))]


def test_fixed_width_fields_prevent_shifting() -> None:
    # moving a byte from the body into the sequence number (or across events) changes the hash
    assert link_hash(GENESIS, 1, b"ab") != link_hash(GENESIS, 1, b"a")
    assert link_hash(GENESIS, 12, b"3") != link_hash(GENESIS, 1, b"23")
    assert len(link_hash(GENESIS, 1, b"")) == 32


def test_intact_chain() -> None:
    rows = _chain(50)
    res = scan_chain(rows, {25: rows[24][1], 50: rows[49][1]})
    assert res.damage is None
    assert (res.count, res.last_seq, res.last_hash) == (50, 50, rows[49][1])
    assert res.last_matching_checkpoint == 50


def test_edited_bytes() -> None:
    rows = _chain(20)
    seq, h, body = rows[9]
    rows[9] = (seq, h, body.replace(b"10", b"11"))
    damage = scan_chain(rows).damage
    assert damage is not None and (damage.kind, damage.seq) == (DamageKind.EDITED, 10)


def test_edited_last_event() -> None:
    rows = _chain(5)
    rows[4] = (5, rows[4][1], b"{}")
    damage = scan_chain(rows).damage
    assert damage is not None and (damage.kind, damage.seq) == (DamageKind.EDITED, 5)


def test_deleted_middle() -> None:
    rows = _chain(20)
    del rows[7]
    damage = scan_chain(rows).damage
    assert damage is not None and (damage.kind, damage.seq) == (DamageKind.DELETED, 8)


def test_deleted_and_renumbered() -> None:
    rows = _chain(20)
    del rows[7]
    rows = [(i + 1, h, b) for i, (_s, h, b) in enumerate(rows)]
    damage = scan_chain(rows).damage
    assert damage is not None and (damage.kind, damage.seq) == (DamageKind.DELETED, 8)


@pytest.mark.parametrize("good_hash", [True, False])
def test_inserted_and_renumbered(good_hash: bool) -> None:
    rows = _chain(20)
    forged = b'{"n":"forged"}'
    h = link_hash(rows[5][1], 7, forged) if good_hash else bytes(32)
    rows.insert(6, (7, h, forged))
    rows = [(i + 1, h, b) for i, (_s, h, b) in enumerate(rows)]
    damage = scan_chain(rows).damage
    assert damage is not None and (damage.kind, damage.seq) == (DamageKind.INSERTED, 7)


@pytest.mark.parametrize(("a", "b"), [(4, 5), (4, 9), (18, 19), (19, 20)])
def test_swapped_rows(a: int, b: int) -> None:
    rows = _chain(20)
    ra, rb = rows[a - 1], rows[b - 1]
    rows[a - 1] = (a, rb[1], rb[2])
    rows[b - 1] = (b, ra[1], ra[2])
    damage = scan_chain(rows).damage
    assert damage is not None and (damage.kind, damage.seq) == (DamageKind.REORDERED, a)


def test_swapped_bytes_only() -> None:
    rows = _chain(20)
    rows[3], rows[8] = (4, rows[3][1], rows[8][2]), (9, rows[8][1], rows[3][2])
    damage = scan_chain(rows).damage
    assert damage is not None and (damage.kind, damage.seq) == (DamageKind.REORDERED, 4)


def test_rewritten_chain_contradicts_checkpoint() -> None:
    rows = _chain(30)
    pins = {10: rows[9][1], 20: rows[19][1]}
    bodies = [b for _s, _h, b in rows]
    bodies[14] = b'{"n":"rewritten"}'
    rewritten = chain_hashes(GENESIS, 1, bodies)
    forged = [(i + 1, h, b) for i, (h, b) in enumerate(zip(rewritten, bodies, strict=True))]
    damage = scan_chain(forged, pins).damage
    assert damage is not None and (damage.kind, damage.seq) == (DamageKind.REWRITTEN, 11)
    assert "11..20" in damage.detail
