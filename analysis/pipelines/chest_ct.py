"""The chest CT analysis: lungs and lesions → radiomics and lung measures → SEG + TID 1500 SR.

Pure computation on datasets already read (the de-identified series from the archive, and any
SEG or RTSTRUCT of the study that outlines lesions):

1. a volume with its geometry (:mod:`analysis.radiomics.volume`: sorted along the slice normal,
   spacing from positions, HU); a series that does not make one regular volume is refused with
   the flags that say why (:class:`AnalysisRefused`);
2. the lungs, right and left (:mod:`analysis.radiomics.lung`), and their measures: volume,
   %LAA-950, Perc15, mean lung density;
3. lesions from a Segmentation (every segment whose category is Morphologically Abnormal
   Structure) or an RT Structure Set (every ROI contour, rasterised on the slice grid:
   :func:`rasterise`) referencing this series;
4. pyradiomics features per segment under the versioned parameter set
   (:mod:`analysis.radiomics.features`), mapped to DICOM concepts (:mod:`analysis.radiomics.codes`);
5. a BINARY SEG of all segments and the measurement report (:mod:`analysis.results`); each
   segment, lung or lesion, also has a planar group on its key slice (the slice where it is
   largest): the convex hull of its cross-section there, a closed polygon. OHIF v3 reads every
   measurement group of a TID 1500 report and fails on one it cannot place on an image (a
   group with neither SCOORD nor a NUM inferred from one; see docs/viewers.md), so no segment
   is left without one.

A segment whose features fail is still in the SEG; its group says which features are missing.

Steps 4 and 5 overlap: pyradiomics runs in another process
(:func:`analysis.radiomics.features.extract_in_background`) while this one outlines the key
slices and drafts the SEG (:func:`analysis.results.seg.draft_segmentation`: all of it but the
instance UID, which follows from the measurements); the bytes are those of the SEG built
afterwards. Measured with ``bench/bench_analysis.py --reps 3 --no-long`` on lung1 (2 cores, load
average 1.2-2, two paired runs each): the whole analysis 5.07-5.09 s -> 4.49-4.50 s, 1.32-1.36x
-> 1.21-1.24x the time of pyradiomics alone. The cost is memory held at once: the 500-slice
worker job peaks at 1,384 MiB in one process but 1,604 MiB summed over the job and its feature
process (proportional set size; 1,434 and 1,366 MiB when the features ran in the job's process).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from analysis.models.emphysema import imputed_measurements
from analysis.radiomics.codes import Concept, measurements
from analysis.radiomics.features import (
    PYRADIOMICS_VERSION,
    Segment,
    SegmentFeatures,
    extract_in_background,
)
from analysis.radiomics.lung import LungLabel, LungMeasures, lung_measures, segment_lungs
from analysis.radiomics.params import ParameterSet
from analysis.radiomics.volume import Volume, build_volume, slice_input
from analysis.results import (
    Algorithm,
    GraphicType,
    Measurement,
    PlanarRegion,
    Provenance,
    SegmentResult,
    build_measurement_report,
    draft_segmentation,
)
from analysis.results.table import MeasurementRow, ReportReference, measurement_rows

__all__ = [
    "AnalysisRefused",
    "ChestCtResult",
    "FeatureRow",
    "analyse_chest_ct",
    "lesions_from_rtstruct",
    "lesions_from_seg",
    "rasterise",
]

SCHEME = "99RADIOGATE"
LAA950 = Code("LAA950", SCHEME, "Low attenuation area below -950 HU")
PERC15 = Code("PERC15", SCHEME, "15th percentile of lung density")
VOLUME = Code("118565006", "SCT", "Volume")
ATTENUATION = codes.DCM.AttenuationCoefficient
MEAN = codes.SCT.Mean
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
ML = Code("ml", "UCUM", "milliliter")
PERCENT = Code("%", "UCUM", "Percent")


class AnalysisRefused(ValueError):
    """The series cannot be analysed; ``reasons`` are short codes (no PHI)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__(", ".join(reasons))
        self.reasons = tuple(reasons)


