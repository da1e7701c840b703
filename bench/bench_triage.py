"""Triage throughput: slices/s of the shipped demonstration model, single intra-op thread.

    python bench/bench_triage.py              # 48-slice lung1 series, 5 rounds
    python bench/bench_triage.py --rounds 10 --card path/to/card.toml

Measures, on the real 512x512 CT slices of ``tests/data/lung1_ct_dicom.tar.xz``, separately:
preprocessing (clip, resample to the card's spacing, windows), inference (onnxruntime, CPU, one
thread) at batch sizes 1, 8 and 32, and the whole ``score_series`` path. Each figure is the best
of ``--rounds`` (the least disturbed by other work on the machine) with the median beside it.
Decoding DICOM is not included (the pipeline decodes anyway).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.triage import DEFAULT_CARD, load_model
from tests.support.data import extract_ct


def _rate(label: str, count: int, rounds: int, run: Callable[[], object]) -> None:
    run()  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    best, median = count / min(times), count / statistics.median(times)
    print(f"{label:<34} {best:8.1f} slices/s (median {median:7.1f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--card", type=Path, default=DEFAULT_CARD)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = load_model(args.card, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        files = extract_ct(Path(tmp))
        slices, spacings = [], []
        for path in files:
            ds = pydicom.dcmread(path)
            slices.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
            spacings.append((float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])))
    n = len(slices)
    print(
        f"model {model.identity.name} {model.identity.version} ({model.identity.blake3[:12]}), "
        f"{n} slices of {slices[0].shape[0]}x{slices[0].shape[1]}, input "
        f"{model.card.preprocessing.sample_shape}, 1 intra-op thread"
    )
    pairs = list(zip(slices, spacings, strict=True))
    _rate("preprocess", n, args.rounds, lambda: [model.preprocess(s, sp) for s, sp in pairs])
    inputs = np.stack([model.preprocess(s, sp) for s, sp in zip(slices, spacings, strict=True)])
    for batch in (1, 8, 32):

        def infer(b: int = batch) -> object:
            return [model.score(inputs[i : i + b]) for i in range(0, n, b)]

        _rate(f"inference, batch {batch}", n, args.rounds, infer)
    _rate("score_series (preprocess + infer)", n, args.rounds,
          lambda: model.score_series(slices, spacings, batch_size=16))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
