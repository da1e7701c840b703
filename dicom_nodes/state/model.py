"""The pipeline's state machines: states, events, and one transition table per entity.

Every entity the pipeline moves has its states as a :class:`~enum.StrEnum` mirrored by a SQL
CHECK constraint (``db/migrations/0005_state_model.sql``) and its transitions as one table
keyed by event: an event names the states it may leave, the state it enters and the audit step
it records. :mod:`dicom_nodes.state.repository` applies them and is the only writer of the state
columns; an event applied to a row in another state raises :class:`InvalidTransition`.

Instance (``ingest_instance.state``, one row per received SOP Instance)::

    received ─routed──────> routed ─all-confirmed─> released      (spool copy deleted)
       │  ╰─unroutable──> unroutable ─rerouted─> received
       ╰────file-missing─> missing                  (nothing left to send)
    routed/held ─file-missing─> missing   (the file vanished after routing; items cancelled)
    routed/cancelled ─held─> held ─resumed─> routed   (an item waits for a person)
    routed/held ─cancelled─> cancelled ─resumed─> routed
    released ─archived-copy-differs─> received   (new bytes to route over the archived copy)
    missing ─file-restored─> received   (a re-send brings back the lost file: routed again)
    held/cancelled/unroutable ─retention-expired─> purged   (spool copy deleted)

Forward item (``forward_item.state``, one row per instance and destination)::

    pending ─sent─> sent ─confirmed─> confirmed
       ^  │          ╰─not-confirmed─> pending          (re-sent after a back-off)
       │  ├─retryable-failure─> pending                 (next attempt after a back-off)
       │  ╰─permanent-failure─> dead ─retried─> pending
    quarantined ─released-by-review─> pending
    pending/sent/dead/quarantined ─cancelled─> cancelled ─retried─> pending
    dead/cancelled ─retried-held─> quarantined   (a de-identified copy must be made first)
    confirmed ─resent─> pending              (new bytes to overwrite the destination's copy)
    confirmed ─resent-held─> quarantined     (the same, held for a person's review)
    cancelled/dead ─resent / resent-held─> pending / quarantined   (a lost file came back)

Study (``study.state``)::

    receiving ─study-quiet / study-rule / study-forced─> complete ─late-arrival─> receiving

Series (``series.state``) and its triage decision (``series_triage.state``)::

    receiving ─completed─> complete ─late-arrival─> receiving
    pending ─decided─> decided ─reopened─> pending        (a late instance: decide again)

Analysis of a series by a pipeline (``series_analysis.state``)::

    waiting ─started─> running ─finished─> done      running ─failed─> failed
    running ─lost─> waiting (its worker died)        done/failed ─requested─> waiting

Alert (``alert.state``) and its deliveries (``alert_delivery.state``, one per target and
escalation level)::

    open ─escalated─> open (next level's deliveries)      open ─acknowledged─> acknowledged
    pending ─delivered─> delivered    pending ─delivery-failed─> pending (back-off)
    pending ─cancelled─> cancelled (acknowledged before it was sent)

The instance's state follows its items (:func:`settle_instance`): ``routed`` while any item
waits for a destination (``pending``/``sent``), ``held`` when none waits and one is held for a
person (``quarantined``, ``dead``), ``cancelled`` when none waits or is held and one was
cancelled, ``released`` when every item is ``confirmed``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from audit import EventOutcome, Step

__all__ = [
    "ALERT",
    "ANALYSIS",
    "DELIVERY",
    "FORWARD",
    "INSTANCE",
    "MACHINES",
    "SERIES",
    "STUDY",
    "TRIAGE",
    "AlertEvent",
    "AlertState",
    "AnalysisEvent",
    "AnalysisState",
    "DeliveryEvent",
    "DeliveryState",
    "ForwardEvent",
    "ForwardState",
    "InstanceEvent",
    "InstanceState",
    "InvalidTransition",
    "Machine",
    "SeriesEvent",
    "SeriesState",
    "StudyEvent",
    "StudyState",
    "Transition",
    "TriageEvent",
    "TriageState",
    "mermaid",
    "settle_instance",
]


class InvalidTransition(RuntimeError):
    """An event applied to a row in a state it may not leave (a bug or a concurrent change)."""


class InstanceState(StrEnum):
    """``ingest_instance.state``."""

    RECEIVED = "received"
    """Durable in the spool and recorded; waiting to be routed."""
    ROUTED = "routed"
    """At least one destination is still waiting to receive or confirm it."""
    HELD = "held"
    """Nothing is waiting for a destination; at least one destination's copy waits for a
    person (quarantined for review, or failed permanently)."""
    RELEASED = "released"
    """Every destination confirmed it; the spool copies are deleted."""
    CANCELLED = "cancelled"
    """An admin gave up on every destination that had not confirmed it."""
    UNROUTABLE = "unroutable"
    """It matched no route (or its header could not be read for routing)."""
    MISSING = "missing"
    """Its spool file is gone: nothing can be sent any more."""
    PURGED = "purged"
    """Its identified original was deleted after the retention period, unsent."""


class ForwardState(StrEnum):
    """``forward_item.state``."""

    PENDING = "pending"
    SENT = "sent"
    """Sent; the destination has not confirmed it yet."""
    CONFIRMED = "confirmed"
    DEAD = "dead"
    """Failed in a way retrying cannot fix; waits for an admin (``job retry|cancel``)."""
    CANCELLED = "cancelled"
    QUARANTINED = "quarantined"
    """Held back by de-identification (burned-in text, failure) for a person's review."""


