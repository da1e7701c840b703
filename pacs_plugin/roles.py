"""Who is asking (HTTP Basic user name, already checked by Orthanc) and what they may do.

Roles come from ``[[pacs.user]]`` (:class:`config.pacs.Role`); the archive's own account has
every role and its requests are Radiogate's pipeline (not recorded as accesses). Policy
(:func:`refusal`): a user without a role may do nothing; radiologists and admins may read
(GET/HEAD) and search (``POST /tools/find``, ``/tools/lookup``); only the archive's own account
may change the archive. Radiogate's routes check their own role (JSON answers).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from config.pacs import Role

__all__ = ["ANONYMOUS", "Identity", "Roles", "basic_user", "refusal"]

ANONYMOUS = "anonymous"
_SEARCHES = frozenset({"/tools/find", "/tools/lookup"})


def basic_user(headers: Mapping[str, str]) -> str:
    """The user name of an HTTP Basic ``Authorization`` header (RFC 7617), or ``anonymous``."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return ANONYMOUS
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ANONYMOUS
    user = decoded.partition(":")[0]
    return user or ANONYMOUS


@dataclass(frozen=True)
class Identity:
    user: str
    roles: frozenset[Role]
    service: bool = False

    def has(self, role: Role) -> bool:
        return role in self.roles


class Roles:
    """User name → roles, from the configured users and the archive's own account."""

    def __init__(self, users: Iterable[tuple[str, Role]], service_user: str | None) -> None:
        self._roles: dict[str, set[Role]] = {}
        for name, role in users:
            self._roles.setdefault(name, set()).add(role)
        self._service = service_user
        self._seen: dict[str, Identity] = {}

    def identify(self, headers: Mapping[str, str]) -> Identity:
        """Who sent *headers* (remembered per ``Authorization`` value: a viewer sends the same
        one with every request)."""
        key = headers.get("authorization", "")
        found = self._seen.get(key)
        if found is None:
            found = self._identify(headers)
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = found
        return found

    def _identify(self, headers: Mapping[str, str]) -> Identity:
        user = basic_user(headers)
        if self._service is not None and user == self._service:
            return Identity(user, frozenset(Role), service=True)
        return Identity(user, frozenset(self._roles.get(user, ())))


def refusal(who: Identity, method: str, uri: str) -> str | None:
    """Why *who* may not send *method* *uri* to the archive (a reason code), or None."""
    if who.service or uri.startswith("/radiogate/"):
        return None
    if not who.roles:
        return "no-role"
    if method in ("GET", "HEAD"):
        return None
    if method == "POST" and uri in _SEARCHES:
        return None
    return "write-not-allowed"
