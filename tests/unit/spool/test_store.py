from __future__ import annotations

from pathlib import Path

import pytest
from blake3 import blake3

from dicom_nodes.errors import OutOfResources
from dicom_nodes.spool.store import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool")
    s.prepare()
    return s


def _incoming(spool: Spool, data: bytes, name: str = "x.dcm") -> Path:
    p = spool.incoming / name
    p.write_bytes(data)
    return p


def test_commit_is_content_addressed_and_idempotent(spool: Spool) -> None:
    first = spool.commit(_incoming(spool, b"abc" * 1000))
    assert first.created
    assert first.path == spool.root / first.blake3.hex()[:2] / f"{first.blake3.hex()}.dcm"
    assert first.blake3 == blake3(b"abc" * 1000).digest()
    assert first.size == 3000
    again = spool.commit(_incoming(spool, b"abc" * 1000, "y.dcm"))
    assert not again.created and again.path == first.path
    other = spool.commit(_incoming(spool, b"abd" * 1000, "z.dcm"))
    assert other.created and other.path != first.path
    assert first.path.read_bytes() == b"abc" * 1000


def test_discard_marks_only_what_commit_created_and_a_sweep_asks_first(spool: Spool) -> None:
    a = spool.commit(_incoming(spool, b"one"))
    b = spool.commit(_incoming(spool, b"one", "again"))
    spool.discard(b)
    assert not spool.unrecorded.exists() or list(spool.unrecorded.iterdir()) == []
    spool.discard(a)
    assert a.path.exists()
    spool.unrecorded_min_age = 0
    asked: list[list[str]] = []

    def none_unreferenced(paths: list[str]) -> list[str]:
        asked.append(paths)
        return []

    # A row names it: kept, marker gone.
    assert spool.sweep_unrecorded(none_unreferenced) == 0
    assert a.path.exists() and asked == [[str(a.path)]]
    assert not spool.has_unrecorded
    spool.discard(a)
    assert spool.sweep_unrecorded(lambda paths: paths) == 1
    assert not a.path.exists()


def test_a_young_marker_waits(spool: Spool) -> None:
    a = spool.commit(_incoming(spool, b"one"))
    spool.discard(a)
    assert spool.sweep_unrecorded(lambda paths: paths) == 0
    assert a.path.exists() and spool.has_unrecorded


def test_prepare_removes_unacknowledged_partial_files(spool: Spool) -> None:
    _incoming(spool, b"partial", "tmp1.dcm")
    _incoming(spool, b"partial", "tmp2.dcm")
    assert spool.prepare() == 2
    assert list(spool.incoming.iterdir()) == []


def test_watermarks(tmp_path: Path) -> None:
    Spool(tmp_path, min_free_bytes=0, min_free_percent=0).check_space()
    with pytest.raises(OutOfResources, match="watermark"):
        Spool(tmp_path, min_free_bytes=1 << 62).check_space()
    with pytest.raises(OutOfResources, match="watermark"):
        Spool(tmp_path, min_free_percent=99.99999).check_space()
    with pytest.raises(OutOfResources, match="not accessible"):
        Spool(tmp_path / "absent").check_space()


def test_commit_failure_is_out_of_resources(spool: Spool) -> None:
    with pytest.raises(OutOfResources):
        spool.commit(spool.incoming / "does-not-exist.dcm")


def test_commit_bytes_is_content_addressed_and_skips_what_is_there(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    temp = tmp_path / "tmp"
    temp.mkdir()
    first = spool.commit_bytes([b"alpha", b"beta"], temp)
    assert [f.created for f in first] == [True, True]
    for f, data in zip(first, [b"alpha", b"beta"], strict=True):
        assert f.path == spool.path_for(blake3(data).digest())
        assert f.path.read_bytes() == data and f.size == len(data)
    again = spool.commit_bytes([b"beta", b"gamma"], temp)
    assert [f.created for f in again] == [False, True]
    assert again[0].path == first[1].path
    assert list(temp.iterdir()) == []  # every temporary file was renamed into place


def test_syncfs_is_used_where_available(tmp_path: Path) -> None:
    from dicom_nodes.spool import store

    assert store._syncfs(tmp_path) is True  # Linux: one call makes the file system durable


def test_a_digest_computed_while_writing_is_used(spool: Spool) -> None:
    data = b"given" * 100
    done = spool.commit(_incoming(spool, data), (blake3(data).digest(), len(data)))
    assert done.path == spool.path_for(blake3(data).digest()) and done.path.read_bytes() == data


def _fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every fsync'd descriptor (files and directories)."""
    import os

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_place_renames_without_fsync_and_make_durable_syncs_file_then_directory(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _fsynced(monkeypatch)
    temp = _incoming(spool, b"placed" * 100)
    placed = spool.place(temp)
    assert placed.created and placed.path.read_bytes() == b"placed" * 100
    assert not temp.exists() and synced == []
    spool.make_durable(placed)
    assert synced == [str(placed.path), str(placed.path.parent)]


def test_a_file_found_under_its_content_name_is_synced_again(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The association that placed it may still be waiting for its fsync: a re-send answered
    # first must not be acknowledged before the file is on disk.
    first = spool.place(_incoming(spool, b"same" * 100))
    synced = _fsynced(monkeypatch)
    again = spool.place(_incoming(spool, b"same" * 100, "y.dcm"))
    assert not again.created and again.path == first.path
    spool.make_durable(again)
    assert synced == [str(first.path), str(first.path.parent)]


def test_a_file_of_the_wrong_size_under_the_content_name_is_replaced(spool: Spool) -> None:
    # What a power loss can leave of a file placed but never made durable (never acknowledged).
    data = b"survivor" * 100
    target = spool.path_for(blake3(data).digest())
    target.write_bytes(b"")
    placed = spool.commit(_incoming(spool, data))
    assert placed.created and placed.path == target
    assert target.read_bytes() == data


def test_a_found_file_swept_meanwhile_is_left_to_ensure_present(spool: Spool) -> None:
    data = b"gone" * 100
    first = spool.commit(_incoming(spool, data))
    temp = _incoming(spool, data, "y.dcm")
    again = spool.place(temp)
    first.path.unlink()  # a concurrent sweep
    spool.make_durable(again)  # nothing to sync; not an error
    spool.ensure_present(again, temp)
    assert first.path.read_bytes() == data


def test_a_placed_file_that_vanished_before_its_fsync_is_out_of_resources(spool: Spool) -> None:
    placed = spool.place(_incoming(spool, b"mine" * 100))
    placed.path.unlink()
    with pytest.raises(OutOfResources):
        spool.make_durable(placed)
