"""Training data for the demonstration emphysema model: real chest CT lungs with simulated
emphysema inserted at known extents, measured exactly as the pipeline measures a study.

There is no labelled emphysema CT under a licence we may ship, so the label comes from a
simulation on real anatomy. For each of two real chest CTs (pyradiomics' lung1 and lung2 test
cases, BSD-3-Clause; ``tests/data/PROVENANCE.md``) and each draw of :class:`Simulation`:

1. **emphysema**: a Gaussian random field smoothed at the cluster scale is thresholded inside the
   lungs so that exactly ``extent_percent`` of the lung voxels become emphysematous spaces of
   mean attenuation ``lesion_hu`` (air with partial volume, -1000 to -960 HU). Small scales look
   centrilobular, large ones panlobular or bullous;
2. **inspiration level**: the remaining parenchyma is shifted by ``shift_hu`` (a deeper or
   shallower breath moves lung density by tens of HU);
3. **reconstruction kernel and dose**: an in-plane Gaussian blur of ``smoothing_px`` pixels, then
   white noise of ``noise_hu`` SD. Both move %LAA-950 without any change of the lung: noise
   pushes normal parenchyma below -950 HU, blur pulls small spaces above it. This is why a
   model on more than %LAA-950 is worth having;
4. the modified volume is **segmented again** (:func:`analysis.radiomics.segment_lungs`), the lung
   measures taken (:func:`analysis.radiomics.lung_measures`) and pyradiomics features extracted
   per lung (:func:`analysis.radiomics.extract`) under the pipeline's parameter set ``ct_ibsi``,
   with the shape class left out: shape features describe the lung, not its parenchyma, take
   two thirds of the time, and other classes are computed independently of it (checked once
   per run, :func:`check_same_values`).

The target of a lung is the **simulated emphysema extent**: the percentage of its (re-segmented)
voxels that were made emphysematous. The native lungs are counted as free of emphysema.

Only :func:`main` reads and writes files (the CT volumes, the CSV); run it as
``python -m analysis.training.emphysema_data --pyradiomics-data DIR`` where DIR holds
``lung1_image.nrrd`` and ``lung2_image.nrrd`` (the ``data/`` folder of the pyradiomics 3.0.1
sdist: ``pip download --no-deps --no-binary :all: pyradiomics==3.0.1``). About 5 s per
simulated CT on one core.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
from scipy import ndimage  # type: ignore[import-untyped]

from analysis.radiomics import (
    LungLabel,
    ParameterSet,
    Segment,
    SegmentFeatures,
    Volume,
    extract,
    load_parameters,
    lung_measures,
    segment_lungs,
)
from analysis.radiomics._sitk import sitk
from analysis.radiomics.lung import RegionMeasures
from analysis.radiomics.params import parse_parameters
from analysis.radiomics.volume import Geometry

__all__ = [
    "LUNG_MEASURES",
    "PATIENTS",
    "Sample",
    "Simulation",
    "check_same_values",
    "draw",
    "lung_feature_values",
    "main",
    "samples",
    "simulate",
    "texture_parameters",
]

PATIENTS = ("lung1", "lung2")
#: Lung measures (:class:`RegionMeasures` fields) that are model inputs, with their column names.
LUNG_MEASURES: Mapping[str, str] = {
    "lung_laa950_percent": "laa950_percent",
    "lung_perc15_hu": "perc15_hu",
    "lung_mean_hu": "mean_hu",
}
_HU_MIN, _HU_MAX = -1024, 3071
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Simulation:
    """One draw of the simulation (see the module doc for each term)."""

    extent_percent: float
    cluster_mm: float
    lesion_hu: float
    shift_hu: float
    noise_hu: float
    smoothing_px: float


def draw(rng: np.random.Generator) -> Simulation:
    """Extent uniform in [0, 40] %, so every severity band is represented (none < 5 %, mild,
    moderate, severe >= 25 %); confounders uniform over ranges seen between scanners,
    kernels and breath holds."""
    return Simulation(
        extent_percent=float(rng.uniform(0.0, 40.0)),
        cluster_mm=float(rng.uniform(1.5, 6.0)),
        lesion_hu=float(rng.uniform(-1000.0, -960.0)),
        shift_hu=float(rng.uniform(-35.0, 35.0)),
        noise_hu=float(rng.uniform(0.0, 35.0)),
        smoothing_px=float(rng.uniform(0.0, 1.2)),
    )


def _box(mask: Mask, margin: int) -> tuple[slice, ...]:
    hits = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    return tuple(
        slice(max(int(h[0]) - margin, 0), min(int(h[-1]) + 1 + margin, n))
        for h, n in zip(hits, mask.shape, strict=True)
    )


def simulate(
    volume: Volume, lungs: Mask, sim: Simulation, rng: np.random.Generator
) -> tuple[Volume, Mask]:
    """A copy of *volume* with *sim* applied inside the bounding box of *lungs*, and the mask
    of the emphysematous voxels."""
    box = _box(lungs, margin=4)
    hu = volume.array[box].astype(np.float32)
    lung = lungs[box]
    sx, sy, sz = volume.geometry.spacing
    sigma = (sim.cluster_mm / sz, sim.cluster_mm / sy, sim.cluster_mm / sx)
    field = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), sigma)
    lesion = np.zeros_like(lung)
    if sim.extent_percent > 0:
        cut = np.quantile(field[lung], 1.0 - sim.extent_percent / 100.0)
        lesion = lung & (field >= cut)
    hu[lung & ~lesion] += sim.shift_hu
    hu[lesion] = sim.lesion_hu
    if sim.smoothing_px > 0:
        hu = ndimage.gaussian_filter(hu, (0.0, sim.smoothing_px, sim.smoothing_px))
    if sim.noise_hu > 0:
        hu += rng.normal(0.0, sim.noise_hu, hu.shape).astype(np.float32)
    out = volume.array.copy()
    out[box] = np.clip(np.rint(hu), _HU_MIN, _HU_MAX).astype(out.dtype)
    full = np.zeros(volume.array.shape, dtype=bool)
    full[box] = lesion
    return Volume(out, volume.geometry), full


def texture_parameters(params: ParameterSet) -> ParameterSet:
    """*params* without the shape class (same settings otherwise; its own hash)."""
    doc = yaml.safe_load(params.text)
    classes = doc["pyradiomics"]["featureClass"]
    doc["pyradiomics"]["featureClass"] = {k: v for k, v in classes.items() if k != "shape"}
    header = f"# {params.name} ({params.blake3}) without the shape class\n"
    return parse_parameters((header + yaml.safe_dump(doc, sort_keys=True)).encode(), params.name)


def check_same_values(full: SegmentFeatures, part: SegmentFeatures) -> None:
    """Every feature of *part* has exactly its value in *full* (classes are independent)."""
    for name, value in part.values.items():
        if full.values.get(name) != value:
            raise AssertionError(f"{name}: {value} without shape, {full.values.get(name)} with")


def lung_feature_values(
    features: SegmentFeatures | None, region: RegionMeasures | None
) -> dict[str, float]:
    """The lung measures under their column names, then the pyradiomics values as pyradiomics
    names them (``original_firstorder_Median``); absent ones are left out."""
    out: dict[str, float] = {}
    if region is not None:
        for column, attribute in LUNG_MEASURES.items():
            out[column] = float(getattr(region, attribute))
    if features is not None:
        out.update(features.values)
    return out


@dataclass(frozen=True)
class Sample:
    """One lung of one simulated CT."""

    patient: str
    draw: int
    side: str
    target_percent: float
    simulation: Simulation
    features: Mapping[str, float]


def samples(
    patient: str,
    volume: Volume,
    count: int,
    params: ParameterSet,
    seed: int,
) -> Iterator[Sample]:
    """*count* simulated CTs of *volume*, two lungs each; draw *k* of patient index *p* uses the
    generator seeded with ``[seed, p, k]`` (reproducible one by one)."""
    index = PATIENTS.index(patient)
    native = segment_lungs(volume).mask()
    for k in range(count):
        rng = np.random.default_rng([seed, index, k])
        sim = draw(rng)
        modified, lesion = simulate(volume, native, sim, rng)
        seg = segment_lungs(modified)
        measures = lung_measures(modified, seg)
        sides = [
            ("right", LungLabel.RIGHT, measures.right),
            ("left", LungLabel.LEFT, measures.left),
        ]
        masks = {name: seg.mask(label) for name, label, _ in sides}
        found = extract(modified, [Segment(n, m) for n, m in masks.items() if m.any()], params)
        by_name = {f.segment: f for f in found}
        for name, _, region in sides:
            if region is None or name not in by_name:
                continue
            target = 100.0 * float(lesion[masks[name]].mean())
            values = lung_feature_values(by_name[name], region)
            yield Sample(patient, k, name, target, sim, values)


def read_nrrd(path: Path) -> Volume:
    """A CT volume (HU) from an image file SimpleITK reads."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    geometry = Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return Volume(array.astype(np.int16), geometry)


