"""Small synthetic instances for the long back-to-back forwarding test."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

__all__ = ["make_small_instances"]


def make_small_instances(dest: Path, count: int, pixels: int = 16) -> list[Path]:
    """*count* Secondary Capture instances of *pixels*² 8-bit pixels (about 1 KB each) in one
    study and series, each a valid Part 10 file with its own SOP Instance UID."""
    dest.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for n in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.PatientName = "Forward^Test"
        ds.PatientID = "FWD-0001"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.InstanceNumber = n + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = pixels
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = bytes((n + i) % 256 for i in range(pixels * pixels))
        path = dest / f"{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
