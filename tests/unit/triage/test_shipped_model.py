"""The shipped demonstration model on real CT slices of a patient it was not trained on.

Findings are inserted by the test with the generator the training uses
(:mod:`analysis.training.synthetic`), from seeds the training and evaluation never used.
"""

from __future__ import annotations

from typing import Any

import blake3
import numpy as np
import numpy.typing as npt
import pytest

from analysis.training.synthetic import FindingKind, FindingSpec, Site, insert_finding
from analysis.triage import DEFAULT_CARD, Lane, TriageModel, read_card
from tests.unit.triage.conftest import CtSlice

# Slices of lung1 (0 = most inferior): liver dome, heart, hila, upper lobes.
SLICES = (8, 18, 28, 38)
# Large findings: 45 to 80 mm across and at least 1600 mm2 on the slice.
LARGE = FindingSpec(
    diameter_mm=(45.0, 80.0), air_soft_tissue_diameter_mm=(45.0, 80.0), min_area_mm2=1600.0
)
# The kinds and sites the generator draws by default (dense findings go to soft tissue).
FINDINGS = [(FindingKind.AIR, Site.LUNG), (FindingKind.AIR, Site.SOFT_TISSUE),
            (FindingKind.DENSE, Site.SOFT_TISSUE)]  # fmt: skip


def _score(model: TriageModel, hu: np.ndarray, spacing: tuple[float, float]) -> float:
    return float(model.score(model.preprocess(hu, spacing)[None])[0])


def test_the_committed_onnx_file_has_the_cards_blake3() -> None:
    card = read_card(DEFAULT_CARD)
    assert blake3.blake3(card.model_file.read_bytes()).hexdigest() == card.blake3


def test_the_shipped_model_is_small_and_labelled_a_demonstration(shipped: TriageModel) -> None:
    assert shipped.card.model_file.stat().st_size < 5 * 1024 * 1024
    assert shipped.identity.demonstration is True
    assert shipped.identity.name == shipped.card.name and shipped.identity.version
    assert "Not for clinical use" in shipped.card.intended_use


def test_it_applies_to_ct_only(shipped: TriageModel) -> None:
    assert shipped.applies_to("CT", "CHEST") and shipped.applies_to("ct", None)
    assert not shipped.applies_to("MR", "CHEST") and not shipped.applies_to("CT", "KNEE")


@pytest.mark.parametrize("index", SLICES)
def test_clean_slices_score_below_the_critical_threshold(
    shipped: TriageModel, lung1: list[CtSlice], index: int
) -> None:
    s = lung1[index]
    score = _score(shipped, s.hu, s.spacing)
    assert score < shipped.card.thresholds.by_lane[Lane.CRITICAL], score
    assert shipped.lane_for(score) is not Lane.CRITICAL


def test_large_inserted_findings_raise_their_slice_to_critical(
    shipped: TriageModel, lung1: list[CtSlice]
) -> None:
    """Twelve fresh large findings (4 slices x 3 kinds). The card measures a sensitivity of about
    0.9 at the critical threshold for findings of 1600 mm2 or more on this patient, so each must
    at least reach the urgent lane, well above its clean slice, and 10 of 12 must reach critical.
    """
    critical = shipped.card.thresholds.by_lane[Lane.CRITICAL]
    urgent = shipped.card.thresholds.by_lane[Lane.URGENT]
    results = []
    for index in SLICES:
        s = lung1[index]
        clean = _score(shipped, s.hu, s.spacing)
        for kind, site in FINDINGS:
            seed = [7, index, list(FindingKind).index(kind), list(Site).index(site)]
            rng = np.random.default_rng(seed)
            hu, finding = insert_finding(s.hu, s.spacing, rng, kind=kind, site=site, spec=LARGE)
            assert finding is not None and finding.area_mm2 >= LARGE.min_area_mm2
            score = _score(shipped, hu, s.spacing)
            results.append((index, kind.value, site.value, round(clean, 3), round(score, 3)))
            assert score >= urgent and score > clean + 0.15, results[-1]
    assert sum(r[-1] >= critical for r in results) >= 10, results


def test_a_finding_makes_its_series_critical_and_leaves_other_slices_alone(
    shipped: TriageModel, lung1: list[CtSlice]
) -> None:
    slices = [s.hu for s in lung1]
    spacings = [s.spacing for s in lung1]
    clean = shipped.score_series(slices, spacings)
    assert len(clean.slice_scores) == 48 and clean.model == shipped.identity
    assert clean.score == max(clean.slice_scores)
    rng = np.random.default_rng(99)
    hu, finding = insert_finding(
        lung1[30].hu, lung1[30].spacing, rng, kind=FindingKind.AIR, spec=LARGE
    )
    assert finding is not None
    slices[30] = hu
    flagged = shipped.score_series(slices, spacings, batch_size=7)
    assert flagged.lane is Lane.CRITICAL and flagged.peak_slice == 30
    assert 30 in flagged.flagged[Lane.CRITICAL] and 30 not in clean.flagged[Lane.CRITICAL]
    untouched = [i for i in range(48) if i != 30]
    assert np.allclose(
        np.array(flagged.slice_scores)[untouched], np.array(clean.slice_scores)[untouched]
    )


def test_scores_do_not_depend_on_batching(shipped: TriageModel, lung1: list[CtSlice]) -> None:
    batch = np.stack([shipped.preprocess(lung1[i].hu, lung1[i].spacing) for i in SLICES])
    together = shipped.score(batch)
    alone = np.array([shipped.score(batch[i : i + 1])[0] for i in range(len(SLICES))])
    assert together.shape == (len(SLICES),) and together.dtype == np.float32
    assert np.allclose(together, alone, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "words"),
    [("smaller", "shape"), ("no batch axis", "shape"), ("float64", "float32"), ("empty", "shape")],
)
def test_a_batch_the_card_does_not_describe_is_refused(
    shipped: TriageModel, change: str, words: str
) -> None:
    c, h, w = shipped.card.preprocessing.sample_shape
    batches: dict[str, npt.NDArray[np.floating[Any]]] = {
        "smaller": np.zeros((1, c, h // 2, w // 2), dtype=np.float32),
        "no batch axis": np.zeros((c, h, w), dtype=np.float32),
        "float64": np.zeros((1, c, h, w), dtype=np.float64),
        "empty": np.zeros((0, c, h, w), dtype=np.float32),
    }
    batch = batches[change]
    with pytest.raises(ValueError, match=words):
        shipped.score(batch)


def test_a_series_with_mismatched_spacings_is_refused(
    shipped: TriageModel, lung1: list[CtSlice]
) -> None:
    with pytest.raises(ValueError, match="2 pixel spacings for 1 slices"):
        shipped.score_series([lung1[0].hu], [lung1[0].spacing] * 2)
    with pytest.raises(ValueError, match="at least one slice"):
        shipped.score_series([], [])
