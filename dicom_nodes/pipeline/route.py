"""Stage 1, route: decide what happens to each received instance, and record it.

:func:`plan_route` is pure: from the facts about an instance and the route that matched, it
gives the lane, the de-identified copies to make and the destinations with the version each
gets. :func:`route_round` claims a batch of ``received`` instances and, in one transaction,
moves each to

* ``routed`` with its forward items (``pending``, or ``quarantined`` when de-identification
  held the copy back) — the copies are made by :mod:`dicom_nodes.pipeline.deidentify` first;
* ``unroutable`` when no route matches or the header cannot be read for routing (kept in the
  spool; ``radiogate route retry`` re-routes it once the routes are fixed);
* ``missing`` when its spool file is gone — unless it may never have been acknowledged: the
  receiver records an instance while its file is being synced (:mod:`dicom_nodes.scp.handlers`),
  so after the machine went down a row can be left whose file did not survive, and its sender,
  never answered, will send it again. Such a row is the last receipt of an association that
  never ended (no ``association_end``, no later receipt over it); it stays ``received``,
  waiting for the re-send to put the file back (:func:`unanswered`), and is routed by the
  next round that finds the file; after ``pipeline.resend_wait`` without it, it is
  ``missing`` (reason ``never-resent``). Once its association has ended, a file-less row is
  ``missing``.

An instance routed again after a re-send over its archived copy (``scp.different_bytes_archived``)
has its ``confirmed`` forward items renewed instead of created
(:func:`~dicom_nodes.state.repository.renew_forward_items`).

Facts come from the row the receiver recorded (AE titles, modality, SOP class); the header
is read only when a route or lane rule looks at other attributes. Every claimed instance
leaves ``received`` or joins the job's set of rows waiting for a re-send (not claimed again by
that job), so no instance can keep a routing job busy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from pydicom.errors import InvalidDicomError

from config.routes import LaneRule, RouteSettings
from dicom_nodes.pipeline import deidentify, release
from dicom_nodes.pipeline import triage as triage_stage
from dicom_nodes.pipeline.analyse import PIPELINES
from dicom_nodes.pipeline.claims import ReceivedInstance, claim_received
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.routes import (
    Facts,
    StepKind,
    facts_from_file,
    lane_for,
    parse_step,
    select_route,
    tags_needed,
)
from dicom_nodes.state import INSTANCE, STUDY, Change, InstanceEvent, Lane, StudyEvent
from dicom_nodes.state import repository as repo
from dicom_nodes.state.jobs import defer_forward, defer_route

__all__ = [
    "ARRIVING",
    "FILL_STEP",
    "Delivery",
    "RoutePlan",
    "RoutingJob",
    "count_received",
    "facts_for",
    "fill",
    "plan_route",
    "route_round",
]

LOGGER = logging.getLogger(__name__)

ARRIVING = 0.25
"""Seconds since a round's newest instance arrived within which more are taken to be on
their way (:func:`fill`)."""
FILL_STEP = 0.02
"""Seconds between two counts while a round fills: a count that did not grow over this long
means the stream paused (:func:`fill`)."""


@dataclass(frozen=True)
class Delivery:
    """One destination of a route: which version it gets ('' = as received)."""

    destination: str
    profile: str = ""


@dataclass(frozen=True)
class RoutePlan:
    """What a route does with one instance."""

    route: str
    lane: Lane
    profiles: tuple[str, ...]
    """De-identification profiles to apply, in step order (each once)."""
    deliveries: tuple[Delivery, ...]
    unavailable: frozenset[str]
    """Profiles this node cannot apply: their destinations are held, never sent identified."""
    complete_study: bool
    warnings: tuple[str, ...] = ()
    triage: bool = False
    """The route has a ``triage`` step: the instance's series is triaged."""
    analyses: tuple[str, ...] = ()
    """Pipelines of the route's ``analyse:<pipeline>`` steps."""


