"""Ed25519 signing keys of audit checkpoints and the keyring of their public keys.

The private key is a PKCS#8 PEM file readable by its owner only (``audit.signing_key``). The
keyring (``audit.keyring``) is a JSON file of every public key ever used, each with its key ID
(the first 16 hex digits of the BLAKE3 hash of the raw public key), so checkpoints signed with
a retired key still verify. The keyring, not the database, is the trust anchor: copy it to the
machines that verify; a key found only in the database proves nothing.

Rotation (``radiogate audit rotate-key``) creates a new key, records in the keyring that the old
key endorsed it (a signature over the new public key) and renames the old private key to
``<signing_key>.<key_id>.retired`` for the site to destroy or lock away.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "Keyring",
    "PublicKeyEntry",
    "Signer",
    "SigningKeyError",
    "SigningKeyMissingError",
    "generate_key",
    "rotate_key",
]

_ENDORSEMENT = b"radiogate-audit-key-endorsement/1\n"


class SigningKeyError(RuntimeError):
    """A signing key or the keyring is missing, unreadable or inconsistent (not retryable)."""


class SigningKeyMissingError(SigningKeyError):
    """The signing key or keyring file does not exist (the message names its path)."""


def key_id_of(public_raw: bytes) -> str:
    """Key ID: first 16 hex digits of BLAKE3(raw 32-byte Ed25519 public key)."""
    return str(blake3(public_raw).hexdigest()[:16])


@dataclass(frozen=True)
class PublicKeyEntry:
    """One keyring entry."""

    key_id: str
    public_key: bytes
    created: str
    endorsed_by: str | None = None
    endorsement: bytes | None = None

    def to_json(self) -> dict[str, str]:
        doc = {
            "key_id": self.key_id,
            "public_key": base64.b64encode(self.public_key).decode(),
            "created": self.created,
        }
        if self.endorsed_by and self.endorsement:
            doc["endorsed_by"] = self.endorsed_by
            doc["endorsement"] = base64.b64encode(self.endorsement).decode()
        return doc


class Keyring:
    """Public keys by key ID (a JSON file; missing file = empty keyring)."""

    def __init__(self, entries: list[PublicKeyEntry] | None = None) -> None:
        self.entries: dict[str, PublicKeyEntry] = {e.key_id: e for e in entries or []}

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"keyring {path} is not readable: {exc}") from exc
        entries = []
        for item in doc.get("keys", []):
            raw = base64.b64decode(item["public_key"])
            if key_id_of(raw) != item["key_id"]:
                raise SigningKeyError(
                    f"keyring {path}: key ID {item['key_id']} does not match its key"
                )
            entries.append(
                PublicKeyEntry(
                    item["key_id"],
                    raw,
                    item.get("created", ""),
                    item.get("endorsed_by"),
                    base64.b64decode(item["endorsement"]) if "endorsement" in item else None,
                )
            )
        return cls(entries)

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, fsync, rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        doc = {"keys": [e.to_json() for e in self.entries.values()]}
        with tmp.open("w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    def add(self, entry: PublicKeyEntry) -> None:
        self.entries[entry.key_id] = entry

    def verify(self, key_id: str, message: bytes, signature: bytes) -> bool:
        """True if *signature* over *message* is valid for the keyring's key *key_id*."""
        entry = self.entries.get(key_id)
        if entry is None:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(entry.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def endorsement_ok(self, entry: PublicKeyEntry) -> bool:
        """True if *entry* carries no endorsement or a valid one by a key of this keyring."""
        if entry.endorsed_by is None or entry.endorsement is None:
            return True
        return self.verify(entry.endorsed_by, _ENDORSEMENT + entry.public_key, entry.endorsement)


class Signer:
    """An Ed25519 private key and its key ID."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(self.public_raw)

    @classmethod
    def load(cls, path: Path) -> Signer:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise SigningKeyMissingError(
                f"signing key {path} does not exist (create it: radiogate audit keygen)"
            ) from None
        except (OSError, ValueError, TypeError) as exc:
            raise SigningKeyError(f"signing key {path} is not readable: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
        return cls(key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def save(self, path: Path) -> None:
        """Write the private key as PKCS#8 PEM, mode 0600, refusing to overwrite."""
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())

    def entry(self, endorser: Signer | None = None) -> PublicKeyEntry:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if endorser is None:
            return PublicKeyEntry(self.key_id, self.public_raw, now)
        sig = endorser.sign(_ENDORSEMENT + self.public_raw)
        return PublicKeyEntry(self.key_id, self.public_raw, now, endorser.key_id, sig)


def generate_key(key_path: Path, keyring_path: Path) -> Signer:
    """Create a signing key at *key_path* (never overwriting) and add it to the keyring."""
    if key_path.exists():
        raise SigningKeyError(
            f"signing key {key_path} already exists (use rotate-key to replace it)"
        )
    signer = Signer(Ed25519PrivateKey.generate())
    keyring = Keyring.load(keyring_path)
    signer.save(key_path)
    keyring.add(signer.entry())
    keyring.save(keyring_path)
    return signer


def rotate_key(key_path: Path, keyring_path: Path) -> tuple[Signer, Signer]:
    """Replace the signing key; return (old, new). The old key endorses the new one."""
    old = Signer.load(key_path)
    keyring = Keyring.load(keyring_path)
    if old.key_id not in keyring.entries:
        keyring.add(old.entry())
    new = Signer(Ed25519PrivateKey.generate())
    new_path = key_path.with_name(key_path.name + ".new")
    new.save(new_path)
    keyring.add(new.entry(endorser=old))
    keyring.save(keyring_path)
    key_path.replace(key_path.with_name(f"{key_path.name}.{old.key_id}.retired"))
    new_path.replace(key_path)
    return old, new
