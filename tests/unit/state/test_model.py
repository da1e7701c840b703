"""The state machines as tables: every allowed transition, every other one refused, settling."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from audit import Step
from dicom_nodes.audit_events import PIPELINE_STEPS
from dicom_nodes.state.model import (
    FORWARD,
    INSTANCE,
    MACHINES,
    STUDY,
    ForwardState,
    InstanceEvent,
    InstanceState,
    InvalidTransition,
    Machine,
    mermaid,
    settle_instance,
)

CASES = [
    pytest.param(machine, state, event, id=f"{machine.name}:{state}:{event}")
    for machine in MACHINES
    for state, event in itertools.product(machine.states, machine.events)
]


@pytest.mark.parametrize(("machine", "state", "event"), CASES)
def test_every_pair_is_allowed_exactly_as_the_table_says(
    machine: Machine[Any, Any], state: Any, event: Any
) -> None:
    rule = machine.transition(event)
    if state in rule.sources:
        assert machine.target(state, event) is rule.target
    else:
        with pytest.raises(InvalidTransition, match=str(event)):
            machine.target(state, event)


def test_every_transition_records_a_step_the_audit_events_know() -> None:
    steps = {rule.step for m in MACHINES for rule in m.transitions.values()}
    assert steps <= PIPELINE_STEPS
    assert Step.RECEIVED not in steps  # recorded by the receiver, with the instance row


def test_every_state_is_reachable_or_initial() -> None:
    initial = {InstanceState.RECEIVED, ForwardState.PENDING, ForwardState.QUARANTINED,
               STUDY.states.RECEIVING}  # fmt: skip
    for machine in MACHINES:
        reached = {target for _s, _e, target in machine.allowed()}
        assert set(machine.states) <= reached | initial, machine.name


def test_terminal_instance_states_have_no_automatic_exit() -> None:
    automatic = {InstanceEvent.ROUTED, InstanceEvent.ALL_CONFIRMED, InstanceEvent.HELD,
                 InstanceEvent.UNROUTABLE, InstanceEvent.FILE_MISSING}  # fmt: skip
    assert not [e for s, e, _t in INSTANCE.allowed() if s is InstanceState.PURGED]
    # Released is left only by a new receipt: different bytes over the archived copy; missing
    # only by a re-send that brings the lost file back.
    released = [e for s, e, _t in INSTANCE.allowed() if s is InstanceState.RELEASED]
    assert released == [InstanceEvent.ARCHIVED_COPY_DIFFERS]
    missing = [e for s, e, _t in INSTANCE.allowed() if s is InstanceState.MISSING]
    assert missing == [InstanceEvent.FILE_RESTORED]
    for state in (InstanceState.CANCELLED, InstanceState.UNROUTABLE):
        exits = {e for s, e, _t in INSTANCE.allowed() if s is state}
        assert not exits & automatic - {InstanceEvent.HELD}, state


def test_a_machine_without_a_transition_for_an_event_is_refused() -> None:
    with pytest.raises(ValueError, match="without a transition"):
        Machine("x", "t", ("k",), InstanceState, InstanceEvent, {})


P, S, C, D, X, Q = (ForwardState.PENDING, ForwardState.SENT, ForwardState.CONFIRMED,
                    ForwardState.DEAD, ForwardState.CANCELLED, ForwardState.QUARANTINED)  # fmt: skip
R, H, N = InstanceState.ROUTED, InstanceState.HELD, InstanceState.CANCELLED


@pytest.mark.parametrize(
    ("state", "items", "event"),
    [
        (R, [P], None),
        (R, [S, C], None),
        (R, [C, C], InstanceEvent.ALL_CONFIRMED),
        (R, [], InstanceEvent.ALL_CONFIRMED),  # a route that forwards nowhere
        (R, [C, Q], InstanceEvent.HELD),
        (R, [D], InstanceEvent.HELD),
        (R, [Q, P], None),  # one destination still waits
        (R, [C, X], InstanceEvent.CANCELLED),
        (R, [Q, X], InstanceEvent.HELD),  # held beats cancelled
        (H, [Q], None),
        (H, [P, Q], InstanceEvent.RESUMED),
        (H, [C, X], InstanceEvent.CANCELLED),
        (N, [X], None),
        (N, [P], InstanceEvent.RESUMED),
        (N, [Q, X], InstanceEvent.HELD),  # retried back into quarantine
        (InstanceState.RECEIVED, [], None),
        (InstanceState.RELEASED, [C], None),
    ],
)
def test_settle_follows_the_items(
    state: InstanceState, items: list[ForwardState], event: InstanceEvent | None
) -> None:
    assert settle_instance(state, items) == event
    if event is not None:  # and the table allows what settling asks for
        INSTANCE.target(state, event)


def test_diagram_is_generated_from_the_table() -> None:
    text = mermaid(FORWARD)
    assert text.startswith("stateDiagram-v2")
    assert text.count("-->") == sum(len(r.sources) for r in FORWARD.transitions.values())
    assert "pending --> sent: sent" in text
