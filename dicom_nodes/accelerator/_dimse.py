"""The DIMSE service provider of accelerated associations.

Parts ``store-rsp``, ``store-rq`` and ``file-meta`` (acceptor), ``responses`` (requestor: the
C-STORE-RSPs and C-FIND-RSPs the forwarder receives); the encodings themselves are
:mod:`dicom_nodes.dimse.codec`'s. :meth:`FastDIMSE.receive_primitive`
and :meth:`FastDIMSE._decode` mirror pynetdicom 3.0.4's ``receive_primitive`` and
``DIMSEMessage.decode_msg``; with none of their parts selected they do what those do.
"""

from __future__ import annotations

import logging
import re
import threading
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from pydicom import config as pydicom_config
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND, C_STORE, N_EVENT_REPORT
from pynetdicom.dsutils import create_file_meta, decode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.utils import make_target

from dicom_nodes.accelerator._parts import Part
from dicom_nodes.dimse import codec
from dicom_nodes.spool.receiving import ReceiveFile

__all__ = ["DIMSE_PARTS", "FastDIMSE"]

LOGGER = logging.getLogger(__name__)

DIMSE_PARTS = frozenset({Part.STORE_RSP, Part.STORE_RQ, Part.FILE_META, Part.RESPONSES})
"""The parts that need :class:`FastDIMSE`."""

_CONFORMANT_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
"""A UID as PS3.5 9.1 writes it: components without leading zeros, separated by dots (the
pattern pydicom checks UI values and ``UID.is_valid`` against)."""
_DEFAULT_UI_VALIDATOR = _config.VALIDATORS["UI"]
_RQ_UIDS = ((0x0002, "_affected_sop_class_uid"), (0x1000, "_affected_sop_instance_uid"))


def _store_rq_primitive(values: dict[int, int | str]) -> Any:
    """:func:`~dicom_nodes.dimse.codec.store_rq_primitive`, with the two UIDs set directly when
    they conform (PS3.5 9.1, at most 64 characters): the validating setters would build the
    same ``UID`` and find nothing to warn about or refuse, only slower (two regular-expression
    checks and a lookup per UID). Other values, or a replaced pynetdicom UID validator, take
    the setters."""
    direct: list[tuple[str, UID]] = []
    if _config.VALIDATORS["UI"] is _DEFAULT_UI_VALIDATOR:
        rest = dict(values)
        for elem, attribute in _RQ_UIDS:
            value = values.get(elem)
            if isinstance(value, str) and len(value) <= 64 and _CONFORMANT_UID.fullmatch(value):
                direct.append((attribute, UID(value, validation_mode=pydicom_config.IGNORE)))
                del rest[elem]
        values = rest
    primitive = codec.store_rq_primitive(values)
    for attribute, uid in direct:
        setattr(primitive, attribute, uid)
    return primitive