def plan_route(
    facts: Facts,
    route: RouteSettings,
    lane_rules: Sequence[LaneRule],
    *,
    destinations: Collection[str],
    profiles: Collection[str],
) -> RoutePlan:
    """The plan of *route* for an instance with *facts* (pure; no I/O).

    ``forward`` steps after a ``deidentify:<profile>`` step send that profile's copy; a step
    naming an unknown destination, or a step kind this version cannot run, is skipped with a
    warning; a profile this node does not have holds its destinations (``deid-unavailable``)."""
    made: list[str] = []
    analyses: list[str] = []
    triage = False
    unavailable: set[str] = set()
    deliveries: list[Delivery] = []
    warnings: list[str] = []
    profile = ""
    for text in route.steps:
        step = parse_step(text)
        if step.kind is StepKind.DEIDENTIFY:
            profile = step.argument
            if profile not in profiles:
                unavailable.add(profile)
                warnings.append(f"route {route.name}: profile {profile!r} is not available")
            elif profile not in made:
                made.append(profile)
        elif step.kind is StepKind.TRIAGE:
            triage = True
        elif step.kind is StepKind.ANALYSE:
            if step.argument not in PIPELINES:
                warnings.append(f"route {route.name}: unknown analysis pipeline {step.argument!r}")
            elif step.argument not in analyses:
                analyses.append(step.argument)
        elif step.kind is StepKind.FORWARD:
            if step.argument not in destinations:
                warnings.append(f"route {route.name}: unknown destination {step.argument!r}")
                continue
            deliveries.append(Delivery(step.argument, profile))
        else:
            warnings.append(f"route {route.name}: step {text!r} is not available; skipped")
    return RoutePlan(
        route=route.name,
        lane=lane_for(route, lane_rules, facts),
        profiles=tuple(made),
        deliveries=tuple(deliveries),
        unavailable=frozenset(unavailable),
        complete_study=route.complete_immediately,
        warnings=tuple(warnings),
        triage=triage,
        analyses=tuple(analyses),
    )


def facts_for(inst: ReceivedInstance, needed: Sequence[str]) -> Facts:
    """The routing facts of *inst*: from its ingest row, plus header attributes if *needed*."""
    if needed:
        return facts_from_file(inst.spool_path, inst.calling_ae, inst.called_ae, needed)
    return Facts(inst.calling_ae, inst.called_ae, inst.modality, inst.sop_class_uid)


_UNANSWERED_SQL = """
SELECT i.sop_instance_uid FROM ingest_instance i
WHERE i.sop_instance_uid = ANY(%(uids)s) AND i.association_id <> %(generated)s
  AND NOT EXISTS (SELECT 1 FROM association_end e WHERE e.association_id = i.association_id)
  AND NOT EXISTS (SELECT 1 FROM ingest_instance j
                  WHERE j.association_id = i.association_id AND j.received_at > i.received_at)
  AND NOT EXISTS (SELECT 1 FROM ingest_duplicate d
                  WHERE d.association_id = i.association_id AND d.received_at > i.received_at)
"""


def _on_disk(inst: ReceivedInstance) -> bool:
    """Whether the spool file is there with its recorded size (a file the machine lost while
    it was being synced can come back empty or short)."""
    try:
        size = os.stat(inst.spool_path).st_size
    except FileNotFoundError:
        return False
    return inst.size is None or size == inst.size


def _may_still_come(ctx: PipelineContext, inst: ReceivedInstance) -> bool:
    """Whether the re-send of *inst* (see :func:`unanswered`) is awaited still: received less
    than ``pipeline.resend_wait`` seconds ago."""
    if inst.received_at is None:
        return True
    waited = (dt.datetime.now(dt.UTC) - inst.received_at).total_seconds()
    return waited < ctx.settings.resend_wait


def unanswered(conn: repo.Conn, node: str, uids: Sequence[str]) -> set[str]:
    """Of the instances *uids* (their spool files gone), those that may never have been
    answered: the last receipt of an association (PS3.7 9.3.1: one C-STORE answered before the
    next) that has not ended. The receiver answers 0x0000 only once the file is synced, so a
    file lost with the machine belongs to such a receipt; its sender sends it again."""
    if not uids:
        return set()
    rows = conn.execute(
        _UNANSWERED_SQL, {"uids": list(uids), "generated": repo.generated_association(node)}
    ).fetchall()
    return {str(r[0]) for r in rows}


@dataclass
class RoutingJob:
    """What one routing job carries from one :func:`route_round` to the next."""

    waiting: set[str] = field(default_factory=set)
    """Rows found waiting for their sender's re-send (:func:`unanswered`): counted once, not
    claimed again by this job."""
    newest: dt.datetime | None = None
    """When the newest instance of the last round arrived (None: no round yet, or unknown)."""


