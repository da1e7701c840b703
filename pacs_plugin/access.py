"""Which HTTP requests read study data, and through which API (pure; no Orthanc, no I/O).

Every read of study data through the archive yields one DICOM "Instances Accessed" event
(110103, PS3.15 A.5.3.2): Orthanc's REST API on a patient, study, series or instance
(``GET /studies/{id}/...``), WADO-URI (PS3.18 9, ``GET /wado?requestType=WADO&studyUID=...``),
DICOMweb WADO-RS and QIDO-RS scoped to a study (PS3.18 10.4 / 10.6,
``GET /dicom-web/studies/{uid}/...``) and Radiogate's own findings
(``GET /radiogate/studies/{id}``). Lists of identifiers (``GET /studies``) and searches are not
reads of a study. The filter only classifies; resolving an Orthanc identifier to its Study
Instance UID is left to the recorder, so that the filter stays a few microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Api", "Read", "classify_read"]


class Api(StrEnum):
    """The API a study was read through (the event's ``reason``)."""

    REST = "rest"
    WADO_URI = "wado-uri"
    DICOMWEB = "dicomweb"
    FINDINGS = "radiogate"


_ORTHANC_ID = r"[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}"
_UID = r"[0-9]+(?:\.[0-9]+)*"
_REST = re.compile(rf"/(patients|studies|series|instances)/({_ORTHANC_ID})(?:/.*)?")
_DICOMWEB = re.compile(rf"/dicom-web/studies/({_UID})(?:/.*)?")
_FINDINGS = re.compile(rf"/radiogate/studies/({_ORTHANC_ID}|{_UID})")
_LEVELS = {"patients": "patient", "studies": "study", "series": "series", "instances": "instance"}


@dataclass(frozen=True)
class Read:
    """A read of study data: by Orthanc identifier (*level*, *orthanc_id*) or by UID."""

    api: Api
    level: str
    orthanc_id: str | None = None
    study_uid: str | None = None


def classify_read(method: str, uri: str, get: Mapping[str, str]) -> Read | None:
    """The study read *method* *uri* performs, or None when it reads no study data."""
    if method not in ("GET", "HEAD"):
        return None
    if m := _REST.fullmatch(uri):
        return Read(Api.REST, _LEVELS[m.group(1)], orthanc_id=m.group(2))
    if m := _DICOMWEB.fullmatch(uri):
        return Read(Api.DICOMWEB, "study", study_uid=m.group(1))
    if uri == "/wado":
        args = {k.lower(): v for k, v in get.items()}
        uid = args.get("studyuid", "")
        if re.fullmatch(_UID, uid):
            return Read(Api.WADO_URI, "study", study_uid=uid)
        return None
    if m := _FINDINGS.fullmatch(uri):
        key = m.group(1)
        if "-" in key:
            return Read(Api.FINDINGS, "study", orthanc_id=key)
        return Read(Api.FINDINGS, "study", study_uid=key)
    return None
