"""The access journal: one line per record, complete lines only, segments in order."""

from __future__ import annotations

import os
from pathlib import Path

from pacs_plugin.journal import JournalWriter, read_records, segments


def test_append_and_read_back(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "j", sync_interval=0.01, segment_bytes=4096)
    for i in range(3):
        w.append({"k": "read", "n": i})
    w.close()
    [seg] = segments(tmp_path / "j")
    assert oct(seg.stat().st_mode & 0o777) == "0o600"
    records = list(read_records(seg, 0))
    assert [r["n"] for _e, r in records if r] == [0, 1, 2]
    middle = records[0][0]
    assert [r["n"] for _e, r in read_records(seg, middle) if r] == [1, 2]
    assert records[-1][0] == seg.stat().st_size


def test_a_torn_line_is_not_read_until_complete(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000000001-1.jsonl"
    path.write_bytes(b'{"k":"read","n":1}\n{"k":"re')
    assert [r for _e, r in read_records(path, 0)] == [{"k": "read", "n": 1}]
    with path.open("ab") as fh:
        fh.write(b'ad","n":2}\nnot json\n')
    assert [r for _e, r in read_records(path, 0)] == [
        {"k": "read", "n": 1}, {"k": "read", "n": 2}, None]  # fmt: skip


def test_segments_roll_over_and_sort(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "j", sync_interval=10, segment_bytes=4096)
    for i in range(200):
        w.append({"k": "read", "pad": "x" * 40, "n": i})
    w.close()
    found = segments(tmp_path / "j")
    assert len(found) > 1
    numbers = [r["n"] for s in found for _e, r in read_records(s, 0) if r]
    assert numbers == list(range(200))
    assert all(s.stat().st_size <= 4096 for s in found)
    assert os.listdir(tmp_path / "j") and segments(tmp_path / "missing") == []
