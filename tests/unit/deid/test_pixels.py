"""Burned-in text (PS3.15 E.3.1 Clean Pixel Data): detection, mask rules, masking, outcome."""

from __future__ import annotations

import copy
import io
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import pack_bits
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from config.deid import BurnedInPolicy, MaskRule
from dicom_nodes.deid.model import BurnedIn
from dicom_nodes.deid.pixels import (
    LOSSY_METHODS,
    TEXT_SOP_CLASSES,
    MaskError,
    apply_mask,
    burned_in_outcome,
    may_have_burned_in_text,
    select_mask,
)

DATA = Path(__file__).resolve().parents[2] / "data"
US_FILE = DATA / "us_greyscale.dcm"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SECRET = "SECRET^PATIENT"
# Pixel-related attributes apply_mask may rewrite; everything else must stay as it was.
REWRITTEN = {
    0x00280004,  # Photometric Interpretation
    0x00280006,  # Planar Configuration
    0x00280106,  # Smallest Image Pixel Value
    0x00280107,  # Largest Image Pixel Value
    0x00280301,  # Burned In Annotation
    0x7FE00001,  # Extended Offset Table (removed)
    0x7FE00002,  # Extended Offset Table Lengths (removed)
    0x7FE00010,  # Pixel Data
}


# -- helpers ------------------------------------------------------------------------------


def make_image(
    arr: np.ndarray[Any, Any],
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    frames: int | None = None,
    planar: int = 0,
    syntax: str = ExplicitVRLittleEndian,
    modality: str = "US",
    sop_class: str = US_IMAGE,
    burned_in: str | None = "YES",
    manufacturer: str | None = "ACME Imaging",
    model: str | None = "Sono 3000",
    bits_allocated: int | None = None,
) -> Dataset:
    """An image dataset holding *arr* natively: (frames,) rows, columns (, samples)."""
    samples = 3 if photometric in ("RGB", "YBR_FULL") else 1
    multi = frames is not None
    shape = arr.shape[1:] if multi else arr.shape
    allocated = bits_allocated or arr.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = SECRET
    ds.PatientID = "SECRET-ID"
    ds.Modality = modality
    if manufacturer is not None:
        ds.Manufacturer = manufacturer
    if model is not None:
        ds.ManufacturerModelName = model
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = planar
    if multi:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = shape[0], shape[1]
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if allocated == 1:
        data = pack_bits(arr, pad=True)
    else:
        little = arr.astype(arr.dtype.newbyteorder("<"))
        if samples > 1 and planar == 1:
            axes = (0, 3, 1, 2) if multi else (2, 0, 1)
            little = np.ascontiguousarray(little.transpose(axes))
        data = little.tobytes()
        data += b"\0" * (len(data) % 2)
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if allocated <= 8 else "OW"
    return ds


def to_bytes(ds: Dataset, *, implicit: bool = False) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=implicit or None)
    return buffer.getvalue()


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@pytest.fixture
def strict() -> Iterator[None]:
    """Reading validation RAISE for the duration of a test."""
    old = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        yield
    finally:
        config.settings.reading_validation_mode = old


def reread_strictly(ds: Dataset) -> Dataset:
    """Write *ds* as a Part 10 file and read it back with reading validation RAISE, touching
    every element and decoding the pixels (the `strict` fixture must be active)."""
    assert config.settings.reading_validation_mode == config.RAISE
    result = read(to_bytes(ds))
    for _ in result.iterall():
        pass
    _ = result.pixel_array
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    return result


def decode(ds: Dataset, *, raw: bool = False) -> np.ndarray[Any, Any]:
    """All frames, as pydicom's pixel_array (raw: no YBR to RGB conversion)."""
    arr, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=raw)
    return arr


def box(arr: np.ndarray[Any, Any], ds: Dataset, region: Sequence[int]) -> Any:
    """Index of rectangle [x0, y0, x1, y1] in every frame of *arr* (shaped as pixel_array)."""
    x0, y0, x1, y1 = region
    multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
    return (slice(None), slice(y0, y1), slice(x0, x1)) if multi else (slice(y0, y1), slice(x0, x1))


