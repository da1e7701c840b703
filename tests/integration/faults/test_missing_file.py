"""A recorded instance whose spool file is gone: routing moves it to the terminal ``missing``
state, and so does forwarding when it vanished after routing (its items cancelled); each once,
audited and counted, never a loop."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dicom_nodes.db.ingest import PostgresIngest, Receipt, RecordOutcome
from dicom_nodes.pipeline import admin, forward
from dicom_nodes.pipeline.forward import forward_round
from dicom_nodes.pipeline.metrics import PipelineCollector
from dicom_nodes.pipeline.route import RoutingJob, route_again_if_waiting, route_round
from dicom_nodes.spool.inspect import inspect_file
from tests.support.stages import Stage, staged

pytestmark = pytest.mark.integration


@pytest.fixture
def stage(fresh_dsn: str, tmp_path: Path) -> Iterator[Stage]:
    with staged(fresh_dsn, tmp_path, "archive") as ready:
        yield ready


def _path(stage: Stage, uid: str) -> Path:
    ((path,),) = stage.q("SELECT spool_path FROM ingest_instance WHERE sop_instance_uid = %s", uid)
    return Path(path)


def _rounds(step: object) -> int:
    rounds = 0
    while step():  # type: ignore[operator]
        rounds += 1
        assert rounds < 10, "the stage does not terminate"
    return rounds


def test_a_received_row_without_its_file_is_missing_once(stage: Stage) -> None:
    uids = stage.receive(3)
    _path(stage, uids[1]).unlink()
    _rounds(lambda: route_round(stage.ctx))
    assert stage.states(uids) == ["routed", "missing", "routed"]
    assert stage.steps(uids[1]) == ["received", "file-missing"]
    _rounds(lambda: forward_round(stage.ctx, "archive"))
    assert stage.states(uids) == ["released", "missing", "released"]
    registry = CollectorRegistry()
    registry.register(PipelineCollector(stage.ctx.pool, "node1"))
    assert registry.get_sample_value("radiogate_missing_instances", {"node": "node1"}) == 1


def test_a_routed_row_whose_file_vanished_is_missing_once(stage: Stage) -> None:
    uids = stage.receive(3)
    _rounds(lambda: route_round(stage.ctx))
    _path(stage, uids[0]).unlink()
    _rounds(lambda: forward_round(stage.ctx, "archive"))
    assert stage.states(uids) == ["missing", "released", "released"]
    assert stage.q(
        "SELECT state, hold_reason FROM forward_item WHERE sop_instance_uid = %s", uids[0]
    ) == [("cancelled", "")]
    assert stage.steps(uids[0])[-2:] == ["cancelled", "file-missing"]
    assert uids[0] not in stage.dest.sent  # never sent
    assert forward_round(stage.ctx, "archive") == 0  # nothing left to retry
    registry = CollectorRegistry()
    registry.register(PipelineCollector(stage.ctx.pool, "node1"))
    assert registry.get_sample_value("radiogate_missing_instances", {"node": "node1"}) == 1


def test_a_file_put_back_while_forwarding_looked_is_sent_not_missing(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forwarding found the file gone; before it marked the instance missing, the modality's
    re-send put the same bytes back (recorded as a duplicate of the routed row, answered
    0x0000): the file is looked at again under the row lock and the instance is sent."""
    source = stage.files[0]
    uids = stage.receive(2)
    _rounds(lambda: route_round(stage.ctx))
    path = _path(stage, uids[0])
    path.unlink()
    looked = forward._originals_gone

    def resent_meanwhile(conn: Any, items: Any) -> set[str]:
        gone = looked(conn, items)
        shutil.copyfile(source, path)  # the re-send's file, placed under the same name
        return gone

    monkeypatch.setattr(forward, "_originals_gone", resent_meanwhile)
    _rounds(lambda: forward_round(stage.ctx, "archive"))
    assert stage.states(uids) == ["released", "released"]
    assert "file-missing" not in stage.steps(uids[0])
    assert uids[0] in stage.dest.sent and not path.exists()  # released: its copy deleted


def _association(stage: Stage, uid: str) -> uuid.UUID:
    ((assoc,),) = stage.q(
        "SELECT association_id FROM ingest_instance WHERE sop_instance_uid = %s", uid
    )
    assert isinstance(assoc, uuid.UUID)
    return assoc