class StudyState(StrEnum):
    """``study.state``."""

    RECEIVING = "receiving"
    COMPLETE = "complete"


class SeriesState(StrEnum):
    """``series.state``."""

    RECEIVING = "receiving"
    COMPLETE = "complete"


class TriageState(StrEnum):
    """``series_triage.state``: a series' triage decision."""

    PENDING = "pending"
    DECIDED = "decided"


class AnalysisState(StrEnum):
    """``series_analysis.state``: one pipeline's analysis of one series."""

    WAITING = "waiting"
    """Until the series is complete and in the archive, then until a worker takes it."""
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class AlertState(StrEnum):
    """``alert.state``."""

    OPEN = "open"
    """Raised; delivered or not, nobody acknowledged it yet."""
    ACKNOWLEDGED = "acknowledged"


class DeliveryState(StrEnum):
    """``alert_delivery.state``: one alert to one target at one escalation level."""

    PENDING = "pending"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    """Not sent: the alert was acknowledged first."""


class InstanceEvent(StrEnum):
    ROUTED = "routed"
    UNROUTABLE = "unroutable"
    REROUTED = "rerouted"
    FILE_MISSING = "file-missing"
    ALL_CONFIRMED = "all-confirmed"
    HELD = "held"
    CANCELLED = "cancelled"
    RESUMED = "resumed"
    RETENTION_EXPIRED = "retention-expired"
    ARCHIVED_COPY_DIFFERS = "archived-copy-differs"
    """A re-send with different bytes of an archived instance, to be routed again
    (``scp.different_bytes_archived``: ``replace-in-archive`` or ``quarantine``)."""
    FILE_RESTORED = "file-restored"
    """A re-send of an instance whose spool file was lost (``missing``): its new copy is
    routed as if it had just arrived."""


class ForwardEvent(StrEnum):
    SENT = "sent"
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not-confirmed"
    RETRYABLE_FAILURE = "retryable-failure"
    PERMANENT_FAILURE = "permanent-failure"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    RETRIED_HELD = "retried-held"
    RELEASED_BY_REVIEW = "released-by-review"
    RESENT = "resent"
    """Routing a re-sent instance again: the destination's confirmed copy is to be
    overwritten."""
    RESENT_HELD = "resent-held"
    """The same, held for a person's review first."""


class StudyEvent(StrEnum):
    STUDY_QUIET = "study-quiet"
    STUDY_RULE = "study-rule"
    STUDY_FORCED = "study-forced"
    LATE_ARRIVAL = "late-arrival"


class SeriesEvent(StrEnum):
    COMPLETED = "completed"
    """By the quiet period, the expected count, the association's release or MPPS (reason)."""
    LATE_ARRIVAL = "late-arrival"