def expected_after(
    before: np.ndarray[Any, Any], ds: Dataset, regions: Sequence[Sequence[int]], fill: Any
) -> np.ndarray[Any, Any]:
    expected = before.copy()
    for region in regions:
        expected[box(expected, ds, region)] = fill
    return expected


def assert_only_pixels_changed(before: Dataset, after: Dataset) -> None:
    added = set(after.keys()) - set(before.keys())
    allowed = {0x00280301}  # Burned In Annotation
    if str(before.file_meta.TransferSyntaxUID) in LOSSY_METHODS:
        allowed |= {0x00282110, 0x00282114}  # decoded lossy pixels stay marked lossy
        assert after.LossyImageCompression == "01"
        assert LOSSY_METHODS[str(before.file_meta.TransferSyntaxUID)] in list(
            after.LossyImageCompressionMethod
            if after["LossyImageCompressionMethod"].VM > 1
            else [after.LossyImageCompressionMethod]
        )
    assert added <= allowed, f"added {sorted(added)}"
    assert after.BurnedInAnnotation == "NO"
    for elem in before:
        if elem.tag in REWRITTEN:
            continue
        assert elem.tag in after, f"{elem.tag} removed"
        assert after[elem.tag].value == elem.value, f"{elem.tag} changed"


def pydicom_file(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not in pydicom's wheel"
    ds = pydicom.dcmread(path)
    assert isinstance(ds, Dataset)
    return ds


def ramp(shape: tuple[int, ...], dtype: str, low: int, high: int) -> np.ndarray[Any, Any]:
    """Deterministic values covering [low, high] without the fill extremes everywhere."""
    count = int(np.prod(shape))
    values = low + (np.arange(count, dtype=np.int64) * 7919) % (high - low + 1)
    return values.reshape(shape).astype(dtype)


# -- may_have_burned_in_text ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("burned_in", "modality", "sop_class", "expected"),
    [
        ("YES", "CT", CT_IMAGE, True),
        ("NO", "US", US_IMAGE, False),
        ("NO", "OT", SC_IMAGE, False),
        (None, "US", US_IMAGE, True),
        (None, "US", CT_IMAGE, True),  # modality alone
        (None, "CT", SC_IMAGE, True),  # a CT dose screen: SOP class alone
        (None, "CT", CT_IMAGE, False),
        (None, "MR", "1.2.840.10008.5.1.4.1.1.4", False),
        (None, "XC", "1.2.840.10008.5.1.4.1.1.77.1.4", True),
        (None, "ES", "1.2.840.10008.5.1.4.1.1.77.1.1.1", True),
        (None, "OT", CT_IMAGE, True),
        ("", "US", US_IMAGE, True),  # empty is absent
        ("", "CT", CT_IMAGE, False),
    ],
)
def test_burned_in_annotation_then_image_kind(
    burned_in: str | None, modality: str, sop_class: str, expected: bool
) -> None:
    ds = make_image(
        np.zeros((4, 4), "u1"), burned_in=burned_in, modality=modality, sop_class=sop_class
    )
    assert may_have_burned_in_text(ds) is expected


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
@pytest.mark.parametrize("value", ["MAYBE", "yes"])
def test_a_value_that_is_no_answer_counts_as_text(value: str) -> None:
    ds = make_image(np.zeros((4, 4), "u1"), burned_in=None, modality="CT", sop_class=CT_IMAGE)
    ds.add(DataElement(0x00280301, "CS", value))
    assert may_have_burned_in_text(ds)


def test_no_pixel_data_never_has_burned_in_text() -> None:
    pdf = Dataset()
    pdf.SOPClassUID = PDF
    pdf.Modality = "DOC"
    pdf.BurnedInAnnotation = "YES"
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.EncapsulatedDocument = b"%PDF-1.4 ..."
    assert not may_have_burned_in_text(pdf)
    sr = Dataset()
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.Modality = "SR"
    assert not may_have_burned_in_text(sr)


