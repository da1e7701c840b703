"""Is a received image series whole? Checks on the facts of its instances (pure, no I/O).

Imperfect transmissions are common: a modality's send is interrupted, a slice is re-sent with a
new UID, a router drops an association. Each check below names what it found with a short code
(no values of the images, so the reasons can go into logs, audit events and alerts):

==========================  ===========================================================
reason                      when
==========================  ===========================================================
``missing-instances``       Instance Numbers leave gaps (1, 2, 4: 3 is missing), or
                            fewer instances than Images in Acquisition (0020,1002) said
``duplicate-instance-number`` two instances share an Instance Number
``duplicate-position``      two slices at the same position along the slice normal
``missing-position``        a slice has no Image Position / Orientation (Patient)
``uneven-spacing``          the gap between neighbouring slices varies more than
                            ``spacing_tolerance`` (relative), e.g. a slice is missing
``inconsistent-orientation`` slices are not parallel (orientation differs)
``inconsistent-size``       Rows / Columns / Pixel Spacing differ between slices
``pixel-data-truncated``    a slice's pixel data is shorter than its attributes need
``pixel-data-undecodable``  a slice's pixel data could not be decoded
==========================  ===========================================================

Localizers and single images (fewer than three slices with positions) get the per-slice
checks only. A series with reasons is *incomplete*: it is still archived (nothing is lost);
what analysis does with it is a setting.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["InstanceFacts", "Verdict", "check_series"]


@dataclass(frozen=True)
class InstanceFacts:
    """What the checks need of one instance (from its header; ``problems`` from reading it)."""

    sop_instance_uid: str
    instance_number: int | None = None
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, float, float, float, float, float] | None = None
    rows: int | None = None
    columns: int | None = None
    pixel_spacing: tuple[float, float] | None = None
    images_in_acquisition: int | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)
    """Per-instance findings made while reading it: pixel-data-truncated / -undecodable."""


@dataclass(frozen=True)
class Verdict:
    complete: bool
    reasons: tuple[str, ...]
    """Sorted reason codes (see the module docstring); empty when complete."""
    ordered: tuple[str, ...]
    """SOP Instance UIDs sorted along the slice normal (or by Instance Number)."""


def _normal(o: Sequence[float]) -> tuple[float, float, float]:
    r, c = o[:3], o[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    length = math.sqrt(sum(x * x for x in n)) or 1.0
    return (n[0] / length, n[1] / length, n[2] / length)


def check_series(
    facts: Sequence[InstanceFacts],
    *,
    spacing_tolerance: float = 0.1,
    orientation_tolerance: float = 1e-3,
) -> Verdict:
    """Check one series' instances; the order of *facts* does not matter."""
    reasons: set[str] = set()
    for f in facts:
        reasons.update(f.problems)
    numbers = [f.instance_number for f in facts if f.instance_number is not None]
    counts = Counter(numbers)
    if any(c > 1 for c in counts.values()):
        reasons.add("duplicate-instance-number")
    if numbers and (max(numbers) - min(numbers) + 1) > len(counts):
        reasons.add("missing-instances")
    expected = max((f.images_in_acquisition or 0 for f in facts), default=0)
    if expected and len(facts) < expected:
        reasons.add("missing-instances")
    sizes = {(f.rows, f.columns, f.pixel_spacing) for f in facts if f.rows is not None}
    if len(sizes) > 1:
        reasons.add("inconsistent-size")
    placed = [f for f in facts if f.position is not None and f.orientation is not None]
    ordered = sorted(facts, key=lambda f: (f.instance_number is None, f.instance_number or 0))
    if len(facts) >= 3 and placed:
        if len(placed) < len(facts):
            reasons.add("missing-position")
        first = placed[0].orientation
        assert first is not None
        if any(
            max(abs(a - b) for a, b in zip(f.orientation or first, first, strict=True))
            > orientation_tolerance
            for f in placed
        ):
            reasons.add("inconsistent-orientation")
        normal = _normal(first)
        along = sorted(
            ((sum(p * n for p, n in zip(f.position or (0, 0, 0), normal, strict=True)), f)
             for f in placed),
            key=lambda pair: pair[0],
        )  # fmt: skip
        ordered = [f for _d, f in along] + [f for f in ordered if f not in placed]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(along)]
        if any(abs(g) < 1e-3 for g in gaps):
            reasons.add("duplicate-position")
        real = sorted(g for g in gaps if abs(g) >= 1e-3)
        if real:
            typical = real[len(real) // 2]
            if any(abs(g - typical) > spacing_tolerance * typical for g in real):
                reasons.add("uneven-spacing")
    return Verdict(not reasons, tuple(sorted(reasons)), tuple(f.sop_instance_uid for f in ordered))
