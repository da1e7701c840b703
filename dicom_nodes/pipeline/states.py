"""Explicit state machines of instances and studies; an invalid transition raises.

Instance (per SOP Instance, per node)::

    received --route--> routed --sent--> forwarded --confirmed--> confirmed --release--> released
        \\                  \\                                        (spool copy deleted)
         `--quarantine-->    `--give-up--> given_up   (admin gave up on a destination)

Study (per Study Instance UID)::

    receiving --quiet period / rule / admin--> complete --late series--> receiving (increment)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "INSTANCE_TRANSITIONS",
    "STUDY_TRANSITIONS",
    "InstanceState",
    "InvalidTransition",
    "StudyState",
    "check_instance",
    "check_study",
]


class InvalidTransition(RuntimeError):
    """A state change the pipeline does not allow (a bug or a concurrent change)."""


class InstanceState(StrEnum):
    RECEIVED = "received"
    ROUTED = "routed"
    FORWARDED = "forwarded"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    QUARANTINED = "quarantined"
    GIVEN_UP = "given_up"


class StudyState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"


INSTANCE_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    InstanceState.RECEIVED: frozenset({InstanceState.ROUTED, InstanceState.QUARANTINED}),
    InstanceState.ROUTED: frozenset(
        {InstanceState.FORWARDED, InstanceState.CONFIRMED, InstanceState.GIVEN_UP}
    ),
    InstanceState.FORWARDED: frozenset({InstanceState.CONFIRMED, InstanceState.GIVEN_UP}),
    InstanceState.CONFIRMED: frozenset({InstanceState.RELEASED}),
    InstanceState.RELEASED: frozenset(),
    InstanceState.QUARANTINED: frozenset({InstanceState.ROUTED}),
    InstanceState.GIVEN_UP: frozenset({InstanceState.ROUTED}),
}

STUDY_TRANSITIONS: dict[StudyState, frozenset[StudyState]] = {
    StudyState.RECEIVING: frozenset({StudyState.COMPLETE}),
    StudyState.COMPLETE: frozenset({StudyState.RECEIVING}),
}


def check_instance(current: str, new: str) -> InstanceState:
    """Return the new state if *current* → *new* is allowed, else raise InvalidTransition."""
    cur, nxt = InstanceState(current), InstanceState(new)
    if nxt not in INSTANCE_TRANSITIONS[cur]:
        raise InvalidTransition(f"instance: {cur} -> {nxt} is not allowed")
    return nxt


def check_study(current: str, new: str) -> StudyState:
    cur, nxt = StudyState(current), StudyState(new)
    if nxt not in STUDY_TRANSITIONS[cur]:
        raise InvalidTransition(f"study: {cur} -> {nxt} is not allowed")
    return nxt