def test_a_header_read_without_pixels_still_counts_as_an_image(tmp_path: Path) -> None:
    path = tmp_path / "us.dcm"
    path.write_bytes(to_bytes(make_image(np.zeros((4, 4), "u1"), burned_in=None)))
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert "PixelData" not in header
    assert may_have_burned_in_text(header)


def test_float_pixel_data_counts_but_cannot_be_masked() -> None:
    ds = make_image(np.zeros((4, 4), "u1"), burned_in="YES")
    del ds.PixelData
    ds.FloatPixelData = np.zeros((4, 4), "<f4").tobytes()
    assert may_have_burned_in_text(ds)
    with pytest.raises(MaskError, match="float pixel data"):
        apply_mask(ds, [[0, 0, 2, 2]])


def test_text_sop_classes_are_image_storage_classes_pydicom_knows() -> None:
    for uid in TEXT_SOP_CLASSES:
        name = UID(uid).name
        assert name != uid and "Storage" in name, uid


# -- select_mask ----------------------------------------------------------------------------


def _rule(manufacturer: list[str], model: list[str], regions: Any = None) -> MaskRule:
    return MaskRule(manufacturer=manufacturer, model=model, regions=regions or [[0, 0, 1, 1]])


def test_first_rule_whose_manufacturer_and_model_match() -> None:
    ds = make_image(np.zeros((4, 4), "u1"), manufacturer="ACME Imaging", model="Sono 3000")
    rules = [
        _rule(["ACME*"], ["Sono 2000"]),
        _rule(["Other", "ACME Imag?ng"], ["Sono ?000"], [[1, 1, 2, 2]]),
        _rule(["*"], ["*"], [[2, 2, 3, 3]]),
    ]
    assert select_mask(ds, rules) is rules[1]
    assert select_mask(ds, rules[2:]) is rules[2]
    assert select_mask(ds, rules[:1]) is None
    assert select_mask(ds, []) is None


@pytest.mark.parametrize(
    ("patterns", "value", "expected"),
    [
        (["acme*"], "ACME Imaging", False),  # case-sensitive
        (["ACME"], "ACME Imaging", False),  # whole value
        (["ACME?Imaging"], "ACME Imaging", True),
        (["*Imaging"], "ACME Imaging", True),
        (["ACME [X]"], "ACME [X]", True),  # [ ] are literal, not fnmatch sets
        (["ACME [X]"], "ACME X", False),
        (["*"], None, True),  # a missing attribute matches only "*"
        (["**"], None, True),
        (["?*"], None, False),
        ([""], None, False),
        (["*"], "", True),
        ([], "ACME Imaging", False),  # no patterns: nothing
    ],
)
def test_manufacturer_patterns(patterns: list[str], value: str | None, expected: bool) -> None:
    ds = make_image(np.zeros((4, 4), "u1"), manufacturer=value)
    rule = _rule(patterns, ["*"])
    assert (select_mask(ds, [rule]) is rule) is expected


def test_missing_model_matches_only_star() -> None:
    ds = make_image(np.zeros((4, 4), "u1"), model=None)
    assert select_mask(ds, [_rule(["ACME*"], ["Sono*"])]) is None
    star = _rule(["ACME*"], ["*"])
    assert select_mask(ds, [star]) is star


# -- apply_mask on generated images ---------------------------------------------------------

