"""``radiogate worker``: procrastinate workers running the pipeline jobs of one node.

Any number of workers, on any number of machines, may serve a node: jobs are taken from the
node's queue, work rows are claimed with ``SKIP LOCKED``. Each job drains one kind of work
(:mod:`dicom_nodes.state.jobs` names them) and stops when none is ready; the housekeeping
thread (:mod:`dicom_nodes.pipeline.housekeeping`) completes quiet studies and re-defers jobs for
waiting work, so nothing depends on a job that died with its worker.
"""

from __future__ import annotations

import procrastinate

from dicom_nodes.alerts.outbox import AlertContext, deliver_round
from dicom_nodes.pacs.arrivals import ARRIVAL_TASK, run_arrival
from dicom_nodes.pipeline.analyse import analyse_round
from dicom_nodes.pipeline.confirm import confirm_round
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.forward import forward_round
from dicom_nodes.pipeline.pools import Jobs
from dicom_nodes.pipeline.route import RoutingJob, fill, route_again_if_waiting, route_round
from dicom_nodes.pipeline.triage import settle_decided, triage_round
from dicom_nodes.state.jobs import (
    ALERT_TASK,
    ANALYSE_TASK,
    CONFIRM_TASK,
    FORWARD_TASK,
    ROUTE_TASK,
    TRIAGE_TASK,
    defer_analyse,
)

__all__ = ["build_app"]


def build_app(
    dsn: str, ctx: PipelineContext, alerts: AlertContext | None = None, jobs: Jobs = Jobs.ALL
) -> procrastinate.App:
    """The procrastinate app with the pipeline's tasks bound to *ctx* (and *alerts*). A worker
    taking the pipeline's *jobs* only moves an analysis job that an earlier version left on
    the pipeline's queue to the analysis queue instead of running it."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=ROUTE_TASK)
    def route_received(node: str) -> int:
        total = 0
        job = RoutingJob()
        while n := route_round(ctx, job=job):
            total += n
            fill(ctx, n, job.newest)  # fewer, fuller rounds while a modality sends
        route_again_if_waiting(ctx, skip=job.waiting)
        return total

    @app.task(name=FORWARD_TASK)
    def forward_pending(node: str, destination: str) -> int:
        total = 0
        while n := forward_round(ctx, destination):
            total += n
        return total

    @app.task(name=CONFIRM_TASK)
    def confirm_sent(node: str, destination: str) -> int:
        total = 0
        while n := confirm_round(ctx, destination):
            total += n
        return total

    @app.task(name=TRIAGE_TASK)
    def triage_series(node: str) -> int:
        total = 0
        written: list[str] = []
        decided: list[str] = []
        while n := triage_round(ctx, written=written, decided=decided):
            total += n
            if written:
                # The SR and KOS just written are routed (de-identified) and sent here and now,
                # not after the routing and forwarding jobs' current batches; the study's other
                # instances are theirs (they take a critical study's first).
                route_round(ctx, only=written)
                for destination in ctx.destinations:
                    forward_round(ctx, destination, only=written)
                written.clear()
            settle_decided(ctx, decided)
            decided.clear()
        return total

    @app.task(name=ANALYSE_TASK)
    def analyse_series(node: str) -> int:
        if jobs is Jobs.PIPELINE:
            with ctx.pool.connection() as conn, conn.transaction():
                defer_analyse(conn, node)
            return 0
        total = 0
        while n := analyse_round(ctx):
            total += n
        return total

    @app.task(name=ALERT_TASK)
    def deliver_alerts(node: str) -> int:
        total = 0
        while alerts is not None and (n := deliver_round(alerts)):
            total += n
        return total

    # The archive may be down: retried with doubling waits (2 s ... ~2 h; about 4 h in all).
    @app.task(
        name=ARRIVAL_TASK, retry=procrastinate.RetryStrategy(max_attempts=12, exponential_wait=2)
    )
    def archive_arrival(node: str, study: str, steps: list[str], route: str = "") -> str:
        return run_arrival(ctx, study, steps, route)

    _ = (archive_arrival, route_received, forward_pending, confirm_sent, triage_series,
         analyse_series, deliver_alerts)  # fmt: skip
    return app
