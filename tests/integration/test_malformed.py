"""Bad input gets a clear DIMSE answer, loses nothing, leaks no PHI, and the server keeps serving."""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from dicom_nodes.scp.status import StoreStatus
from tests.support import ScpProcess, dcmtk, wait_for_echo
from tests.support.data import PYDICOM_FILES, extract_ct

pytestmark = pytest.mark.integration

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture
def scp(fresh_dsn: str, tmp_path: Path) -> Iterator[ScpProcess]:
    proc = ScpProcess(
        dsn=fresh_dsn, data_dir=tmp_path / "node", extra_env={"RADIOGATE_SCP__NETWORK_TIMEOUT": "3"}
    ).start()
    yield proc
    proc.stop()


def _encode(ds: pydicom.Dataset) -> bytes:
    """Dataset bytes only (no preamble, no File Meta), explicit VR little endian."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def _good_dataset(sop_class: str = CT_IMAGE) -> tuple[pydicom.Dataset, bytes]:
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    del ds[0xFFFCFFFC]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    return ds, _encode(ds)


def _file(tmp_path: Path, sop_class: str, sop_instance: str, payload: bytes) -> Path:
    """A Part 10 file whose File Meta announces the given UIDs and whose dataset is *payload*."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    path = tmp_path / f"{generate_uid()}.dcm"
    path.write_bytes(buf.getvalue() + payload)
    return path


def _send_raw(port: int, path: Path, sop_class: str) -> int:
    """C-STORE the raw dataset bytes of *path* with pynetdicom (no re-encoding)."""
    ae = AE(ae_title="CT1")
    ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADIOGATE")
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    return int(status.Status)


def _recorded(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM ingest_instance").fetchone()
    assert row is not None
    return int(row[0])


def _cases(tmp_path: Path) -> list[tuple[str, Path, str, StoreStatus]]:
    ds, good = _good_dataset()
    uid = str(ds.SOPInstanceUID)
    i = good.find(b"\x08\x00\x18\x00UI")
    bad_vr = bytearray(good)
    bad_vr[i + 4 : i + 6] = b"ZZ"
    no_uid = ds.copy()
    del no_uid.SOPInstanceUID
    bad_uid = bytearray(good)
    j = bad_uid.find(uid.encode())
    bad_uid[j : j + 3] = b"ab/"
    return [
        ("truncated pixel data", _file(tmp_path, CT_IMAGE, uid, good[:-1000]), CT_IMAGE,
         StoreStatus.CANNOT_UNDERSTAND_UNPARSEABLE),
        ("truncated header", _file(tmp_path, CT_IMAGE, uid, good[:301]), CT_IMAGE,
         StoreStatus.CANNOT_UNDERSTAND_UNPARSEABLE),
        ("invalid VR", _file(tmp_path, CT_IMAGE, uid, bytes(bad_vr)), CT_IMAGE,
         StoreStatus.CANNOT_UNDERSTAND_UNPARSEABLE),
        ("random bytes", _file(tmp_path, CT_IMAGE, uid, bytes(range(256)) * 8), CT_IMAGE,
         StoreStatus.CANNOT_UNDERSTAND_UNPARSEABLE),
        ("missing SOP Instance UID", _file(tmp_path, CT_IMAGE, uid, _encode(no_uid)), CT_IMAGE,
         StoreStatus.CANNOT_UNDERSTAND_MISSING_UID),
        ("invalid SOP Instance UID", _file(tmp_path, CT_IMAGE, uid, bytes(bad_uid)), CT_IMAGE,
         StoreStatus.CANNOT_UNDERSTAND_INVALID_UID),
        ("SOP Class mismatch", _file(tmp_path, MR_IMAGE, uid, good), MR_IMAGE,
         StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS),
        ("SOP Instance mismatch", _file(tmp_path, CT_IMAGE, generate_uid(), good), CT_IMAGE,
         StoreStatus.CANNOT_UNDERSTAND_INSTANCE_MISMATCH),
    ]  # fmt: skip


def test_malformed_datasets_get_specific_statuses(scp: ScpProcess, tmp_path: Path) -> None:
    for label, path, sop_class, expected in _cases(tmp_path):
        status = _send_raw(scp.port, path, sop_class)
        assert status == expected, f"{label}: got 0x{status:04X}, expected 0x{expected:04X}"
    assert _recorded(scp.dsn) == 0
    assert scp.spooled_files() == []
    assert not list((scp.spool / ".incoming").iterdir())
    # A good instance afterwards is stored.
    ds, good = _good_dataset()
    path = _file(tmp_path, CT_IMAGE, str(ds.SOPInstanceUID), good)
    assert _send_raw(scp.port, path, CT_IMAGE) == StoreStatus.SUCCESS
    assert _recorded(scp.dsn) == 1


def test_unknown_sop_class_context_rejected(scp: ScpProcess) -> None:
    ae = AE(ae_title="CT1")
    ae.add_requested_context("1.2.3.4.5.6.7.8.9", ExplicitVRLittleEndian)
    ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="RADIOGATE")
    try:
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        assert accepted == {CT_IMAGE}
        assert rejected == {"1.2.3.4.5.6.7.8.9"}
    finally:
        assoc.release()