_META = ("patient", "draw", "side", "target_percent")
_SIM = tuple(f.name for f in fields(Simulation))


def _row(sample: Sample, columns: Sequence[str]) -> list[str]:
    sim = asdict(sample.simulation)
    meta: list[Any] = [sample.patient, sample.draw, sample.side, sample.target_percent]
    values = [*meta, *(sim[k] for k in _SIM)]
    values += [sample.features.get(c, math.nan) for c in columns]
    return [v if isinstance(v, str) else f"{v:.9g}" for v in values]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyradiomics-data", type=Path, required=True)
    parser.add_argument("--draws", type=int, default=50, help="simulated CTs per patient")
    parser.add_argument("--seed", type=int, default=20240506)
    parser.add_argument(
        "--out", type=Path, default=Path("tests/data/emphysema/features.csv"), help="CSV to write"
    )
    args = parser.parse_args(argv)
    full = load_parameters("ct_ibsi")
    params = texture_parameters(full)
    columns: list[str] | None = None
    rows: list[list[str]] = []
    for patient in PATIENTS:
        volume = read_nrrd(args.pyradiomics_data / f"{patient}_image.nrrd")
        lung = segment_lungs(volume).mask(LungLabel.RIGHT)
        (with_shape,) = extract(volume, [Segment("right", lung)], full)
        (without,) = extract(volume, [Segment("right", lung)], params)
        check_same_values(with_shape, without)
        start = time.monotonic()
        for sample in samples(patient, volume, args.draws, params, args.seed):
            if columns is None:
                columns = sorted(sample.features)
            rows.append(_row(sample, columns))
            print(
                f"{patient} draw {sample.draw} {sample.side}: target {sample.target_percent:.1f}"
                f" %, LAA-950 {sample.features['lung_laa950_percent']:.1f} %"
                f" ({time.monotonic() - start:.0f} s)",
                file=sys.stderr,
            )
    assert columns is not None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*_META, *_SIM, *columns])
        writer.writerows(rows)
    print(f"{len(rows)} samples, {len(columns)} features -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