def route_round(
    ctx: PipelineContext, *, only: Sequence[str] | None = None, job: RoutingJob | None = None
) -> int:
    """Route one batch of received instances (of *only* these SOP Instance UIDs when given);
    returns how many left ``received``. With *job*, the rows found waiting for a re-send are
    added to ``job.waiting`` and counted (the next rounds of the job skip them), and
    ``job.newest`` is when the newest of the batch arrived; without, they are not counted."""
    needed = tags_needed(ctx.routes, ctx.lane_rules)
    profiles = ctx.deid.engines if ctx.deid is not None else {}
    with ctx.pool.connection() as conn, conn.transaction():
        skip = job.waiting if job is not None else ()
        batch = claim_received(conn, ctx.node, ctx.settings.batch_size, only=only, skip=skip)
        if not batch:
            return 0
        if job is not None:
            job.newest = max((i.received_at for i in batch if i.received_at), default=None)
        planned: list[tuple[ReceivedInstance, RoutePlan]] = []
        unroutable: list[Change] = []
        missing: list[Change] = []
        absent = [i.sop_instance_uid for i in batch if not _on_disk(i)]
        never_answered = unanswered(conn, ctx.node, absent)
        resend = {
            i.sop_instance_uid
            for i in batch
            if i.sop_instance_uid in never_answered and _may_still_come(ctx, i)
        }
        for inst in batch:
            if inst.sop_instance_uid in resend:
                LOGGER.warning(
                    "spool file of %s is gone or short and its association never ended after it: "
                    "never acknowledged, it waits for the sender's re-send",
                    inst.sop_instance_uid,
                )  # fmt: skip
                continue
            if inst.sop_instance_uid in never_answered:
                LOGGER.error(
                    "spool file of %s is gone and its sender, never answered, has not sent it "
                    "again within pipeline.resend_wait: missing until it does",
                    inst.sop_instance_uid,
                )  # fmt: skip
                missing.append(Change((inst.sop_instance_uid,), {"reason": "never-resent"}))
                continue
            if inst.sop_instance_uid in absent:
                LOGGER.error("spool file of %s is missing or short", inst.sop_instance_uid)
                missing.append(Change((inst.sop_instance_uid,), {"reason": "spool-file-missing"}))
                continue
            try:
                facts = facts_for(inst, needed)
            except (OSError, ValueError, InvalidDicomError) as exc:
                LOGGER.error(
                    "cannot read the header of %s for routing: %s",
                    inst.sop_instance_uid, type(exc).__name__,
                )  # fmt: skip
                unroutable.append(Change((inst.sop_instance_uid,), {"reason": "unreadable-header"}))
                continue
            route = select_route(ctx.routes, facts)
            if route is None:
                LOGGER.warning(
                    "instance %s matched no route (calling %s, modality %s); it is kept as "
                    "unroutable: see `radiogate route test`",
                    inst.sop_instance_uid, facts.calling_ae or "-", facts.modality or "-",
                )  # fmt: skip
                unroutable.append(Change((inst.sop_instance_uid,), {"reason": "no-route"}))
                continue
            plan = plan_route(
                facts, route, ctx.lane_rules, destinations=ctx.destinations, profiles=profiles
            )
            for warning in plan.warnings:
                ctx.warn_once(warning)
            planned.append((inst, plan))
        planned = _with_study_lanes(conn, planned)
        captured = triage_stage.capture(ctx.triage, planned) if ctx.triage is not None else []
        outcome = deidentify.make_copies(ctx, planned)
        outcome.record(conn, ctx)
        repo.apply(conn, ctx.audit, INSTANCE, InstanceEvent.FILE_MISSING, missing)
        repo.apply(conn, ctx.audit, INSTANCE, InstanceEvent.UNROUTABLE, unroutable)
        repo.apply(
            conn, ctx.audit, INSTANCE, InstanceEvent.ROUTED,
            [Change((i.sop_instance_uid,), {"route": p.route, "lane": p.lane.value})
             for i, p in planned],
            values={"route": [p.route for _, p in planned],
                    "lane": [p.lane.value for _, p in planned]},
        )  # fmt: skip
        # New items; or renewed ones of an instance re-sent over its archived copy (counted
        # in its series once: it was when first routed).
        resent = _routed_before(conn, [i.sop_instance_uid for i, _ in planned])
        items = repo.renew_forward_items(conn, ctx.audit, outcome.items)
        ctx.audit(conn, outcome.events)
        repo.touch_series(conn, ctx.audit, _series_seen(ctx, planned, resent))
        repo.set_archive_uids(conn, **_archive_uids(ctx, planned))
        repo.open_analyses(conn, sorted({
            (inst.series_instance_uid, inst.study_instance_uid, ctx.node, pipeline)
            for inst, plan in planned for pipeline in plan.analyses
            if inst.series_instance_uid
        }))  # fmt: skip
        if captured:
            triage_stage.record_capture(conn, captured)
            triage_stage.defer_triage(conn, ctx.node)
        _complete_by_rule(conn, ctx, planned)
        lanes: dict[str, tuple[str, int]] = {}
        touched: dict[str, Lane] = {}
        for inst, plan in planned:
            best = lanes.get(inst.study_instance_uid)
            if best is None or plan.lane.rank < best[1]:
                lanes[inst.study_instance_uid] = (plan.lane.value, plan.lane.rank)
        for item in items:
            if not item.hold_reason:
                lane = Lane.from_rank(item.lane_rank)
                previous = touched.get(item.destination)
                touched[item.destination] = (
                    lane if previous is None else Lane.most_urgent(previous, lane)
                )
        repo.promote_study_lanes(conn, lanes)
        # Instances with nothing to wait for (all held, or routes that forward nowhere).
        release.settle(conn, ctx.audit, [i.sop_instance_uid for i, _ in planned])
        for destination, lane in sorted(touched.items()):
            defer_forward(conn, ctx.node, destination, lane)
    if job is None:
        return len(batch) - len(resend)
    job.waiting.update(resend)
    return len(batch)