@dataclass(frozen=True)
class FeatureRow:
    """One value for the feature store (and its SR measurement)."""

    segment_number: int
    segment_label: str
    tracking_uid: str
    feature: str
    concept: Code
    unit: Code
    derivation: Code | None
    value: float | None
    imputed: bool = False
    missing_reason: str = ""


@dataclass(frozen=True)
class ChestCtResult:
    seg: Dataset
    sr: Dataset
    rows: tuple[FeatureRow, ...]
    measures: LungMeasures
    parameter_hash: str
    pyradiomics_version: str = PYRADIOMICS_VERSION
    flags: tuple[str, ...] = field(default_factory=tuple)
    table: tuple[MeasurementRow, ...] = field(default_factory=tuple)
    """The report's NUMs as rows of the feature table (:mod:`analysis.results.table`)."""


def _release_pixels(source: Sequence[Dataset]) -> None:
    """Delete the Pixel Data of *source* and hand the freed heap back to the system (glibc keeps
    freed blocks of this size in the heap otherwise, and the process would stay as large as if
    it still held them). Reference counting frees the pixels: no reference cycle holds them (a
    full collection afterwards found 10 objects, 23 kB, on the 48-slice lung1 series), and one
    walks every object of the process, the imported libraries' too (0.05-0.1 s)."""
    for ds in source:
        if "PixelData" in ds:
            del ds.PixelData
    with contextlib.suppress(OSError, AttributeError):  # not glibc: reused, not returned
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _code(concept: Concept) -> Code:
    return Code(concept.value, concept.scheme, concept.meaning)


def _order(source: Sequence[Dataset]) -> tuple[Volume, list[Dataset]]:
    """The volume and the datasets in volume order."""
    images = [ds for ds in source if "PixelData" in ds]
    result = build_volume([slice_input(ds) for ds in images])
    if result.volume is None:
        raise AnalysisRefused(sorted(f.value for f in result.flags))
    return result.volume, [images[i] for i in result.order]


def rasterise(points_mm: npt.NDArray[np.float64], ds: Dataset) -> npt.NDArray[np.bool_]:
    """Fill a closed contour (patient coordinates, mm) on the pixel grid of slice *ds* (even-odd
    rule, pixel centres; PS3.3 C.8.8.6 contour data)."""
    origin = np.asarray([float(v) for v in ds.ImagePositionPatient])
    orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_dir, col_dir = orientation[:3], orientation[3:]
    spacing_row, spacing_col = (float(v) for v in ds.PixelSpacing)
    rel = points_mm - origin
    cols = rel @ row_dir / spacing_col
    rows = rel @ col_dir / spacing_row
    height, width = int(ds.Rows), int(ds.Columns)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = np.zeros((height, width), dtype=bool)
    n = len(cols)
    for i in range(n):
        x0, y0, x1, y1 = cols[i], rows[i], cols[(i + 1) % n], rows[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = ((y0 <= yy) & (yy < y1)) | ((y1 <= yy) & (yy < y0))
        x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < x_at)
    return inside


def lesions_from_rtstruct(
    rtstruct: Dataset, ordered: Sequence[Dataset]
) -> dict[str, npt.NDArray[np.bool_]]:
    """Masks (volume order) of the ROIs of an RT Structure Set, by ROI name."""
    names = {
        int(r.ROINumber): str(r.get("ROIName", f"ROI {r.ROINumber}"))
        for r in rtstruct.get("StructureSetROISequence", [])
    }
    by_uid = {str(ds.SOPInstanceUID): i for i, ds in enumerate(ordered)}
    normal = np.cross(
        np.asarray([float(v) for v in ordered[0].ImageOrientationPatient][:3]),
        np.asarray([float(v) for v in ordered[0].ImageOrientationPatient][3:]),
    )
    depth = [float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for ds in ordered]
    out: dict[str, npt.NDArray[np.bool_]] = {}
    shape = (len(ordered), int(ordered[0].Rows), int(ordered[0].Columns))
    for roi in rtstruct.get("ROIContourSequence", []):
        mask = np.zeros(shape, dtype=bool)
        for contour in roi.get("ContourSequence", []):
            data = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            refs = contour.get("ContourImageSequence", [])
            index = by_uid.get(str(refs[0].ReferencedSOPInstanceUID)) if refs else None
            if index is None:  # no reference: the slice at the contour's depth
                d = float(np.dot(normal, data[0]))
                index = int(np.argmin([abs(d - x) for x in depth]))
            mask[index] ^= rasterise(data, ordered[index])
        if mask.any():
            out[names.get(int(roi.ReferencedROINumber), "ROI")] = mask
    return out


