"""C-STORE-RQ sent directly: one read of the file, the command packed with ``struct``.

``Association.send_c_store(path)`` (pynetdicom 3.0, chunked mode) reads the file's meta
information with pydicom, builds the command set as a pydicom dataset and encodes it, then reads
the file again in PDU-sized pieces. :func:`send_file` does the same steps on the same
association with the encodings of :mod:`dicom_nodes.dimse.codec` (byte for byte pynetdicom's):

1. the file is read once; :func:`~dicom_nodes.dimse.codec.read_part10_meta` finds its UIDs and
   where the dataset starts;
2. the presentation context is the accepted one for (SOP class, the file's transfer syntax);
3. the C-STORE-RQ command set (PS3.7 9.3.1.1) and the dataset are cut into P-DATA fragments
   exactly as ``DIMSEMessage.encode_msg`` cuts them (PS3.8 9.3.5, E.2: command fragments with
   control header 01/03, dataset fragments 00/02, each at most the peer's maximum PDU length
   minus 6 bytes) and queued to the DUL;
4. the reply is awaited as ``send_c_store`` awaits it: the association's reactor paused, the
   response taken from the DIMSE queue, no response → ``_handle_no_response`` (abort).

It returns None — the caller then uses ``send_c_store`` — whenever that path would not be the
same: a file whose meta is not plainly encoded or whose UIDs differ from what the caller was
told, no accepted context for its own syntax, a DIMSE or PDU event handler bound, or an
association class without the reactor pause (a pynetdicom version not verified by
:mod:`dicom_nodes.accelerator`: the caller only uses this module when the accelerator is on).
"""

from __future__ import annotations

import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from dicom_nodes.dimse import codec
from dicom_nodes.forward.model import OutgoingFile

__all__ = ["send_file"]

_BOUND = (evt.EVT_DIMSE_SENT, evt.EVT_PDU_SENT, evt.EVT_DATA_SENT)


def _context_id(assoc: Any, sop_class: str, syntax: str) -> int | None:
    for cx in assoc.accepted_contexts:
        if (
            cx.as_scu
            and str(cx.abstract_syntax) == sop_class
            and str(cx.transfer_syntax[0]) == syntax
        ):
            return int(cx.context_id)
    return None


def _fragments(control: int, last: int, data: memoryview, size: int) -> list[bytes]:
    if size <= 0 or len(data) <= size:
        return [bytes((last,)) + data]
    out = [bytes((control,)) + data[i : i + size] for i in range(0, len(data) - size, size)]
    tail = (len(data) - 1) // size * size
    out.append(bytes((last,)) + data[tail:])
    return out


def send_file(assoc: Any, file: OutgoingFile, message_id: int) -> Dataset | None:
    """C-STORE *file* as it is on disk; the status dataset as ``send_c_store`` returns it
    (empty when no response came), or None when the direct path does not apply (module doc).

    Raises what reading the file raises (FileNotFoundError, PermissionError, ...)."""
    if any(assoc._handlers.get(event) for event in _BOUND) or not hasattr(
        assoc, "_reactor_checkpoint"
    ):
        return None
    data = file.path.read_bytes()
    meta = codec.read_part10_meta(data)
    if meta is None or (meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid) != (
        file.sop_class_uid, file.sop_instance_uid, file.transfer_syntax_uid,
    ):  # fmt: skip
        return None
    context_id = _context_id(assoc, meta.sop_class_uid, meta.transfer_syntax_uid)
    if context_id is None or not assoc.is_established:
        return None
    command = codec.encode_store_rq(message_id, meta.sop_class_uid, meta.sop_instance_uid)
    max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
    size = max_pdu - 6 if max_pdu else 0
    values = _fragments(0x01, 0x03, memoryview(command), size)
    values += _fragments(0x00, 0x02, memoryview(data)[meta.dataset_offset :], size)
    # As send_c_store: pause the reactor so that it does not take the response.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        for value in values:
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, value))
            assoc.dimse.dul.send_pdu(pdata)
        _cx, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    if not isinstance(rsp, C_STORE):
        assoc.abort()  # not the answer to our request: the association cannot be trusted
        return Dataset()
    status: Dataset = assoc._check_received_status(rsp)
    return status
