"""Settings of triage: which models score which series, and how rules and scores make a lane.

Routes with a ``triage`` step are triaged per series: each instance's slice is scored when it is
routed (by every model whose card applies to its modality and body part), and the series is
decided as soon as it is complete (or earlier, when enough slices already score critical).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["TriagePolicy", "TriageSettings"]


class TriagePolicy(StrEnum):
    MOST_URGENT = "most-urgent"
    """The most urgent of the rules' lane and the model's lane."""
    RULES_ONLY = "rules-only"
    MODEL_ONLY = "model-only"
    """The model's lane; routine when no model applies or scores."""

    @classmethod
    def _missing_(cls, value: object) -> TriagePolicy | None:
        text = str(value).strip().lower().replace("_", "-")
        return next((m for m in cls if m.value == text), None)


@dataclass(frozen=True)
class TriageSettings:
    models: list[str] = field(default_factory=lambda: ["builtin"])
    """Model cards (TOML/JSON next to their ONNX file), relative to node.data_dir unless
    absolute; ``builtin`` is the demonstration model shipped with Radiogate."""
    threads: int = 1
    """onnxruntime intra-op threads per model (the receiver and PostgreSQL need the rest)."""
    policy: TriagePolicy = TriagePolicy.MOST_URGENT
    early: bool = True
    """Decide a series as critical before it is complete when enough slices already score
    critical (its study moves to the critical lane and the alert goes out at once)."""
    incomplete_category: int = 3
    """ACR category of the alert for an incomplete series (0: no alert)."""
    association_grace: float = 1.0
    """Seconds after the sending association's release before its series count as complete."""
