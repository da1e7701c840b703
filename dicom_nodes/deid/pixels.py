"""Burned-in text in pixel data: detection, masking by device model, and the outcome.

This is the pixel half of the Clean Pixel Data Option (DICOM PS3.15 E.3.1): "any information
burned in to the Pixel Data ... shall be removed", typically by blacking out regions whose
position is known for a given device. Whether an image carries such text is said by Burned In
Annotation (0028,0301), PS3.3 C.7.6.1.1.4: ``YES`` if the image "contains sufficient burned in
annotation to identify the patient and date the image was acquired", ``NO`` otherwise. The
attribute is Type 3 in many IODs, so when it is absent the kind of image decides
(:func:`may_have_burned_in_text`).

Masking (:func:`apply_mask`) decodes every frame with pydicom's decoders (numpy plus the
pylibjpeg plugins: JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE), fills the rectangles of a
:class:`~config.deid.MaskRule` in every frame, and writes the pixels back uncompressed as
Explicit VR Little Endian. Anything that cannot be decoded or masked raises :class:`MaskError`
(a ``ValueError``) whose message names no patient data; the caller quarantines the instance.

Nothing here ever lets an image that may carry text pass silently: the outcome
(:func:`burned_in_outcome`) is ``NONE`` (no text expected), ``MASKED`` (regions blacked out,
Burned In Annotation now ``NO``) or ``NEEDS_REVIEW`` (quarantine).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian

from config.deid import BurnedInPolicy, MaskRule
from dicom_nodes.deid.model import BurnedIn

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import Decoder

__all__ = [
    "TEXT_MODALITIES",
    "TEXT_SOP_CLASSES",
    "MaskError",
    "apply_mask",
    "burned_in_outcome",
    "may_have_burned_in_text",
    "select_mask",
]

_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = 0x7FE00008
_DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
_EXTENDED_OFFSET_TABLE = 0x7FE00001
_EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_MAX_VALUE_LENGTH = 2**32 - 2  # PS3.5 7.1.1: 32-bit length, 0xFFFFFFFF means undefined

TEXT_MODALITIES: frozenset[str] = frozenset(
    {
        "US",  # ultrasound: measurements, patient name and date on screen
        "IVUS",  # intravascular ultrasound
        "OT",  # other: screenshots, scanned documents, dose and report pages
        "SC",  # not a defined term, but written by many secondary capture devices
        "DOC",  # scanned documents
        "XC",  # external-camera photography
        "ES",  # endoscopy (video overlays with name and date)
        "GM",  # general microscopy
        "SM",  # slide microscopy (label images carry the slide label)
        "OP",  # ophthalmic photography
    }
)
"""Modalities (0008,0060) whose images are taken to carry text when Burned In Annotation is
absent: video and screen grabs, photographs and documents, where on-screen annotation is the
norm. CT, MR, CR, DX, MG, NM, PT, XA, RF ... are not in the list: their acquisition images
rarely carry identifying text, and their text-bearing screens (dose reports, scouts with
demographics) are Secondary Capture, which the SOP class list catches."""

TEXT_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.2",  # VL Microscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.3",  # VL Slide-Coordinates Microscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.5.2",  # Ophthalmic Photography 16 Bit Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.6",  # VL Whole Slide Microscopy Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.7",  # Dermoscopic Photography Image Storage
    }
)
"""SOP classes taken to carry text when Burned In Annotation is absent, whatever the
Modality says (a CT dose screen is Secondary Capture with Modality CT)."""

_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
_SUPPORTED_PI = _MONOCHROME | {"PALETTE COLOR", "RGB", "YBR_FULL"}


class MaskError(ValueError):
    """Pixel data that cannot be masked; the message names no patient data (quarantine)."""


# -- detection ----------------------------------------------------------------------------


def _has_image(ds: Dataset) -> bool:
    """Pixel data of any kind, or an image header read without its pixels."""
    if any(t in ds for t in (_PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_FLOAT_PIXEL_DATA)):
        return True
    return _ROWS in ds and _COLUMNS in ds


def _text(ds: Dataset, keyword: str) -> str:
    elem = ds.get(keyword)
    if elem is None:
        return ""
    value: Any = elem.value if isinstance(elem, DataElement) else elem
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def may_have_burned_in_text(ds: Dataset) -> bool:
    """Whether the pixels of *ds* may show identifying text (PS3.3 C.7.6.1.1.4).

    * No image (no Pixel Data, Float or Double Float Pixel Data, and no Rows/Columns): False.
      Encapsulated PDF/CDA, SR, presentation states, KOS ... never have burned-in text.
      A header read without its pixels (``stop_before_pixels``) still counts as an image.
    * Burned In Annotation (0028,0301) ``YES``: True; ``NO``: False (trusted). Any other
      non-empty value is not a valid answer and counts as True.
    * Absent or empty: True when the SOP Class UID is in :data:`TEXT_SOP_CLASSES` or the
      Modality is in :data:`TEXT_MODALITIES` (ultrasound, secondary capture, photographs,
      video, documents); False otherwise.
    """
    if not _has_image(ds):
        return False
    answer = _text(ds, "BurnedInAnnotation").upper()
    if answer == "NO":
        return False
    if answer:
        return True  # YES, or a value that is no answer
    if _text(ds, "SOPClassUID") in TEXT_SOP_CLASSES:
        return True
    return _text(ds, "Modality").upper() in TEXT_MODALITIES


# -- rule selection -----------------------------------------------------------------------


@lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """DICOM wildcard matching (PS3.4 C.2.2.2.4): ``*`` any sequence, ``?`` one character,
    every other character literal (unlike :mod:`fnmatch`, ``[`` is not special)."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _matches(patterns: Iterable[str], value: str) -> bool:
    """Any pattern matches *value* (case-sensitive). A missing or empty value is matched only
    by universal patterns (``*``); an empty pattern list matches nothing."""
    for pattern in patterns:
        if not value:
            if pattern and set(pattern) == {"*"}:
                return True
        elif _wildcard(pattern).fullmatch(value):
            return True
    return False


def select_mask(ds: Dataset, rules: Sequence[MaskRule]) -> MaskRule | None:
    """The first rule whose Manufacturer (0008,0070) and Manufacturer's Model Name
    (0008,1090) patterns both match *ds*, or None."""
    manufacturer = _text(ds, "Manufacturer")
    model = _text(ds, "ManufacturerModelName")
    for rule in rules:
        if _matches(rule.manufacturer, manufacturer) and _matches(rule.model, model):
            return rule
    return None


# -- masking ------------------------------------------------------------------------------


def _int(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or isinstance(value, MultiValue | list):
        raise MaskError(f"the image has no usable {keyword}")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise MaskError(f"the image has no usable {keyword}") from exc


def _clip(regions: Sequence[Sequence[int]], rows: int, columns: int) -> list[tuple[int, ...]]:
    """Rectangles ``[x0, y0, x1, y1]`` (x1/y1 exclusive) clipped to the image, empty ones
    dropped; invalid rectangles raise :class:`MaskError`."""
    boxes: list[tuple[int, ...]] = []
    for number, region in enumerate(regions, 1):
        coords = list(region)
        if (
            len(coords) != 4
            or not all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in coords)
            or coords[0] >= coords[2]
            or coords[1] >= coords[3]
        ):
            raise MaskError(f"mask region {number} is not [x0, y0, x1, y1] with x0 < x1, y0 < y1")
        x0, x1 = (min(max(int(c), 0), columns) for c in (coords[0], coords[2]))
        y0, y1 = (min(max(int(c), 0), rows) for c in (coords[1], coords[3]))
        if x0 < x1 and y0 < y1:
            boxes.append((x0, y0, x1, y1))
    if not boxes:
        raise MaskError(f"no mask region lies within the {columns}x{rows} image")
    return boxes


def _palette_darkest(ds: Dataset, low: int, high: int) -> int:
    """The stored value whose palette colour is darkest (sum of R, G, B); *low* if the
    palette cannot be read (the fill then is uniform, only not necessarily black)."""
    from pydicom.pixels.processing import apply_color_lut

    try:
        rgb = apply_color_lut(np.arange(low, high + 1, dtype=np.int64), ds)
        return low + int(np.argmin(np.asarray(rgb, dtype=np.int64).sum(axis=-1)))
    except Exception:  # a broken or missing palette: any uniform fill still removes text
        return low


def _fill(ds: Dataset, photometric: str, bits_stored: int, signed: bool) -> list[int]:
    """The value (one per sample) that shows black.

    MONOCHROME2 and RGB: the lowest stored value. MONOCHROME1 is displayed inverted (minimum
    is white, PS3.3 C.7.6.3.1.2), so the highest. YBR_FULL: Y lowest, Cb = Cr = the middle
    (no colour). PALETTE COLOR: the index of the darkest palette entry. Modality/VOI LUTs are
    not consulted: whatever they do, a uniform fill leaves no text behind."""
    low = -(1 << (bits_stored - 1)) if signed else 0
    high = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    if photometric == "MONOCHROME1":
        return [high]
    if photometric == "MONOCHROME2":
        return [low]
    if photometric == "PALETTE COLOR":
        return [_palette_darkest(ds, low, high)]
    if photometric == "YBR_FULL":
        return [low, 1 << (bits_stored - 1), 1 << (bits_stored - 1)]
    return [low, low, low]  # RGB


def _error(what: str, exc: BaseException) -> MaskError:
    # Only the exception's type: decoder messages may quote file names or values.
    return MaskError(f"{what}: {type(exc).__name__}")


def _frames(
    decoder: Decoder, ds: Dataset, *, raw: bool
) -> Iterator[tuple[np.ndarray[Any, Any], dict[str, str | int]]]:
    """Decoded frames one by one (memory: one frame, not the whole clip)."""
    if int(ds.get("BitsAllocated", 0) or 0) != 1:
        yield from decoder.iter_array(ds, raw=raw)
        return
    # pydicom 3.0.2 fails on single frames of bit-packed data that are not byte-aligned:
    # decode them all at once.
    arr, props = decoder.as_array(ds, raw=raw)
    if int(props.get("number_of_frames", 1)) > 1:
        for frame in arr:
            yield frame, props
    else:
        yield arr, props


def apply_mask(ds: Dataset, regions: Sequence[Sequence[int]]) -> None:
    """Black out *regions* (``[x0, y0, x1, y1]``, pixels, x1/y1 exclusive, clipped to the
    image) in every frame of *ds*; the Clean Pixel Data Option of PS3.15 E.3.1.

    All frames are decoded (native or any compressed syntax pydicom can decode), masked with
    the value that shows black (see :func:`_fill`), and written back uncompressed in the
    Image Pixel module's own Bits Allocated / Pixel Representation, samples interleaved:

    * Transfer Syntax UID becomes Explicit VR Little Endian; Pixel Data loses its
      encapsulation (OB for 8 bits or fewer, OW above) and the Extended Offset Table
      (7FE0,0001/0002) is removed.
    * Planar Configuration becomes 0 for colour images.
    * Compressed YBR_FULL/YBR_FULL_422 (JPEG) is decoded to RGB and Photometric
      Interpretation says RGB, as pydicom's ``pixel_array`` would; JPEG 2000 YBR_ICT/YBR_RCT
      becomes RGB too. Uncompressed YBR_FULL_422 is written as YBR_FULL (the same values,
      no longer subsampled), uncompressed YBR_FULL stays YBR_FULL.
    * Smallest/Largest Image Pixel Value, when present, are widened to include the fill.
    * Burned In Annotation (0028,0301) becomes ``NO``.

    Nothing else is added or changed; the SOP Instance UID stays (the de-identification
    engine replaces UIDs). Lossy Image Compression (0028,2110) is left as found. On
    :class:`MaskError` *ds* is unchanged.

    Raises :class:`MaskError` when the pixel data cannot be decoded (unknown or unsupported
    transfer syntax, Explicit VR Big Endian, missing decoder plugin, corrupt data), is Float
    or Double Float Pixel Data, has an unsupported Photometric Interpretation, or when no
    region overlaps the image.
    """
    from pydicom.pixels.decoders.base import get_decoder

    if _PIXEL_DATA not in ds:
        if _FLOAT_PIXEL_DATA in ds or _DOUBLE_FLOAT_PIXEL_DATA in ds:
            raise MaskError("float pixel data cannot be masked")
        raise MaskError("the dataset has no Pixel Data")
    meta = getattr(ds, "file_meta", None)
    syntax_value = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax_value:
        raise MaskError("the dataset has no Transfer Syntax UID in its file meta")
    syntax = UID(str(syntax_value))
    if not syntax.is_transfer_syntax:
        raise MaskError(f"unknown transfer syntax {syntax}")
    if not syntax.is_little_endian:
        raise MaskError(f"{syntax.name} pixel data cannot be masked")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    bits_allocated, bits_stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    signed = _int(ds, "PixelRepresentation") == 1
    if bits_allocated not in (1, 8, 16, 32) or not 0 < bits_stored <= bits_allocated:
        raise MaskError(f"unsupported Bits Allocated {bits_allocated} / Stored {bits_stored}")
    boxes = _clip(regions, rows, columns)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise MaskError(f"no pixel data decoder for {syntax.name}") from exc
    if not decoder.is_available:
        raise MaskError(f"the decoder plugins for {syntax.name} are not installed")

    out_dtype = np.dtype(f"<{'i' if signed else 'u'}{max(bits_allocated // 8, 1)}")
    info = np.iinfo(out_dtype)
    chunks: list[bytes] = []
    bits: list[np.ndarray[Any, Any]] = []
    photometric = ""
    fill: np.ndarray[Any, Any] | None = None
    # Native data: raw values (uncompressed YBR stays YBR); compressed: as pixel_array does.
    try:
        for decoded, props in _frames(decoder, ds, raw=not syntax.is_compressed):
            if fill is None:
                photometric = str(props["photometric_interpretation"])
                if photometric not in _SUPPORTED_PI:
                    raise MaskError(f"photometric interpretation {photometric} is not supported")
                if decoded.shape[:2] != (rows, columns):
                    raise MaskError("decoded frames do not match Rows and Columns")
                fill = np.asarray(_fill(ds, photometric, bits_stored, signed), dtype=out_dtype)
                if decoded.ndim == 2:
                    fill = fill[:1].reshape(())
            if decoded.size and (decoded.min() < info.min or decoded.max() > info.max):
                raise MaskError("decoded values do not fit Bits Allocated")
            frame = decoded.astype(out_dtype)  # a new array in the output byte order
            for x0, y0, x1, y1 in boxes:
                frame[y0:y1, x0:x1] = fill
            if bits_allocated == 1:
                bits.append(frame.ravel())
            else:
                chunks.append(frame.tobytes())
    except MaskError:
        raise
    except Exception as exc:  # every decoder plugin has its own exception types
        raise _error(f"cannot decode {syntax.name} pixel data", exc) from exc
    if fill is None:
        raise MaskError("the pixel data has no frames")
    if bits:
        chunks = [np.packbits(np.concatenate(bits).astype(np.uint8), bitorder="little").tobytes()]
    length = sum(len(c) for c in chunks)
    if length > _MAX_VALUE_LENGTH:
        raise MaskError("the uncompressed pixel data would exceed the maximum value length")
    if length % 2:
        chunks.append(b"\x00")

    # -- all checks passed: change the dataset ---------------------------------------------
    vr = "OB" if bits_allocated <= 8 else "OW"
    ds[_PIXEL_DATA] = DataElement(_PIXEL_DATA, vr, b"".join(chunks))
    chunks.clear()
    for tag in (_EXTENDED_OFFSET_TABLE, _EXTENDED_OFFSET_TABLE_LENGTHS):
        if tag in ds:
            del ds[tag]
    assert meta is not None
    _mark_lossy(ds, str(meta.TransferSyntaxUID))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if str(ds.get("PhotometricInterpretation", "")).strip() != photometric:
        ds.PhotometricInterpretation = photometric
    if _int_or_none(ds, "SamplesPerPixel") not in (None, 1):
        ds.PlanarConfiguration = 0
    lowest, highest = int(fill.min()), int(fill.max())
    smallest = _int_or_none(ds, "SmallestImagePixelValue")
    if smallest is not None and lowest < smallest and photometric in _MONOCHROME:
        ds.SmallestImagePixelValue = lowest
    largest = _int_or_none(ds, "LargestImagePixelValue")
    if largest is not None and highest > largest and photometric in _MONOCHROME:
        ds.LargestImagePixelValue = highest
    ds.BurnedInAnnotation = "NO"


LOSSY_METHODS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS Near-Lossless
}
"""Transfer syntaxes that are always lossy → Lossy Image Compression Method (PS3.3
C.7.6.1.1.5.1). JPEG 2000 and HTJ2K may be either; their files must say so themselves."""


