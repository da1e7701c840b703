"""The data directory's lock file: held once, and readable at every moment of an update."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dicom_nodes.services.lock import AlreadyRunning, StackLock, held_by, read_lock


def test_a_second_holder_is_refused_with_the_first_ones_document(tmp_path: Path) -> None:
    first = StackLock(tmp_path)
    first.acquire({"pid": 1, "ports": {"scp": 11112}})
    try:
        with pytest.raises(AlreadyRunning, match="pid 1, ports scp 11112"):
            StackLock(tmp_path).acquire({"pid": 2})
        assert held_by(tmp_path) == {"pid": 1, "ports": {"scp": 11112}}
    finally:
        first.release()
    assert held_by(tmp_path) is None


def test_a_reader_never_sees_an_empty_or_torn_document_while_it_is_updated(
    tmp_path: Path,
) -> None:
    lock = StackLock(tmp_path)
    lock.acquire({"pid": 1})
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1  # documents of changing lengths: shorter ones must not leave a tail
            lock.update({"pid": 1, "restarts": {"worker": n}, "pad": "x" * (n % 97)})
            time.sleep(0.0002)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        seen = [read_lock(lock.path) for _ in range(5000)]
    finally:
        stop.set()
        writer.join()
        lock.release()
    assert all(doc.get("pid") == 1 for doc in seen), [d for d in seen if d.get("pid") != 1][:3]
