"""storescu/echoscu (DCMTK) → radiogate scp → spool + PostgreSQL, all real."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pydicom
import pytest
from blake3 import blake3

from tests.support import ScpProcess, dcmtk
from tests.support.data import dataset_bytes, extract_ct, make_ts_files

pytestmark = pytest.mark.integration

_STORESCU_TS_FLAGS = {
    # storescu proposes uncompressed syntaxes unless told; these make it propose the file's own.
    "1.2.840.10008.1.2": ["-xi"],
    "1.2.840.10008.1.2.1": ["-xe"],
    "1.2.840.10008.1.2.2": ["-xb"],
    "1.2.840.10008.1.2.1.99": ["-xd"],
    "1.2.840.10008.1.2.4.50": ["-xy"],
    "1.2.840.10008.1.2.4.51": ["-xx"],
    "1.2.840.10008.1.2.4.70": ["-xs"],
    "1.2.840.10008.1.2.4.80": ["-xt"],
    "1.2.840.10008.1.2.4.81": ["-xu"],
    "1.2.840.10008.1.2.4.90": ["-xv"],
    "1.2.840.10008.1.2.4.91": ["-xw"],
    "1.2.840.10008.1.2.5": ["-xr"],
}


_UNKNOWN_TO_DCMTK = {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.8.1"}


def storescu(
    port: int, files: list[Path], *extra: str, aet: str = "CT1"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            dcmtk("storescu"),
            "-aet",
            aet,
            "-aec",
            "RADIOGATE",
            *extra,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"TCP_NODELAY": "1"},
    )


def send_with_pynetdicom(port: int, path: Path, ts: str) -> None:
    from pynetdicom import AE, _config

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ds.SOPClassUID, ts)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADIOGATE")
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    assert status.Status == 0x0000


def rows(dsn: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_echo(scp: ScpProcess) -> None:
    result = subprocess.run(
        [dcmtk("echoscu"), "-aet", "ANY", "-aec", "RADIOGATE", "127.0.0.1", str(scp.port)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_ct_series_lands_byte_identical(scp: ScpProcess, tmp_path: Path) -> None:
    files = extract_ct(tmp_path / "ct")
    assert len(files) == 48
    result = storescu(scp.port, files)
    assert result.returncode == 0, result.stderr
    recorded = rows(
        scp.dsn,
        "SELECT sop_instance_uid, spool_path, size_bytes, calling_ae, host(peer_address), node, "
        "transfer_syntax_uid, study_instance_uid, series_instance_uid, sop_class_uid FROM ingest_instance",
    )
    assert len(recorded) == 48
    by_uid = {r[0]: r for r in recorded}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        row = by_uid[ds.SOPInstanceUID]
        spooled = Path(str(row[1]))
        assert spooled.parent.parent == scp.spool
        assert dataset_bytes(spooled) == dataset_bytes(f)
        assert spooled.name == f"{blake3(spooled.read_bytes()).hexdigest()}.dcm"  # its content
        assert row[2] == spooled.stat().st_size
        assert row[3:6] == ("CT1", "127.0.0.1", "node1")
        assert row[6] == ds.file_meta.TransferSyntaxUID
        assert row[7:10] == (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID)
        # What we wrote is a valid Part 10 file for a strict reader.
        back = pydicom.dcmread(spooled, force=False)
        assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len(scp.spooled_files()) == 48
    assert not list((scp.spool / ".incoming").iterdir())


def test_every_transfer_syntax_stored_as_received(scp: ScpProcess, tmp_path: Path) -> None:
    ts_files = make_ts_files(tmp_path / "ts")
    for item in ts_files:
        if item.transfer_syntax not in _UNKNOWN_TO_DCMTK:
            # DCMTK re-encodes what it sends (explicit-length sequences, no trailing padding);
            # make the file DCMTK-canonical so that "what was sent" is exactly the file.
            subprocess.run([dcmtk("dcmconv"), str(item.path), str(item.path)], check=True)
    for item in ts_files:
        flags = _STORESCU_TS_FLAGS.get(item.transfer_syntax)
        if flags is not None:
            result = storescu(scp.port, [item.path], *flags)
        elif item.transfer_syntax in _UNKNOWN_TO_DCMTK:
            # DCMTK 3.6.7 cannot read these files; pynetdicom's SCU sends them as they are.
            send_with_pynetdicom(scp.port, item.path, item.transfer_syntax)
            continue
        else:
            # Syntaxes storescu has no flag for (JPEG process 14, HTJ2K, deflated frames):
            # dcmsend proposes the file's own transfer syntax.
            result = subprocess.run(
                [dcmtk("dcmsend"), "-dn", "-aet", "CT1", "-aec", "RADIOGATE", "127.0.0.1", str(scp.port), str(item.path)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        assert result.returncode == 0, (item.transfer_syntax, result.stdout, result.stderr)
    recorded: dict[str, str] = dict(
        rows(scp.dsn, "SELECT sop_instance_uid, spool_path FROM ingest_instance")
    )
    ts_recorded: dict[str, str] = dict(
        rows(scp.dsn, "SELECT sop_instance_uid, transfer_syntax_uid FROM ingest_instance")
    )
    for item in ts_files:
        assert item.sop_instance_uid in recorded, item.transfer_syntax
        assert ts_recorded[item.sop_instance_uid] == item.transfer_syntax
        same = dataset_bytes(str(recorded[item.sop_instance_uid])) == dataset_bytes(item.path)
        assert same, item.transfer_syntax


def test_wrong_called_and_calling_ae_rejected(fresh_dsn: str, tmp_path: Path) -> None:
    proc = ScpProcess(
        dsn=fresh_dsn,
        data_dir=tmp_path / "node",
        extra_env={"RADIOGATE_SCP__ALLOWED_CALLING_AETS": "CT1,MR2"},
    )
    proc.start(wait=False)
    try:
        from tests.support import wait_for_echo

        wait_for_echo(proc.port, aet="CT1")
        bad = subprocess.run(
            [dcmtk("echoscu"), "-aet", "INTRUDER", "-aec", "RADIOGATE", "127.0.0.1", str(proc.port)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert bad.returncode != 0
        assert "Calling AE Title Not Recognized" in bad.stderr or "Rejected" in bad.stderr, (
            bad.stderr
        )
        wrong_called = subprocess.run(
            [dcmtk("echoscu"), "-aet", "CT1", "-aec", "SOMEONE", "127.0.0.1", str(proc.port)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert wrong_called.returncode != 0
        # And the server still serves an allowed peer.
        wait_for_echo(proc.port, aet="MR2", timeout=5)
        assert "rejected calling=INTRUDER" in proc.log_text()
    finally:
        proc.stop()


def _associations(metrics_port: int, result: str, reason: str) -> float:
    """The receiver's association counter (polled: the peer knows before the counter moves)."""
    import re
    import time
    import urllib.request

    labels = f'reason="{re.escape(reason)}",result="{re.escape(result)}"'
    pattern = re.compile(
        r'^radiogate_associations_total\{node="[^"]*",' + labels + r"\} (\S+)$", re.M
    )
    deadline = time.monotonic() + 10
    while True:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as rsp:
            found = pattern.search(rsp.read().decode())
        if found or time.monotonic() > deadline:
            return float(found.group(1)) if found else 0.0
        time.sleep(0.2)


