"""Confirmation by query: C-FIND at IMAGE level with SOP Instance UID list matching.

PS3.4 C.2.2.2.2 (List of UID Matching) lets one request name many SOP Instance UIDs; the
identifier asks for IMAGE level (C.6.2, Study Root) with the SOP Class UID as a return key, so
an instance only counts when the peer holds it under the class we sent. Requests carry at most
:data:`UIDS_PER_QUERY` UIDs (a UI value is limited to 64 KiB in explicit VR).

The higher-level unique keys are left empty, which strictly is a relational query (C.4.1.2.2);
relational queries are asked for in extended negotiation (PS3.4 C.5.1.1), and the common
archives (Orthanc, DCMTK-based) answer such queries also without agreeing to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.presentation import build_context

from dicom_nodes.forward._association import AssociationFailed, open_association
from dicom_nodes.forward.model import ConfirmationUnavailable
from dicom_nodes.forward.settings import DimseSettings

__all__ = ["UIDS_PER_QUERY", "find_instances", "image_query"]

LOGGER = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
"""Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2)."""
UIDS_PER_QUERY = 200
PENDING = frozenset({0xFF00, 0xFF01})
"""C-FIND Pending statuses (PS3.4 C.4.1.1.4): a match follows."""
SUCCESS = 0x0000
_RELATIONAL_QUERIES = b"\x01"
"""Extended negotiation byte 1: relational-queries supported (PS3.4 C.5.1.1)."""


def image_query(sop_instance_uids: Sequence[str]) -> Dataset:
    """The C-FIND identifier for *sop_instance_uids* (Study Root, IMAGE level)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = ""
    ds.SeriesInstanceUID = ""
    ds.SOPClassUID = ""
    ds.SOPInstanceUID = (
        list(sop_instance_uids) if len(sop_instance_uids) > 1 else (sop_instance_uids[0])
    )
    return ds


def find_instances(settings: DimseSettings, sop_instance_uids: Sequence[str]) -> dict[str, str]:
    """SOP Instance UID -> SOP Class UID of those of *sop_instance_uids* the peer holds.

    Raises :class:`ConfirmationUnavailable` when the peer cannot be asked or fails a query."""
    model = STUDY_ROOT_FIND
    ext = SOPClassExtendedNegotiation()
    ext.sop_class_uid = model
    ext.service_class_application_information = _RELATIONAL_QUERIES
    try:
        assoc = open_association(settings, [build_context(model)], ext_neg=[ext])
    except AssociationFailed as exc:
        raise ConfirmationUnavailable(str(exc)) from exc
    found: dict[str, str] = {}
    try:
        if not assoc.accepted_contexts:
            raise ConfirmationUnavailable(f"{settings.name} does not accept Study Root C-FIND")
        for start in range(0, len(sop_instance_uids), UIDS_PER_QUERY):
            chunk = sop_instance_uids[start : start + UIDS_PER_QUERY]
            final = None
            for status, identifier in assoc.send_c_find(image_query(chunk), model):
                if "Status" not in status:
                    raise ConfirmationUnavailable("no C-FIND response (timeout or abort)")
                code = int(status.Status)
                if code in PENDING:
                    if identifier is not None and identifier.get("SOPInstanceUID"):
                        found[str(identifier.SOPInstanceUID)] = str(
                            identifier.get("SOPClassUID", "") or ""
                        )
                else:
                    final = code
            if final != SUCCESS:
                raise ConfirmationUnavailable(
                    f"C-FIND failed with status {final if final is None else f'0x{final:04X}'}"
                )
    finally:
        if assoc.is_established:
            assoc.release()
    wanted = set(sop_instance_uids)
    return {uid: cls for uid, cls in found.items() if uid in wanted}
