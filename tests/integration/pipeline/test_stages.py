"""The pipeline's stages called directly against a real PostgreSQL, with a destination that
fails on demand: every path ends in the state the transition table says, with its audit event,
and no item ever blocks the others."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from config.routes import MatchSettings, PipelineSettings, RouteSettings
from dicom_nodes.audit_events import pipeline_sink
from dicom_nodes.pipeline import admin, housekeeping, release
from dicom_nodes.pipeline.claims import claim_forwards
from dicom_nodes.pipeline.confirm import confirm_round
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.forward import forward_round
from dicom_nodes.pipeline.route import RoutingJob, count_received, fill, route_round
from dicom_nodes.pipeline.runner import health
from dicom_nodes.pipeline.status import status
from dicom_nodes.spool.store import Spool
from tests.support.data import extract_ct
from tests.support.stages import FlakyDestination, Stage

pytestmark = pytest.mark.integration

SINK = pipeline_sink("node1", "RADIOGATE")


@pytest.fixture
def stage(fresh_dsn: str, tmp_path: Path) -> Iterator[Stage]:
    files = extract_ct(tmp_path / "ct")
    spool = Spool(tmp_path / "spool", fsync=False)
    spool.prepare()
    dest, other = FlakyDestination("archive"), FlakyDestination("backup")
    pool = ConnectionPool(fresh_dsn, min_size=1, max_size=4, open=True)
    ctx = PipelineContext(
        node="node1",
        pool=pool,
        routes=[
            RouteSettings(
                name="both",
                match=MatchSettings(calling_ae=["BOTH"]),
                steps=["forward:archive", "forward:backup"],
            ),
            RouteSettings(
                name="ct", match=MatchSettings(modality=["CT"]), steps=["forward:archive"]
            ),
        ],
        lane_rules=[],
        destinations={"archive": dest, "backup": other},
        settings=PipelineSettings(
            batch_size=4, retry_initial=60.0, retry_max=600.0, stall_after=30.0
        ),
        audit=SINK,
    )
    yield Stage(ctx, spool, files, dest, other)
    pool.close()


def test_happy_path_releases_and_deletes_the_spool_copy(stage: Stage) -> None:
    uids = stage.receive(5)
    paths = [Path(p) for (p,) in stage.q("SELECT spool_path FROM ingest_instance")]
    stage.drain()
    assert stage.states(uids) == ["released"] * 5
    assert not [p for p in paths if p.exists()]
    for uid in uids:
        assert stage.steps(uid) == ["received", "routed", "forwarded", "confirmed", "released"]


def test_routine_batches_are_confirmed_several_per_query(stage: Stage) -> None:
    """batch_size 4, confirm_batches 4: three routine rounds, one confirmation for all of
    them (asked with the last, as nothing waits after it); each instance still has its
    events in order."""
    uids = stage.receive(12)
    stage.drain()
    assert stage.dest.asked == [12]
    assert stage.states(uids) == ["released"] * 12
    for uid in uids:
        assert stage.steps(uid) == ["received", "routed", "forwarded", "confirmed", "released"]
    # More than confirm_batches rounds' worth: one query per 16 instances.
    stage.dest.asked.clear()
    more = stage.receive(20)
    stage.drain()
    assert stage.dest.asked == [16, 4]
    assert stage.states(more) == ["released"] * 20


def test_critical_batches_are_confirmed_at_once(stage: Stage) -> None:
    stage.ctx.routes = [
        RouteSettings(name="stat", match=MatchSettings(modality=["CT"]),
                      steps=["forward:archive"], lane="critical"),
    ]  # fmt: skip
    uids = stage.receive(8)
    stage.drain()
    assert stage.dest.asked == [4, 4]
    assert stage.states(uids) == ["released"] * 8


def test_unroutable_instances_never_block_routing(stage: Stage) -> None:
    """Before: an instance matching no route was skipped but counted, and the routing job
    looped on it forever; with batch_size of them nothing newer was routed."""
    uids = stage.receive(6)
    stage.q_exec("UPDATE ingest_instance SET modality = 'MR' WHERE sop_instance_uid = ANY(%s)",
                 uids[:5])  # fmt: skip
    rounds = 0
    while route_round(stage.ctx):
        rounds += 1
        assert rounds < 10, "routing does not terminate"
    assert stage.states(uids) == ["unroutable"] * 5 + ["routed"]
    assert stage.steps(uids[0]) == ["received", "unroutable"]
    assert status_of(stage)["unroutable"] == 5
    # Fixed routes: an admin re-routes them, and they flow.
    stage.ctx.routes = [RouteSettings(name="any", steps=["forward:archive"])]
    with psycopg.connect(stage.conninfo) as conn:
        out = admin.reroute(conn, SINK, [], "alice")
    assert out.changed == {"rerouted": 5}
    stage.drain()
    assert stage.states(uids) == ["released"] * 6
    assert stage.steps(uids[0])[:4] == ["received", "unroutable", "rerouted", "routed"]


def test_missing_spool_file_is_a_terminal_state(stage: Stage) -> None:
    uids = stage.receive(2)
    (path,) = stage.q("SELECT spool_path FROM ingest_instance WHERE sop_instance_uid = %s",
                      uids[0])[0]  # fmt: skip
    Path(path).unlink()
    stage.drain()
    assert stage.states(uids) == ["missing", "released"]
    assert stage.steps(uids[0]) == ["received", "file-missing"]


def test_a_permanent_failure_is_isolated_and_held(stage: Stage) -> None:
    uids = stage.receive(4)
    stage.dest.permanent.add(uids[1])
    stage.drain()
    assert stage.states(uids) == ["released", "held", "released", "released"]
    assert stage.items(uids[1]) == {"archive": "dead"}
    (reason,) = stage.q("SELECT hold_reason FROM forward_item WHERE sop_instance_uid = %s",
                        uids[1])[0]  # fmt: skip
    assert reason == "status-a900"
    assert stage.steps(uids[1])[-2:] == ["forward-abandoned", "held"]
    s = status_of(stage)
    assert s["held_for_a_person"] == 1 and s["oldest_unconfirmed_seconds"] == 0.0
    # The admin retries once the cause is fixed: it flows and the instance resumes.
    stage.dest.permanent.clear()
    with psycopg.connect(stage.conninfo) as conn:
        assert admin.retry(conn, SINK, [], None, "bob").changed["retried"] == 1
    stage.drain()
    assert stage.states(uids) == ["released"] * 4
    assert stage.steps(uids[1])[-5:] == ["retried", "resumed", "forwarded", "confirmed",
                                         "released"]  # fmt: skip


def test_retryable_failures_back_off_per_item(stage: Stage) -> None:
    uids = stage.receive(4)
    stage.dest.retryable.add(uids[0])
    stage.drain()
    assert stage.states(uids) == ["routed", "released", "released", "released"]
    ((state, attempts, due),) = stage.q(
        "SELECT state, attempts, next_attempt_at > clock_timestamp() FROM forward_item"
        " WHERE sop_instance_uid = %s", uids[0])  # fmt: skip
    assert (state, attempts, due) == ("pending", 1, True)
    assert forward_round(stage.ctx, "archive") == 0  # not due: nothing is claimed
    stage.dest.retryable.clear()
    stage.make_due()
    stage.drain()
    assert stage.states(uids) == ["released"] * 4
    assert stage.steps(uids[0]).count("forward-retry") == 1


def test_an_item_without_its_copy_is_isolated_not_a_jam(stage: Stage) -> None:
    """Before: a pending item whose de-identified copy was not recorded made every forwarding
    round raise, and nothing else reached the destination."""
    uids = stage.receive(3)
    while route_round(stage.ctx):
        pass
    stage.q_exec("UPDATE forward_item SET profile = 'basic' WHERE sop_instance_uid = %s", uids[0])
    stage.drain()
    assert stage.states(uids) == ["held", "released", "released"]
    assert stage.q("SELECT state, hold_reason FROM forward_item WHERE sop_instance_uid = %s",
                   uids[0]) == [("dead", "deid-copy-missing")]  # fmt: skip
    # Retrying it returns it to quarantine (its copy must be made), never to sending.
    with psycopg.connect(stage.conninfo) as conn:
        out = admin.retry(conn, SINK, [uids[0]], None, "bob")
    assert out.changed == {"retried": 0, "returned-to-quarantine": 1}
    assert stage.items(uids[0]) == {"archive": "quarantined"}
    assert stage.states(uids[:1]) == ["held"]


def test_cancel_and_retry_of_a_quarantined_item(stage: Stage) -> None:
    uids = stage.receive(1)
    while route_round(stage.ctx):
        pass
    stage.q_exec("UPDATE forward_item SET state = 'quarantined', profile = 'basic',"
                 " hold_reason = 'burned-in-annotation'")  # fmt: skip
    with psycopg.connect(stage.conninfo) as conn:
        release.settle(conn, SINK, uids)
        conn.commit()
        assert stage.states(uids) == ["held"]
        assert admin.cancel(conn, SINK, [], None, "bob").changed == {"cancelled": 0}
        assert admin.cancel(conn, SINK, uids, None, "bob").changed == {"cancelled": 1}
        assert stage.states(uids) == ["cancelled"]
        out = admin.retry(conn, SINK, uids, None, "bob")
    assert out.changed == {"retried": 0, "returned-to-quarantine": 1}
    assert stage.items(uids[0]) == {"archive": "quarantined"}
    assert stage.states(uids) == ["held"]
    assert stage.steps(uids[0])[-4:] == ["cancelled", "cancelled", "quarantined", "held"]


def test_one_destination_cancelled_the_other_confirmed(stage: Stage) -> None:
    stage.ctx.routes = [RouteSettings(name="both", steps=["forward:archive", "forward:backup"])]
    uids = stage.receive(2)
    stage.other.retryable.update(uids)
    stage.drain()
    assert stage.states(uids) == ["routed", "routed"]
    with psycopg.connect(stage.conninfo) as conn:
        out = admin.cancel(conn, SINK, [], "backup", "carol", waiting=True)
    assert out.changed == {"cancelled": 2}
    assert stage.states(uids) == ["cancelled", "cancelled"]
    assert all(Path(p).exists() for (p,) in stage.q("SELECT spool_path FROM ingest_instance"))


def test_confirmation_failure_and_unavailable_confirmation(stage: Stage) -> None:
    uids = stage.receive(2)
    stage.dest.unconfirmed.add(uids[0])
    stage.drain()
    assert stage.items(uids[0]) == {"archive": "sent"}
    assert stage.states(uids) == ["routed", "released"]
    # Asked again while the destination cannot answer: no state changes, asked later.
    stage.make_due()
    stage.dest.confirm_down = True
    assert confirm_round(stage.ctx, "archive") == 1
    assert stage.items(uids[0]) == {"archive": "sent"}
    assert confirm_round(stage.ctx, "archive") == 0  # deferred
    # Asked again and still not held: sent again, then confirmed.
    stage.make_due()
    stage.dest.confirm_down = False
    stage.dest.held.discard(uids[0])
    assert confirm_round(stage.ctx, "archive") == 1
    assert stage.items(uids[0]) == {"archive": "pending"}
    stage.dest.unconfirmed.clear()
    stage.make_due()
    stage.drain()
    assert stage.states(uids) == ["released", "released"]
    assert stage.steps(uids[0]).count("not-confirmed") == 1
    assert stage.steps(uids[0]).count("forwarded") == 2


def test_stalled_worker_jobs_are_failed_and_work_redeferred(stage: Stage) -> None:
    stage.receive(2)
    stage.q_exec("DELETE FROM procrastinate_jobs")
    stage.q_exec(
        """WITH w AS (INSERT INTO procrastinate_workers (last_heartbeat)
                      VALUES (now() - interval '1 hour') RETURNING id)
           INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status, worker_id)
           SELECT 'node:node1', 'radiogate.route_received', 'route:node1', '{}', 'doing', id
           FROM w"""
    )
    done = housekeeping.kick(stage.ctx)
    assert done["stalled"] == 1 and done["route"] == 1
    assert stage.q("SELECT status FROM procrastinate_jobs ORDER BY id") == [("failed",), ("todo",)]


def test_health_sees_a_stalled_destination(stage: Stage) -> None:
    uids = stage.receive(2)
    while route_round(stage.ctx):
        pass
    with stage.ctx.pool.connection() as conn:
        assert housekeeping.stalled_destinations(conn, stage.ctx) == []
    # An item overdue for longer than stall_after: nobody works the queue.
    stage.q_exec("UPDATE forward_item SET next_attempt_at = now() - interval '1 minute'")
    with stage.ctx.pool.connection() as conn:
        assert housekeeping.stalled_destinations(conn, stage.ctx) == ["archive"]
    # Items waiting that long with no confirmation from the destination (it is down).
    stage.q_exec("UPDATE forward_item SET next_attempt_at = now() + interval '1 minute',"
                 " created_at = now() - interval '1 minute'")  # fmt: skip
    with stage.ctx.pool.connection() as conn:
        assert housekeeping.stalled_destinations(conn, stage.ctx) == ["archive"]
    # The worker's /health says so (503: a check is false).
    checks = health(stage.ctx)
    assert checks["database"] is True and checks["destination:archive"] is False, checks
    stage.make_due()
    stage.drain()
    assert stage.states(uids) == ["released"] * 2
    with stage.ctx.pool.connection() as conn:
        assert housekeeping.stalled_destinations(conn, stage.ctx) == []
    assert all(health(stage.ctx).values())


def test_retention_purges_what_waits_for_nobody(stage: Stage) -> None:
    uids = stage.receive(2)
    stage.dest.permanent.add(uids[0])
    stage.drain()
    assert stage.states(uids) == ["held", "released"]
    (path,) = stage.q("SELECT spool_path FROM ingest_instance WHERE sop_instance_uid = %s",
                      uids[0])[0]  # fmt: skip
    assert Path(path).exists()
    assert release.purge_expired(stage.ctx) == 0  # not old enough
    stage.q_exec("UPDATE ingest_instance SET state_changed_at = now() - interval '40 days'")
    assert release.purge_expired(stage.ctx) == 1
    assert stage.states(uids) == ["purged", "released"]
    assert stage.items(uids[0]) == {"archive": "cancelled"}
    assert not Path(path).exists()
    assert stage.steps(uids[0])[-2:] == ["cancelled", "purged"]


def test_completion_by_quiet_period_and_late_arrival(stage: Stage) -> None:
    stage.ctx.settings = PipelineSettings(quiet_period=0.0)
    stage.receive(1)
    (study,) = stage.q("SELECT study_instance_uid FROM study")[0]
    assert housekeeping.complete_quiet_studies(stage.ctx) == [study]
    assert stage.q("SELECT state, completed_by FROM study") == [("complete", "quiet-period")]
    stage.receive(1)  # a late instance re-opens it
    assert stage.q("SELECT state, increments FROM study") == [("receiving", 1)]
    steps = [s for (s,) in stage.q("SELECT step FROM audit_pending ORDER BY id")]
    assert steps.count("study-completed") == 1 and steps.count("study-reopened") == 1


def status_of(stage: Stage) -> dict[str, Any]:
    with psycopg.connect(stage.conninfo) as conn:
        result: dict[str, Any] = json.loads(json.dumps(status(conn, "node1"), default=str))
    return result


def test_waiting_longer_than_the_ceiling_beats_a_more_urgent_lane(stage: Stage) -> None:
    """A stream of critical work cannot starve the routine backlog (pipeline.wait_ceiling)."""
    routine = stage.receive(2)
    critical = stage.receive(2)
    while route_round(stage.ctx):
        pass
    stage.q_exec("UPDATE forward_item SET lane_rank = 0 WHERE sop_instance_uid = ANY(%s)",
                 critical)  # fmt: skip
    with stage.ctx.pool.connection() as conn:
        first = claim_forwards(conn, "node1", "archive", 10, ceiling=600.0)
    assert {c.sop_instance_uid for c in first} == set(critical)  # fresh: by lane
    stage.q_exec("UPDATE forward_item SET created_at = now() - interval '11 minutes'"
                 " WHERE sop_instance_uid = ANY(%s)", routine)  # fmt: skip
    with stage.ctx.pool.connection() as conn:
        aged = claim_forwards(conn, "node1", "archive", 10, ceiling=600.0)
        strict = claim_forwards(conn, "node1", "archive", 10, ceiling=0.0)
    assert {c.sop_instance_uid for c in aged} == set(routine)
    assert {c.sop_instance_uid for c in strict} == set(critical)


def test_a_round_fills_while_instances_arrive_and_not_after(stage: Stage) -> None:
    """The routing job's fill waits for a batch (batch_size 4) while the count of received
    instances grows, and goes on at once when it stops growing."""
    ctx = stage.ctx
    stage.receive(1)
    job = RoutingJob()
    assert route_round(ctx, job=job) == 1
    newest = job.newest
    assert newest is not None
    arrivals = iter([2, 3])

    def arrive(_seconds: float) -> None:  # a modality still sending: one more per pause
        for _ in range(next(arrivals, 0)):
            stage.receive(1)

    with ctx.pool.connection() as conn:
        assert count_received(conn, ctx.node, 10) == 0
    now = lambda: newest  # noqa: E731  (just after the newest arrived)
    fill(ctx, 1, newest, now=now, sleep=arrive)
    with ctx.pool.connection() as conn:
        assert count_received(conn, ctx.node, 10) == 5  # 2 + 3 arrived before it went on
        assert count_received(conn, ctx.node, 4) == 4  # counted up to the limit
    # The stream paused: one look, no growth, no further wait.
    slept: list[float] = []
    ctx.settings = PipelineSettings(batch_size=50, fill_wait=0.25)
    fill(ctx, 5, newest, now=now, sleep=slept.append)
    assert len(slept) == 2  # the first look counts 5, the second sees no growth