GENERATED = [
    # id, arr, photometric, bits_stored, frames, planar, fill
    ("u8-mono2", ramp((24, 32), "u1", 1, 255), "MONOCHROME2", 8, None, 0, 0),
    ("u16-12bit", ramp((24, 32), "u2", 1, 4095), "MONOCHROME2", 12, None, 0, 0),
    ("i16-signed", ramp((24, 32), "i2", -32000, 32000), "MONOCHROME2", 16, None, 0, -32768),
    ("i16-12bit", ramp((24, 32), "i2", -2000, 2000), "MONOCHROME2", 12, None, 0, -2048),
    ("u16-mono1", ramp((24, 32), "u2", 0, 1000), "MONOCHROME1", 10, None, 0, 1023),
    ("u8-3frames", ramp((3, 24, 32), "u1", 1, 255), "MONOCHROME2", 8, 3, 0, 0),
    ("u8-1frame-nof", ramp((1, 24, 32), "u1", 1, 255), "MONOCHROME2", 8, 1, 0, 0),
    ("u32", ramp((24, 32), "u4", 1, 2**31), "MONOCHROME2", 32, None, 0, 0),
    ("rgb", ramp((24, 32, 3), "u1", 1, 255), "RGB", 8, None, 0, [0, 0, 0]),
    ("rgb-planar-2frames", ramp((2, 24, 32, 3), "u1", 1, 255), "RGB", 8, 2, 1, [0, 0, 0]),
    ("rgb16-planar", ramp((24, 32, 3), "u2", 1, 65535), "RGB", 16, None, 1, [0, 0, 0]),
    ("ybr-full", ramp((24, 32, 3), "u1", 1, 255), "YBR_FULL", 8, None, 0, [0, 128, 128]),
]
REGIONS = [[2, 3, 10, 7], [20, 0, 32, 2]]


@pytest.mark.parametrize(
    ("arr", "photometric", "bits_stored", "frames", "planar", "fill"),
    [case[1:] for case in GENERATED],
    ids=[case[0] for case in GENERATED],
)
def test_generated_images_are_masked_exactly(
    strict: None,
    arr: np.ndarray[Any, Any],
    photometric: str,
    bits_stored: int,
    frames: int | None,
    planar: int,
    fill: Any,
) -> None:
    source = read(
        to_bytes(
            make_image(
                arr, photometric=photometric, bits_stored=bits_stored, frames=frames, planar=planar
            )
        )
    )
    original = copy.deepcopy(source)
    before = decode(source, raw=True)
    arr = arr.reshape(before.shape)  # one frame: (rows, columns, ...)
    assert np.array_equal(before, arr)

    apply_mask(source, REGIONS)

    assert_only_pixels_changed(original, source)
    assert source.SOPInstanceUID == original.SOPInstanceUID
    result = reread_strictly(source)
    assert result.PhotometricInterpretation == photometric
    pixel_data = result["PixelData"]
    assert str(pixel_data.VR) == ("OB" if arr.dtype.itemsize == 1 else "OW")
    if arr.ndim - (frames is not None) == 3:
        assert result.PlanarConfiguration == 0
    assert result.get("NumberOfFrames") == original.get("NumberOfFrames")
    after = decode(result, raw=True)
    expected = expected_after(arr, result, REGIONS, fill)
    assert after.dtype == arr.dtype
    assert np.array_equal(after, expected)
    assert not np.array_equal(after, arr)


def test_single_bit_images_are_packed_again(strict: None) -> None:
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 2, size=(3, 9, 13), dtype="u1")  # 117 bits a frame: not byte-aligned
    source = make_image(
        arr,
        frames=3,
        bits_allocated=1,
        sop_class="1.2.840.10008.5.1.4.1.1.7.1",
        modality="OT",
    )
    apply_mask(source, [[0, 0, 4, 3]])
    result = reread_strictly(source)
    assert result.BitsAllocated == 1
    assert np.array_equal(result.pixel_array, expected_after(arr, result, [[0, 0, 4, 3]], 0))


def test_implicit_vr_source_becomes_explicit(strict: None) -> None:
    arr = ramp((16, 16), "i2", -1000, 1000)
    source = read(to_bytes(make_image(arr, syntax=ImplicitVRLittleEndian), implicit=True))
    assert source.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    apply_mask(source, [[0, 0, 4, 4]])
    result = reread_strictly(source)
    assert np.array_equal(result.pixel_array, expected_after(arr, result, [[0, 0, 4, 4]], -32768))


