"""What an alert says: a finding or an incomplete series, named by pseudonymous identifiers.

An alert is idempotent by its key (study + finding + model version): the same finding raised
again (a re-run, a late slice re-checked) is the same alert. Its id is the first 16 hex digits
of the key's BLAKE3, short enough to type in ``radiogate alert ack ID``. The message never
carries an original UID, name or ID: the study and series are named by the UIDs the
de-identifier gives them (the same keyed HMAC of the site secret, so a radiologist finds them in
the archive) and the patient by the vault's pseudonym when known.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import blake3

__all__ = ["AlertSpec", "Category", "escalation_seconds"]


Category = int
"""ACR actionable finding category (1: minutes, 2: hours, 3: days)."""


@dataclass(frozen=True)
class AlertSpec:
    """An alert to raise. ``study_uid``/``series_uid`` are the originals (kept in the database
    for the pipeline and audit trail); ``pseudonymous_*`` are what messages carry."""

    node: str
    study_uid: str
    series_uid: str
    category: Category
    kind: str
    """``finding`` (a triage result) or ``incomplete-series`` (data quality)."""
    finding: str
    """A short code: e.g. ``critical-finding``, ``missing-slices``."""
    lane: str
    pseudonymous_study_uid: str
    pseudonymous_series_uid: str
    model: Mapping[str, str] = field(default_factory=dict)
    """name, version and blake3 of the model that decided (empty for rules)."""
    certainty: float | None = None
    patient_pseudonym: str = ""
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.category not in (1, 2, 3):
            raise ValueError(f"category must be 1, 2 or 3, got {self.category}")
        if self.certainty is not None and not 0.0 <= self.certainty <= 100.0:
            raise ValueError(f"certainty must be 0..100 %, got {self.certainty}")

    @property
    def key(self) -> str:
        version = self.model.get("version", "rules")
        return f"{self.study_uid}|{self.kind}:{self.finding}|{self.model.get('name', '')}@{version}"

    @property
    def alert_id(self) -> str:
        return blake3.blake3(self.key.encode()).hexdigest()[:16]

    def message(self, raised_at: dt.datetime) -> dict[str, Any]:
        """The document targets receive (without the delivery level, added when sent)."""
        doc: dict[str, Any] = {
            "alert_id": self.alert_id,
            "node": self.node,
            "kind": self.kind,
            "category": self.category,
            "lane": self.lane,
            "finding": self.finding,
            "study": self.pseudonymous_study_uid,
            "series": self.pseudonymous_series_uid,
            "raised_at": raised_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "reasons": list(self.reasons),
        }
        if self.certainty is not None:
            doc["certainty"] = round(self.certainty, 1)
        if self.model:
            doc["model"] = dict(self.model)
        if self.patient_pseudonym:
            doc["patient"] = self.patient_pseudonym
        return doc


def escalation_seconds(minutes_by_category: Mapping[int, float], category: int) -> float:
    return 60.0 * minutes_by_category[category]