def fill(
    ctx: PipelineContext,
    claimed: int,
    newest: dt.datetime | None,
    *,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    count: Callable[[], int] | None = None,
) -> float:
    """After a round that *claimed* less than a full batch while instances keep arriving (its
    *newest* arrived less than :data:`ARRIVING` seconds ago): wait until a full batch is
    ``received``, the count stops growing for :data:`FILL_STEP` seconds (the modality paused
    or finished) or ``pipeline.fill_wait`` seconds have passed. A round's statements, job
    bookkeeping and destination exchanges cost about as much for 5 instances as for 50; a
    modality sending 200 images/s otherwise meets rounds of a handful each. *count* gives the
    number waiting (default: :func:`count_received`). Returns the seconds waited."""
    limit, batch = ctx.settings.fill_wait, ctx.settings.batch_size
    if limit <= 0 or newest is None or not 0 < claimed < batch:
        return 0.0
    if (now() - newest).total_seconds() >= ARRIVING:
        return 0.0
    started = clock()
    seen = -1
    deadline = started + limit
    while (left := deadline - clock()) > 1e-6:
        sleep(min(FILL_STEP, left))
        if count is None:
            with ctx.pool.connection() as conn:
                now_waiting = count_received(conn, ctx.node, batch)
        else:
            now_waiting = count()
        if now_waiting >= batch or now_waiting == seen:
            break
        seen = now_waiting
    return clock() - started


def count_received(conn: repo.Conn, node: str, limit: int) -> int:
    """How many of *node*'s instances are ``received`` (counted up to *limit*)."""
    row = conn.execute(
        """SELECT count(*) FROM (SELECT 1 FROM ingest_instance
                                 WHERE node = %s AND state = 'received' LIMIT %s) w""",
        (node, limit),
    ).fetchone()
    return int(row[0]) if row else 0


def route_again_if_waiting(
    ctx: PipelineContext, delay: float = 0.25, *, skip: Collection[str] = ()
) -> bool:
    """After a routing job's last round: if instances still wait (another round, the triage
    job's, held them when this one looked), route again shortly rather than at the next
    receipt or housekeeping kick. Those in *skip* (waiting for a re-send) do not count: the
    housekeeping kick looks at them again. True when a job was deferred."""
    with ctx.pool.connection() as conn, conn.transaction():
        row = conn.execute(
            """SELECT EXISTS (SELECT 1 FROM ingest_instance WHERE node = %s AND state = 'received'
                              AND NOT sop_instance_uid = ANY(%s::text[]))""",
            (ctx.node, list(skip)),
        ).fetchone()
        if not (row and row[0]):
            return False
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        return defer_route(conn, ctx.node, when=when)