def test_regions_are_clipped_to_the_image(strict: None) -> None:
    arr = ramp((10, 12), "u1", 1, 255)
    source = make_image(arr)
    apply_mask(source, [[-5, -5, 2, 3], [10, 8, 500, 500], [100, 100, 200, 200]])
    result = reread_strictly(source)
    expected = expected_after(arr, result, [[0, 0, 2, 3], [10, 8, 12, 10]], 0)
    assert np.array_equal(result.pixel_array, expected)


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ([], "no mask region lies within"),
        ([[20, 20, 30, 30]], "no mask region lies within the 12x10 image"),
        ([[0, 0, 4]], "mask region 1 is not"),
        ([[0, 0, 4, 4], [5, 5, 5, 6]], "mask region 2 is not"),
        ([[4, 0, 0, 4]], "mask region 1 is not"),
        ([[0, 0, 4.5, 4]], "mask region 1 is not"),
        ([[0, 0, True, 4]], "mask region 1 is not"),
    ],
)
def test_bad_or_outside_regions_refuse_and_change_nothing(regions: Any, message: str) -> None:
    source = make_image(ramp((10, 12), "u1", 1, 255))
    before = to_bytes(source)
    with pytest.raises(MaskError, match=message):
        apply_mask(source, regions)
    assert to_bytes(source) == before


def test_smallest_and_largest_pixel_values_widen_to_the_fill(strict: None) -> None:
    arr = ramp((10, 12), "u2", 100, 900)
    mono2 = make_image(arr, bits_stored=12)
    mono2.SmallestImagePixelValue, mono2.LargestImagePixelValue = 100, 900
    apply_mask(mono2, [[0, 0, 2, 2]])
    assert (mono2.SmallestImagePixelValue, mono2.LargestImagePixelValue) == (0, 900)
    mono1 = make_image(arr, bits_stored=12, photometric="MONOCHROME1")
    mono1.SmallestImagePixelValue, mono1.LargestImagePixelValue = 100, 900
    apply_mask(mono1, [[0, 0, 2, 2]])
    assert (mono1.SmallestImagePixelValue, mono1.LargestImagePixelValue) == (100, 4095)
    reread_strictly(mono1)


def test_rle_with_extended_offset_table_is_unencapsulated(strict: None) -> None:
    arr = ramp((2, 16, 20), "i2", -3000, 3000)
    source = make_image(arr, frames=2)
    source.compress(RLELossless, encapsulate_ext=True, generate_instance_uid=False)
    assert "ExtendedOffsetTable" in source
    original = copy.deepcopy(source)
    apply_mask(source, [[1, 1, 5, 5]])
    assert "ExtendedOffsetTable" not in source
    assert "ExtendedOffsetTableLengths" not in source
    assert not source["PixelData"].is_undefined_length
    assert_only_pixels_changed(original, source)
    result = reread_strictly(source)
    assert np.array_equal(result.pixel_array, expected_after(arr, result, [[1, 1, 5, 5]], -32768))


# -- apply_mask on pydicom's compressed and colour test files -------------------------------

