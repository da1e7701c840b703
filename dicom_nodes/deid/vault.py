"""The re-identification vault: pseudonym → original identifiers, encrypted (DICOM PS3.15 E).

PS3.15 Annex E replaces identifiers with dummy values and new UIDs; whoever de-identifies may
keep the means to map them back, outside the de-identified objects (pseudonymisation in the
sense of ISO 25237). Radiogate keeps that map in the ``deid_vault`` table (migration
``0004_deid.sql``), one row per pseudonym::

    pseudonym | kind | key_id | nonce (12 bytes) | ciphertext (AES-256-GCM, tag appended)

- The plaintext is canonical JSON (sorted keys, no whitespace, UTF-8) of
  ``{"kind": ..., "original": {...}, "v": 1}``, padded with spaces to a multiple of 64 bytes
  so the ciphertext length says little about the length of a name.
- The associated data binds the ciphertext to its row: the format version, the kind and the
  pseudonym. A ciphertext copied into another row (or with its kind changed) fails
  authentication instead of revealing the wrong patient.
- The nonce is 12 random bytes per row (NIST SP 800-38D 8.2.2); at the vault's scale (far
  fewer than 2^32 rows per key) collisions are negligible.
- ``key_id`` (:class:`~dicom_nodes.deid.secrets.VaultKey`) names the key a row was written
  under, so :meth:`Vault.reveal` can tell "another key" from "damaged or tampered".

The pseudonym itself is a keyed hash of the original (site secret), so without the vault key
and the site secret the table discloses only how many pseudonyms of each kind exist and when
they were first recorded. Nothing here logs identifiers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicom_nodes.deid.model import VaultEntry
from dicom_nodes.deid.secrets import VaultKey

__all__ = [
    "KINDS",
    "Vault",
    "VaultError",
    "VaultIntegrityError",
    "VaultKeyMismatch",
]

KINDS = frozenset({"patient", "study", "series", "instance", "uid"})
"""Kinds a vault row may have (the ``deid_vault.kind`` CHECK constraint)."""

FORMAT_VERSION = 1
_NONCE_BYTES = 12
_PAD_TO = 64

_INSERT_SQL = """
INSERT INTO deid_vault (pseudonym, kind, key_id, nonce, ciphertext)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::bytea[])
ON CONFLICT (pseudonym) DO NOTHING
"""


class VaultError(RuntimeError):
    """A vault row cannot be revealed (base class; messages never contain original values)."""


class VaultKeyMismatch(VaultError):
    """The row was written under another vault key (its ``key_id`` differs from ours)."""


class VaultIntegrityError(VaultError):
    """The row fails AES-GCM authentication: damaged, tampered with or moved between rows."""


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _associated_data(kind: str, pseudonym: str) -> bytes:
    """What the ciphertext is bound to: format version, kind and pseudonym (unambiguous JSON)."""
    return _canonical(["radiogate-deid-vault", FORMAT_VERSION, kind, pseudonym])


def _plaintext(entry: VaultEntry) -> bytes:
    body = _canonical({"kind": entry.kind, "original": entry.original, "v": FORMAT_VERSION})
    return body + b" " * (-len(body) % _PAD_TO)


def _check_entry(entry: VaultEntry) -> None:
    if entry.kind not in KINDS:
        raise ValueError(f"vault entry kind must be one of {sorted(KINDS)}, got {entry.kind!r}")
    if not isinstance(entry.pseudonym, str) or not entry.pseudonym:
        raise ValueError("vault entry pseudonym must be a non-empty string")
    if not isinstance(entry.original, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in entry.original.items()
    ):
        # The message names no value: the original identifiers are PHI.
        raise ValueError("vault entry original must map attribute names to strings")


class Vault:
    """Encrypts :class:`~dicom_nodes.deid.model.VaultEntry` rows into ``deid_vault`` and back.

    Methods run in the caller's connection and transaction (psycopg 3), so the vault rows
    commit together with the de-identified output that needs them.
    """

    def __init__(self, key: VaultKey) -> None:
        self._aead = AESGCM(key.key)
        self.key_id = key.key_id

    def __repr__(self) -> str:
        return f"Vault(key_id={self.key_id!r})"

    def seal(self, entry: VaultEntry) -> tuple[bytes, bytes]:
        """``(nonce, ciphertext)`` of *entry* (exposed for tests and tools)."""
        _check_entry(entry)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._aead.encrypt(
            nonce, _plaintext(entry), _associated_data(entry.kind, entry.pseudonym)
        )
        return nonce, ciphertext

    def record(self, conn: psycopg.Connection[Any], entries: Sequence[VaultEntry]) -> int:
        """Store *entries*; a pseudonym already in the vault keeps its first row.

        One ``INSERT ... ON CONFLICT (pseudonym) DO NOTHING`` for the whole batch, rows in
        pseudonym order (concurrent batches with shared pseudonyms take their index locks in
        the same order and cannot deadlock). Within the batch the first entry of a pseudonym
        wins. Returns the number of rows inserted.
        """
        unique: dict[str, VaultEntry] = {}
        for entry in entries:
            _check_entry(entry)
            unique.setdefault(entry.pseudonym, entry)
        if not unique:
            return 0
        pseudonyms, kinds, key_ids, nonces, ciphertexts = [], [], [], [], []
        for pseudonym in sorted(unique):
            entry = unique[pseudonym]
            nonce, ciphertext = self.seal(entry)
            pseudonyms.append(pseudonym)
            kinds.append(entry.kind)
            key_ids.append(self.key_id)
            nonces.append(nonce)
            ciphertexts.append(ciphertext)
        cur = conn.execute(_INSERT_SQL, (pseudonyms, kinds, key_ids, nonces, ciphertexts))
        return max(cur.rowcount, 0)

    def unseal(
        self, pseudonym: str, kind: str, key_id: str, nonce: bytes, ciphertext: bytes
    ) -> VaultEntry:
        """Decrypt one row's columns; raise :class:`VaultKeyMismatch` or
        :class:`VaultIntegrityError`."""
        if key_id != self.key_id:
            raise VaultKeyMismatch(
                f"vault row {pseudonym!r} was written under vault key {key_id}, but the loaded "
                f"key is {self.key_id} (restore the vault key that was in use then)"
            )
        try:
            plain = self._aead.decrypt(nonce, ciphertext, _associated_data(kind, pseudonym))
        except (InvalidTag, ValueError):
            raise VaultIntegrityError(
                f"vault row {pseudonym!r} fails authentication (AES-GCM tag): it was damaged, "
                "altered or copied from another row; nothing revealed"
            ) from None
        try:
            doc = json.loads(plain)
            original = doc["original"]
            ok = (
                doc.get("v") == FORMAT_VERSION
                and doc.get("kind") == kind
                and isinstance(original, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in original.items())
            )
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise VaultIntegrityError(f"vault row {pseudonym!r} decrypts to an unknown format")
        return VaultEntry(kind=kind, pseudonym=pseudonym, original=dict(original))

    def reveal(self, conn: psycopg.Connection[Any], pseudonym: str) -> VaultEntry | None:
        """The original identifiers behind *pseudonym*, or ``None`` if the vault has no row.

        Raises :class:`VaultKeyMismatch` if the row was written under another key and
        :class:`VaultIntegrityError` if it fails authentication. Callers that show the result
        to a person must audit it (``radiogate reidentify`` records a 110110 Patient Record
        event, PS3.15 A.5.3.10, in the same transaction).
        """
        row = conn.execute(
            "SELECT kind, key_id, nonce, ciphertext FROM deid_vault WHERE pseudonym = %s",
            (pseudonym,),
        ).fetchone()
        if row is None:
            return None
        kind, key_id, nonce, ciphertext = row
        return self.unseal(pseudonym, str(kind), str(key_id), bytes(nonce), bytes(ciphertext))
