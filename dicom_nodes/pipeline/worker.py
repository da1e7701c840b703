"""``radiogate worker``: procrastinate workers running the pipeline jobs of one node.

Any number of workers, on any number of machines, may serve a node: jobs are taken from the
node's queue, work rows are claimed with ``SKIP LOCKED``. A housekeeping thread completes quiet
studies and re-defers jobs for waiting work (after a crash or a stalled job), so nothing
depends on a job that died with its worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import procrastinate
from psycopg_pool import ConnectionPool

from config.routes import PipelineSettings
from dicom_nodes.forward.model import Destination
from dicom_nodes.pipeline import store
from dicom_nodes.pipeline.tasks import (
    FORWARD_TASK,
    ROUTE_TASK,
    AuditHook,
    PipelineContext,
    forward_round,
    kick,
    route_round,
)

__all__ = ["Housekeeper", "build_app"]

LOGGER = logging.getLogger(__name__)


def build_app(dsn: str, ctx: PipelineContext) -> procrastinate.App:
    """The procrastinate app with the pipeline's tasks bound to *ctx*."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=ROUTE_TASK)
    def route_received(node: str) -> int:
        total = 0
        while n := route_round(ctx):
            total += n
        return total

    @app.task(name=FORWARD_TASK)
    def forward_pending(node: str, destination: str) -> int:
        total = 0
        while n := forward_round(ctx, destination):
            total += n
        return total

    _ = (route_received, forward_pending)
    return app


class Housekeeper(threading.Thread):
    """Completes quiet studies every second; every few seconds makes sure waiting work has a job."""

    def __init__(
        self,
        ctx: PipelineContext,
        settings: PipelineSettings,
        *,
        kick_every: float = 5.0,
        on_complete: Callable[[str, int], None] | None = None,
    ) -> None:
        super().__init__(name="radiogate-housekeeper", daemon=True)
        self.ctx = ctx
        self.settings = settings
        self.kick_every = kick_every
        self.on_complete = on_complete
        self.stop_event = threading.Event()

    def run(self) -> None:
        last_kick = 0.0
        while not self.stop_event.wait(1.0):
            try:
                self._complete_studies()
                if time.monotonic() - last_kick > self.kick_every:
                    kick(self.ctx)
                    last_kick = time.monotonic()
            except Exception:
                LOGGER.exception("housekeeping failed; retrying")

    def _complete_studies(self) -> None:
        with self.ctx.pool.connection() as conn, conn.transaction():
            for uid, increment in store.complete_quiet_studies(conn, self.settings.quiet_period):
                self.ctx.audit(
                    conn,
                    [
                        (
                            "study-complete",
                            {
                                "study_instance_uid": uid,
                                "by": "quiet-period",
                                "increment": increment,
                            },
                        )
                    ],
                )
                LOGGER.info("study %s complete (increment %d)", uid, increment)


def make_context(
    node: str,
    *,
    pool: ConnectionPool,
    routes: Any,
    lane_rules: Any,
    destinations: Mapping[str, Destination],
    settings: PipelineSettings,
    audit: AuditHook | None = None,
) -> PipelineContext:
    ctx = PipelineContext(
        node=node,
        pool=pool,
        routes=list(routes),
        lane_rules=list(lane_rules),
        destinations=destinations,
        settings=settings,
    )
    if audit is not None:
        ctx.audit = audit
    return ctx