COMPRESSED = [
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL -> RGB
    "SC_rgb_jpeg_lossy_gdcm.dcm",  # JPEG baseline, YBR_FULL -> RGB
    "examples_ybr_color.dcm",  # US multi-frame (30), JPEG baseline YBR_FULL_422 -> RGB
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1, RGB
    "JPGExtended.dcm",  # JPEG extended, 12 bit
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS, 16 bit
    "examples_jpeg2k.dcm",  # US, JPEG 2000 YBR_RCT -> RGB
    "693_J2KI.dcm",  # JPEG 2000 lossy, signed 14 bit
    "MR_small_RLE.dcm",  # RLE, signed 16 bit
    "SC_rgb_rle_2frame.dcm",  # RLE, RGB, 2 frames
    "image_dfl.dcm",  # deflated explicit VR little endian (native pixels)
]


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_sources_are_decoded_masked_and_written_uncompressed(
    strict: None, name: str
) -> None:
    source = pydicom_file(name)
    original = copy.deepcopy(source)
    before = decode(source)  # what pixel_array shows: YBR is converted to RGB
    regions = [[0, 0, 7, 5], [3, 9, 6, 40]]
    apply_mask(source, regions)
    assert source.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert_only_pixels_changed(original, source)
    result = reread_strictly(source)
    if "YBR" in original.PhotometricInterpretation:
        assert result.PhotometricInterpretation == "RGB"
    after = result.pixel_array
    fill: Any = [0, 0, 0] if result.SamplesPerPixel == 3 else 0
    if original.PixelRepresentation == 1:
        fill = -(1 << (original.BitsStored - 1))
    assert np.array_equal(after, expected_after(before, result, regions, fill))


def test_uncompressed_ybr_full_422_is_kept_as_ybr_full(strict: None) -> None:
    source = pydicom_file("SC_ybr_full_422_uncompressed.dcm")
    before = decode(source, raw=True)  # subsampling undone, still YCbCr
    apply_mask(source, [[0, 0, 9, 9]])
    result = reread_strictly(source)
    assert result.PhotometricInterpretation == "YBR_FULL"
    after = decode(result, raw=True)
    assert np.array_equal(after, expected_after(before, result, [[0, 0, 9, 9]], [0, 128, 128]))


def test_palette_colour_fill_is_the_darkest_entry(strict: None) -> None:
    source = pydicom_file("examples_palette.dcm")  # an ultrasound image
    before = decode(source)
    apply_mask(source, [[0, 0, 50, 20]])
    result = reread_strictly(source)
    assert result.PhotometricInterpretation == "PALETTE COLOR"
    after = result.pixel_array
    fill = int(after[0, 0])
    colours = apply_color_lut(np.arange(256), result).astype(np.int64).sum(axis=-1)
    assert colours[fill] == colours.min()
    assert np.array_equal(after, expected_after(before, result, [[0, 0, 50, 20]], fill))


# -- apply_mask refusals --------------------------------------------------------------------


def test_undecodable_pixels_raise_mask_error_without_phi_and_change_nothing(
    tmp_path: Path,
) -> None:
    source = pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    source.PatientName = SECRET
    source.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + SECRET.encode() * 20])
    path = tmp_path / f"{SECRET}.dcm"
    path.write_bytes(to_bytes(source))
    ds = pydicom.dcmread(path)
    before = to_bytes(ds)
    with pytest.raises(MaskError) as caught:
        apply_mask(ds, [[0, 0, 5, 5]])
    assert "cannot decode JPEG Baseline" in str(caught.value)
    assert "SECRET" not in str(caught.value)
    assert to_bytes(ds) == before
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit


@pytest.mark.parametrize(
    ("syntax", "message"),
    [
        ("1.2.840.10008.1.2.4.102", "no pixel data decoder for MPEG-4"),
        ("1.2.3.4", "unknown transfer syntax"),
    ],
)
def test_syntaxes_without_a_decoder_raise_mask_error(syntax: str, message: str) -> None:
    ds = make_image(ramp((8, 8), "u1", 0, 255))
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" * 4])
    with pytest.raises(MaskError, match=message):
        apply_mask(ds, [[0, 0, 2, 2]])


def test_big_endian_and_missing_transfer_syntax_raise_mask_error() -> None:
    big = pydicom_file("MR_small_bigendian.dcm")
    with pytest.raises(MaskError, match="Big Endian"):
        apply_mask(big, [[0, 0, 2, 2]])
    bare = make_image(ramp((8, 8), "u1", 0, 255))
    del bare.file_meta
    with pytest.raises(MaskError, match="no Transfer Syntax UID"):
        apply_mask(bare, [[0, 0, 2, 2]])
    truncated = make_image(ramp((8, 8), "u1", 0, 255))
    truncated.PixelData = truncated.PixelData[:20]
    with pytest.raises(MaskError, match="cannot decode"):
        apply_mask(truncated, [[0, 0, 2, 2]])


