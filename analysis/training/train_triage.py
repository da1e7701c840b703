"""Train, export and evaluate Radiogate's demonstration triage model (not for clinical use).

    OPENBLAS_NUM_THREADS=1 nice -n 10 python -m analysis.training.train_triage \
        --data /path/to/shared/data --out analysis/triage/models

A small fully convolutional network learns where a CT slice holds a large synthetic air
collection or hyperdense region (:mod:`analysis.training.synthetic`); the slice's score is the
highest probability on its map. Slices come from the patients of
:data:`analysis.training.ctdata.SOURCES`; the test patients (``--test-patients``) are never seen
in training.

Training data are drawn afresh each epoch, as pairs: a random training slice without and with a
finding, both under the same random lung density change (-60 to +40 HU: inspiration,
emphysema), extra noise (0 to 25 HU), zoom (0.85 to 1.15), HU offset (+-10) and mirror, made into
model inputs by the runtime's own preprocessing (:mod:`analysis.triage.preprocess`), then the
same random rotation (+-15 degrees), scaling and shift for both. A batch holds whole pairs, so the
only difference the network can learn from is the finding.

The network (about 33,000 weights, 31 M multiply-adds per slice)::

    input 3 x 96 x 96 (lung, air and blood windows; 4 mm pixels)
    conv 3x3, 16 channels; 2x2 max-pool; conv 3x3, 32; 2x2 max-pool;
    conv 3x3, 32; conv 3x3 dilated 2, 32; conv 3x3, 32   (batch norm + ReLU each)
    conv 1x1 to one logit per 16 mm cell (24 x 24 map)
    shipped graph: sigmoid, then global max: P(finding) of the slice

Why a map and not one output per slice: the generator knows where each finding is, so every cell
of the map is supervised (pixel loss, binary cross-entropy against the finding's share of the
cell, positives weighted 4x), which teaches in a few thousand slices what a single label per
slice did not; the slice loss on the map's maximum (weighted ``SLICE_WEIGHT``) makes that maximum
a probability and pushes down false alarms on clean slices. The receptive field (about 170 mm)
sees enough to tell a 40 mm air collection from the trachea; one dilated convolution widens it
without more pooling, which would coarsen the map. A wider field (260 mm, tried first) and no
rotation let the network learn the one training patient's anatomy by heart: clean slices of a new
patient then scored as high as findings.

The ONNX file is exported with the sigmoid and maximum inside (output = probability), then loaded
through :class:`analysis.triage.TriageModel` (BLAKE3, graph checks), and the evaluation on the
test patients runs through that runtime, so the card's figures are those of the shipped file.
The card is written last, with the figures; the script prints them too.

Needs the ``training`` extra (PyTorch, onnx). Deterministic for a given seed, thread count and
machine (``torch.use_deterministic_algorithms``); another CPU may round differently. Set
``OPENBLAS_NUM_THREADS=1`` on a shared machine: numpy's BLAS threads otherwise fight PyTorch's
and the sample generation slows several-fold.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3
import numpy as np
import numpy.typing as npt
import torch  # type: ignore[import-not-found, unused-ignore]
from torch import nn  # type: ignore[import-not-found, unused-ignore]

from analysis.training import metrics
from analysis.training.cardfile import to_toml
from analysis.training.ctdata import SOURCES, CtSlice, Source, load_slices
from analysis.training.synthetic import (
    Anatomy,
    FindingKind,
    anatomy,
    box_mean,
    correlated_noise,
    insert_finding,
    insert_finding_with_mask,
)
from analysis.triage.card import Layout, Preprocessing, Resample, Window, parse_card
from analysis.triage.lanes import Lane, Thresholds
from analysis.triage.model import TriageModel, load_model
from analysis.triage.preprocess import preprocess, resample_to_spacing
from analysis.triage.series import aggregate

__all__ = ["build_network", "main"]

NAME = "radiogate-demo-ct-critical"
VERSION = "1.0.0"
FILE_STEM = "ct_critical_demo"
LICENSE = "Apache-2.0"
THRESHOLDS = {Lane.CRITICAL: 0.8, Lane.URGENT: 0.5}
AREA_BINS = ((0.0, 800.0), (800.0, 1600.0), (1600.0, math.inf))
"""Finding areas (mm2) for the sensitivity by size: under a 32 mm disc, to a 45 mm one, above."""
SLICE_WEIGHT = 4.0
"""Weight of the slice loss (on the map's maximum) against the pixel loss: the maximum is what
is shipped, and a false alarm anywhere on a clean slice is what the pixel loss barely sees."""
PREPROCESSING = Preprocessing(
    windows=(Window(-600.0, 1500.0), Window(-900.0, 300.0), Window(60.0, 80.0)),
    size=(96, 96),
    resample=Resample.SPACING,
    pixel_spacing_mm=4.0,
    pad_hu=-1024.0,
    clip_hu=(-1024.0, 3071.0),
    layout=Layout.NCHW,
    dtype="float32",
)
INTENDED_USE = (
    "Demonstration of Radiogate's model-based triage. Scores each axial CT slice for a large "
    "air collection (pneumothorax-like in the lung, free-air-like in soft tissue) or a large "
    "hyperdense region in soft tissue (haematoma-like, 65-95 HU), 25-80 mm across. Trained and "
    "evaluated only on synthetic findings inserted into real CT slices of six patients (61 of "
    "the 64 training slices from one of them); never validated on real pathology. Not for "
    "clinical use: it shows how a site's own model plugs in."
)
Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Sample:
    """One evaluation input and what it holds."""

    patient: str
    index: int
    positive: bool
    kind: str
    site: str
    area_mm2: float
    tumour_slice: bool


def build_network() -> nn.Sequential:
    """The fully convolutional network of the module docstring: a 32 x 32 map of logits."""
    channels = PREPROCESSING.channels

    def conv(cin: int, cout: int, dilation: int = 1) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        ]

    return nn.Sequential(
        *conv(channels, 16),
        nn.MaxPool2d(2),
        *conv(16, 32),
        nn.MaxPool2d(2),
        *conv(32, 32),
        *conv(32, 32, 2),
        *conv(32, 32),
        nn.Conv2d(32, 1, 1),
    )


def _target(mask: npt.NDArray[np.float32], spacing: tuple[float, float], mirror: bool) -> Array:
    """The finding's share of each cell of the output map (the mask resampled like the slice,
    then averaged over the 4 x 4 input pixels of a cell)."""
    pre = PREPROCESSING
    assert pre.pixel_spacing_mm is not None
    full = resample_to_spacing(mask, spacing, pre.pixel_spacing_mm, pre.size, 0.0)
    if mirror:
        full = full[:, ::-1]
    rows, cols = pre.size[0] // 4, pre.size[1] // 4
    cells: Array = np.asarray(full.reshape(rows, 4, cols, 4).mean(axis=(1, 3)), dtype=np.float32)
    return cells


def _training_pair(
    s: CtSlice, anat: Anatomy, lung: Array, rng: np.random.Generator
) -> tuple[Array, Array, Array] | None:
    """The slice without and with a finding, under one random change of lung density (-60 to
    +40 HU: inspiration, emphysema), extra noise (0 to 25 HU), zoom (0.85 to 1.15), HU offset
    (+-10) and mirror; and the finding's target map. *lung* is the smoothed lung mask."""
    base = s.hu + np.float32(rng.uniform(-60.0, 40.0)) * lung
    hu, finding, mask = insert_finding_with_mask(base, s.spacing, rng, slice_anatomy=anat)
    if finding is None:
        return None
    noise = correlated_noise(s.hu.shape, rng.uniform(0.0, 25.0), rng).astype(np.float32)
    zoom = rng.uniform(0.85, 1.15)
    spacing = (s.spacing[0] * zoom, s.spacing[1] * zoom)
    offset = np.float32(rng.uniform(-10.0, 10.0))
    mirror = bool(rng.random() < 0.5)
    pair = []
    for image in (base, hu):
        x = preprocess(image + noise + offset, spacing, PREPROCESSING)
        pair.append(np.ascontiguousarray(x[:, :, ::-1] if mirror else x, dtype=np.float32))
    return pair[0], pair[1], _target(mask, spacing, mirror)


