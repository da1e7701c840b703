"""The two de-identification secrets: the site secret and the vault key (DICOM PS3.15 Annex E).

- The **site secret** keys everything the engine derives from original identifiers: keyed
  pseudonyms for Patient ID, replacement UIDs (action ``U`` of PS3.15 Table E.1-1, consistent
  within a set of instances) and each patient's date shift (PS3.15 E.3.6, Retain Longitudinal
  Temporal Information with Modified Dates).
  Without it nobody can recompute a pseudonym from an original value.
- The **vault key** is the AES-256-GCM key of the re-identification vault (:mod:`.vault`), the
  only way back from a pseudonym to the original identifiers. Its ``key_id`` (a hash prefix of
  the key, never the key) is stored with every vault row so a row written under another key is
  reported as such instead of as damage.

Each is exactly 32 bytes and comes from, in order of precedence:

1. the environment: ``RADIOGATE_DEID_SECRET`` / ``RADIOGATE_DEID_VAULT_KEY``, base64 of the
   32 bytes (for secret stores that inject environment variables);
2. a file under ``node.data_dir`` (``deid.secret_file`` / ``deid.vault_key_file``), holding the
   32 raw bytes, mode 0600, in a 0700 directory. :func:`ensure_secrets` creates missing files
   on first start; a file that group or others may access, or of the wrong length, is refused.

Losing the vault key makes the vault unreadable; losing the site secret makes later pseudonyms
and UIDs differ from earlier ones for the same patient. Back both up, separately from the
database. Neither value nor any part of it is ever logged or put into an error message.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import blake3

import config
from config import Settings

__all__ = [
    "ENV_SITE_SECRET",
    "ENV_VAULT_KEY",
    "SECRET_LENGTH",
    "SecretError",
    "SecretMissingError",
    "VaultKey",
    "ensure_key_file",
    "ensure_secrets",
    "load_site_secret",
    "load_vault_key",
    "secret_paths",
]

ENV_SITE_SECRET = "RADIOGATE_DEID_SECRET"  # noqa: S105 - a variable name, not a secret
"""Environment variable with the site secret, base64 of 32 bytes (precedence over the file)."""
ENV_VAULT_KEY = "RADIOGATE_DEID_VAULT_KEY"
"""Environment variable with the vault key, base64 of 32 bytes (precedence over the file)."""
SECRET_LENGTH = 32
"""Bytes of each secret: 256 bits (AES-256-GCM key; HMAC-SHA-256/BLAKE3 key)."""

_KEY_ID_HEX = 16


class SecretError(RuntimeError):
    """A de-identification secret is missing, malformed or not protected well enough.

    The message names the variable or file and what is wrong; never the secret's bytes."""


class SecretMissingError(SecretError):
    """The secret's file does not exist (and no environment variable gives it)."""


@dataclass(frozen=True, slots=True)
class VaultKey:
    """The vault's AES-256-GCM key and its public identifier.

    ``key_id`` is the first 16 hex characters of BLAKE3(key): enough to tell keys apart in the
    ``deid_vault.key_id`` column, useless for recovering the 256-bit key. ``repr`` omits the key.
    """

    key: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != SECRET_LENGTH:
            raise SecretError(f"vault key: expected {SECRET_LENGTH} bytes")
        object.__setattr__(self, "key_id", key_id_of(self.key))


def key_id_of(key: bytes) -> str:
    """Public identifier of *key*: the first 16 hex characters of its BLAKE3 hash."""
    return blake3.blake3(key).hexdigest()[:_KEY_ID_HEX]


def secret_paths(settings: Settings) -> tuple[Path, Path]:
    """Files of the site secret and the vault key (``deid.*_file`` under ``node.data_dir``)."""
    return (
        config.data_path(settings, settings.deid.secret_file),
        config.data_path(settings, settings.deid.vault_key_file),
    )


def _from_env(name: str, environ: Mapping[str, str]) -> bytes | None:
    value = environ.get(name)
    if value is None or not value.strip():
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(
            f"{name}: not valid base64 (expected base64 of 32 random bytes)"
        ) from None
    if len(raw) != SECRET_LENGTH:
        raise SecretError(
            f"{name}: decodes to {len(raw)} bytes, expected {SECRET_LENGTH} "
            "(create one with: head -c 32 /dev/urandom | base64)"
        )
    return raw