# -- the real ultrasound file and burned_in_outcome -----------------------------------------

US_RULE = MaskRule(
    manufacturer=["Philips*"], model=["EPIQ ?G"], regions=[[0, 0, 1024, 36]]
)  # the demographics band at the top of the screen


@pytest.fixture
def us(tmp_path: Path) -> Dataset:
    path = tmp_path / "us.dcm"
    shutil.copyfile(US_FILE, path)
    ds = pydicom.dcmread(path)
    # header defects of the source (LO values of 122 characters), unrelated to the pixels
    del ds[0x00321030], ds[0x0033100C]
    return ds


def test_real_ultrasound_is_masked(strict: None, us: Dataset) -> None:
    assert us.Modality == "US" and us.BurnedInAnnotation == "YES"
    assert may_have_burned_in_text(us)
    original = copy.deepcopy(us)
    before = us.pixel_array.copy()
    assert before[:36].any()  # there is text to hide

    outcome = burned_in_outcome(us, BurnedInPolicy.MASK, [MaskRule(model=["Other"]), US_RULE])

    assert outcome is BurnedIn.MASKED
    assert_only_pixels_changed(original, us)
    result = reread_strictly(us)
    assert result.BurnedInAnnotation == "NO"
    after = result.pixel_array
    assert (after[:36] == 0).all()
    assert np.array_equal(after[36:], before[36:])


@pytest.mark.parametrize(
    ("policy", "rules"),
    [
        (BurnedInPolicy.MASK, [MaskRule(manufacturer=["Philips*"], model=["EPIQ 7*"])]),
        (BurnedInPolicy.MASK, [MaskRule(manufacturer=["philips*"], model=["*"])]),
        (BurnedInPolicy.MASK, []),
        (BurnedInPolicy.QUARANTINE, [US_RULE]),
    ],
)
def test_no_matching_rule_or_quarantine_policy_needs_review(
    us: Dataset, policy: BurnedInPolicy, rules: list[MaskRule]
) -> None:
    before = to_bytes(us)
    assert burned_in_outcome(us, policy, rules) is BurnedIn.NEEDS_REVIEW
    assert to_bytes(us) == before  # untouched, still Burned In Annotation YES


def test_images_without_expected_text_are_none() -> None:
    ct = make_image(ramp((8, 8), "i2", -1000, 1000), burned_in=None, modality="CT",
                    sop_class=CT_IMAGE)  # fmt: skip
    before = to_bytes(ct)
    assert burned_in_outcome(ct, BurnedInPolicy.MASK, [MaskRule()]) is BurnedIn.NONE
    assert burned_in_outcome(ct, BurnedInPolicy.QUARANTINE, []) is BurnedIn.NONE
    assert to_bytes(ct) == before
    checked = make_image(ramp((8, 8), "u1", 0, 255), burned_in="NO")
    assert burned_in_outcome(checked, BurnedInPolicy.QUARANTINE, []) is BurnedIn.NONE


def test_a_failing_mask_propagates_and_changes_nothing(us: Dataset) -> None:
    before = to_bytes(us)
    rule = MaskRule(regions=[[2000, 2000, 2100, 2100]])  # made for a bigger screen
    with pytest.raises(MaskError, match="no mask region lies within the 1024x768 image"):
        burned_in_outcome(us, BurnedInPolicy.MASK, [rule])
    assert to_bytes(us) == before


def test_policy_given_as_text_works() -> None:
    ds = make_image(ramp((8, 8), "u1", 1, 255))
    rule = MaskRule(regions=[[0, 0, 2, 2]])
    assert burned_in_outcome(ds, BurnedInPolicy("mask"), [rule]) is BurnedIn.MASKED
