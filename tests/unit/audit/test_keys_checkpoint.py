"""Signing keys, keyring, rotation and signed checkpoints."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from audit import Checkpoint, Keyring, Signer, SigningKeyError, generate_key, rotate_key
from audit.checkpoint import CheckpointFileError, FileSink, read_checkpoint_file, sign_checkpoint
from audit.store import Head

CHAIN = "8d4f1c7e-0b6a-4c39-9a51-2f3e7d9c1b20"


def test_keygen_writes_private_key_0600_and_keyring(tmp_path: Path) -> None:
    key, ring = tmp_path / "k.pem", tmp_path / "ring.json"
    signer = generate_key(key, ring)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Signer.load(key).key_id == signer.key_id
    assert list(Keyring.load(ring).entries) == [signer.key_id]
    with pytest.raises(SigningKeyError):
        generate_key(key, ring)


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="keygen"):
        Signer.load(tmp_path / "none.pem")


def test_checkpoint_signature_and_file_round_trip(tmp_path: Path) -> None:
    key, ring = tmp_path / "k.pem", tmp_path / "ring.json"
    signer = generate_key(key, ring)
    keyring = Keyring.load(ring)
    cp = sign_checkpoint(signer, Head(CHAIN, 42, bytes(range(32))))
    assert cp.signature_ok(keyring)
    FileSink(tmp_path / "cp.jsonl").publish(cp)
    FileSink(tmp_path / "cp.jsonl").publish(cp)
    again = read_checkpoint_file(tmp_path / "cp.jsonl")
    assert again == [cp, cp]
    for forged in (
        Checkpoint(CHAIN, 43, cp.hash, cp.signed_at, cp.key_id, cp.signature),
        Checkpoint(CHAIN, 42, bytes(32), cp.signed_at, cp.key_id, cp.signature),
        Checkpoint(CHAIN, 42, cp.hash, cp.signed_at + dt.timedelta(microseconds=1),
                   cp.key_id, cp.signature),
    ):  # fmt: skip
        assert not forged.signature_ok(keyring)
    assert not cp.signature_ok(Keyring())


def test_bad_checkpoint_file_line_is_reported(tmp_path: Path) -> None:
    (tmp_path / "cp.jsonl").write_text('{"seq": 1}\n')
    with pytest.raises(CheckpointFileError, match=":1:"):
        read_checkpoint_file(tmp_path / "cp.jsonl")
    assert read_checkpoint_file(tmp_path / "missing.jsonl") == []


def test_rotation_keeps_old_checkpoints_verifiable(tmp_path: Path) -> None:
    key, ring = tmp_path / "k.pem", tmp_path / "ring.json"
    first = generate_key(key, ring)
    old_cp = sign_checkpoint(first, Head(CHAIN, 1, bytes(32)))
    old, new = rotate_key(key, ring)
    assert old.key_id == first.key_id != new.key_id
    assert Signer.load(key).key_id == new.key_id
    assert (tmp_path / f"k.pem.{old.key_id}.retired").exists()
    keyring = Keyring.load(ring)
    assert set(keyring.entries) == {old.key_id, new.key_id}
    assert keyring.entries[new.key_id].endorsed_by == old.key_id
    assert all(keyring.endorsement_ok(e) for e in keyring.entries.values())
    assert old_cp.signature_ok(keyring)
    assert sign_checkpoint(new, Head(CHAIN, 2, bytes(32))).signature_ok(keyring)
