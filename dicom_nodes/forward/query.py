"""Confirmation by query: C-FIND at IMAGE level with SOP Instance UID list matching.

PS3.4 C.2.2.2.2 (List of UID Matching) lets one request name many SOP Instance UIDs; the
identifier asks for IMAGE level (C.6.2, Study Root) with the SOP Class UID as a return key, so
an instance only counts when the peer holds it under the class we sent (``confirm_class``,
default on: Orthanc, which does not index the class, reads each matched file to answer it).
Requests carry at most :data:`UIDS_PER_QUERY` UIDs (a UI value is limited to 64 KiB in
explicit VR).

The higher-level unique keys are left empty, which strictly is a relational query (C.4.1.2.2);
relational queries are asked for in extended negotiation (PS3.4 C.5.1.1), and the common
archives (Orthanc, DCMTK-based) answer such queries also without agreeing to it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import _config

from dicom_nodes.forward.model import ConfirmationUnavailable
from dicom_nodes.forward.pool import STUDY_ROOT_FIND

__all__ = ["STUDY_ROOT_FIND", "UIDS_PER_QUERY", "find_on", "image_query"]

LOGGER = logging.getLogger(__name__)

UIDS_PER_QUERY = 200
PENDING = frozenset({0xFF00, 0xFF01})
"""C-FIND Pending statuses (PS3.4 C.4.1.1.4): a match follows."""
SUCCESS = 0x0000


def image_query(sop_instance_uids: Sequence[str], *, with_class: bool = True) -> Dataset:
    """The C-FIND identifier for *sop_instance_uids* (Study Root, IMAGE level); *with_class*:
    the SOP Class UID is a return key."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = ""
    ds.SeriesInstanceUID = ""
    if with_class:
        ds.SOPClassUID = ""
    ds.SOPInstanceUID = (
        list(sop_instance_uids) if len(sop_instance_uids) > 1 else (sop_instance_uids[0])
    )
    return ds


def find_on(
    assoc: Any,
    sop_instance_uids: Sequence[str],
    message_ids: Iterator[int] | None = None,
    *,
    with_class: bool = True,
) -> dict[str, str]:
    """SOP Instance UID -> SOP Class UID of those of *sop_instance_uids* the peer holds (the
    class is "" unless *with_class*), asked on the established association *assoc* (Study Root
    C-FIND accepted), in requests of at most :data:`UIDS_PER_QUERY` UIDs numbered from
    *message_ids*; *with_class*: see :func:`image_query`. Raises
    :class:`ConfirmationUnavailable`."""
    ids = message_ids if message_ids is not None else itertools.count(1)
    # pynetdicom formats every request and response identifier for its INFO log, also when
    # nothing logs at INFO (process-global, read at each call, so set here): a query carries
    # up to UIDS_PER_QUERY UIDs and each match comes back as a response.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    found: dict[str, str] = {}
    for start in range(0, len(sop_instance_uids), UIDS_PER_QUERY):
        chunk = sop_instance_uids[start : start + UIDS_PER_QUERY]
        final = None
        try:
            responses = list(
                assoc.send_c_find(
                    image_query(chunk, with_class=with_class), STUDY_ROOT_FIND, msg_id=next(ids)
                )
            )
        except (OSError, RuntimeError) as exc:  # the association is gone
            raise ConfirmationUnavailable(f"C-FIND not sent: {exc}") from exc
        for status, identifier in responses:
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
    wanted = set(sop_instance_uids)
    return {uid: cls for uid, cls in found.items() if uid in wanted}
