"""Validators of the only identifiers an audit event may carry (never names or birth dates).

An audit event is built from UIDs, pseudonymous patient IDs, AE titles, network addresses, staff
user IDs and short machine-readable codes. Each has a syntax narrow enough that a person's name
(which has spaces or the DICOM ``^`` separator) or a date cannot pass as one:

- UIDs: PS3.5 9.1, digits and dots, at most 64 characters.
- AE titles: PS3.5 6.2 (VR AE), 1-16 printable ASCII characters, no backslash.
- pseudonyms: 8-64 characters of letters, digits, ``.``, ``_``, ``-``; at least two digits; not
  a date. Radiogate's de-identification vault issues them (PS3.15 E, keyed pseudonyms).
- user IDs: login names of staff or process identities, no spaces (PS3.15 A.5.2.2 UserID).
- codes: lower-case slugs such as ``calling-ae-not-allowed`` or ``0xa700``.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re

__all__ = [
    "AuditEventError",
    "check_ae_title",
    "check_code",
    "check_network_address",
    "check_object_id",
    "check_pseudonym",
    "check_uid",
    "check_user_id",
    "is_ip_address",
]


class AuditEventError(ValueError):
    """An audit event or one of its parts is invalid (not retryable: a programming error)."""


_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_PSEUDONYM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{7,63}")
_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,63}")
_CODE_RE = re.compile(r"[a-z0-9][a-z0-9._:+/-]{0,63}")
_OBJECT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DATE_RES = (
    re.compile(r"(\d{4})(\d{2})(\d{2})"),
    re.compile(r"(\d{4})[-._](\d{2})[-._](\d{2})"),
    re.compile(r"(\d{2})[-._](\d{2})[-._](\d{4})"),
)


def check_uid(value: str, what: str = "UID") -> str:
    """A DICOM UID (PS3.5 9.1): 1-64 characters, dot-separated numbers without leading zeros."""
    if not isinstance(value, str) or len(value) > 64 or not _UID_RE.fullmatch(value):
        raise AuditEventError(f"{what}: expected a DICOM UID (PS3.5 9.1), got {value!r}")
    return value


def check_ae_title(value: str, what: str = "AE title") -> str:
    """An AE title (PS3.5 6.2, VR AE); surrounding spaces are not significant and removed."""
    if isinstance(value, str):
        stripped = value.strip(" ")
        if (
            stripped
            and len(stripped) <= 16
            and stripped.isascii()
            and stripped.isprintable()
            and "\\" not in stripped
        ):
            return stripped
    raise AuditEventError(f"{what}: expected 1-16 printable ASCII characters, got {value!r}")


def _looks_like_date(value: str) -> bool:
    """The whole value is a date, or it contains one written with separators.

    A run of 8 digits inside a longer value is allowed: hexadecimal pseudonyms have them.
    """
    for i, pattern in enumerate(_DATE_RES):
        match = pattern.fullmatch(value) if i == 0 else pattern.search(value)
        if not match:
            continue
        a, b, c = (int(g) for g in match.groups())
        for year, month, day in ((a, b, c), (c, b, a), (c, a, b)):
            try:
                _dt.date(year, month, day)
            except ValueError:
                continue
            if 1850 <= year <= 2200:
                return True
    return False


def check_pseudonym(value: str, what: str = "patient pseudonym") -> str:
    """A pseudonymous patient ID issued by the vault: never a name, never a date."""
    if (
        not isinstance(value, str)
        or not _PSEUDONYM_RE.fullmatch(value)
        or sum(c.isdigit() for c in value) < 2
        or _looks_like_date(value)
    ):
        raise AuditEventError(
            f"{what}: expected a pseudonym (8-64 of A-Z a-z 0-9 . _ -, at least two digits, "
            "not a date); names and birth dates never go into the audit trail"
        )
    return value


def check_user_id(value: str, what: str = "user ID") -> str:
    """A staff login name or process identity (no spaces: a display name is not a user ID)."""
    if not isinstance(value, str) or not _USER_RE.fullmatch(value):
        raise AuditEventError(
            f"{what}: expected a login name or process ID "
            f"(1-64 of A-Z a-z 0-9 . _ @ : / + -), got {value!r}"
        )
    return value


def check_code(value: str, what: str = "code") -> str:
    """A short machine-readable reason or detail code (lower-case slug, no free text)."""
    if not isinstance(value, str) or not _CODE_RE.fullmatch(value):
        raise AuditEventError(
            f"{what}: expected a lower-case code such as 'calling-ae-not-allowed', got {value!r}"
        )
    return value


def check_object_id(value: str, what: str = "object ID") -> str:
    """Identifier of a system object: config key, route, key ID, job ID, model hash."""
    if not isinstance(value, str) or not _OBJECT_ID_RE.fullmatch(value):
        raise AuditEventError(f"{what}: expected 1-128 of A-Z a-z 0-9 . _ : / @ + -, got {value!r}")
    return value


def is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_network_address(value: str, what: str = "network address") -> str:
    """An IPv4/IPv6 address or a DNS host name (PS3.15 A.5.2.2 NetworkAccessPointID)."""
    if isinstance(value, str):
        if is_ip_address(value):
            return str(ipaddress.ip_address(value))
        labels = value.rstrip(".").split(".")
        if (
            0 < len(value) <= 253
            and all(_HOST_LABEL_RE.fullmatch(label) for label in labels)
            and not labels[-1].isdigit()
        ):
            return value
    raise AuditEventError(f"{what}: expected an IP address or host name, got {value!r}")