def test_garbage_and_half_pdus_do_not_stop_the_server(scp: ScpProcess) -> None:
    # Random bytes: not a PDU. The connection is dropped.
    with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as sock:
        sock.sendall(b"\xde\xad\xbe\xef" * 64)
        assert _closed_within(sock, 10)
    # A half-sent A-ASSOCIATE-RQ: header announces 1000 bytes, only 10 arrive, then silence.
    half = socket.create_connection(("127.0.0.1", scp.port), timeout=30)
    half.sendall(struct.pack(">BBL", 0x01, 0, 1000) + b"\x00" * 10)
    # Meanwhile others are served.
    wait_for_echo(scp.port, timeout=5)
    # And the stalled connection is closed by the server's network timeout (3 s here).
    assert _closed_within(half, 20)
    half.close()
    wait_for_echo(scp.port, timeout=5)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection or aborts it (A-ABORT PDU, PS3.8 9.3.8)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data or data[:1] == b"\x07":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def test_no_phi_in_logs(scp: ScpProcess, tmp_path: Path) -> None:
    files = extract_ct(tmp_path / "ct")[:3]
    ds = pydicom.dcmread(files[0])
    phi = [str(ds.PatientName), str(ds.PatientID), str(ds.get("PatientBirthDate", "")),
           str(ds.get("AccessionNumber", "")), str(ds.get("InstitutionName", ""))]  # fmt: skip
    phi = [p for p in phi if len(p) >= 4]
    assert phi
    result = subprocess.run(
        [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(scp.port), *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    # Refused input must not leak either: a dataset that mismatches its command.
    refused = _send_raw(scp.port, _file(tmp_path, CT_IMAGE, generate_uid(), _encode(ds)), CT_IMAGE)
    assert refused == StoreStatus.CANNOT_UNDERSTAND_INSTANCE_MISMATCH
    log = scp.log_text()
    assert "C-STORE refused" in log
    for value in phi:
        assert value not in log, "PHI in the SCP log"


def _command(sop_class: str, sop_instance: str, data_set_type: int) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1), Implicit VR Little Endian, group length first."""
    cmd = pydicom.Dataset()
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = 0x0001
    cmd.MessageID = 1
    cmd.Priority = 0
    cmd.CommandDataSetType = data_set_type
    cmd.AffectedSOPInstanceUID = sop_instance
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, cmd)
    body = fp.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def _p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    """One P-DATA-TF PDU with one PDV (PS3.8 9.3.5, E.2: control bit 0 command, bit 1 last)."""
    pdv = struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


def _violation_sequences() -> dict[str, list[bytes]]:
    _ds, data = _good_dataset()
    uid = str(_ds.SOPInstanceUID)
    return {
        "data without a command": [_p_data(1, 0x02, data[:512])],
        "data after a command announcing none": [
            _p_data(1, 0x03, _command(CT_IMAGE, uid, 0x0101)),
            _p_data(1, 0x02, data[:512]),
        ],
    }


@pytest.mark.parametrize("accelerate", ["on", "off"])
@pytest.mark.parametrize("case", sorted(_violation_sequences()))
def test_a_data_set_fragment_without_its_command_aborts_cleanly(
    fresh_dsn: str, tmp_path: Path, accelerate: str, case: str
) -> None:
    proc = ScpProcess(
        dsn=fresh_dsn, data_dir=tmp_path / "node",
        extra_env={"RADIOGATE_SCP__ACCELERATE": accelerate},
    ).start()  # fmt: skip
    try:
        ae = AE(ae_title="CT1")
        ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", proc.port, ae_title="RADIOGATE")
        assert assoc.is_established
        # Raw PDUs on the association's own socket: pynetdicom would never send these.
        transport = assoc.dul.socket
        assert transport is not None
        sock = transport.socket
        assert sock is not None
        for pdu in _violation_sequences()[case]:
            sock.sendall(pdu)
            time.sleep(0.2)  # separate PDUs, as a peer would send them
        deadline = time.monotonic() + 20
        while assoc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assoc.is_aborted  # the SCP aborted (A-P-ABORT / A-ABORT, PS3.8 9.3.8)
        wait_for_echo(proc.port, timeout=5)  # and keeps serving
        log = proc.log_text()
        assert "data set fragment without its command" in log
        assert "Traceback" not in log and "AssertionError" not in log
        with psycopg.connect(fresh_dsn) as conn:
            rows = conn.execute(
                "SELECT body FROM audit_pending WHERE step = 'association-aborted'"
            ).fetchall()
        assert len(rows) == 1 and b"data-without-command" in bytes(rows[0][0])
        assert _recorded(fresh_dsn) == 0
    finally:
        proc.stop()
