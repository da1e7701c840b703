"""Chest CT analysis time: the whole analysis against pyradiomics alone, in one run.

Run from the repository root::

    .venv/bin/python bench/bench_analysis.py             # 3 timed runs of each, 300-slice study
    .venv/bin/python bench/bench_analysis.py --reps 1 --no-long
    .venv/bin/python bench/bench_analysis.py --stages --no-long   # and where the time goes
    .venv/bin/python bench/bench_analysis.py --reps 1 --long-slices 500   # a 500-slice study

One Orthanc (started here, as ``radiogate run`` starts it) holds the 48-slice lung1 CT of
``tests/data`` and another tool's SEG of its tumour (``lung1_label.nrrd``). Timed in turns, after
one warm-up each:

- ``analysis``: what an analysis job does in the worker's spawned process
  (:func:`dicom_nodes.pipeline.analyse._analyse`): read the series and the study's SEG back
  from Orthanc, order and build the volume, segment the lungs, extract IBSI features of both
  lungs and the tumour with the shipped ``ct_ibsi`` parameters, the lung measures, the
  emphysema model, write the SEG and the TID 1500 SR with highdicom; then both are stored in
  Orthanc (``POST /instances``). In this process, so that the pyradiomics comparison is like
  for like (the worker adds a process start: measured separately as ``worker job``).
- ``pyradiomics``: ``RadiomicsFeatureExtractor.execute(image, mask)`` per segment on the same
  image and the same three masks (computed before timing), with the same pyradiomics settings
  and pyradiomics' own resampling to the same 2 mm grid (``resampledPixelSpacing``,
  ``sitkLinear``): the feature extraction a pyradiomics user would run, nothing else.
- ``worker job``: :func:`dicom_nodes.pipeline.analyse._run_in_process`, the spawned process the
  worker runs (process start and imports included), and its peak resident memory
  (``RUSAGE_CHILDREN``: the largest analysis process, its pyradiomics pool included).
- ``300-slice``: a 300-slice study (lung1 repeated along z) analysed by a worker job: the
  per-study wall time and peak memory of a study of common size (lungs only: no outline);
  ``--long-slices 500`` for the largest study the memory budget (about 2 GB) is set for.
- ``--stages``: the whole analysis again, *reps* times, with the time of each stage (median):
  reading from Orthanc, parsing, the volume, the lungs, the features (starting them; waiting
  for them, after the key-slice outlines and the SEG's draft, which run meanwhile), the SEG's
  completion, the SR, encoding and storing; what is left is the glue between them.

The goal: the whole analysis within 1.3x the pyradiomics time. The machine's load is printed:
on a shared machine the figures move together, the ratio less so.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.radiomics.lung import LungLabel, segment_lungs  # noqa: E402
from analysis.radiomics.params import load_parameters  # noqa: E402
from analysis.radiomics.preprocess import to_sitk  # noqa: E402
from analysis.radiomics.volume import build_volume, slice_input  # noqa: E402
from bench.bench_triage_e2e import critical_ct  # noqa: E402
from dicom_nodes.pipeline.analyse import Analysis, _analyse, _Claimed, _run_in_process  # noqa: E402
from dicom_nodes.services.orthanc import ManagedOrthanc  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support.data import extract_ct  # noqa: E402
from tests.support.outline import lung1_tumour_seg  # noqa: E402


def _timed(run: Callable[[], Any], reps: int) -> list[float]:
    run()  # warm-up
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        out.append(time.perf_counter() - start)
    return out


def _paired(runs: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """Each of *runs* once to warm up, then in turns, *reps* times: the machine's load changes
    both sides alike."""
    for run in runs.values():
        run()
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            out[name].append(time.perf_counter() - start)
    return out


#: stage -> (module, function): what --stages times, by patching the function where it is looked up
_STAGES: dict[str, tuple[str, str]] = {
    "read from Orthanc": ("dicom_nodes.archive", "OrthancArchive.series_files"),
    "list the study": ("dicom_nodes.archive", "OrthancArchive.study_series"),
    "parse (pydicom.dcmread)": ("pydicom", "dcmread"),
    "volume (order, HU)": ("analysis.pipelines.chest_ct", "_order"),
    "release pixels": ("analysis.pipelines.chest_ct", "_release_pixels"),
    "lesions from the SEG": ("analysis.pipelines.chest_ct", "lesions_from_seg"),
    "lung segmentation": ("analysis.pipelines.chest_ct", "segment_lungs"),
    "lung measures": ("analysis.pipelines.chest_ct", "lung_measures"),
    "features: crops, process start": ("analysis.pipelines.chest_ct", "extract_in_background"),
    "key-slice outlines (during features)": ("analysis.pipelines.chest_ct", "_segment"),
    "SEG draft (during features)": ("analysis.pipelines.chest_ct", "draft_segmentation"),
    "features: waiting for them": ("analysis.radiomics.features", "PendingFeatures.result"),
    "emphysema model": ("analysis.pipelines.chest_ct", "_predictions"),
    "SEG finish": ("analysis.results.seg", "SegmentationDraft.finish"),
    "SR build": ("analysis.pipelines.chest_ct", "build_measurement_report"),
    "feature table rows": ("analysis.pipelines.chest_ct", "measurement_rows"),
    "encode SEG + SR (to_bytes)": ("analysis.results", "to_bytes"),
}


_SPENT: dict[str, float] = {}
_STORE = "store in Orthanc (bench)"


def _stages(whole: Callable[[], Any], reps: int) -> dict[str, list[float]]:
    """*whole* run *reps* times with each of :data:`_STAGES` timed; ``store in Orthanc`` and
    ``whole`` too."""
    import importlib

    spent = _SPENT
    restore: list[tuple[Any, str, Any]] = []

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return run

    for name, (module, attribute) in _STAGES.items():
        owner: Any = importlib.import_module(module)
        *path, last = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        restore.append((owner, last, getattr(owner, last)))
        setattr(owner, last, timed(name, getattr(owner, last)))
    out: dict[str, list[float]] = {}
    try:
        for _ in range(reps):
            spent.clear()
            start = time.perf_counter()
            whole()
            total = time.perf_counter() - start
            for name in [*_STAGES, _STORE]:
                out.setdefault(name, []).append(spent.get(name, 0.0))
            out.setdefault("whole", []).append(total)
    finally:
        for owner, last, original in restore:
            setattr(owner, last, original)
    return out


def _peak_children_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _fmt(runs: list[float]) -> str:
    return f"{statistics.median(runs):6.2f} s (runs {', '.join(f'{t:.2f}' for t in runs)})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1, help="[analysis] processes")
    parser.add_argument("--no-long", action="store_true", help="skip the long study")
    parser.add_argument("--long-slices", type=int, default=300, help="slices of the long study")
    parser.add_argument("--stages", action="store_true", help="time each stage of the analysis")
    args = parser.parse_args()

    import logging

    import radiomics  # type: ignore[import-untyped]
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    params = load_parameters("ct_ibsi")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = extract_ct(tmp / "ct")
        datasets = [pydicom.dcmread(f) for f in files]
        seg_bytes, tumour = lung1_tumour_seg(datasets)
        orthanc = ManagedOrthanc(storage_dir=tmp / "orthanc", http_port=free_port(),
                                 dicom_port=free_port(), peers=[])  # fmt: skip
        orthanc.start()
        try:
            for f in files:
                orthanc.request("/instances", method="POST", body=f.read_bytes())
            orthanc.request("/instances", method="POST", body=seg_bytes)
            creds = orthanc.credentials
            analysis = Analysis(orthanc.url, creds.user, creds.password, 1800.0,
                                args.processes, 10, "ct_ibsi", True)  # fmt: skip
            study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
            claimed = _Claimed("bench", series, study, "chest-ct", series, study, 1, (None, None))

            def whole() -> None:
                out = _analyse(analysis, claimed)
                start = time.perf_counter()
                orthanc.request("/instances", method="POST", body=out["seg"])
                orthanc.request("/instances", method="POST", body=out["sr"])
                _SPENT[_STORE] = _SPENT.get(_STORE, 0.0) + time.perf_counter() - start

            # pyradiomics alone: the same image, the same three masks, the same settings.
            built = build_volume([slice_input(ds) for ds in datasets])
            assert built.volume is not None
            volume = built.volume
            lungs = segment_lungs(volume)
            masks = [tumour, lungs.mask(LungLabel.LEFT), lungs.mask(LungLabel.RIGHT)]
            settings = dict(params.pyradiomics)
            settings["setting"] = {**params.settings, "resampledPixelSpacing": [2.0, 2.0, 2.0],
                                   "interpolator": "sitkLinear"}  # fmt: skip
            image = to_sitk(volume.array, volume.geometry)

            def pyradiomics_alone() -> None:
                extractor = featureextractor.RadiomicsFeatureExtractor(settings)
                for m in masks:
                    extractor.execute(image, to_sitk(m.astype(np.uint8), volume.geometry))

            print(f"segments: {', '.join(str(int(m.sum())) for m in masks)} voxels "
                  "(tumour, left lung, right lung)")  # fmt: skip
            timings = _paired({"pyradiomics": pyradiomics_alone, "analysis": whole}, args.reps)
            stages = _stages(whole, args.reps) if args.stages else {}
            job = _timed(lambda: _run_in_process(analysis, claimed), args.reps)
            job_peak = _peak_children_mib()

            long_runs: list[float] = []
            long_peak = 0.0
            if not args.no_long:
                long = critical_ct(files, tmp / "long", args.long_slices)
                for f in long:
                    orthanc.request("/instances", method="POST", body=f.read_bytes())
                head = pydicom.dcmread(long[0], stop_before_pixels=True)
                long_study, long_series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
                long_claim = _Claimed("bench-long", long_series, long_study, "chest-ct",
                                      long_series, long_study, 1, (None, None))  # fmt: skip
                long_runs = _timed(lambda: _run_in_process(analysis, long_claim),
                                   max(1, args.reps - 1))  # fmt: skip
                long_peak = _peak_children_mib()
        finally:
            orthanc.stop()

    median = {k: statistics.median(v) for k, v in timings.items()}
    print(f"pyradiomics alone (3 segments):      {_fmt(timings['pyradiomics'])}")
    print(f"whole analysis, stored in Orthanc:  {_fmt(timings['analysis'])}")
    print(f"ratio analysis / pyradiomics:        {median['analysis'] / median['pyradiomics']:.2f}x"
          "  (goal <= 1.3x)")  # fmt: skip
    if stages:
        print("stages of the whole analysis (median of the runs):")
        for name, runs in stages.items():
            print(f"  {name:34s}{_fmt(runs)}")
    print(f"worker job, 48 slices (spawned):     {_fmt(job)}; peak RSS {job_peak:.0f} MiB")
    if long_runs:
        print(f"worker job, {args.long_slices} slices (spawned):    {_fmt(long_runs)}; "
              f"peak RSS {long_peak:.0f} MiB")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
