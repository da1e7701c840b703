"""The synthetic-finding generator: inside the body, plausible HU, smooth edge, seed-determined."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.training.synthetic import (
    FindingKind,
    FindingSpec,
    Site,
    anatomy,
    box_mean,
    insert_finding,
)
from tests.unit.triage.conftest import CtSlice

SPEC = FindingSpec()


@pytest.mark.parametrize("kind", list(FindingKind))
@pytest.mark.parametrize("site", list(Site))
def test_a_finding_lies_in_its_region_with_plausible_hu(
    lung1: list[CtSlice], kind: FindingKind, site: Site
) -> None:
    s = lung1[28]
    anat = anatomy(s.hu, s.spacing)
    out, finding = insert_finding(s.hu, s.spacing, np.random.default_rng(3), kind, site)
    assert finding is not None and finding.kind is kind and finding.site is site
    changed = np.abs(out - s.hu) > 1.0
    assert changed.sum() * s.spacing[0] * s.spacing[1] >= 0.5 * finding.area_mm2
    assert not (changed & ~anat.body).any(), "a finding never leaves the body"
    region = anat.lung if site is Site.LUNG else anat.soft_region
    assert changed[region].sum() > 0.9 * changed.sum()
    low, high = SPEC.air_hu if kind is FindingKind.AIR else SPEC.dense_hu
    core = np.abs(out - finding.hu) < 4 * anat.noise_hu
    r, c = finding.centre
    assert core[r, c] or core[max(0, r - 3) : r + 4, max(0, c - 3) : c + 4].any()
    assert low <= finding.hu <= high
    sizes = SPEC.diameter_mm
    if kind is FindingKind.AIR and site is Site.SOFT_TISSUE:
        sizes = SPEC.air_soft_tissue_diameter_mm
    assert sizes[0] <= finding.diameter_mm <= sizes[1]
    assert finding.area_mm2 >= SPEC.min_area_mm2


def test_the_edge_is_smooth(lung1: list[CtSlice]) -> None:
    """No step of the full finding contrast between neighbouring pixels at the edge."""
    s = lung1[20]
    out, finding = insert_finding(
        s.hu, s.spacing, np.random.default_rng(11), FindingKind.DENSE, Site.SOFT_TISSUE,
        spec=FindingSpec(edge_mm=(3.0, 3.0)),
    )  # fmt: skip
    assert finding is not None
    change = out.astype(np.float64) - s.hu
    step = np.abs(np.diff(change, axis=1)).max()
    assert step < 0.7 * np.abs(change).max()


def test_the_seed_decides_everything(lung1: list[CtSlice]) -> None:
    s = lung1[18]
    a, fa = insert_finding(s.hu, s.spacing, np.random.default_rng(5))
    b, fb = insert_finding(s.hu, s.spacing, np.random.default_rng(5))
    c, fc = insert_finding(s.hu, s.spacing, np.random.default_rng(6))
    assert fa == fb and a.tobytes() == b.tobytes()
    assert fa != fc and a.tobytes() != c.tobytes()


def test_kinds_and_sites_vary_when_drawn(lung1: list[CtSlice]) -> None:
    """Air goes to the lung or soft tissue, dense findings to soft tissue."""
    s = lung1[28]
    anat = anatomy(s.hu, s.spacing)
    seen = set()
    for seed in range(12):
        _, finding = insert_finding(
            s.hu, s.spacing, np.random.default_rng(seed), slice_anatomy=anat
        )
        assert finding is not None
        seen.add((finding.kind, finding.site))
    assert seen == {(FindingKind.AIR, Site.LUNG), (FindingKind.AIR, Site.SOFT_TISSUE),
                    (FindingKind.DENSE, Site.SOFT_TISSUE)}  # fmt: skip


def test_a_slice_without_a_body_gets_no_finding() -> None:
    air = np.full((128, 128), -1000.0)
    out, finding = insert_finding(air, (1.0, 1.0), np.random.default_rng(0))
    assert finding is None and np.array_equal(out, air)


def test_box_mean_matches_a_direct_mean() -> None:
    image = np.random.default_rng(2).normal(size=(20, 17))
    out = box_mean(image, 2)
    for r, c in [(0, 0), (5, 7), (19, 16), (10, 0)]:
        window = image[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3]
        assert out[r, c] == pytest.approx(window.mean())
