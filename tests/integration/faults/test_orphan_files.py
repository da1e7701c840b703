"""Spool files no row names — left by a receiver killed after placing its file and before its
row committed (the modality was never answered), or by a release whose unlink was lost — are
removed by the worker's housekeeping once they are old; every file a row needs stays."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_nodes.db.ingest import PostgresIngest
from dicom_nodes.pipeline import housekeeping
from dicom_nodes.pipeline.route import route_round
from dicom_nodes.spool.store import FANOUT, ORPHAN_MIN_AGE
from tests.support.stages import Stage, staged

pytestmark = pytest.mark.integration


@pytest.fixture
def stage(fresh_dsn: str, tmp_path: Path) -> Iterator[Stage]:
    with staged(fresh_dsn, tmp_path, "archive") as ready:
        ready.ctx.spool = ready.spool
        yield ready


def _spool_path(stage: Stage, uid: str) -> Path:
    ((path,),) = stage.q("SELECT spool_path FROM ingest_instance WHERE sop_instance_uid = %s", uid)
    return Path(path)


def _place_unrecorded(stage: Stage, source: Path) -> Path:
    """What a receiver killed between placing its file and committing its row leaves."""
    temp = stage.spool.incoming / "killed.dcm"
    shutil.copyfile(source, temp)
    return stage.spool.place(temp).path


def _age_everything(stage: Stage) -> None:
    then = time.time() - ORPHAN_MIN_AGE - 60
    for path in stage.spool.root.glob("??/*.dcm"):
        os.utime(path, (then, then))


def _sweep_all(stage: Stage) -> int:
    removed = 0
    for fanout in range(FANOUT):
        removed += housekeeping.kick(stage.ctx, orphans_in=fanout).get("orphans-removed", 0)
    return removed


def test_files_no_row_needs_are_swept_and_the_rest_is_forwarded(stage: Stage) -> None:
    source = stage.files[0]
    released = stage.receive(1)
    leftover = _spool_path(stage, released[0])
    stage.drain()
    assert stage.states(released) == ["released"] and not leftover.exists()
    shutil.copyfile(source, leftover)  # a release whose unlink did not survive a power loss
    waiting = stage.receive(2)  # recorded, not yet routed: their files are needed
    routed = stage.receive(1)
    while route_round(stage.ctx):
        pass
    killed = _place_unrecorded(stage, stage.files.pop(0))
    _age_everything(stage)

    assert _sweep_all(stage) == 2
    assert not killed.exists() and not leftover.exists()
    for uid in [*waiting, *routed]:
        assert _spool_path(stage, uid).exists()
    stage.drain()
    assert stage.states([*waiting, *routed]) == ["released"] * 3
    assert set(stage.dest.sent) >= {*waiting, *routed}


def test_a_resend_of_swept_bytes_is_received_again(stage: Stage) -> None:
    """Identical bytes sent again after the sweep took the unrecorded copy: spooled anew."""
    source = stage.files[0]
    killed = _place_unrecorded(stage, source)
    _age_everything(stage)
    assert _sweep_all(stage) == 1 and not killed.exists()
    (uid,) = stage.receive(1)
    assert _spool_path(stage, uid) == killed and killed.read_bytes() == source.read_bytes()
    stage.drain()
    assert stage.states([uid]) == ["released"]


def test_nothing_is_swept_while_the_files_are_young(stage: Stage) -> None:
    killed = _place_unrecorded(stage, stage.files.pop(0))
    assert _sweep_all(stage) == 0 and killed.exists()


def test_the_file_of_a_missing_instance_is_kept(stage: Stage) -> None:
    """``missing`` says the file was not there once (a spool not mounted yet, say): a file
    there now is the only copy of an acknowledged instance, and a re-send needs it."""
    source = stage.files[0]
    uid, last = stage.receive(2)  # (the last receipt of an association waits for a re-send)
    path = _spool_path(stage, uid)
    path.unlink()  # the spool's disk not there when routing looked
    while route_round(stage.ctx):
        pass
    assert stage.states([uid, last]) == ["missing", "routed"]
    shutil.copyfile(source, path)  # the disk is back
    _age_everything(stage)
    assert _sweep_all(stage) == 0 and path.exists()
    # nor would the receivers' sweep of the files they marked take it
    assert PostgresIngest(stage.ctx.pool, timeout=5).unreferenced([str(path)]) == []


def test_nothing_is_swept_while_rows_name_files_under_another_root(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows are matched by path: when a needed row names a file under another directory (the
    spool was moved, or its path spelt differently), absence from the rows proves nothing."""
    (uid,) = stage.receive(1)
    stage.q_exec(
        "UPDATE ingest_instance SET spool_path = '/moved' || spool_path"
        " WHERE sop_instance_uid = %s",
        uid,
    )
    killed = _place_unrecorded(stage, stage.files.pop(0))
    _age_everything(stage)
    assert _sweep_all(stage) == 0 and killed.exists()
    assert "name spool files outside" in caplog.text
    stage.q_exec(  # once the row no longer needs its file, the sweep goes on
        "UPDATE ingest_instance SET state = 'released' WHERE sop_instance_uid = %s", uid
    )
    # the unrecorded file, and the row's own file (the moved path names neither)
    assert _sweep_all(stage) == 2 and not killed.exists()