def test_ip_allow_list(fresh_dsn: str, tmp_path: Path) -> None:
    from tests.support import wait_for_echo

    outside = ScpProcess(
        dsn=fresh_dsn,
        data_dir=tmp_path / "a",
        extra_env={"RADIOGATE_SCP__ALLOWED_NETWORKS": "10.0.0.0/8"},
    ).start(wait=False)
    inside = ScpProcess(
        dsn=fresh_dsn,
        data_dir=tmp_path / "b",
        extra_env={"RADIOGATE_SCP__ALLOWED_NETWORKS": "10.0.0.0/8,127.0.0.0/8"},
    ).start()
    try:
        wait_for_echo(inside.port)
        import time

        time.sleep(1.0)
        refused = subprocess.run(
            [dcmtk("echoscu"), "-aet", "CT1", "-aec", "RADIOGATE", "-to", "5", "127.0.0.1", str(outside.port)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "refused: address not in scp.allowed_networks" in outside.log_text()
        assert _associations(outside.metrics_port, "refused", "network-not-allowed") == 1.0
    finally:
        outside.stop()
        inside.stop()


def test_maximum_associations(fresh_dsn: str, tmp_path: Path) -> None:
    from pynetdicom import AE

    proc = ScpProcess(
        dsn=fresh_dsn,
        data_dir=tmp_path / "node",
        extra_env={"RADIOGATE_SCP__MAX_ASSOCIATIONS": "1"},
    ).start()
    try:
        ae = AE(ae_title="CT1")
        ae.add_requested_context("1.2.840.10008.1.1")
        import time

        deadline = time.monotonic() + 10
        while True:  # the start-up probe's association may still hold the one slot
            first = ae.associate("127.0.0.1", proc.port, ae_title="RADIOGATE")
            if first.is_established or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert first.is_established
        rejected_before = _associations(proc.metrics_port, "rejected", "local-limit-exceeded")
        second = ae.associate("127.0.0.1", proc.port, ae_title="RADIOGATE")
        assert second.is_rejected
        counted = time.monotonic() + 10
        while (
            rejected := _associations(proc.metrics_port, "rejected", "local-limit-exceeded")
        ) < rejected_before + 1 and time.monotonic() < counted:
            time.sleep(0.2)
        assert rejected == rejected_before + 1
        first.release()
        deadline = time.monotonic() + 10
        while True:  # the released association's thread ends asynchronously
            third = ae.associate("127.0.0.1", proc.port, ae_title="RADIOGATE")
            if third.is_established or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert third.is_established
        third.release()
    finally:
        proc.stop()