def _archive_uids(
    ctx: PipelineContext, planned: Sequence[tuple[ReceivedInstance, RoutePlan]]
) -> dict[str, dict[str, str]]:
    """Original → archived Study and Series Instance UIDs, under the profile of each route's
    first destination ('' = sent as received)."""
    studies: dict[str, str] = {}
    series: dict[str, str] = {}
    for inst, plan in planned:
        if not plan.deliveries:
            continue
        profile = plan.deliveries[0].profile
        engine = ctx.deid.engines.get(profile) if ctx.deid is not None and profile else None
        if profile and engine is None:
            continue  # held: never archived under this profile
        for table, tag, uid in ((studies, STUDY_UID_TAG, inst.study_instance_uid),
                                (series, SERIES_UID_TAG, inst.series_instance_uid)):  # fmt: skip
            if uid and uid not in table:
                table[uid] = engine.archived_uid(tag, uid) if engine else uid
    return {"studies": studies, "series": series}


STUDY_UID_TAG, SERIES_UID_TAG = 0x0020000D, 0x0020000E


def _with_study_lanes(
    conn: repo.Conn, planned: list[tuple[ReceivedInstance, RoutePlan]]
) -> list[tuple[ReceivedInstance, RoutePlan]]:
    """A study already moved ahead (triaged critical) takes its later instances along: each
    plan's lane is the most urgent of its own and its study's."""
    studies = sorted({inst.study_instance_uid for inst, _plan in planned})
    if not studies:
        return planned
    lanes = {
        str(uid): Lane(str(lane))
        for uid, lane in conn.execute(
            "SELECT study_instance_uid, lane FROM study WHERE study_instance_uid = ANY(%s)",
            (studies,),
        ).fetchall()
    }
    out = []
    for inst, plan in planned:
        study_lane = lanes.get(inst.study_instance_uid, Lane.ROUTINE)
        ahead = dataclasses.replace(plan, lane=study_lane)
        out.append((inst, ahead if study_lane.rank < plan.lane.rank else plan))
    return out


def _routed_before(conn: repo.Conn, uids: Sequence[str]) -> set[str]:
    """The instances of *uids* that already have forward items (routed before, re-sent)."""
    if not uids:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT sop_instance_uid FROM forward_item WHERE sop_instance_uid = ANY(%s)",
        (list(uids),),
    ).fetchall()
    return {str(r[0]) for r in rows}


def _series_seen(
    ctx: PipelineContext,
    planned: Sequence[tuple[ReceivedInstance, RoutePlan]],
    resent: Collection[str] = (),
) -> list[repo.SeriesSeen]:
    """One row per series of the batch: how many of its instances (not counting *resent*
    ones again), the latest receipt, and whether its route triages it."""
    by_series: dict[str, repo.SeriesSeen] = {}
    for inst, plan in planned:
        if not inst.series_instance_uid:
            continue
        seen = by_series.get(inst.series_instance_uid)
        latest = inst.received_at if seen is None else max(
            x for x in (seen.last_received_at, inst.received_at) if x is not None
        )  # fmt: skip
        by_series[inst.series_instance_uid] = repo.SeriesSeen(
            inst.series_instance_uid, inst.study_instance_uid, ctx.node, inst.modality,
            (seen.count if seen else 0) + (inst.sop_instance_uid not in resent), latest,
            plan.route if triage_stage.triaged(inst, plan) and ctx.triage is not None else
            (seen.triage_route if seen else ""),
        )  # fmt: skip
    return sorted(by_series.values(), key=lambda s: s.series_uid)


def _complete_by_rule(
    conn: repo.Conn, ctx: PipelineContext, planned: Sequence[tuple[ReceivedInstance, RoutePlan]]
) -> None:
    """Studies whose route says "complete as soon as an instance arrives" (e.g. one CR image)."""
    by_study = {i.study_instance_uid: p.route for i, p in planned if p.complete_study}
    if not by_study:
        return
    receiving = {
        str(r[0])
        for r in conn.execute(
            """SELECT study_instance_uid FROM study
               WHERE study_instance_uid = ANY(%s) AND state = 'receiving'
               ORDER BY study_instance_uid FOR UPDATE""",
            (sorted(by_study),),
        ).fetchall()
    }
    studies = sorted(receiving)
    repo.apply(
        conn, ctx.audit, STUDY, StudyEvent.STUDY_RULE,
        [Change((uid,), {"reason": "route-rule"}) for uid in studies],
        values={"by": [f"rule:{by_study[uid]}" for uid in studies]},
    )  # fmt: skip