def test_a_lost_file_of_an_unanswered_receipt_waits_for_the_resend(stage: Stage) -> None:
    # The receiver records an instance while its file is synced; if the machine goes down in
    # between, the row stays and the file is lost, but the sender was never answered: the last
    # receipt of its association, which never ended. Routing waits for the re-send.
    uids = stage.receive(3)
    last = _path(stage, uids[2])
    data = last.read_bytes()
    last.unlink()
    job = RoutingJob()
    _rounds(lambda: route_round(stage.ctx, job=job))
    assert job.waiting == {uids[2]}
    assert stage.states(uids) == ["routed", "routed", "received"]
    assert stage.steps(uids[2]) == ["received"]
    assert route_round(stage.ctx, job=job) == 0  # not claimed again by this job
    assert not route_again_if_waiting(stage.ctx, skip=job.waiting)  # and no job loop for it
    registry = CollectorRegistry()
    registry.register(PipelineCollector(stage.ctx.pool, "node1"))
    assert registry.get_sample_value("radiogate_missing_instances", {"node": "node1"}) == 0
    # The re-send puts the same bytes back under the same name: the next job routes it.
    last.write_bytes(data)
    _rounds(lambda: route_round(stage.ctx, job=RoutingJob()))
    assert stage.states(uids) == ["routed", "routed", "routed"]


def _reasons(stage: Stage, uid: str) -> list[tuple[str, str]]:
    rows = stage.q("SELECT step, body FROM audit_pending ORDER BY id")
    return [
        (str(step), json.loads(bytes(body)).get("reason") or "")
        for step, body in rows
        if uid.encode() in bytes(body)
    ]


def test_a_receipt_never_sent_again_is_missing_after_the_wait(stage: Stage) -> None:
    """The sender gave up: after ``pipeline.resend_wait`` the row is counted missing (an
    operator sees it), and a re-send after that still brings it back."""
    paths = stage.files[:2]
    uids = stage.receive(2)
    _path(stage, uids[1]).unlink()
    job = RoutingJob()
    _rounds(lambda: route_round(stage.ctx, job=job))
    assert stage.states(uids) == ["routed", "received"]
    stage.q_exec(  # the association was just over an hour ago (the default wait)
        "UPDATE ingest_instance SET received_at = received_at - interval '3601 seconds' "
        "WHERE association_id = %s",
        _association(stage, uids[1]),
    )
    job = RoutingJob()  # the next routing job
    _rounds(lambda: route_round(stage.ctx, job=job))
    assert stage.states(uids) == ["routed", "missing"] and job.waiting == set()
    assert _reasons(stage, uids[1]) == [("received", ""), ("file-missing", "never-resent")]
    registry = CollectorRegistry()
    registry.register(PipelineCollector(stage.ctx.pool, "node1"))
    assert registry.get_sample_value("radiogate_missing_instances", {"node": "node1"}) == 1
    assert _resend(stage, paths[1]) == (RecordOutcome.RESTORED, True)
    stage.drain()
    assert stage.states(uids) == ["released", "released"]
    assert uids[1] in stage.dest.sent


def test_a_file_that_came_back_empty_counts_as_lost(stage: Stage) -> None:
    # What ext4 or XFS can leave of a renamed file whose fsync the power loss cut short.
    uids = stage.receive(2)
    last = _path(stage, uids[1])
    data = last.read_bytes()
    last.write_bytes(b"")
    job = RoutingJob()
    _rounds(lambda: route_round(stage.ctx, job=job))
    assert job.waiting == {uids[1]} and stage.states(uids) == ["routed", "received"]
    last.write_bytes(data)  # the re-send (Spool.place replaces a file of the wrong size)
    _rounds(lambda: route_round(stage.ctx, job=RoutingJob()))
    assert stage.states(uids) == ["routed", "routed"]


def test_a_lost_file_of_an_ended_association_is_missing(stage: Stage) -> None:
    uids = stage.receive(2)
    _path(stage, uids[1]).unlink()
    stage.q_exec(
        "INSERT INTO association_end (association_id, node, released) VALUES (%s, 'node1', true)",
        _association(stage, uids[1]),
    )
    _rounds(lambda: route_round(stage.ctx, job=RoutingJob()))
    assert stage.states(uids) == ["routed", "missing"]
    assert stage.steps(uids[1]) == ["received", "file-missing"]


def test_a_lost_file_followed_by_a_receipt_on_its_association_is_missing(stage: Stage) -> None:
    # A later receipt over the same association means this one was answered (PS3.7 9.3.1).
    uids = stage.receive(1)
    _path(stage, uids[0]).unlink()
    more = stage.receive_paths(stage.files[:1], association=_association(stage, uids[0]))
    _rounds(lambda: route_round(stage.ctx, job=RoutingJob()))
    assert stage.states(uids + more) == ["missing", "routed"]


