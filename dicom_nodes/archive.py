"""The archive's REST API as analysis needs it (Orthanc, through ``orthanc-api-client``).

Analysis reads what it analyses back from the archive (every worker can, on any machine: the
spool copies are gone once the archive confirmed them) and stores its results there directly:
they are made from the de-identified series, so they carry the archive's UIDs already and must
not pass through the de-identifier again (it would map their references a second time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Archive", "ArchiveError", "OrthancArchive", "SeriesInfo", "archive_from_settings"]

LOGGER = logging.getLogger(__name__)


#: Instance files are asked for as they are stored: ``requests`` offers gzip by default, and
#: Orthanc (``HttpCompressionEnabled``) would then deflate every file on the fly, about 60 ms
#: of its CPU per 512x512 CT slice against 1 ms to send it, for a transfer on the local network.
_UNCOMPRESSED = {"Accept-Encoding": "identity"}


class ArchiveError(RuntimeError):
    """The archive could not be read or written (retryable: it may be down)."""


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    modality: str
    description: str
    orthanc_id: str


class Archive(Protocol):
    def series_files(self, series_uid: str) -> list[bytes]:
        """Every instance of a series (Part 10 bytes); [] when the archive does not have it."""
        ...

    def study_series(self, study_uid: str) -> list[SeriesInfo]: ...

    def store(self, data: bytes) -> str:
        """Store one instance; returns the archive's id for it."""
        ...

    def delete_series(self, series_uid: str) -> bool: ...


class OrthancArchive:
    """:class:`Archive` on Orthanc's REST API (HTTP Basic credentials)."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None) -> None:
        from orthanc_api_client import OrthancApiClient

        self.client = OrthancApiClient(url, user=user, pwd=password)

    def _series_id(self, series_uid: str) -> str | None:
        try:
            found = self.client.series.lookup(series_uid)
        except Exception as exc:
            raise ArchiveError(f"lookup failed: {type(exc).__name__}") from exc
        return str(found) if found else None

    def series_files(self, series_uid: str) -> list[bytes]:
        series_id = self._series_id(series_uid)
        if series_id is None:
            return []
        try:
            ids = self.client.series.get_instances_ids(series_id)
            return [self.instance_file(i) for i in ids]
        except Exception as exc:
            raise ArchiveError(f"reading series failed: {type(exc).__name__}") from exc

    def instance_file(self, orthanc_id: str) -> bytes:
        """The Part 10 file of one instance (Orthanc's id), as stored: every read of an
        instance file goes through here, uncompressed (:data:`_UNCOMPRESSED`)."""
        return bytes(self.client.get_binary(f"instances/{orthanc_id}/file", headers=_UNCOMPRESSED))

    def study_series(self, study_uid: str) -> list[SeriesInfo]:
        try:
            study_id = self.client.studies.lookup(study_uid)
            if not study_id:
                return []
            out = []
            for series_id in self.client.studies.get_series_ids(study_id):
                tags = self.client.get_json(f"series/{series_id}")["MainDicomTags"]
                out.append(
                    SeriesInfo(
                        str(tags.get("SeriesInstanceUID", "")),
                        str(tags.get("Modality", "")),
                        str(tags.get("SeriesDescription", "")),
                        str(series_id),
                    )
                )
            return out
        except Exception as exc:
            raise ArchiveError(f"reading the study failed: {type(exc).__name__}") from exc

    def store(self, data: bytes) -> str:
        try:
            ids = self.client.upload(data)
        except Exception as exc:
            raise ArchiveError(f"storing failed: {type(exc).__name__}") from exc
        if not ids:
            raise ArchiveError("the archive did not take the instance")
        return str(ids[0])

    def delete_series(self, series_uid: str) -> bool:
        series_id = self._series_id(series_uid)
        if series_id is None:
            return False
        try:
            self.client.series.delete(orthanc_id=series_id)
        except Exception as exc:
            raise ArchiveError(f"deleting failed: {type(exc).__name__}") from exc
        return True


def archive_from_settings(settings: object) -> OrthancArchive:
    """The archive analysis reads from: ``analysis.archive_url`` with the credentials file
    (default: the Orthanc ``radiogate run`` manages, with its generated credentials)."""
    from config import Settings, data_path
    from dicom_nodes.services.credentials import load_credentials

    assert isinstance(settings, Settings)
    a = settings.analysis
    url = a.archive_url or f"http://{settings.orthanc.host}:{settings.orthanc.http_port}"
    path = data_path(settings, a.credentials_file or settings.orthanc.credentials_file)
    creds = load_credentials(path) if path.exists() else None
    return OrthancArchive(url, creds.user if creds else None, creds.password if creds else None)
