"""Transcoding to an uncompressed syntax (only used when the destination refuses the file's)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_nodes.forward import TranscodeImpossible
from dicom_nodes.forward.transcode import transcode
from tests.support.data import make_ts_files

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def ts_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {t.transfer_syntax: t.path for t in make_ts_files(tmp_path_factory.mktemp("ts"))}


@pytest.mark.parametrize(
    "source",
    [
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.2",  # explicit VR big endian
        "1.2.840.10008.1.2.1.99",  # deflated
    ],
)
@pytest.mark.parametrize("target", [EXPLICIT_LE, IMPLICIT_LE])
def test_lossless_sources_keep_pixels_and_uids(
    ts_files: dict[str, Path], tmp_path: Path, source: str, target: str
) -> None:
    out = transcode(ts_files[source], target, tmp_path)
    original = pydicom.dcmread(ts_files[source])
    result = pydicom.dcmread(out)
    assert result.file_meta.TransferSyntaxUID == target
    assert result.SOPInstanceUID == original.SOPInstanceUID
    assert result.SOPClassUID == original.SOPClassUID
    assert (result.pixel_array == original.pixel_array).all()


def test_unknown_syntax_is_impossible(ts_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TranscodeImpossible, match="cannot decode Deflated Image Frame"):
        transcode(ts_files["1.2.840.10008.1.2.8.1"], EXPLICIT_LE, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_file_is_impossible(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with pytest.raises(TranscodeImpossible, match="cannot read"):
        transcode(junk, EXPLICIT_LE, tmp_path)


def test_target_must_be_uncompressed(ts_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        transcode(ts_files[EXPLICIT_LE], "1.2.840.10008.1.2.4.90", tmp_path)