def _epoch_data(
    slices: Sequence[CtSlice],
    anats: Sequence[Anatomy],
    lungs: Sequence[Array],
    pairs: int,
    rng: np.random.Generator,
) -> tuple[Array, Array, Array]:
    """Inputs, slice labels and target maps of *pairs* pairs: sample 2k is a clean slice,
    2k + 1 the same slice with a finding."""
    xs: list[Array] = []
    maps: list[Array] = []
    while len(xs) < 2 * pairs:
        k = int(rng.integers(len(slices)))
        made = _training_pair(slices[k], anats[k], lungs[k], rng)
        if made is not None:
            xs.extend(made[:2])
            maps.extend([np.zeros_like(made[2]), made[2]])
    labels = np.tile(np.array([0.0, 1.0], dtype=np.float32), pairs)
    return np.stack(xs), labels, np.stack(maps)[:, None]


def _warp(
    x: torch.Tensor, target: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random rotation (+-15 degrees), scaling (0.9 to 1.1 per axis) and shift (+-8 %)
    applied to both members of each pair in a batch and to their target maps, so that no shape
    or position of the one training patient's anatomy is seen twice alike."""
    pairs = x.shape[0] // 2
    angle = np.radians(rng.uniform(-15.0, 15.0, pairs))
    sy, sx = rng.uniform(0.9, 1.1, pairs), rng.uniform(0.9, 1.1, pairs)
    ty, tx = rng.uniform(-0.08, 0.08, pairs), rng.uniform(-0.08, 0.08, pairs)
    cos, sin = np.cos(angle), np.sin(angle)
    theta = np.stack(
        [np.stack([cos * sx, -sin * sy, tx], 1), np.stack([sin * sx, cos * sy, ty], 1)], 1
    )
    theta_t = torch.from_numpy(np.repeat(theta, 2, axis=0).astype(np.float32))
    grid = nn.functional.affine_grid(theta_t, list(x.shape), align_corners=False)
    small = nn.functional.affine_grid(theta_t, list(target.shape), align_corners=False)
    warped = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    moved = nn.functional.grid_sample(target, small, padding_mode="zeros", align_corners=False)
    return warped, moved


def train(
    slices: Sequence[CtSlice], epochs: int, pairs: int, batch_pairs: int, seed: int
) -> nn.Sequential:
    """Train on *pairs* fresh pairs of *slices* per epoch (a batch holds *batch_pairs* whole
    pairs); print the progress."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    anats = [anatomy(s.hu, s.spacing) for s in slices]
    lungs = [box_mean(a.lung, 3).astype(np.float32) for a in anats]
    net = build_network()
    steps = epochs * math.ceil(pairs / batch_pairs)
    optimiser = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=2e-3, total_steps=steps, pct_start=0.1
    )
    pos_weight = torch.tensor(4.0)
    for epoch in range(epochs):
        started = time.perf_counter()
        xs, labels, maps = _epoch_data(slices, anats, lungs, pairs, rng)
        made = time.perf_counter() - started
        net.train()
        order = rng.permutation(pairs)
        total_pixel, total_slice, correct = 0.0, 0.0, 0
        for start in range(0, pairs, batch_pairs):
            chosen = order[start : start + batch_pairs]
            pick = np.stack([2 * chosen, 2 * chosen + 1], axis=1).ravel()
            y = torch.from_numpy(labels[pick])
            x, target = _warp(torch.from_numpy(xs[pick]), torch.from_numpy(maps[pick]), rng)
            optimiser.zero_grad()
            logits = net(x)
            pixel_loss = nn.functional.binary_cross_entropy_with_logits(
                logits, target, pos_weight=pos_weight
            )
            slice_logit = logits.amax(dim=(1, 2, 3))
            slice_loss = nn.functional.binary_cross_entropy_with_logits(slice_logit, y)
            torch.autograd.backward(pixel_loss + SLICE_WEIGHT * slice_loss)
            optimiser.step()
            schedule.step()
            total_pixel += float(pixel_loss.item()) * len(pick)
            total_slice += float(slice_loss.item()) * len(pick)
            correct += int(((slice_logit.detach() > 0).float() == y).sum().item())
        n = 2 * pairs
        print(
            f"epoch {epoch + 1}/{epochs}: pixel loss {total_pixel / n:.4f}, slice loss "
            f"{total_slice / n:.4f}, slice accuracy {correct / n:.3f} "
            f"(samples {made:.0f} s, training {time.perf_counter() - started - made:.0f} s)",
            flush=True,
        )
    net.eval()
    return net


def export(net: nn.Sequential, path: Path) -> str:
    """Write the network, then sigmoid and global max as ONNX (opset 17, batch axis dynamic;
    output: one probability per slice) and return the file's BLAKE3."""
    model = nn.Sequential(net, nn.Sigmoid(), nn.AdaptiveMaxPool2d(1), nn.Flatten()).eval()
    dummy = torch.zeros((1, *PREPROCESSING.sample_shape), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["probability"],
            dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"}},
            opset_version=17,
        )
    return blake3.blake3(path.read_bytes()).hexdigest()


def evaluation_set(slices: Sequence[CtSlice], seed: int) -> tuple[list[Array], list[Sample]]:
    """Per test slice: the clean slice, one with an air and one with a dense finding (site
    drawn), each from its own seed; no augmentation."""
    inputs, samples = [], []
    for s in slices:
        anat = anatomy(s.hu, s.spacing)
        inputs.append(preprocess(s.hu, s.spacing, PREPROCESSING))
        samples.append(Sample(s.patient, s.index, False, "", "", 0.0, s.has_label))
        for k, kind in enumerate(FindingKind):
            rng = np.random.default_rng([seed, zlib.crc32(s.patient.encode()), s.index, k])
            hu, finding = insert_finding(s.hu, s.spacing, rng, kind=kind, slice_anatomy=anat)
            if finding is None:
                continue
            inputs.append(preprocess(hu, s.spacing, PREPROCESSING))
            samples.append(
                Sample(
                    s.patient,
                    s.index,
                    True,
                    kind.value,
                    finding.site.value,
                    finding.area_mm2,
                    s.has_label,
                )
            )
    return inputs, samples


def _scores(model: TriageModel, inputs: Sequence[Array]) -> npt.NDArray[np.float64]:
    out = [model.score(np.stack(inputs[i : i + 32])) for i in range(0, len(inputs), 32)]
    return np.concatenate(out).astype(np.float64)


def _card_content(
    digest: str, evaluation: dict[str, object], used: Sequence[tuple[Source, str]]
) -> dict[str, object]:
    pre = PREPROCESSING
    return {
        "card_format": 1,
        "model": {
            "name": NAME,
            "version": VERSION,
            "file": f"{FILE_STEM}.onnx",
            "blake3": digest,
            "license": LICENSE,
            "demonstration": True,
            "intended_use": INTENDED_USE,
        },
        "applies_to": {"modality": ["CT"], "body_part": ["CHEST"]},
        "preprocessing": {
            "resample": pre.resample.value,
            "pixel_spacing_mm": pre.pixel_spacing_mm,
            "size": list(pre.size),
            "pad_hu": pre.pad_hu,
            "clip_hu": list(pre.clip_hu or ()),
            "layout": pre.layout.value,
            "dtype": pre.dtype,
            "windows": [{"center": w.center, "width": w.width} for w in pre.windows],
        },
        "outputs": {"labels": ["critical_finding"], "score_label": "critical_finding"},
        "thresholds": {lane.value: value for lane, value in THRESHOLDS.items()},
        "series": {"min_slices": 1},
        "evaluation": evaluation,
        "data": [
            {"source": s.origin, "license": s.license, "role": role, "description": s.patient}
            for s, role in used
        ],
    }


def evaluate(
    model: TriageModel, test: Sequence[CtSlice], seed: int, test_names: Sequence[str]
) -> dict[str, object]:
    """Figures on the test patients, printed and returned as the card's ``evaluation``."""
    inputs, samples = evaluation_set(test, seed)
    scores = _scores(model, inputs)
    labels = np.array([s.positive for s in samples])
    auc = metrics.roc_auc(scores, labels)
    brier = metrics.brier(scores, labels)
    table = metrics.reliability(scores, labels, bins=5)
    ece = metrics.expected_calibration_error(table)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    print(
        f"\nheld-out patients {', '.join(test_names)}: {n_pos} slices with a finding, "
        f"{n_neg} without"
    )
    print(f"ROC AUC {auc:.4f}   Brier {brier:.4f}   ECE (5 bins) {ece:.4f}")
    points = []
    for lane, threshold in THRESHOLDS.items():
        op = metrics.operating_point(scores, labels, threshold)
        lo_se, hi_se = op.sensitivity_ci95
        lo_sp, hi_sp = op.specificity_ci95
        print(
            f"{lane.value:>8} >= {threshold}: sensitivity {op.sensitivity:.3f} "
            f"({op.true_positives}/{op.positives}, 95% CI {lo_se:.3f}-{hi_se:.3f}), "
            f"specificity {op.specificity:.3f} ({op.true_negatives}/{op.negatives}, "
            f"95% CI {lo_sp:.3f}-{hi_sp:.3f})"
        )
        points.append(
            {
                "lane": lane.value,
                "threshold": threshold,
                "sensitivity": op.sensitivity,
                "specificity": op.specificity,
                "sensitivity_ci95": [lo_se, hi_se],
                "specificity_ci95": [lo_sp, hi_sp],
            }
        )
    print("reliability: bin, count, mean score, fraction positive")
    for b in table:
        mean = "-" if b.mean_predicted is None else f"{b.mean_predicted:.3f}"
        seen = "-" if b.observed is None else f"{b.observed:.3f}"
        print(f"  [{b.low:.1f}, {b.high:.1f}) {b.count:4d}  {mean:>6}  {seen:>6}")
    critical = THRESHOLDS[Lane.CRITICAL]
    for kind in FindingKind:
        for site in ("lung", "soft_tissue"):
            pick = [i for i, s in enumerate(samples) if s.kind == kind.value and s.site == site]
            if pick:
                hit = int((scores[pick] >= critical).sum())
                print(f"  {kind.value:>5} in {site:<11}: {hit}/{len(pick)} at or above {critical}")
    for low, high in AREA_BINS:
        pick = [i for i, s in enumerate(samples) if s.positive and low <= s.area_mm2 < high]
        if pick:
            hit = int((scores[pick] >= critical).sum())
            size = f"{low:.0f} to {high:.0f} mm2"
            print(f"  findings of {size}: {hit}/{len(pick)} at or above {critical}")
    tumour = [i for i, s in enumerate(samples) if not s.positive and s.tumour_slice]
    if tumour:
        worst = float(scores[tumour].max())
        print(f"  clean slices showing a real tumour: {len(tumour)}, highest score {worst:.3f}")
    thresholds = Thresholds(THRESHOLDS)
    for name in test_names:
        clean = [scores[i] for i, s in enumerate(samples) if s.patient == name and not s.positive]
        if len(clean) > 1:
            series = aggregate(clean, thresholds, 1, model.identity)
            print(f"  clean series {name}: max score {series.score:.3f}, lane {series.lane}")
    summary = (
        f"Slices of held-out patients ({', '.join(test_names)}): each clean slice is a negative; "
        "the same slice with one synthetic air and one synthetic dense finding (25-80 mm, site "
        "drawn, seeds apart from training) are positives. Findings are synthetic: these figures "
        "say the runtime and model work, not that the model finds real pathology."
    )
    held_out = [
        f"{s.patient}: {s.origin} ({s.license})" for s in SOURCES if s.patient in test_names
    ]
    return {
        "summary": summary,
        "held_out": held_out,
        "positives": n_pos,
        "negatives": n_neg,
        "roc_auc": auc,
        "brier": brier,
        "operating_points": points,
        "reliability": [
            {
                "low": b.low,
                "high": b.high,
                "count": b.count,
                **({"mean_predicted": b.mean_predicted} if b.mean_predicted is not None else {}),
                **({"observed": b.observed} if b.observed is not None else {}),
            }
            for b in table
        ],
    }


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data directory (see ctdata)")
    parser.add_argument("--out", type=Path, required=True, help="where the ONNX file and card go")
    parser.add_argument("--test-patients", default="lung1,dcmqi-ct3")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--pairs-per-epoch", type=int, default=1024)
    parser.add_argument("--batch-pairs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261101)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="evaluate the model already in --out on the test patients; train and write nothing",
    )
    parser.add_argument(
        "--rewrite-card",
        action="store_true",
        help="evaluate the ONNX file already in --out and write its card again; no training",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    test_names = [p for p in args.test_patients.split(",") if p]
    unknown = set(test_names) - {s.patient for s in SOURCES}
    if unknown:
        print(f"unknown test patients: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    train_slices: list[CtSlice] = []
    test_slices: list[CtSlice] = []
    used: list[tuple[Source, str]] = []
    for source in SOURCES:
        held_out = source.patient in test_names
        slices = list(load_slices(args.data, source))
        (test_slices if held_out else train_slices).extend(slices)
        used.append((source, "test" if held_out else "train"))
        print(f"{source.patient:>10}: {len(slices):3d} slices, {'test' if held_out else 'train'}")
    onnx_path = args.out / f"{FILE_STEM}.onnx"
    card_path = args.out / f"{FILE_STEM}.toml"
    if args.evaluate_only:
        evaluate(load_model(card_path), test_slices, args.seed + 1, test_names)
        return 0
    if args.rewrite_card:
        digest = blake3.blake3(onnx_path.read_bytes()).hexdigest()
    else:
        net = train(train_slices, args.epochs, args.pairs_per_epoch, args.batch_pairs, args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        digest = export(net, onnx_path)
    pending: dict[str, object] = {"summary": "pending"}
    card = parse_card(_card_content(digest, pending, used), card_path)
    model = TriageModel(card, threads=1)
    figures = evaluate(model, test_slices, args.seed + 1, test_names)
    header = [
        f"Model card of {NAME} {VERSION}: a DEMONSTRATION model, NOT FOR CLINICAL USE.",
        "Written by analysis/training/train_triage.py; the format is described in docs/triage.md.",
        f"Command: python -m analysis.training.train_triage --test-patients {args.test_patients}"
        f" --epochs {args.epochs} --pairs-per-epoch {args.pairs_per_epoch} --batch-pairs "
        f"{args.batch_pairs} --seed {args.seed} --threads {args.threads} --data DIR --out DIR",
    ]
    card_path.write_text(to_toml(_card_content(digest, figures, used), header))
    load_model(card_path)  # the written card reads back and matches its file
    verb = "kept" if args.rewrite_card else "wrote"
    print(f"\n{verb} {onnx_path} ({onnx_path.stat().st_size} bytes, BLAKE3 {digest})")
    print(f"wrote {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
