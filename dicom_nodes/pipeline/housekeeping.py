"""Stage 6, housekeeping: completing quiet studies, and making sure waiting work has a job.

Jobs are deferred in the transaction that makes work ready, but a job can die with its worker.
:func:`kick` (every few seconds, from the worker's :class:`Housekeeper` thread) marks jobs of
dead workers failed, defers a job for every kind of waiting work, settles instances a dead
worker left unsettled, sweeps abandoned temporary files of de-identification and purges what
outlived its retention, and sweeps one fan-out directory of the spool for files no row names
(:func:`sweep_orphans`: a process killed between writing a file and committing its row leaves
one). :func:`stalled_destinations` is the worker's ``/health`` check of
progress.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import psycopg

from dicom_nodes.alerts.outbox import AlertContext, escalate_due
from dicom_nodes.db.ingest import named_elsewhere, orphaned_paths
from dicom_nodes.pipeline import release
from dicom_nodes.pipeline.claims import next_due
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.triage import complete_series
from dicom_nodes.spool.store import FANOUT
from dicom_nodes.state import STUDY, Change, ForwardState, StudyEvent
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import (
    STALLED_AFTER,
    defer_alerts,
    defer_analyse,
    defer_confirm,
    defer_forward,
    defer_route,
    defer_triage,
    fail_stalled_jobs,
)
from dicom_nodes.state.model import ANALYSIS, AnalysisEvent

__all__ = [
    "Housekeeper",
    "complete_quiet_studies",
    "kick",
    "stalled_destinations",
    "sweep_orphans",
]

LOGGER = logging.getLogger(__name__)

RESULTS_TEMP_STALE = 600.0
"""Seconds after which a temporary file of the triage results writer (``<spool>/.results``)
counts as abandoned: writing one takes milliseconds."""


def complete_quiet_studies(ctx: PipelineContext) -> list[str]:
    """``study-quiet`` for studies without a new instance for ``pipeline.quiet_period``."""
    with ctx.pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            """SELECT study_instance_uid, increments FROM study
               WHERE state = 'receiving'
                 AND last_received_at < clock_timestamp() - make_interval(secs => %s)
               ORDER BY study_instance_uid FOR UPDATE SKIP LOCKED""",
            (ctx.settings.quiet_period + repo.study_touch_interval(ctx.settings.quiet_period),),
        ).fetchall()
        uids = [str(r[0]) for r in rows]
        repo.apply(
            conn, ctx.audit, STUDY, StudyEvent.STUDY_QUIET,
            [Change((uid,), {"reason": "quiet-period"}) for uid in uids],
            values={"by": ["quiet-period"] * len(uids)},
        )  # fmt: skip
    for uid, increment in rows:
        LOGGER.info("study %s complete (increment %d)", uid, increment)
    return uids


def sweep_orphans(ctx: PipelineContext, fanout: int) -> int:
    """Delete the files of the spool's fan-out directory *fanout* that no row names (written
    by a process killed before its row committed; :meth:`Spool.sweep_orphans`)."""
    spool = ctx.spool
    if spool is None:
        return 0
    with ctx.pool.connection() as conn:
        elsewhere: list[bool] = []

        def orphaned(paths: list[str]) -> list[str]:
            found = orphaned_paths(conn, paths)
            if found and not elsewhere:  # asked once per directory, only when it would delete
                elsewhere.append(named_elsewhere(conn, ctx.node, str(spool.root)))
            if found and elsewhere[0]:
                ctx.warn_once(
                    f"rows of node {ctx.node} name spool files outside {spool.root}: files "
                    "no row names are not swept while they do"
                )
                return []
            return found

        try:
            return spool.sweep_orphans(fanout, orphaned)
        except OSError as exc:  # the spool's trouble is the receiver's to report
            LOGGER.warning("spool directory %02x not swept: %s", fanout, exc.strerror)
            return 0


def kick(ctx: PipelineContext, *, orphans_in: int | None = None) -> dict[str, int]:
    """Self-healing: make sure every kind of waiting work has a job (after crashes/restarts);
    with *orphans_in*, also sweep that fan-out directory of the spool (:func:`sweep_orphans`)."""
    done: dict[str, int] = defaultdict(int)
    if ctx.deid is not None and (swept := ctx.deid.sweep()):
        done["deid-temp-swept"] += swept
    with ctx.pool.connection() as conn, conn.transaction():
        stalled = fail_stalled_jobs(conn, ctx.node, STALLED_AFTER)
        if stalled:
            LOGGER.warning(
                "jobs %s of a dead worker marked failed; their work is re-queued", stalled
            )
            done["stalled"] += len(stalled)
    with ctx.pool.connection() as conn, conn.transaction():
        received = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM ingest_instance WHERE node = %s AND state = 'received')",
            (ctx.node,),
        ).fetchone()
        if received and received[0] and defer_route(conn, ctx.node):
            done["route"] += 1
        for destination in ctx.destinations:
            if (due := next_due(conn, ctx.node, destination, ForwardState.PENDING)) is not None:
                done["forward"] += defer_forward(conn, ctx.node, destination, due[1], due[0])
            if (due := next_due(conn, ctx.node, destination, ForwardState.SENT)) is not None:
                done["confirm"] += defer_confirm(conn, ctx.node, destination, due[0])
    if ctx.triage is not None:
        with ctx.pool.connection() as conn, conn.transaction():
            pending = conn.execute(
                """SELECT EXISTS (SELECT 1 FROM series_triage
                                  WHERE node = %s AND state = 'pending')""",
                (ctx.node,),
            ).fetchone()
            if pending and pending[0] and defer_triage(conn, ctx.node):
                done["triage"] += 1
    with ctx.pool.connection() as conn, conn.transaction():
        due = conn.execute(
            """SELECT EXISTS (SELECT 1 FROM alert_delivery d JOIN alert a USING (alert_id)
                              WHERE d.state = 'pending' AND a.state = 'open' AND a.node = %s)""",
            (ctx.node,),
        ).fetchone()
        if due and due[0] and defer_alerts(conn, ctx.node):
            done["alerts"] += 1
    if ctx.analysis is not None:
        done["analysis"] += _kick_analyses(ctx)
    with ctx.pool.connection() as conn, conn.transaction():
        # Completion signals older than any series could wait for are not needed any more.
        conn.execute(
            """DELETE FROM association_end WHERE node = %s
               AND ended_at < clock_timestamp() - interval '7 days'""",
            (ctx.node,),
        )
        conn.execute(
            """DELETE FROM mpps WHERE node = %s
               AND updated_at < clock_timestamp() - interval '30 days'""",
            (ctx.node,),
        )
    for event, count in release.settle_leftovers(ctx).items():
        done[f"settled-{event}"] += count
    if purged := release.purge_expired(ctx):
        done["purged"] += purged
    if ctx.spool is not None and (temp := ctx.spool.sweep_temp(".results", RESULTS_TEMP_STALE)):
        done["results-temp-swept"] += temp
    if orphans_in is not None and (orphans := sweep_orphans(ctx, orphans_in)):
        done["orphans-removed"] += orphans
    return dict(done)


def _kick_analyses(ctx: PipelineContext) -> int:
    """Analyses whose worker died (running far past the time limit) wait again; a job is
    deferred when one is ready."""
    assert ctx.analysis is not None
    with ctx.pool.connection() as conn, conn.transaction():
        lost = [
            str(r[0])
            for r in conn.execute(
                """SELECT analysis_id FROM series_analysis
                   WHERE node = %s AND state = 'running'
                     AND started_at < clock_timestamp() - make_interval(secs => %s)
                   ORDER BY analysis_id FOR UPDATE SKIP LOCKED""",
                (ctx.node, 2 * ctx.analysis.time_limit + 60),
            ).fetchall()
        ]
        repo.apply(
            conn, ctx.audit, ANALYSIS, AnalysisEvent.LOST,
            [Change((a,), {"reason": "worker-lost"}) for a in lost],
            values={"error": ["worker-lost"] * len(lost)},
        )  # fmt: skip
        ready = conn.execute(
            """SELECT EXISTS (SELECT 1 FROM series_analysis a JOIN series s
                                  USING (series_instance_uid)
                              WHERE a.node = %s AND a.state = 'waiting'
                                AND s.state = 'complete')""",
            (ctx.node,),
        ).fetchone()
        return int(bool(ready and ready[0]) and defer_analyse(conn, ctx.node))


def stalled_destinations(conn: psycopg.Connection[Any], ctx: PipelineContext) -> list[str]:
    """Destinations whose queue is not moving: an item overdue by ``pipeline.stall_after``
    (nobody works the queue), or items waiting that long without any confirmation by that
    destination (it is down, or refuses everything)."""
    after = ctx.settings.stall_after
    rows = conn.execute(
        """WITH waiting AS (
               SELECT f.destination, min(f.next_attempt_at) AS due, min(f.created_at) AS since
               FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.node = %(node)s AND f.state IN ('pending', 'sent')
               GROUP BY f.destination)
           SELECT w.destination FROM waiting w
           WHERE w.due < clock_timestamp() - make_interval(secs => %(after)s)
              OR (w.since < clock_timestamp() - make_interval(secs => %(after)s)
                  AND NOT EXISTS (
                      SELECT 1 FROM forward_item g
                      WHERE g.destination = w.destination
                        AND g.confirmed_at
                            > clock_timestamp() - make_interval(secs => %(after)s)))""",
        {"node": ctx.node, "after": after},
    ).fetchall()
    return sorted(str(r[0]) for r in rows if r[0] in ctx.destinations)


class Housekeeper(threading.Thread):
    """Completes series four times a second and quiet studies every second; every few seconds
    makes sure waiting work has a job."""

    def __init__(
        self,
        ctx: PipelineContext,
        *,
        alerts: AlertContext | None = None,
        kick_every: float = 5.0,
        on_complete: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name="radiogate-housekeeper", daemon=True)
        self.ctx = ctx
        self.alerts = alerts
        self.kick_every = kick_every
        self.on_complete = on_complete
        self.stop_event = threading.Event()
        self._fanout = secrets.randbelow(FANOUT)  # several workers of a node sweep apart

    def run(self) -> None:
        last_kick = last_second = 0.0
        # Series are looked at four times a second: a released association completes its
        # series (and triage starts) within a quarter of a second of its grace.
        while not self.stop_event.wait(0.25):
            try:
                complete_series(self.ctx)
                if time.monotonic() - last_second < 1.0:
                    continue
                last_second = time.monotonic()
                for uid in complete_quiet_studies(self.ctx):
                    if self.on_complete is not None:
                        self.on_complete(uid)
                if self.alerts is not None:
                    escalate_due(self.alerts)
                if time.monotonic() - last_kick > self.kick_every:
                    # One fan-out directory per kick: the whole spool in FANOUT kicks (the
                    # next one even if this kick fails).
                    fanout, self._fanout = self._fanout, (self._fanout + 1) % FANOUT
                    kick(self.ctx, orphans_in=fanout)
                    last_kick = time.monotonic()
            except Exception:
                LOGGER.exception("housekeeping failed; retrying")