def lesions_from_seg(seg: Dataset, ordered: Sequence[Dataset]) -> dict[str, npt.NDArray[np.bool_]]:
    """Masks (volume order) of the lesion segments of a Segmentation, by segment label."""
    import highdicom as hd

    parsed = hd.seg.Segmentation.from_dataset(seg)
    uids = [str(ds.SOPInstanceUID) for ds in ordered]
    out: dict[str, npt.NDArray[np.bool_]] = {}
    for item in seg.SegmentSequence:
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        if str(category.CodeValue) != "49755003":  # Morphologically Abnormal Structure
            continue
        number = int(item.SegmentNumber)
        pixels = parsed.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            segment_numbers=[number],
            assert_missing_frames_are_empty=True,
        )
        out[str(item.SegmentLabel)] = np.asarray(pixels[..., 0] > 0)
    return out


def _outline(mask2d: npt.NDArray[np.bool_]) -> PlanarRegion:
    """The convex hull of the mask's pixels on one slice, as a closed polygon in image
    coordinates (pixel corners, PS3.3 C.18.6.1.1): a planar outline every viewer can draw
    (OHIF draws no oblique ellipse), holding the whole cross-section."""
    from scipy.spatial import ConvexHull, QhullError  # type: ignore[import-untyped]

    rows, cols = np.nonzero(mask2d)
    corners = np.concatenate(
        [np.column_stack([cols + dc, rows + dr]) for dc in (0, 1) for dr in (0, 1)]
    ).astype(float)
    try:
        hull = ConvexHull(corners)
    except QhullError:  # pragma: no cover - pixel corners always span an area
        raise ValueError("a segment's key slice has no area") from None
    points = corners[hull.vertices]  # counter-clockwise
    return PlanarRegion(GraphicType.POLYGON, tuple((float(c), float(r)) for c, r in points))


def _key_slice(mask: npt.NDArray[np.bool_]) -> int:
    """The slice (volume order) with the largest cross-section of *mask*."""
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))


def _lung_rows(
    measures: LungMeasures,
) -> dict[int, list[tuple[str, Code, Code, Code | None, float]]]:
    out: dict[int, list[tuple[str, Code, Code, Code | None, float]]] = {}
    for number, region in ((1, measures.right), (2, measures.left)):
        if region is None:
            continue
        out[number] = [
            ("lung_volume_ml", VOLUME, ML, None, region.volume_ml),
            ("laa950_percent", LAA950, PERCENT, None, region.laa950_percent),
            ("perc15_hu", PERC15, HU, None, region.perc15_hu),
            ("mean_lung_density_hu", ATTENUATION, HU, MEAN, region.mean_hu),
        ]
    return out


