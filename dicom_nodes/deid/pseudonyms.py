"""Deterministic replacements keyed by the site secret (PS3.15 E.1.1, E.3.6, E.3.10).

Every replacement is an HMAC-SHA256 of the original under the site secret, with a distinct
label per use, so the same patient, study, series or instance maps to the same values across
associations, days, processes and machines that share the secret, and nobody without the
secret can compute or invert the mapping:

* new UIDs are ``2.25.<128-bit integer>`` (PS3.5 B.2, UUID-derived UID form);
* patient pseudonyms are ``RG`` + 16 characters of Crockford base32 (80 bits);
* each patient's dates move back by the same 1..N days (Retain Longitudinal Temporal
  Information with Modified Dates), so intervals between a patient's dates are kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from functools import lru_cache

from audit.identifiers import AuditEventError, check_pseudonym

__all__ = ["Pseudonymiser"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DT_RE = re.compile(r"(\d{8})(.*)")


class Pseudonymiser:
    """Keyed replacements for one site secret (cheap to keep; results are memoised)."""

    def __init__(self, secret: bytes, *, date_shift_days: int = 365) -> None:
        if len(secret) < 16:
            raise ValueError("the site secret must be at least 16 bytes")
        self._secret = secret
        self._days = date_shift_days
        self.uid = lru_cache(maxsize=65536)(self._uid)
        self.patient = lru_cache(maxsize=4096)(self._patient)

    def _mac(self, label: str, value: str) -> bytes:
        return hmac.new(
            self._secret, label.encode() + b"\0" + value.encode("utf-8", "surrogateescape"),
            hashlib.sha256,
        ).digest()  # fmt: skip

    def _uid(self, original: str) -> str:
        """The replacement of one UID (PS3.15 E.1.1 action U): ``2.25.`` + 128 bits."""
        return "2.25." + str(int.from_bytes(self._mac("uid", original.strip())[:16], "big"))

    def _patient(self, key: str) -> str:
        """The pseudonymous patient ID for a patient key (see :meth:`patient_key`)."""
        for counter in range(1000):
            digest = int.from_bytes(self._mac(f"patient:{counter}", key)[:10], "big")
            text = "".join(_CROCKFORD[(digest >> (5 * i)) & 31] for i in range(15, -1, -1))
            candidate = "RG" + text
            try:
                return check_pseudonym(candidate)
            except AuditEventError:  # fewer than two digits, or date-like: derive again
                continue
        raise RuntimeError("no valid pseudonym derivable")  # pragma: no cover - 2**-1000 odds

    @staticmethod
    def patient_key(
        patient_id: str, issuer: str, name: str, birth_date: str, study_uid: str = ""
    ) -> str:
        """What identifies a patient: Patient ID with its issuer; name and birth date if no ID;
        the study if neither (anonymous studies must not all share one pseudonym)."""
        patient_id, issuer = patient_id.strip(), issuer.strip()
        if patient_id:
            return f"id\0{issuer}\0{patient_id}"
        if name.strip() or birth_date.strip():
            return f"name\0{name.strip().upper()}\0{birth_date.strip()}"
        return f"study\0{study_uid.strip()}"

    def shift_days(self, key: str) -> int:
        """Days this patient's dates move back (1..date_shift_days)."""
        return 1 + int.from_bytes(self._mac("date-shift", key)[:8], "big") % self._days

    @staticmethod
    def shift_date(value: str, days: int) -> str | None:
        """A DA value moved back *days* days; None when it is not a full date (PS3.5 6.2)."""
        text = value.strip()
        try:
            day = dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
        except (ValueError, IndexError):
            return None
        if len(text) != 8 or not text.isdigit():
            return None
        try:
            return (day - dt.timedelta(days=days)).strftime("%Y%m%d")
        except OverflowError:  # before 0001-01-01: no date to move to
            return None

    @classmethod
    def shift_datetime(cls, value: str, days: int) -> str | None:
        """A DT value's date part moved back; time and offset kept. None if not parseable."""
        match = _DT_RE.fullmatch(value.strip())
        if match is None:
            return None
        day = cls.shift_date(match.group(1), days)
        return None if day is None else day + match.group(2)
