"""Modality Performed Procedure Step SCP (PS3.4 F.7, SOP Class 1.2.840.10008.3.1.2.3.3).

A modality announces a step with N-CREATE (status IN PROGRESS) and ends it with N-SET
(COMPLETED or DISCONTINUED), listing the series it performed (Performed Series Sequence). Radiogate
keeps only the status and those Series Instance UIDs (:class:`dicom_nodes.db.signals.MppsRecorder`):
a COMPLETED or DISCONTINUED step completes its series at once instead of after the quiet period.
Thin handlers; statuses are named in :class:`dicom_nodes.scp.status.MppsStatus`.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset

from dicom_nodes.db.signals import MppsRecorder
from dicom_nodes.scp.status import MppsStatus

__all__ = ["MPPS_SOP_CLASS", "handle_n_create", "handle_n_set", "performed_series"]

LOGGER = logging.getLogger(__name__)
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")


def performed_series(ds: Dataset | None) -> list[str]:
    """Series Instance UIDs of the Performed Series Sequence (0040,0340)."""
    if ds is None:
        return []
    return [
        str(item.SeriesInstanceUID)
        for item in ds.get("PerformedSeriesSequence", [])
        if item.get("SeriesInstanceUID")
    ]


def handle_n_create(event: Any, recorder: MppsRecorder) -> tuple[int, Dataset | None]:
    """EVT_N_CREATE: a step begins (PS3.4 F.7.2.1)."""
    uid = event.request.AffectedSOPInstanceUID
    if not uid:
        return int(MppsStatus.MISSING_ATTRIBUTE), None
    try:
        attrs = event.attribute_list
    except Exception:
        return int(MppsStatus.PROCESSING_FAILURE), None
    status = str(attrs.get("PerformedProcedureStepStatus", "")).strip().upper()
    if status != "IN PROGRESS":
        return int(MppsStatus.INVALID_ATTRIBUTE_VALUE), None
    calling = str(event.assoc.requestor.ae_title).strip()
    try:
        created = recorder.mpps_created(str(uid), status, performed_series(attrs), calling)
    except Exception as exc:
        LOGGER.warning("MPPS %s not recorded: %s", uid, type(exc).__name__)
        return int(MppsStatus.RESOURCE_LIMITATION), None
    if not created:
        return int(MppsStatus.DUPLICATE_SOP_INSTANCE), None
    LOGGER.info("MPPS %s created by %s", uid, calling or "-")
    return int(MppsStatus.SUCCESS), attrs


def handle_n_set(event: Any, recorder: MppsRecorder) -> tuple[int, Dataset | None]:
    """EVT_N_SET: a step is updated, completed or discontinued (PS3.4 F.7.2.2)."""
    uid = str(event.request.RequestedSOPInstanceUID)
    try:
        changes = event.modification_list
    except Exception:
        return int(MppsStatus.PROCESSING_FAILURE), None
    raw = changes.get("PerformedProcedureStepStatus")
    status = None if raw is None else str(raw).strip().upper()
    if status is not None and status not in STATUSES:
        return int(MppsStatus.INVALID_ATTRIBUTE_VALUE), None
    try:
        before = recorder.mpps_set(uid, status, performed_series(changes))
    except Exception as exc:
        LOGGER.warning("MPPS %s update not recorded: %s", uid, type(exc).__name__)
        return int(MppsStatus.RESOURCE_LIMITATION), None
    if before is None:
        return int(MppsStatus.NO_SUCH_OBJECT_INSTANCE), None
    if before != "IN PROGRESS":
        return int(MppsStatus.NO_LONGER_UPDATABLE), None
    LOGGER.info("MPPS %s set%s", uid, f" to {status}" if status else "")
    return int(MppsStatus.SUCCESS), changes
