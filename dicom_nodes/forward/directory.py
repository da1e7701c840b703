"""A directory as a destination: dry runs, tests, hand-off to a system that watches a folder.

Each instance is written as ``<SOP Instance UID>.dcm`` with its bytes unchanged (PS3.10 file),
durably: temporary file, fsync, rename, fsync of the directory. Writing the same instance
again replaces it (idempotent by SOP Instance UID, like a PACS). ``confirm`` checks the file
is there and is a Part 10 file of the expected SOP class and instance.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from dicom_nodes.forward.model import InstanceRef, OutgoingFile, SendResult
from dicom_nodes.forward.settings import DirectorySettings
from dicom_nodes.forward.status import StoreStatus

__all__ = ["DirectoryDestination"]

LOGGER = logging.getLogger(__name__)


class DirectoryDestination:
    """Writes each file to ``settings.path``; see the module docstring."""

    def __init__(self, settings: DirectorySettings) -> None:
        self.settings = settings
        self.name = settings.name

    def path_for(self, sop_instance_uid: str) -> Path:
        return self.settings.path / f"{sop_instance_uid}.dcm"

    def send(self, files: Sequence[OutgoingFile]) -> list[SendResult]:
        if files:
            self.settings.path.mkdir(parents=True, exist_ok=True)
        results = [self._write(f) for f in files]
        if files and self.settings.fsync:
            self._fsync_dir()
        return results

    def _write(self, file: OutgoingFile) -> SendResult:
        uid = file.sop_instance_uid
        final = self.path_for(uid)
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            with file.path.open("rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
                if self.settings.fsync:
                    dst.flush()
                    os.fsync(dst.fileno())
            tmp.replace(final)
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            return SendResult(uid, None, False, False, note=f"cannot read file: {exc.strerror}")
        except OSError as exc:  # destination full, unwritable: may clear up
            tmp.unlink(missing_ok=True)
            LOGGER.warning("%s: cannot write %s: %s", self.name, final.name, exc.strerror)
            return SendResult(
                uid,
                StoreStatus.OUT_OF_RESOURCES,
                ok=False,
                retryable=True,
                note=f"cannot write: {exc.strerror}",
            )
        return SendResult(uid, StoreStatus.SUCCESS, True, False, file.transfer_syntax_uid)

    def _fsync_dir(self) -> None:
        fd = os.open(self.settings.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def confirm(self, instances: Sequence[InstanceRef]) -> dict[str, bool]:
        return {i.sop_instance_uid: self._holds(i) for i in instances}

    def _holds(self, instance: InstanceRef) -> bool:
        try:
            meta = read_file_meta_info(self.path_for(instance.sop_instance_uid))
        except (OSError, InvalidDicomError):
            return False
        return (
            str(meta.get("MediaStorageSOPInstanceUID", "")) == instance.sop_instance_uid
            and str(meta.get("MediaStorageSOPClassUID", "")) == instance.sop_class_uid
        )