class TriageEvent(StrEnum):
    DECIDED = "decided"
    REOPENED = "reopened"
    """A late instance arrived: decide again."""


class AnalysisEvent(StrEnum):
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    LOST = "lost"
    """Its worker died: waiting again."""
    REQUESTED = "requested"
    """Run again (``radiogate analyse``)."""


class AlertEvent(StrEnum):
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"


class DeliveryEvent(StrEnum):
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery-failed"
    CANCELLED = "cancelled"


S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Transition(Generic[S]):
    """Leave any of *sources* for *target*, recording one audit event of *step*."""

    sources: frozenset[S]
    target: S
    step: Step
    outcome: EventOutcome = EventOutcome.SUCCESS


def _t(
    sources: Collection[S], target: S, step: Step, outcome: EventOutcome = EventOutcome.SUCCESS
) -> Transition[S]:
    return Transition(frozenset(sources), target, step, outcome)


@dataclass(frozen=True)
class Machine(Generic[S, E]):
    """One entity's state machine and where its state lives."""

    name: str
    table: str
    keys: tuple[str, ...]
    """The row's key columns, in the order callers give key tuples."""
    states: type[S]
    events: type[E]
    transitions: Mapping[E, Transition[S]]

    def __post_init__(self) -> None:
        missing = [e for e in self.events if e not in self.transitions]
        if missing:
            raise ValueError(f"{self.name}: events without a transition: {missing}")

    def transition(self, event: E) -> Transition[S]:
        return self.transitions[event]

    def target(self, state: str, event: E) -> S:
        """The state *event* leads to from *state*; raises :class:`InvalidTransition`."""
        current = self.states(state)
        rule = self.transitions[event]
        if current not in rule.sources:
            raise InvalidTransition(f"{self.name}: {event} is not allowed in state {current}")
        return rule.target

    def allowed(self) -> Iterator[tuple[S, E, S]]:
        """Every (source, event, target) the table allows."""
        for event, rule in self.transitions.items():
            for source in sorted(rule.sources):
                yield source, event, rule.target


I, F, St = InstanceState, ForwardState, StudyState  # noqa: E741 (tables read as diagrams)
_FAILED, _MINOR = EventOutcome.SERIOUS_FAILURE, EventOutcome.MINOR_FAILURE

INSTANCE: Machine[InstanceState, InstanceEvent] = Machine(
    "instance",
    "ingest_instance",
    ("sop_instance_uid",),
    InstanceState,
    InstanceEvent,
    {
        InstanceEvent.ROUTED: _t({I.RECEIVED}, I.ROUTED, Step.ROUTED),
        InstanceEvent.UNROUTABLE: _t({I.RECEIVED}, I.UNROUTABLE, Step.UNROUTABLE, _MINOR),
        InstanceEvent.REROUTED: _t({I.UNROUTABLE}, I.RECEIVED, Step.REROUTED),
        InstanceEvent.FILE_MISSING: _t(
            {I.RECEIVED, I.ROUTED, I.HELD}, I.MISSING, Step.FILE_MISSING, _FAILED
        ),
        InstanceEvent.ALL_CONFIRMED: _t({I.ROUTED}, I.RELEASED, Step.RELEASED),
        InstanceEvent.HELD: _t({I.ROUTED, I.CANCELLED}, I.HELD, Step.HELD, _MINOR),
        InstanceEvent.CANCELLED: _t({I.ROUTED, I.HELD}, I.CANCELLED, Step.CANCELLED),
        InstanceEvent.RESUMED: _t({I.HELD, I.CANCELLED}, I.ROUTED, Step.RESUMED),
        InstanceEvent.RETENTION_EXPIRED: _t(
            {I.HELD, I.CANCELLED, I.UNROUTABLE}, I.PURGED, Step.PURGED
        ),
        InstanceEvent.ARCHIVED_COPY_DIFFERS: _t({I.RELEASED}, I.RECEIVED, Step.REROUTED),
        InstanceEvent.FILE_RESTORED: _t({I.MISSING}, I.RECEIVED, Step.REROUTED),
    },
)

_RENEWED = frozenset({F.CONFIRMED, F.CANCELLED, F.DEAD})
"""Forward items an instance routed again renews: confirmed (new bytes over the archived
copy), cancelled or dead (the instance's lost file came back with a re-send)."""

