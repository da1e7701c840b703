"""ReceiveFile: a failed write is kept, the partial file freed, the rest discarded."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO

import pytest
from blake3 import blake3

from dicom_nodes.spool.receiving import ReceiveFile, receive_digest, receive_error


class _FullAfter:
    """A file object whose writes fail with ENOSPC after *limit* bytes (a full disk)."""

    def __init__(self, real: IO[bytes], limit: int) -> None:
        self.real = real
        self.limit = limit
        self.written = 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.real.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_a_full_disk_mid_data_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sink = ReceiveFile()
    sink._f = _FullAfter(sink._f, 10)  # type: ignore[assignment]
    assert sink.write(b"123456") == 6
    sink.file.flush()
    assert sink.write(b"7890ABCD") == 8  # fails: kept, not raised
    assert isinstance(sink.error, OSError) and sink.error.errno == errno.ENOSPC
    assert sink.write(b"more") == 4  # the rest of the data set is read and discarded
    sink.flush()
    sink.close()
    assert list(tmp_path.iterdir()) == []  # no partial file
    request = type("Rq", (), {"_dataset_file": sink})()
    assert receive_error(request) is sink.error


def test_a_good_data_set_is_written_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sink = ReceiveFile()
    sink.write(b"abc")
    sink.file.flush()
    sink.close()
    assert Path(sink.name).read_bytes() == b"abc" and sink.error is None
    assert receive_error(type("Rq", (), {"_dataset_file": sink})()) is None


def test_the_digest_is_of_the_bytes_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sink = ReceiveFile()
    for chunk in (b"\x00" * 128, b"DICM", b"x" * 70_000, b"tail"):
        sink.write(chunk)
    sink.close()
    data = Path(sink.name).read_bytes()
    request = type("Rq", (), {"_dataset_file": sink})()
    assert receive_digest(request) == (blake3(data).digest(), len(data))


def test_no_digest_after_writing_out_of_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sink = ReceiveFile()
    sink.write(b"first try")
    sink.seek(0)
    sink.truncate()
    sink.write(b"second")
    sink.close()
    assert receive_digest(type("Rq", (), {"_dataset_file": sink})()) is None
    failed = ReceiveFile()
    failed._f = _FullAfter(failed._f, 2)  # type: ignore[assignment]
    failed.write(b"too long")
    assert receive_digest(type("Rq", (), {"_dataset_file": failed})()) is None


def test_a_name_left_by_an_earlier_process_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receive files are named by process id and a counter: a file of that name already there
    (an earlier process with the same id) is never opened, and each file is private (0600)."""
    import itertools

    from dicom_nodes.spool import receiving

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(receiving, "_numbers", itertools.count(7))
    left = tmp_path / f"rcv-{os.getpid()}-7.dcm"
    left.write_bytes(b"an earlier receipt")
    first, second = ReceiveFile(), ReceiveFile()
    first.write(b"one")
    second.write(b"two")
    first.close()
    second.close()
    assert left.read_bytes() == b"an earlier receipt"
    assert [Path(first.name).name, Path(second.name).name] == [
        f"rcv-{os.getpid()}-8.dcm",
        f"rcv-{os.getpid()}-9.dcm",
    ]
    assert Path(first.name).read_bytes() == b"one" and Path(second.name).read_bytes() == b"two"
    assert os.stat(first.name).st_mode & 0o777 == 0o600
