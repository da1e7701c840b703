"""A small synthetic, de-identified chest CT series with real geometry, its masks and results.

Six 64x64 axial slices, 0.75 mm pixels, 2.5 mm apart, a shared Frame of Reference; the
"patient" carries a pseudonym as de-identification leaves it. Two lungs (boxes) and a nodule (a
sphere in the right lung) give the masks; the results use real PS3.16 codes.
"""

from __future__ import annotations

import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from analysis.results import (
    ActionableCategory,
    Algorithm,
    Attribution,
    GraphicType,
    Lane,
    Measurement,
    ModelOutput,
    PlanarRegion,
    Provenance,
    SegmentResult,
    TriageFinding,
)

__all__ = [
    "CREATED",
    "EXTRACTOR",
    "PROVENANCE",
    "SEGMENTER",
    "TRIAGE_MODEL",
    "ct_series",
    "masks_for",
    "segment_results",
    "triage_finding",
]

ROWS = COLUMNS = 64
SPACING = 0.75
SLICES = 6
THICKNESS = 2.5
CREATED = datetime.datetime(2024, 5, 6, 7, 8, 9)

PROVENANCE = Provenance(software_version="0.1.0")
TRIAGE_MODEL = Algorithm("chest-ct-triage", "1.2.0", model_hash="a" * 64, demonstration=True)
SEGMENTER = Algorithm("lung-nodule-seg", "0.3.1", model_hash="b" * 64)
EXTRACTOR = Algorithm(
    "pyradiomics", "3.1.0", parameter_hash="c" * 64, family=codes.DCM.HistogramAnalysis
)
RISK_MODEL = Algorithm("nodule-risk", "2.0.0", model_hash="d" * 64, demonstration=True)
MALIGNANCY = Code("MALIGNANCY-RISK", "99RADIOGATE", "Malignancy risk score")


def _code(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
        code.value,
        code.scheme_designator,
        code.meaning,
    )
    return item


def ct_series(slices: int = SLICES) -> list[Dataset]:
    """*slices* CT Image Storage datasets of one series, ordered head to feet (z decreasing)."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    out = []
    for i in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName = "RG7F3A9C2KQ8M4ZD5X"
        ds.PatientID = "RG7F3A9C2KQ8M4ZD5X"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "Radiogate PS3.15 E.1 Basic, Retain Longitudinal Modified"
        ds.DeidentificationMethodCodeSequence = [
            _code(codes.DCM.BasicApplicationConfidentialityProfile)
        ]
        ds.StudyDate, ds.StudyTime = "20240506", "070000"
        ds.AccessionNumber = ""
        ds.StudyID = "1"
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic"
        ds.SeriesNumber = 3
        ds.InstanceNumber = i + 1
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-24.0, -24.0, -10.0 - THICKNESS * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING, SPACING]
        ds.SliceThickness = THICKNESS
        ds.KVP = 120
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        pixels = rng.integers(0, 200, (ROWS, COLUMNS), dtype=np.int16) + 900
        ds.PixelData = pixels.tobytes()
        out.append(ds)
    return out


def masks_for(source: list[Dataset]) -> dict[int, np.ndarray]:
    """Segment 1 right lung, 2 left lung (boxes on every slice), 3 a nodule of radius 4 px
    centred on slice 2 of the right lung (slices 1-3 only)."""
    shape = (len(source), ROWS, COLUMNS)
    right, left, nodule = (np.zeros(shape, dtype=bool) for _ in range(3))
    right[:, 12:52, 6:28] = True  # patient right is image left
    left[:, 12:52, 36:58] = True
    zz, yy, xx = np.ogrid[: shape[0], :ROWS, :COLUMNS]
    nodule[:] = ((yy - 30) ** 2 + (xx - 16) ** 2 <= 16) & (np.abs(zz - 2) <= 1)
    return {1: right, 2: left, 3: nodule}


def triage_finding(source: list[Dataset]) -> TriageFinding:
    """An urgent, category 2 nodule finding flagging slices 1-3."""
    return TriageFinding(
        lane=Lane.URGENT,
        category=ActionableCategory.CATEGORY_2,
        certainty=87.5,
        reason=codes.SCT.Nodule,
        flagged=tuple(str(ds.SOPInstanceUID) for ds in source[1:4]),
        series_instance_uid=str(source[0].SeriesInstanceUID),
    )


def _hu(derivation: Code, value: float) -> Measurement:
    return Measurement(
        codes.DCM.AttenuationCoefficient, value, codes.UCUM.HounsfieldUnit, derivation
    )


def segment_results(source: list[Dataset]) -> list[SegmentResult]:
    """Right lung, left lung and a nodule with IBSI, intensity and model-output results."""
    lung = codes.SCT.Lung
    anatomical = codes.SCT.AnatomicalStructure
    right = SegmentResult(
        1, "Right lung", anatomical, lung, generate_uid(), "right lung",
        measurements=(
            Measurement(codes.SCT.Volume, 35000.5, codes.UCUM.CubicMillimeter),
            _hu(codes.SCT.Mean, -830.0),
        ),
        laterality=codes.SCT.Right,
        finding_site=lung,
    )  # fmt: skip
    left = SegmentResult(
        2, "Left lung", anatomical, lung, generate_uid(), "left lung",
        measurements=(_hu(codes.SCT.Mean, -845.25),),
        laterality=codes.SCT.Left,
        finding_site=lung,
    )  # fmt: skip
    nodule = SegmentResult(
        3, "Nodule 1", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Nodule,
        generate_uid(), "nodule 1",
        measurements=(
            Measurement(codes.IBSI.Sphericity, 0.91, codes.UCUM.NoUnits),
            Measurement(codes.IBSI.VolumeOfMesh, 150.0, codes.UCUM.CubicMillimeter),
            _hu(codes.SCT.Mean, 45.5),
            _hu(codes.SCT.StandardDeviation, 12.25),
            _hu(codes.DCM.Kurtosis, 2.75),
            Measurement(codes.IBSI.JointEntropyOfGLCM, 4.5, codes.UCUM.NoUnits, imputed=True),
        ),
        laterality=codes.SCT.Right,
        finding_site=lung,
        key_slice=str(source[2].SOPInstanceUID),
        region=PlanarRegion(GraphicType.POLYGON, ((12.0, 26.0), (20.0, 26.0), (20.0, 34.0), (12.0, 34.0))),
        model_outputs=(
            ModelOutput(
                MALIGNANCY, 0.73, codes.UCUM.NoUnits, RISK_MODEL,
                (Attribution("original_shape_Sphericity", -0.12), Attribution("original_firstorder_Mean", 0.08)),
            ),
        ),
    )  # fmt: skip
    return [right, left, nodule]
