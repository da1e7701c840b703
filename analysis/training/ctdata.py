"""The CT slices the demonstration model is trained and tested on, by patient, with licences.

Every source is a file under one data directory given on the command line, named by its path
relative to that directory (the layout of Radiogate's shared test-data folder, whose README gives
each file's origin). Sources are grouped by patient so that no patient is in both the training
and the test set. Which of the shared CT files are used, and why others are not:

* used: pyradiomics' ``lung1`` and ``lung2`` (HU -1024 to 3071 and 1671: CT), dcmqi's
  ``ct-3slice``, and single axial CT slices from pylibjpeg-data / pydicom (``CT1_JLSN``,
  ``TOSHIBA_J2K_OpenJPEGv2Regression``, ``J2K_pixelrep_mismatch``).
* not used: pyradiomics' ``brain1``, ``brain2``, ``breast1`` (values 0 to 3057: MR, not CT);
  ``synthetic_wrapped/lung1_ct_dicom`` (the same pixels as ``lung1``, the same patient);
  ``693_J2KI`` (CQ500, CC BY-NC-SA: not permissive); ``MAROTECH_CT_JP2Lossy`` and Orthanc's
  ``1.2.840.10008.1.2.4.70`` (projection scouts, not axial slices); ``ELSCINT1_JP2vsJ2K`` and
  ``JPEGLossless_1s_1f_i_16_16_bad`` (do not decode to plausible HU); ``TOSHIBA_J2K_SIZ*``
  (coronal pelvis reformats, one with a broken pixel representation); ``ctbrain1/2`` (an RGB
  JPEG rendering, not HU); Orthanc's other files (GPL-3.0 repository); dcmqi's 23x38 phantoms.

NRRD volumes (gzip, little-endian short, axes x, y, z in LPS, as pyradiomics ships them) are read
by a minimal reader: their array's rows run posterior-ward and columns left-ward, as in an axial
DICOM image (PS3.3 C.7.6.2.1.1).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom

__all__ = ["SOURCES", "CtSlice", "Source", "load_slices", "read_nrrd"]


@dataclass(frozen=True)
class Source:
    """One patient's CT data: files relative to the data directory, licence and origin."""

    patient: str
    files: tuple[str, ...]
    license: str
    origin: str
    label: str = ""
    """A tumour label volume on the same grid (NRRD), if any: used to report how the model
    treats real, non-critical masses."""


@dataclass(frozen=True)
class CtSlice:
    """One axial slice in HU with its (row, column) pixel spacing in mm."""

    patient: str
    index: int
    hu: npt.NDArray[np.float32]
    spacing: tuple[float, float]
    has_label: bool


_TESTCASES = "radiomics/pyradiomics_testcases"
_PYLIBJPEG = "transfer_syntaxes/pylibjpeg_data"
SOURCES: tuple[Source, ...] = (
    Source(
        "lung1",
        (f"{_TESTCASES}/lung1_image.nrrd",),
        "BSD-3-Clause",
        "pyradiomics 3.0.1 sdist data/lung1_image.nrrd: chest CT, 48 x 5 mm slices",
        label=f"{_TESTCASES}/lung1_label.nrrd",
    ),
    Source(
        "lung2",
        (f"{_TESTCASES}/lung2_image.nrrd",),
        "BSD-3-Clause",
        "pyradiomics 3.0.1 sdist data/lung2_image.nrrd: neck to upper abdomen CT, 61 x 5 mm slices",
        label=f"{_TESTCASES}/lung2_label.nrrd",
    ),
    Source(
        "dcmqi-ct3",
        tuple(f"seg_sr/dcmqi/segmentations/ct-3slice/0{i}.dcm" for i in (1, 2, 3)),
        "BSD-3-Clause",
        "QIICR/dcmqi@b6137d9e data/segmentations/ct-3slice: 3 upper-abdomen CT slices",
    ),
    Source(
        "CT1",
        (f"{_PYLIBJPEG}/JPEGLS/CT1_JLSN.dcm",),
        "MIT",
        "pydicom/pylibjpeg-data@916aa154 JPEGLS/CT1_JLSN.dcm: one chest CT slice",
    ),
    Source(
        "toshiba",
        (f"{_PYLIBJPEG}/JPEG2000Lossless/TOSHIBA_J2K_OpenJPEGv2Regression.dcm",),
        "MIT",
        "pydicom/pylibjpeg-data@916aa154 TOSHIBA_J2K_OpenJPEGv2Regression.dcm: one lower-chest "
        "CT slice",
    ),
    Source(
        "head-j2k",
        (f"{_PYLIBJPEG}/JPEG2000Lossless/J2K_pixelrep_mismatch.dcm",),
        "MIT",
        "pydicom/pylibjpeg-data@916aa154 J2K_pixelrep_mismatch.dcm: one head CT slice",
    ),
)