FORWARD: Machine[ForwardState, ForwardEvent] = Machine(
    "forward item",
    "forward_item",
    ("sop_instance_uid", "destination"),
    ForwardState,
    ForwardEvent,
    {
        ForwardEvent.SENT: _t({F.PENDING}, F.SENT, Step.FORWARDED),
        ForwardEvent.CONFIRMED: _t({F.SENT}, F.CONFIRMED, Step.CONFIRMED),
        ForwardEvent.NOT_CONFIRMED: _t({F.SENT}, F.PENDING, Step.NOT_CONFIRMED, _MINOR),
        ForwardEvent.RETRYABLE_FAILURE: _t({F.PENDING}, F.PENDING, Step.FORWARD_RETRY, _MINOR),
        ForwardEvent.PERMANENT_FAILURE: _t({F.PENDING}, F.DEAD, Step.FORWARD_ABANDONED, _FAILED),
        ForwardEvent.CANCELLED: _t(
            {F.PENDING, F.SENT, F.DEAD, F.QUARANTINED}, F.CANCELLED, Step.CANCELLED
        ),
        ForwardEvent.RETRIED: _t({F.DEAD, F.CANCELLED}, F.PENDING, Step.RETRIED),
        ForwardEvent.RETRIED_HELD: _t({F.DEAD, F.CANCELLED}, F.QUARANTINED, Step.QUARANTINED),
        ForwardEvent.RELEASED_BY_REVIEW: _t({F.QUARANTINED}, F.PENDING, Step.QUARANTINE_RELEASED),
        ForwardEvent.RESENT: _t(_RENEWED, F.PENDING, Step.RETRIED),
        ForwardEvent.RESENT_HELD: _t(_RENEWED, F.QUARANTINED, Step.QUARANTINED, _MINOR),
    },
)

STUDY: Machine[StudyState, StudyEvent] = Machine(
    "study",
    "study",
    ("study_instance_uid",),
    StudyState,
    StudyEvent,
    {
        StudyEvent.STUDY_QUIET: _t({St.RECEIVING}, St.COMPLETE, Step.STUDY_COMPLETED),
        StudyEvent.STUDY_RULE: _t({St.RECEIVING}, St.COMPLETE, Step.STUDY_COMPLETED),
        StudyEvent.STUDY_FORCED: _t({St.RECEIVING}, St.COMPLETE, Step.STUDY_COMPLETED),
        StudyEvent.LATE_ARRIVAL: _t({St.COMPLETE}, St.RECEIVING, Step.STUDY_REOPENED),
    },
)

SERIES: Machine[SeriesState, SeriesEvent] = Machine(
    "series",
    "series",
    ("series_instance_uid",),
    SeriesState,
    SeriesEvent,
    {
        SeriesEvent.COMPLETED: _t(
            {SeriesState.RECEIVING}, SeriesState.COMPLETE, Step.SERIES_COMPLETED
        ),
        SeriesEvent.LATE_ARRIVAL: _t(
            {SeriesState.COMPLETE}, SeriesState.RECEIVING, Step.SERIES_REOPENED
        ),
    },
)

TRIAGE: Machine[TriageState, TriageEvent] = Machine(
    "triage",
    "series_triage",
    ("series_instance_uid",),
    TriageState,
    TriageEvent,
    {
        TriageEvent.DECIDED: _t({TriageState.PENDING}, TriageState.DECIDED, Step.TRIAGED),
        TriageEvent.REOPENED: _t({TriageState.DECIDED}, TriageState.PENDING, Step.TRIAGE_REOPENED),
    },
)

