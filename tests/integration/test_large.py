"""A ~1 GB multi-frame instance is received with bounded memory (streamed to the spool)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from blake3 import blake3
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.support import ScpProcess, dcmtk

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_FRAMES = 2048
_ROWS = _COLS = 512
_FRAME_BYTES = _ROWS * _COLS * 2  # 16-bit: 2048 frames = 1 GiB of pixel data


def _write_big(path: Path) -> str:
    """Multi-frame Grayscale Word SC (PS3.3 A.8.3) with 1 GiB of pixel data, written in chunks."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientName = "BIG^OBJECT"
    ds.PatientID = "BIG1"
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = _FRAMES
    ds.Rows, ds.Columns = _ROWS, _COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 40
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    frame = bytes(range(256)) * (_FRAME_BYTES // 256)
    with path.open("ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (_FRAMES * _FRAME_BYTES).to_bytes(4, "little"))
        for _ in range(_FRAMES):
            fh.write(frame)
    return str(ds.SOPInstanceUID)


def _receivers(supervisor: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(supervisor)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def test_one_gigabyte_instance_with_bounded_memory(fresh_dsn: str, tmp_path: Path) -> None:
    big = tmp_path / "big.dcm"
    uid = _write_big(big)
    size = big.stat().st_size
    assert size > 1 << 30
    scp = ScpProcess(
        dsn=fresh_dsn,
        data_dir=tmp_path / "node",
        processes=1,
        extra_env={"RADIOGATE_SCP__METRICS_PORT": "0"},  # the receiver is the only child
    ).start()
    try:
        assert scp.proc is not None
        (receiver,) = _receivers(scp.proc.pid)
        baseline = _rss_kb(receiver, "VmRSS")
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_kb(receiver, "VmRSS"))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = subprocess.run(
            [dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE", "-pdu", "131072",
             "127.0.0.1", str(scp.port), str(big)],
            capture_output=True, text=True, check=False, timeout=900, env={"TCP_NODELAY": "1"},
        )  # fmt: skip
        done.set()
        sampler.join()
        assert result.returncode == 0, result.stderr[-2000:]
        hwm = _rss_kb(receiver, "VmHWM")
        print(f"receiver RSS: baseline {baseline} kB, sampled peak {peak} kB, VmHWM {hwm} kB")
        assert hwm < 300 * 1024, f"receiver peak RSS {hwm} kB"
        with psycopg.connect(fresh_dsn) as conn:
            row = conn.execute(
                "SELECT spool_path, size_bytes FROM ingest_instance WHERE sop_instance_uid = %s",
                (uid,),
            ).fetchone()
        assert row is not None
        spooled = Path(row[0])
        assert row[1] == spooled.stat().st_size
        # Same dataset bytes: our File Meta differs in length from pydicom's, so compare tails.
        hasher = blake3(max_threads=blake3.AUTO)
        hasher.update_mmap(spooled)
        assert hasher.hexdigest() == spooled.stem
        with big.open("rb") as a, spooled.open("rb") as b:
            a.seek(-(1 << 20), os.SEEK_END)
            b.seek(-(1 << 20), os.SEEK_END)
            assert a.read() == b.read()
    finally:
        scp.stop()