def read_nrrd(path: Path) -> tuple[npt.NDArray[np.int16], tuple[float, float, float]]:
    """A gzip-encoded, little-endian ``short`` NRRD volume as ``[z, y, x]`` and its (x, y, z)
    spacing in mm (axis-aligned ``space directions`` only)."""
    raw = path.read_bytes()
    header, sep, body = raw.partition(b"\n\n")
    if not sep or not header.startswith(b"NRRD"):
        raise ValueError(f"{path}: not a NRRD file")
    fields: dict[str, str] = {}
    for line in header.decode("ascii").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip()] = value.strip()
    if (fields.get("type"), fields.get("encoding"), fields.get("endian")) != (
        "short",
        "gzip",
        "little",
    ):
        raise ValueError(f"{path}: only gzip little-endian short NRRD is read here")
    sizes = [int(s) for s in fields["sizes"].split()]
    vectors = [
        [float(v) for v in part.strip("()").split(",")]
        for part in fields["space directions"].split()
    ]
    for axis, vector in enumerate(vectors):
        off_axis = [abs(v) for i, v in enumerate(vector) if i != axis]
        if max(off_axis) > 1e-6 or vector[axis] <= 0:
            raise ValueError(f"{path}: only positive axis-aligned space directions are read here")
    spacing = (vectors[0][0], vectors[1][1], vectors[2][2])
    volume = np.frombuffer(gzip.decompress(body), dtype="<i2").reshape(sizes[::-1])
    return volume.astype(np.int16), spacing


def _dicom_hu(path: Path) -> tuple[npt.NDArray[np.float32], tuple[float, float]]:
    ds = pydicom.dcmread(path)
    if ds.Modality != "CT":
        raise ValueError(f"{path}: Modality {ds.Modality}, not CT")
    pixels = ds.pixel_array.astype(np.float64)
    hu = pixels * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    row, col = (float(v) for v in ds.PixelSpacing)
    return hu.astype(np.float32), (row, col)


def load_slices(data_dir: Path, source: Source) -> Iterator[CtSlice]:
    """Every axial slice of *source*, in HU, from the files under *data_dir*."""
    for name in source.files:
        path = data_dir / name
        if path.suffix == ".nrrd":
            volume, (sx, sy, _sz) = read_nrrd(path)
            labelled: npt.NDArray[np.bool_] = np.zeros(volume.shape[0], dtype=np.bool_)
            if source.label:
                label, _ = read_nrrd(data_dir / source.label)
                labelled = np.asarray(label.reshape(label.shape[0], -1).any(axis=1), dtype=np.bool_)
            for z in range(volume.shape[0]):
                hu = volume[z].astype(np.float32)
                yield CtSlice(source.patient, z, hu, (sy, sx), bool(labelled[z]))
        else:
            hu, spacing = _dicom_hu(path)
            yield CtSlice(source.patient, source.files.index(name), hu, spacing, False)
