"""dicom_nodes.forward._store: a C-STORE sent directly puts the same bytes on the wire as
pynetdicom's ``send_c_store(path)`` and gets the same answer."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import _config, evt

from dicom_nodes.accelerator import requestor_ae
from dicom_nodes.forward._store import send_file
from dicom_nodes.forward.model import OutgoingFile
from tests.unit.accelerator.support import CT, Scp, skip_unless_verified

skip_unless_verified()


@pytest.fixture
def chunked(tmp_path: Path) -> Iterator[Path]:
    """The SCP streams datasets to files, as the receiver does."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    saved = (_config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir, _config.LOG_HANDLER_LEVEL)
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    tempfile.tempdir = str(incoming)
    yield incoming
    _config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir, _config.LOG_HANDLER_LEVEL = saved


def _associate(port: int, accelerate: bool) -> Any:
    ae = requestor_ae("SCU", accelerate)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP")
    assert assoc.is_established
    return assoc


def _wire(chunked: Path, max_pdu: int, direct: bool, status: int = 0) -> tuple[list[bytes], Any]:
    received: list[bytes] = []
    scp = Scp(chunked, parts=(), extra_handlers=[
        (evt.EVT_DATA_RECV, lambda event: received.append(bytes(event.data))),
    ])  # fmt: skip
    scp.server.ae.maximum_pdu_size = max_pdu
    scp.status = status
    file = OutgoingFile.from_path(CT)
    try:
        assoc = _associate(scp.port, accelerate=True)
        try:
            if direct:
                rsp = send_file(assoc, file, 7)
            else:
                saved = _config.STORE_SEND_CHUNKED_DATASET
                _config.STORE_SEND_CHUNKED_DATASET = True
                try:
                    rsp = assoc.send_c_store(file.path, msg_id=7)
                finally:
                    _config.STORE_SEND_CHUNKED_DATASET = saved
            before_release = list(received)
        finally:
            assoc.release()
    finally:
        scp.stop()
    return before_release[1:], rsp  # [0] is the A-ASSOCIATE-RQ


@pytest.mark.parametrize("max_pdu", [16382, 4096, 0])
def test_same_bytes_on_the_wire_as_send_c_store(chunked: Path, max_pdu: int) -> None:
    stock, stock_rsp = _wire(chunked, max_pdu, direct=False)
    mine, my_rsp = _wire(chunked, max_pdu, direct=True)
    assert b"".join(mine) == b"".join(stock) and len(b"".join(mine)) > CT.stat().st_size // 2
    assert my_rsp is not None and my_rsp == stock_rsp and my_rsp.Status == 0


def test_a_failure_status_is_returned_as_pynetdicom_returns_it(chunked: Path) -> None:
    _stock, stock_rsp = _wire(chunked, 16382, direct=False, status=0xA700)
    _mine, my_rsp = _wire(chunked, 16382, direct=True, status=0xA700)
    assert my_rsp is not None and my_rsp.Status == stock_rsp.Status == 0xA700


def test_files_it_cannot_vouch_for_are_left_to_pynetdicom(chunked: Path, tmp_path: Path) -> None:
    scp = Scp(chunked, parts=())
    copy = tmp_path / "ct.dcm"
    shutil.copy(CT, copy)
    good = OutgoingFile.from_path(copy)
    try:
        assoc = _associate(scp.port, accelerate=True)
        try:
            other_uid = OutgoingFile(copy, good.sop_class_uid, "1.2.3", good.transfer_syntax_uid)
            assert send_file(assoc, other_uid, 1) is None  # the file says otherwise
            implicit = OutgoingFile(
                copy, good.sop_class_uid, good.sop_instance_uid, "1.2.840.10008.1.2"
            )
            assert send_file(assoc, implicit, 2) is None
            copy.write_bytes(copy.read_bytes()[128:])  # no preamble
            assert send_file(assoc, good, 3) is None
            copy.unlink()
            with pytest.raises(FileNotFoundError):
                send_file(assoc, good, 4)
            assert scp.stored == []
        finally:
            assoc.release()
    finally:
        scp.stop()