AN = AnalysisState
ANALYSIS: Machine[AnalysisState, AnalysisEvent] = Machine(
    "analysis",
    "series_analysis",
    ("analysis_id",),
    AnalysisState,
    AnalysisEvent,
    {
        AnalysisEvent.STARTED: _t({AN.WAITING}, AN.RUNNING, Step.ANALYSIS_STARTED),
        AnalysisEvent.FINISHED: _t({AN.RUNNING}, AN.DONE, Step.ANALYSED),
        AnalysisEvent.FAILED: _t({AN.RUNNING}, AN.FAILED, Step.ANALYSIS_FAILED, _FAILED),
        AnalysisEvent.LOST: _t({AN.RUNNING}, AN.WAITING, Step.ANALYSIS_REQUESTED, _MINOR),
        AnalysisEvent.REQUESTED: _t({AN.DONE, AN.FAILED}, AN.WAITING, Step.ANALYSIS_REQUESTED),
    },
)

A, D = AlertState, DeliveryState

ALERT: Machine[AlertState, AlertEvent] = Machine(
    "alert",
    "alert",
    ("alert_id",),
    AlertState,
    AlertEvent,
    {
        AlertEvent.ESCALATED: _t({A.OPEN}, A.OPEN, Step.ALERT_ESCALATED, _MINOR),
        AlertEvent.ACKNOWLEDGED: _t({A.OPEN}, A.ACKNOWLEDGED, Step.ALERT_ACKNOWLEDGED),
    },
)

DELIVERY: Machine[DeliveryState, DeliveryEvent] = Machine(
    "alert delivery",
    "alert_delivery",
    ("delivery_id",),
    DeliveryState,
    DeliveryEvent,
    {
        DeliveryEvent.DELIVERED: _t({D.PENDING}, D.DELIVERED, Step.ALERT_DELIVERED),
        DeliveryEvent.DELIVERY_FAILED: _t(
            {D.PENDING}, D.PENDING, Step.ALERT_DELIVERY_FAILED, _MINOR
        ),
        DeliveryEvent.CANCELLED: _t({D.PENDING}, D.CANCELLED, Step.CANCELLED),
    },
)

MACHINES: tuple[Machine[InstanceState, InstanceEvent] | Machine[ForwardState, ForwardEvent]
                | Machine[StudyState, StudyEvent] | Machine[SeriesState, SeriesEvent]
                | Machine[TriageState, TriageEvent] | Machine[AnalysisState, AnalysisEvent]
                | Machine[AlertState, AlertEvent] | Machine[DeliveryState, DeliveryEvent], ...] = (
    INSTANCE, FORWARD, STUDY, SERIES, TRIAGE, ANALYSIS, ALERT, DELIVERY)  # fmt: skip

WAITING: frozenset[ForwardState] = frozenset({F.PENDING, F.SENT})
"""Item states in which a destination still has to receive or confirm the instance."""
HELD_FOR_A_PERSON: frozenset[ForwardState] = frozenset({F.QUARANTINED, F.DEAD})
"""Item states that only an admin's decision moves on."""


def settle_instance(
    state: str, items: Collection[str], *, gated: bool = False
) -> InstanceEvent | None:
    """The event that brings an instance in *state* in line with its items' states, or None.

    Waiting beats held beats cancelled: ``routed`` while any item waits for a destination,
    ``held`` while none waits and one waits for a person, ``cancelled`` when the rest is
    confirmed or cancelled, ``released`` when every item is confirmed. A routed instance
    without items (a route that forwards nowhere) is released: nothing waits for it. *gated*:
    a stage still needs the spool copy (its series waits for triage), so it is not released
    yet. Apply the result and settle again until None (at most two steps)."""
    current = InstanceState(state)
    if current not in (I.ROUTED, I.HELD, I.CANCELLED):
        return None
    found = {ForwardState(s) for s in items}
    if found & WAITING:
        return None if current is I.ROUTED else InstanceEvent.RESUMED
    if found & HELD_FOR_A_PERSON:
        return None if current is I.HELD else InstanceEvent.HELD
    if F.CANCELLED in found:
        return None if current is I.CANCELLED else InstanceEvent.CANCELLED
    if current is I.ROUTED:
        return None if gated else InstanceEvent.ALL_CONFIRMED
    return InstanceEvent.RESUMED


def mermaid(machine: Machine[S, E]) -> str:
    """A Mermaid state diagram generated from *machine*'s table (docs/architecture.md)."""
    lines = ["stateDiagram-v2"]
    for source, event, target in machine.allowed():
        lines.append(f"    {source} --> {target}: {event}")
    return "\n".join(lines)
