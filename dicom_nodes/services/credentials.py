"""HTTP Basic credentials of the archive's REST API (RFC 7617), kept in a 0600 file.

The file holds one line ``user:password``. :func:`ensure_credentials` creates it on first
start (a random 32-character password) the same way the de-identification secrets are made
(:mod:`dicom_nodes.deid.secrets`): a temporary file in the same 0700 directory, fsync, then a
hard link to the final name so two starters never end up with different passwords. A file that
group or others may read is refused. The password is never logged.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CredentialsError",
    "CredentialsMissingError",
    "HttpCredentials",
    "ensure_credentials",
    "load_credentials",
]

_DEFAULT_USER = "radiogate"


class CredentialsError(RuntimeError):
    """The credentials file is missing, malformed or readable by others (not retryable)."""


class CredentialsMissingError(CredentialsError):
    """The credentials file does not exist."""


@dataclass(frozen=True, slots=True)
class HttpCredentials:
    """A user and password for HTTP Basic authentication; ``repr`` omits the password."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.user or ":" in self.user or not self.password:
            raise CredentialsError("credentials: expected 'user:password' with a non-empty user")

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value (RFC 7617 section 2)."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


def load_credentials(path: Path) -> HttpCredentials:
    """Read ``user:password`` from *path*; raise :class:`CredentialsError` naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise CredentialsMissingError(
            f"archive credentials {path} do not exist (created by 'radiogate run' on first start)"
        ) from None
    except OSError as exc:
        raise CredentialsError(
            f"archive credentials {path} are not readable: {exc.strerror}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialsError(f"archive credentials {path} is not a regular file")
        if st.st_mode & 0o077:
            raise CredentialsError(
                f"archive credentials {path} have mode {stat.S_IMODE(st.st_mode):04o}: group or "
                f"others may read them (chmod 600 {path})"
            )
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    user, sep, password = raw.decode("utf-8", "replace").strip().partition(":")
    if not sep:
        raise CredentialsError(f"archive credentials {path}: expected one line 'user:password'")
    return HttpCredentials(user, password)


def ensure_credentials(path: Path, user: str = _DEFAULT_USER) -> tuple[HttpCredentials, bool]:
    """The credentials in *path*, created with a random password if missing.

    Returns ``(credentials, created)``."""
    created = False
    if not path.exists() and not path.is_symlink():
        created = _create(path, HttpCredentials(user, secrets.token_urlsafe(24)))
    return load_credentials(path), created


def _create(path: Path, creds: HttpCredentials) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(f"{creds.user}:{creds.password}\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