def analyse_chest_ct(
    source: Sequence[Dataset],
    *,
    params: ParameterSet,
    lesions: Mapping[str, npt.NDArray[np.bool_]] | Sequence[Dataset] = (),
    provenance: Provenance,
    processes: int = 1,
    created: dt.datetime | None = None,
    uid_root: str = "",
    models: bool = True,
    release_pixels: bool = False,
) -> ChestCtResult:
    """Analyse one chest CT series (its datasets, any order); *lesions* are masks in volume
    order, or SEG / RTSTRUCT datasets outlining them. With *models*, each lung also gets the
    emphysema model's output (:mod:`analysis.models.emphysema`) with its top attributions, and
    the inputs it imputed are reported as imputed measurements. With *release_pixels*, the
    Pixel Data of *source* (and the array pydicom decoded from it) is deleted once the volume
    is built: only the headers are needed after that, and a caller that hands its datasets
    over keeps a 500-slice study within about 1.5 GB."""
    with _collector_paused():
        return _analyse(
            source, params=params, lesions=lesions, provenance=provenance, processes=processes,
            created=created, uid_root=uid_root, models=models, release_pixels=release_pixels,
        )  # fmt: skip


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the analysis runs (then on again, as it
    was): pydicom, highdicom and pyradiomics allocate tens of thousands of small objects, and
    each full collection walks every object of the process, the imported libraries' too, for
    cycles the analysis hardly makes (reference counting frees its arrays and datasets)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _analyse(
    source: Sequence[Dataset],
    *,
    params: ParameterSet,
    lesions: Mapping[str, npt.NDArray[np.bool_]] | Sequence[Dataset],
    provenance: Provenance,
    processes: int,
    created: dt.datetime | None,
    uid_root: str,
    models: bool,
    release_pixels: bool,
) -> ChestCtResult:
    volume, ordered = _order(source)
    if release_pixels:
        _release_pixels(source)
    if not isinstance(lesions, Mapping):
        found: dict[str, npt.NDArray[np.bool_]] = {}
        for ds in lesions:
            if str(ds.get("Modality", "")) == "RTSTRUCT":
                found.update(lesions_from_rtstruct(ds, ordered))
            elif str(ds.get("Modality", "")) == "SEG":
                found.update(lesions_from_seg(ds, ordered))
        lesions = found
    lungs = segment_lungs(volume)
    measures = lung_measures(volume, lungs)
    named: list[tuple[int, str, npt.NDArray[np.bool_]]] = []
    sides = ((1, "Right lung", LungLabel.RIGHT), (2, "Left lung", LungLabel.LEFT))
    for number, side, which in sides:
        lung = lungs.mask(which)
        if lung.any():
            named.append((number, side, lung))
        del lung
    for offset, (label, mask) in enumerate(sorted(lesions.items()), start=3):
        if mask.shape != volume.array.shape:
            raise AnalysisRefused(["lesion-mask-off-grid"])
        if mask.any():
            named.append((offset, label[:64] or f"Lesion {offset - 2}", mask))
    if not named:
        raise AnalysisRefused(["no-lung-found"])
    series_uid = str(ordered[0].SeriesInstanceUID)
    algorithm = Algorithm("radiogate-chest-ct", _version(), parameter_hash=params.blake3)
    segments = [Segment(str(n), m) for n, _l, m in named]
    with extract_in_background(volume, segments, params, processes=processes) as pending:
        # pyradiomics runs in its own process(es): meanwhile, what does not need the features
        del segments
        unmeasured = [
            _segment(number, label, _tracking_uid(uid_root, series_uid, number), mask=mask,
                     ordered=ordered)
            for number, label, mask in named
        ]  # fmt: skip
        masks = {number: mask for number, _l, mask in named}
        draft = draft_segmentation(
            ordered, unmeasured, masks, algorithm, provenance, created=created
        )
        del masks
        if models:
            _emphysema_model()
        features = pending.result()
    lung_rows = _lung_rows(measures)
    results: list[SegmentResult] = []
    rows: list[FeatureRow] = []
    by_number = {n: f for (n, _l, _m), f in zip(named, features, strict=True)}
    predictions = _predictions(by_number, measures) if models else {}
    for (number, label, _mask), feats, drafted in zip(named, features, unmeasured, strict=True):
        tracking = drafted.tracking_uid
        mapped, _unmapped = measurements(feats) if not feats.missing.get("*") else ([], [])
        measured = [
            Measurement(
                _code(m.concept),
                m.value,
                _code(m.unit),
                None if m.derivation is None else _code(m.derivation),
            )
            for m in mapped
            if math.isfinite(m.value)
        ]
        rows += [
            FeatureRow(
                number,
                label,
                tracking,
                m.feature,
                _code(m.concept),
                _code(m.unit),
                None if m.derivation is None else _code(m.derivation),
                m.value,
            )
            for m in mapped
        ]
        rows += _missing_rows(number, label, tracking, feats)
        keys = {m.key for m in measured}
        for name, concept, unit, derivation, value in lung_rows.get(number, []):
            if (concept, derivation) not in keys:  # mean lung density = radiomics' mean HU
                measured.append(Measurement(concept, value, unit, derivation))
            rows.append(FeatureRow(number, label, tracking, name, concept, unit, derivation, value))
        outputs: tuple[Any, ...] = ()
        if number in predictions:
            prediction = predictions[number]
            outputs = prediction.model_outputs()
            imputed, without = imputed_measurements(prediction)
            names = [n for n in prediction.imputed if n not in set(without)]
            keys = {m.key for m in measured}
            measured += [m for m in imputed if m.key not in keys]
            rows += [
                FeatureRow(number, label, tracking, name, m.concept, m.unit, m.derivation,
                           m.value, imputed=True)
                for name, m in zip(names, imputed, strict=True)
            ]  # fmt: skip
            rows += [
                FeatureRow(
                    number,
                    label,
                    tracking,
                    f"model:{o.concept.meaning}",
                    o.concept,
                    o.unit,
                    None,
                    o.value,
                )
                for o in outputs
            ]
        results.append(replace(drafted, measurements=tuple(measured), model_outputs=outputs))
    seg = draft.finish(results)
    sr = build_measurement_report(ordered, seg, results, algorithm, provenance, created=created)
    spacing = {
        str(ds.SOPInstanceUID): (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        for ds in ordered
        if "PixelSpacing" in ds
    }
    table = measurement_rows(
        ReportReference.of(sr, seg), results, algorithm,
        pyradiomics_version=PYRADIOMICS_VERSION, pixel_spacing=spacing,
    )  # fmt: skip
    return ChestCtResult(
        seg,
        sr,
        tuple(rows),
        measures,
        params.blake3,
        flags=tuple(sorted(f.value for f in lungs.flags)),
        table=tuple(table),
    )


def _emphysema_model() -> Any:
    """The emphysema model (loaded once per process)."""
    from analysis.models.emphysema import load_emphysema_model

    return load_emphysema_model(threads=1)


def _predictions(features: Mapping[int, SegmentFeatures], measures: LungMeasures) -> dict[int, Any]:
    """The emphysema model's prediction per lung (segment 1 right, 2 left)."""
    from analysis.models.emphysema import lung_inputs

    model = _emphysema_model()
    out: dict[int, Any] = {}
    for number, region in ((1, measures.right), (2, measures.left)):
        if region is None or number not in features:
            continue
        inputs = lung_inputs(features[number], region, model.card.parameters.blake3)
        out[number] = model.predict(inputs)
    return out


def _missing_rows(
    number: int, label: str, tracking: str, feats: SegmentFeatures
) -> list[FeatureRow]:
    from analysis.radiomics.codes import feature_codes

    table = feature_codes()
    out = []
    for key, reason in feats.missing.items():
        code = table.get(key.partition("_")[2])
        if code is None:
            continue
        out.append(
            FeatureRow(
                number,
                label,
                tracking,
                code.pyradiomics,
                _code(code.concept),
                _code(code.unit),
                None if code.derivation is None else _code(code.derivation),
                None,
                missing_reason=reason[:64],
            )
        )
    return out


def _segment(
    number: int,
    label: str,
    tracking: str,
    *,
    mask: npt.NDArray[np.bool_],
    ordered: Sequence[Dataset],
) -> SegmentResult:
    """The segment's result without measurements (added once the features are in): what
    it is, its tracking identifiers and its outline on its key slice."""
    key = _key_slice(mask)
    key_slice, region = str(ordered[key].SOPInstanceUID), _outline(mask[key])
    if number <= 2:
        laterality = codes.SCT.Right if number == 1 else codes.SCT.Left
        return SegmentResult(
            number,
            label,
            codes.SCT.AnatomicalStructure,
            codes.SCT.Lung,
            tracking,
            f"lung-{number}",
            laterality=laterality,
            finding_site=codes.SCT.Lung,
            key_slice=key_slice,
            region=region,
        )
    return SegmentResult(
        number,
        label,
        codes.SCT.MorphologicallyAbnormalStructure,
        codes.SCT.Nodule,
        tracking,
        f"lesion-{number - 2}",
        finding_site=codes.SCT.Lung,
        key_slice=key_slice,
        region=region,
    )


def _tracking_uid(root: str, series_uid: str, number: int) -> str:
    import uuid

    name = f"radiogate-tracking|{root}|{series_uid}|{number}"
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("radiogate")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0"