class FastDIMSE(DIMSEServiceProvider):
    """DIMSE provider with direct C-STORE encodings, each as selected in ``_parts``."""

    _parts: frozenset[Part] = frozenset()
    _fast_values: dict[int, int | str] | None = None
    _fast_response: bool = False
    """Whether :attr:`_fast_values` are a response's (``responses``) or a C-STORE-RQ's."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """pynetdicom's ``send_msg``, with C-STORE-RSPs encoded by
        :func:`~dicom_nodes.dimse.codec.encode_store_rsp` (``store-rsp``)."""
        if (
            Part.STORE_RSP in self._parts
            and type(primitive) is C_STORE
            and primitive.MessageIDBeingRespondedTo is not None
            and not self.assoc._handlers.get(evt.EVT_DIMSE_SENT)
        ):
            command = codec.encode_store_rsp(primitive)
            max_pdu = self.maximum_pdu_size
            if command is not None and (max_pdu == 0 or len(command) <= max_pdu - 6):
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)

    def _decode(self, message: DIMSEMessage, primitive: P_DATA) -> bool:
        """pynetdicom 3.0.4's ``DIMSEMessage.decode_msg`` for *message*, with the C-STORE-RQ
        parsed directly (``store-rq``), the file meta packed directly and one flush per message
        instead of per fragment (``file-meta``), C-STORE-RSP and C-FIND-RSP command sets parsed
        directly (``responses``)."""
        parts = self._parts
        for context_id, data in primitive.presentation_data_value_list:
            control = data[0]
            if control & 1:
                message.encoded_command_set.write(data[1:])
                if not control & 2:
                    continue
                message.context_id = context_id
                fast = response = None
                bound = self.assoc._handlers.get(evt.EVT_DIMSE_RECV)
                if Part.STORE_RQ in parts and not bound:
                    fast = codec.decode_store_rq(message.encoded_command_set.getvalue())
                if fast is None and Part.RESPONSES in parts and not bound:
                    response = codec.decode_response(message.encoded_command_set.getvalue())
                if response is not None:
                    message.__class__ = _MESSAGE_TYPES[int(response[0x0100])][1]
                    self._fast_values = response
                    self._fast_response = True
                    data_set_type = response[0x0800]
                elif fast is not None:
                    message.__class__ = C_STORE_RQ
                    self._fast_values = fast
                    sop_class, sop_instance = fast[0x0002], fast[0x1000]
                    data_set_type = fast[0x0800]
                else:
                    command_set = decode(message.encoded_command_set, True, True)
                    message.command_set = command_set
                    message.__class__ = _MESSAGE_TYPES[command_set.CommandField][1]
                    data_set_type = command_set.CommandDataSetType
                if data_set_type == codec.NO_DATASET:
                    return True
                if _config.STORE_RECV_CHUNKED_DATASET and isinstance(message, C_STORE_RQ):
                    if fast is None:  # as pynetdicom: AttributeError when they are missing
                        sop_class = command_set.AffectedSOPClassUID
                        sop_instance = command_set.AffectedSOPInstanceUID
                    self._open_dataset_file(message, sop_class, sop_instance, context_id)
            else:
                if message.context_id is None:
                    # A data set fragment with no command before it, or after a command that
                    # announced none (PS3.7 9.3.1.1, CommandDataSetType): abort (PS3.8 9.3.8).
                    LOGGER.warning("data set fragment without its command: association aborted")
                    self.dul.event_queue.put("Evt19")
                    self.message = None
                    return False
                sink: Any = message._data_set_file
                if sink is not None:
                    sink.write(data[1:])
                    if Part.FILE_META not in parts:
                        sink.file.flush()
                else:
                    assert message.data_set is not None
                    message.data_set.write(data[1:])
                if control & 2:
                    if sink is not None:
                        sink.flush()
                    return True
        return False

    def _open_dataset_file(
        self, message: DIMSEMessage, sop_class: Any, sop_instance: Any, context_id: int
    ) -> None:
        sink: Any = ReceiveFile()
        message._data_set_file = sink
        message._data_set_path = Path(sink.name)
        transfer_syntax = self.assoc._accepted_cx[context_id].transfer_syntax[0]
        if Part.FILE_META in self._parts:
            try:
                sink.write(
                    codec.encode_file_meta(str(sop_class), str(sop_instance), str(transfer_syntax))
                )
                return
            except (UnicodeEncodeError, TypeError):
                sink.seek(0)
                sink.truncate()
        sink.write(codec.PREAMBLE)
        write_file_meta_info(
            sink,
            create_file_meta(
                sop_class_uid=sop_class,
                sop_instance_uid=sop_instance,
                transfer_syntax=transfer_syntax,
            ),
        )

    def receive_primitive(self, primitive: P_DATA) -> None:
        """pynetdicom 3.0.4's ``receive_primitive`` using :meth:`_decode`."""
        if self.message is None:
            self.message = DIMSEMessage()
            self._fast_values = None
            self._fast_response = False
        if not self._decode(self.message, primitive):
            return
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": self.message})
        context_id = self.message.context_id
        assert context_id is not None
        d_primitive: Any
        try:
            if self._fast_values is not None and self._fast_response:
                d_primitive = codec.response_primitive(self._fast_values)
                if isinstance(d_primitive, C_FIND):  # its identifier, as message_to_primitive
                    d_primitive.Identifier = self.message.data_set
                d_primitive._context_id = context_id
                d_primitive._dataset_path = self.message._data_set_path
                d_primitive._dataset_file = self.message._data_set_file
            elif self._fast_values is not None:
                d_primitive = _store_rq_primitive(self._fast_values)
                d_primitive.DataSet = self.message.data_set
                d_primitive._context_id = context_id
                d_primitive._dataset_path = self.message._data_set_path
                d_primitive._dataset_file = self.message._data_set_file
            else:
                d_primitive = self.message.message_to_primitive()
        except Exception as exc:
            LOGGER.error("Received an invalid DIMSE message")
            LOGGER.exception(exc)
            self.dul.event_queue.put("Evt19")
            return
        if isinstance(d_primitive, C_CANCEL) and len(self.cancel_req) < 10:
            msg_id = d_primitive.MessageIDBeingRespondedTo
            assert msg_id is not None
            self.cancel_req[msg_id] = d_primitive
        elif isinstance(d_primitive, N_EVENT_REPORT) and d_primitive.is_valid_request:
            thread = threading.Thread(
                target=make_target(self.assoc._serve_request),
                args=(d_primitive, context_id),
            )
            thread.start()
        else:
            self.msg_queue.put((context_id, cast(Any, d_primitive)))
        self.message.encoded_command_set = BytesIO()
        self.message.data_set = BytesIO()
        self.message._data_set_file = None
        self.message._data_set_path = None
        self.message = None