def _read_file(path: Path, what: str, env_name: str) -> bytes:
    """Read a secret file, checking type, permissions and length on the opened descriptor
    (so the checks apply to what is read, also behind a symbolic link)."""
    try:
        # Symbolic links allowed (mounted secret stores); O_NONBLOCK: a FIFO must not hang us.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SecretMissingError(
            f"{what} {path} does not exist (it is created by 'radiogate run' on first start; "
            f"or set {env_name})"
        ) from None
    except OSError as exc:
        raise SecretError(f"{what} {path} is not readable: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"{what} {path} is not a regular file")
        if st.st_mode & 0o077:
            raise SecretError(
                f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others may "
                f"access it; refusing to use it (chmod 600 {path}, then consider the secret "
                "exposed if others could read it)"
            )
        data = os.read(fd, SECRET_LENGTH + 1)
    finally:
        os.close(fd)
    if len(data) != SECRET_LENGTH:
        raise SecretError(
            f"{what} {path} holds {len(data) if len(data) <= SECRET_LENGTH else 'more than 32'} "
            f"bytes, expected exactly {SECRET_LENGTH} raw bytes"
        )
    return data


def _load(path: Path, what: str, env_name: str, environ: Mapping[str, str] | None) -> bytes:
    env = os.environ if environ is None else environ
    from_env = _from_env(env_name, env)
    if from_env is not None:
        return from_env
    return _read_file(path, what, env_name)


def load_site_secret(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """The 32-byte site secret: ``RADIOGATE_DEID_SECRET`` (base64) or ``deid.secret_file``.

    Raises :class:`SecretError` if it is missing, malformed or its file is group/world
    accessible. *environ* defaults to :data:`os.environ`."""
    return _load(secret_paths(settings)[0], "site secret", ENV_SITE_SECRET, environ)


def load_vault_key(settings: Settings, environ: Mapping[str, str] | None = None) -> VaultKey:
    """The vault key: ``RADIOGATE_DEID_VAULT_KEY`` (base64) or ``deid.vault_key_file``.

    Raises :class:`SecretError` like :func:`load_site_secret`."""
    return VaultKey(_load(secret_paths(settings)[1], "vault key", ENV_VAULT_KEY, environ))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_dir(path: Path) -> None:
    """Create *path* (and missing parents); the directory itself gets mode 0700."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not path.is_dir():
            raise
        return  # created concurrently: keep what the other starter made
    path.chmod(0o700)  # mkdir's mode is reduced by the umask; be explicit
    _fsync_dir(path.parent)


def _create_secret(path: Path) -> bool:
    """Write 32 random bytes to *path* atomically, mode 0600; False if it appeared meanwhile.

    Temporary file in the same directory, write, fsync, then ``link`` to the final name, which
    (unlike ``rename``) never replaces a file another process created at the same moment: two
    starters must not end up with different secrets.
    """
    _make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(os.urandom(SECRET_LENGTH))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # File systems without hard links: rename, refusing to replace a file that exists.
            if path.exists():
                return False
            os.replace(tmp, path)
        _fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def ensure_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Create the missing secret files (32 bytes from :func:`os.urandom`); return those created.

    A secret given in the environment needs no file and none is created for it (the operator
    chose to keep it off the disk); its value is still validated. An existing file is validated
    (regular file, mode without group/other bits, exactly 32 bytes) and never replaced: a new
    vault key would make every existing vault row unreadable. Raises :class:`SecretError`.
    """
    env = os.environ if environ is None else environ
    created: list[Path] = []
    secret_path, vault_path = secret_paths(settings)
    for path, what, env_name in (
        (secret_path, "site secret", ENV_SITE_SECRET),
        (vault_path, "vault key", ENV_VAULT_KEY),
    ):
        if _from_env(env_name, env) is not None:
            continue
        if not path.exists() and not path.is_symlink():
            try:
                if _create_secret(path):
                    created.append(path)
            except OSError as exc:
                raise SecretError(f"{what} {path} could not be created: {exc.strerror}") from None
        _read_file(path, what, env_name)
    return created


def ensure_key_file(path: Path, what: str) -> bytes:
    """A 32-byte key file of this node (e.g. an alert target's HMAC key): created like the
    secrets above when missing (0600, atomically, never replaced), checked, and returned."""
    if not path.exists() and not path.is_symlink():
        try:
            _create_secret(path)
        except OSError as exc:
            raise SecretError(f"{what} {path} could not be created: {exc.strerror}") from None
    return _read_file(path, what, "(no environment variable)")
