"""Radiomics extraction time: Radiogate (crop per segment + process pool) against pyradiomics alone.

Run from the repository root::

    .venv/bin/python bench/bench_radiomics.py              # tumour + both lungs, pool of 2
    .venv/bin/python bench/bench_radiomics.py --quick      # tumour + a dilated tumour
    .venv/bin/python bench/bench_radiomics.py --processes 1 --reps 3

Same image, same masks, same pyradiomics settings, same run:

- image: the 48-slice 512x512 lung CT of ``tests/data`` built with ``analysis.radiomics.volume``;
- masks: the lung1 tumour label (``tests/data/lung1_label.nrrd``) and the left and right lungs
  from ``analysis.radiomics.lung`` (computed before any timing), or with ``--quick`` the tumour
  and the tumour dilated by 3 voxels;
- settings: pyradiomics' defaults with every feature class (bin width 25, no resampling), so that
  both sides compute the same 107 features (checked equal after timing);
- ``pyradiomics``: ``RadiomicsFeatureExtractor(settings).execute(image, mask)`` per segment, one
  after the other, on the whole image (what its documentation shows);
- ``radiogate``: ``analysis.radiomics.features.extract(volume, segments, params,
  processes=N)``: each segment cropped to its box + 2 voxels, the segments in a pool of N spawned
  processes (pool start-up included, as a caller without a long-lived pool pays it: about a
  second per worker, spawning and importing pyradiomics); ``--processes 1`` measures the crop
  alone, in process.

Each side: one warm-up, then ``--reps`` timed runs; the median counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.radiomics._sitk import sitk  # noqa: E402
from analysis.radiomics.features import Segment, extract  # noqa: E402
from analysis.radiomics.lung import LungLabel, segment_lungs  # noqa: E402
from analysis.radiomics.params import parse_parameters  # noqa: E402
from analysis.radiomics.preprocess import to_sitk  # noqa: E402
from analysis.radiomics.volume import build_volume, slice_input  # noqa: E402
from tests.support.data import DATA, extract_ct  # noqa: E402

PARAMS = b"""
radiogate:
  version: 1
  resampling:
  bin_origin: pyradiomics
  crop_margin_voxels: 2
pyradiomics:
  imageType:
    Original: {}
  featureClass:
    shape:
    firstorder:
    glcm:
    glrlm:
    glszm:
    gldm:
    ngtdm:
  setting:
    binWidth: 25
    additionalInfo: false
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tumour and dilated tumour only")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = extract_ct(Path(tmp))
        result = build_volume([slice_input(pydicom.dcmread(f)) for f in files])
    volume = result.volume
    assert volume is not None, result.flags
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "lung1_label.nrrd")))
    tumour = label == 1
    if args.quick:
        segments = [
            Segment("tumour", tumour),
            Segment("dilated", ndimage.binary_dilation(tumour, iterations=3)),
        ]
    else:
        lungs = segment_lungs(volume)
        segments = [
            Segment("tumour", tumour),
            Segment("left lung", lungs.mask(LungLabel.LEFT)),
            Segment("right lung", lungs.mask(LungLabel.RIGHT)),
        ]
    params = parse_parameters(PARAMS, "bench")
    for s in segments:
        print(f"segment {s.name}: {int(s.mask.sum())} voxels")

    import logging

    import radiomics  # type: ignore[import-untyped]
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)

    def pyradiomics_alone() -> dict[str, dict[str, float]]:
        extractor = featureextractor.RadiomicsFeatureExtractor(params.pyradiomics)
        image = to_sitk(volume.array, volume.geometry)
        out = {}
        for s in segments:
            mask = to_sitk(s.mask.astype(np.uint8), volume.geometry)
            out[s.name] = {k: float(v) for k, v in extractor.execute(image, mask).items()}
        return out

    def radiogate() -> dict[str, dict[str, float]]:
        found = extract(volume, segments, params, processes=args.processes)
        return {r.segment: dict(r.values) for r in found}

    timings: dict[str, list[float]] = {"pyradiomics": [], "radiogate": []}
    outputs = {}
    for name, run in (("pyradiomics", pyradiomics_alone), ("radiogate", radiogate)):
        outputs[name] = run()  # warm-up
        for _ in range(args.reps):
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)

    worst = 0.0
    for s in segments:
        a, b = outputs["pyradiomics"][s.name], outputs["radiogate"][s.name]
        assert set(a) == set(b), s.name
        for k in a:
            worst = max(worst, abs(a[k] - b[k]) / max(abs(a[k]), 1e-12))
    median = {k: statistics.median(v) for k, v in timings.items()}
    runs = {k: ", ".join(f"{t:.2f}" for t in v) for k, v in timings.items()}
    print(f"pyradiomics alone: {median['pyradiomics']:.2f} s (runs {runs['pyradiomics']})")
    print(
        f"radiogate (crop + pool of {args.processes}): {median['radiogate']:.2f} s "
        f"(runs {runs['radiogate']})"
    )
    print(f"ratio pyradiomics / radiogate: {median['pyradiomics'] / median['radiogate']:.2f}x")
    print(f"largest relative difference between the two: {worst:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