def _mark_lossy(ds: Dataset, source_syntax: str) -> None:
    """Decoded lossy pixels stay lossy when written uncompressed: Lossy Image Compression
    (0028,2110) ``01`` and the method, as PS3.3 C.7.6.1.1.5 requires."""
    method = LOSSY_METHODS.get(source_syntax)
    if method is None:
        return
    ds.LossyImageCompression = "01"
    current = ds.get("LossyImageCompressionMethod")  # by keyword: the value itself
    if not current:
        methods: list[str] = []
    elif isinstance(current, MultiValue | list):
        methods = [str(m) for m in current]
    else:
        methods = [str(current)]
    if method not in methods:
        ds.LossyImageCompressionMethod = [*methods, method]


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or isinstance(value, MultiValue | list | bytes):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# -- outcome ------------------------------------------------------------------------------


def burned_in_outcome(ds: Dataset, policy: BurnedInPolicy, rules: Sequence[MaskRule]) -> BurnedIn:
    """Decide (and, under the ``mask`` policy, do) the pixel part of PS3.15 E.3.1.

    * :attr:`BurnedIn.NONE`: :func:`may_have_burned_in_text` is False; *ds* untouched.
    * :attr:`BurnedIn.MASKED`: policy ``mask`` and :func:`select_mask` found a rule; its
      regions were blacked out by :func:`apply_mask` (Burned In Annotation is now ``NO``).
    * :attr:`BurnedIn.NEEDS_REVIEW`: anything else (policy ``quarantine``, or no rule
      matched); *ds* untouched, the instance must be quarantined.

    :class:`MaskError` from :func:`apply_mask` propagates (a matching rule whose masking
    failed); *ds* is then untouched and the caller quarantines as for ``NEEDS_REVIEW``.
    """
    if not may_have_burned_in_text(ds):
        return BurnedIn.NONE
    if policy == BurnedInPolicy.MASK:
        rule = select_mask(ds, rules)
        if rule is not None:
            apply_mask(ds, rule.regions)
            return BurnedIn.MASKED
    return BurnedIn.NEEDS_REVIEW