def _resend(stage: Stage, path: Path) -> tuple[RecordOutcome, bool]:
    """What the receiver does with a re-send of *path* over a new association: its outcome,
    and whether the unrecorded-file sweep would keep the re-sent copy."""
    identity = inspect_file(path)
    temp = stage.spool.incoming / uuid.uuid4().hex
    shutil.copyfile(path, temp)
    spooled = stage.spool.commit(temp)
    recorder = PostgresIngest(stage.ctx.pool, timeout=5)
    receipt = Receipt("CT1", "RADIOGATE", "127.0.0.1", 104, "node1", uuid.uuid4())
    outcome = recorder.record(identity, spooled, receipt)
    return outcome, recorder.unreferenced([str(spooled.path)]) == []


def test_a_resend_brings_a_missing_instance_back(stage: Stage) -> None:
    """A modality sends an instance again after its spool file was lost: the re-send is
    acknowledged and must reach the archive, not be dropped as a duplicate of nothing."""
    paths = stage.files[:3]
    uids = stage.receive(3)
    _path(stage, uids[1]).unlink()
    _rounds(lambda: route_round(stage.ctx))
    assert stage.states(uids) == ["routed", "missing", "routed"]
    assert _resend(stage, paths[1]) == (RecordOutcome.RESTORED, True)  # kept by the sweep
    assert stage.states(uids) == ["routed", "received", "routed"]
    assert stage.steps(uids[1])[-3:] == ["file-missing", "received", "rerouted"]
    stage.drain()
    assert stage.states(uids) == ["released"] * 3
    assert uids[1] in stage.dest.sent
    assert stage.steps(uids[1])[-4:] == ["routed", "forwarded", "confirmed", "released"]


def test_a_resend_renews_the_items_a_lost_file_cancelled(stage: Stage) -> None:
    paths = stage.files[:3]
    uids = stage.receive(3)
    _rounds(lambda: route_round(stage.ctx))
    _path(stage, uids[0]).unlink()
    _rounds(lambda: forward_round(stage.ctx, "archive"))
    assert stage.states(uids)[0] == "missing"
    assert stage.items(uids[0]) == {"archive": "cancelled"}
    assert _resend(stage, paths[0]) == (RecordOutcome.RESTORED, True)
    stage.drain()
    assert stage.states(uids) == ["released"] * 3
    assert stage.items(uids[0]) == {"archive": "confirmed"}
    assert uids[0] in stage.dest.sent
    steps = stage.steps(uids[0])
    assert steps.index("file-missing") < steps.index("rerouted") < steps.index("confirmed")


@pytest.fixture
def two_way(fresh_dsn: str, tmp_path: Path) -> Iterator[Stage]:
    """A stage whose route forwards to two destinations: ``archive`` and ``research``."""
    with staged(fresh_dsn, tmp_path, "archive", "research") as ready:
        yield ready


def test_a_resend_leaves_an_item_an_administrator_cancelled_cancelled(two_way: Stage) -> None:
    """An administrator stopped an instance going to one destination; its file is lost later
    and a re-send brings it back: it reaches the other destination, never the cancelled one."""
    stage = two_way
    paths = stage.files[:2]
    uids = stage.receive(2)
    _rounds(lambda: route_round(stage.ctx))
    with stage.ctx.pool.connection() as conn:
        admin.cancel(conn, stage.ctx.audit, [uids[0]], "research", "pacs-admin")
    _path(stage, uids[0]).unlink()
    _rounds(lambda: forward_round(stage.ctx, "archive"))
    assert stage.states(uids)[0] == "missing"
    assert stage.q(
        "SELECT destination, state, cancel_reason FROM forward_item"
        " WHERE sop_instance_uid = %s ORDER BY destination",
        uids[0],
    ) == [("archive", "cancelled", "spool-file-missing"), ("research", "cancelled", "admin-cancel")]
    assert _resend(stage, paths[0]) == (RecordOutcome.RESTORED, True)
    stage.drain()
    assert stage.items(uids[0]) == {"archive": "confirmed", "research": "cancelled"}
    assert uids[0] in stage.dest.sent and uids[0] not in stage.other.sent
    assert uids[1] in stage.other.sent  # the other instance went to both
    assert stage.q(
        "SELECT cancel_reason FROM forward_item WHERE sop_instance_uid = %s"
        " AND destination = 'archive'",
        uids[0],
    ) == [("",)]  # renewed: no longer cancelled


def test_a_resend_of_a_released_instance_is_still_a_duplicate(stage: Stage) -> None:
    paths = stage.files[:1]
    uids = stage.receive(1)
    stage.drain()
    # Archived already: the identical copy is a plain duplicate nobody needs.
    assert _resend(stage, paths[0]) == (RecordOutcome.DUPLICATE_SAME, False)
    assert stage.states(uids) == ["released"]
