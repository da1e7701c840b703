"""Spool files no row names (a process killed between writing a file and committing its row):
:meth:`Spool.sweep_orphans` and the time refresh of :meth:`Spool.commit_bytes`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from dicom_nodes.spool.store import ORPHAN_MIN_AGE, Spool, SpooledFile


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool", fsync=False)
    s.prepare()
    return s


def _spooled(spool: Spool, data: bytes, *, age: float) -> SpooledFile:
    (temp := spool.incoming / "t").write_bytes(data)
    spooled = spool.commit(temp)
    then = time.time() - age
    os.utime(spooled.path, (then, then))
    return spooled


def _fanout(spooled: SpooledFile) -> int:
    return int(spooled.path.parent.name, 16)


def test_old_files_no_row_names_go_and_everything_else_stays(spool: Spool) -> None:
    old = ORPHAN_MIN_AGE + 60
    orphan = _spooled(spool, b"orphan", age=old)
    named = _spooled(spool, b"named", age=old)
    young = _spooled(spool, b"young", age=ORPHAN_MIN_AGE - 60)
    asked: list[list[str]] = []

    def unreferenced(paths: list[str]) -> list[str]:
        asked.append(paths)
        return [p for p in paths if p != str(named.path)]

    removed = 0
    for spooled in (orphan, named, young):
        # their directories, each once (two of them may share one)
        removed += spool.sweep_orphans(_fanout(spooled), unreferenced)
    assert removed == 1
    assert not orphan.path.exists()
    assert named.path.exists() and young.path.exists()
    asked_paths = {p for batch in asked for p in batch}
    assert str(young.path) not in asked_paths  # too young to be asked about
    assert str(orphan.path) in asked_paths and str(named.path) in asked_paths


def test_a_file_a_writer_found_since_the_scan_stays(spool: Spool) -> None:
    """A writer that finds its bytes spooled refreshes the file's time (it is about to commit
    a row naming it): the sweep looks at the time again before deleting."""
    orphan = _spooled(spool, b"found again", age=ORPHAN_MIN_AGE + 60)

    def unreferenced(paths: list[str]) -> list[str]:
        os.utime(orphan.path)  # the writer, between the scan and the database's answer
        return paths

    assert spool.sweep_orphans(_fanout(orphan), unreferenced) == 0
    assert orphan.path.exists()


def test_commit_bytes_refreshes_a_file_already_spooled(spool: Spool) -> None:
    """De-identifying again after a crash writes the same bytes as the copy the crash left:
    the copy is kept and made young, so a sweep leaves it to the row about to name it."""
    left = _spooled(spool, b"deidentified copy", age=ORPHAN_MIN_AGE + 60)
    (again,) = spool.commit_bytes([b"deidentified copy"], spool.root / ".tmp")
    assert again.path == left.path and not again.created
    assert time.time() - left.path.stat().st_mtime < 60
    assert spool.sweep_orphans(_fanout(left), lambda paths: paths) == 0
    assert left.path.exists()


def test_commit_bytes_writes_a_file_a_sweep_took_meanwhile(spool: Spool) -> None:
    gone = _spooled(spool, b"swept", age=ORPHAN_MIN_AGE + 60)
    assert spool.sweep_orphans(_fanout(gone), lambda paths: paths) == 1
    (temp := spool.root / ".tmp").mkdir()
    (again,) = spool.commit_bytes([b"swept"], temp)
    assert again.created and again.path.read_bytes() == b"swept"


def test_a_database_that_cannot_answer_deletes_nothing(spool: Spool) -> None:
    orphan = _spooled(spool, b"orphan", age=ORPHAN_MIN_AGE + 60)

    def unreachable(paths: list[str]) -> list[str]:
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError):
        spool.sweep_orphans(_fanout(orphan), unreachable)
    assert orphan.path.exists()


def test_only_spooled_files_of_the_directory_are_considered(spool: Spool) -> None:
    orphan = _spooled(spool, b"orphan", age=ORPHAN_MIN_AGE + 60)
    other = orphan.path.parent / "notes.txt"
    other.write_text("not a spool file")
    then = time.time() - ORPHAN_MIN_AGE - 60
    os.utime(other, (then, then))
    asked: list[str] = []

    def unreferenced(paths: list[str]) -> list[str]:
        asked.extend(paths)
        return paths

    spool.sweep_orphans(_fanout(orphan), unreferenced)
    assert asked == [str(orphan.path)] and other.exists()
    assert spool.sweep_orphans((_fanout(orphan) + 1) % 256, lambda paths: paths) == 0


def test_still_present_says_whether_a_sweep_took_the_file(spool: Spool) -> None:
    spooled = _spooled(spool, b"placed", age=0)
    assert spool.still_present(spooled)
    spooled.path.unlink()
    assert not spool.still_present(spooled)


def test_abandoned_temporary_files_go_young_ones_stay(spool: Spool) -> None:
    temp = spool.root / ".results"
    temp.mkdir()
    (old := temp / "1-abc.tmp").write_bytes(b"half a report")
    then = time.time() - 700
    os.utime(old, (then, then))
    (young := temp / "2-def.tmp").write_bytes(b"being written")
    assert spool.sweep_temp(".results", older_than=600) == 1
    assert not old.exists() and young.exists()
    assert spool.sweep_temp(".nothing-here", older_than=600) == 0


def test_a_truncated_file_is_replaced_under_the_sweeps_lock(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placed just before a power loss and back empty: the re-send's rename waits for a sweep
    that may be between its look at the old file and its unlink."""
    first = _spooled(spool, b"complete content", age=0)
    first.path.write_bytes(b"")
    locked: list[bool] = []
    real = spool._locked

    def watching() -> Any:
        locked.append(True)
        return real()

    monkeypatch.setattr(spool, "_locked", watching)
    (temp := spool.incoming / "again").write_bytes(b"complete content")
    again = spool.place(temp)
    assert again.created and again.path.read_bytes() == b"complete content"
    assert locked == [True]
