"""Route plans → forward items: which destination gets which version, and when nothing is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit import Step
from config.routes import RouteSettings
from dicom_nodes.deid.step import DeidCopy, Quarantine
from dicom_nodes.pipeline.claims import ReceivedInstance
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.deidentify import BatchCopies, make_copies
from dicom_nodes.pipeline.route import Delivery, plan_route
from dicom_nodes.pipeline.routes import Facts
from dicom_nodes.state import ForwardState, Lane
from dicom_nodes.state.repository import NewForwardItem

INSTANCE = ReceivedInstance(
    "1.2.3.4", "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1",
    Path("/spool/ab/abc.dcm"), "CT1", "RADIOGATE", "CT",
)  # fmt: skip
FACTS = Facts("CT1", "RADIOGATE", "CT", "1.2.840.10008.5.1.4.1.1.2")
DESTINATIONS = ("a", "b", "c")


class FakeDeidStep:
    """Same interface as DeidStep: copies for 'ok' profiles, quarantine for 'held'."""

    def __init__(self) -> None:
        self.engines = {"ok": object(), "held": object()}
        self.calls: list[tuple[Path, str]] = []

    def apply_many(
        self, pairs: list[tuple[Path, str]]
    ) -> dict[tuple[Path, str], DeidCopy | Quarantine]:
        return {pair: self.apply(*pair) for pair in pairs}

    def apply(self, source: Path, profile: str) -> DeidCopy | Quarantine:
        self.calls.append((source, profile))
        if profile == "held":
            return Quarantine("burned-in-annotation")
        return DeidCopy(Path(f"/spool/cd/{profile}.dcm"), "1.2.840.10008.1.2.1", 10, [])


def _route(deid: Any, route: RouteSettings) -> BatchCopies:
    """What a routing round does for one instance: plan, the batch's copies, the items."""
    ctx = PipelineContext(
        node="n", pool=None,  # type: ignore[arg-type]
        routes=[], lane_rules=[], destinations=dict.fromkeys(DESTINATIONS),  # type: ignore[arg-type]
        deid=deid,
    )  # fmt: skip
    profiles = deid.engines if deid is not None else {}
    plan = plan_route(FACTS, route, [], destinations=DESTINATIONS, profiles=profiles)
    return make_copies(ctx, [(INSTANCE, plan)])


def _item(destination: str, profile: str = "", hold: str = "") -> NewForwardItem:
    return NewForwardItem(INSTANCE.sop_instance_uid, destination, Lane.ROUTINE.rank, profile, hold)


def test_plan_is_pure_and_orders_versions_by_step() -> None:
    route = RouteSettings(steps=["forward:a", "deidentify:ok", "forward:b", "forward:c"])
    plan = plan_route(FACTS, route, [], destinations=DESTINATIONS, profiles={"ok"})
    assert plan.deliveries == (Delivery("a"), Delivery("b", "ok"), Delivery("c", "ok"))
    assert plan.profiles == ("ok",)
    assert plan.lane is Lane.ROUTINE and plan.unavailable == frozenset()
    assert plan == plan_route(FACTS, route, [], destinations=DESTINATIONS, profiles={"ok"})


def test_plan_warns_about_unknown_destinations_and_steps() -> None:
    route = RouteSettings(
        steps=["forward:nowhere", "analyse:brain", "analyse:chest-ct", "forward:a"]
    )
    plan = plan_route(FACTS, route, [], destinations=DESTINATIONS, profiles=())
    assert plan.deliveries == (Delivery("a"),)
    assert plan.analyses == ("chest-ct",)
    assert len(plan.warnings) == 2
    assert "nowhere" in plan.warnings[0] and "pipeline 'brain'" in plan.warnings[1]


def test_forward_steps_send_the_version_made_before_them() -> None:
    fake = FakeDeidStep()
    route = RouteSettings(steps=["forward:a", "deidentify:ok", "forward:b", "forward:c"])
    got = _route(fake, route)
    assert got.items == [_item("a"), _item("b", "ok"), _item("c", "ok")]
    assert all(i.state is ForwardState.PENDING for i in got.items)
    assert fake.calls == [(INSTANCE.spool_path, "ok")]  # one copy, however many destinations
    assert [o.profile for o in got.outputs] == ["ok"]
    assert [e.step for e in got.events] == [Step.DEIDENTIFIED]


def test_quarantine_holds_every_destination_of_that_profile() -> None:
    route = RouteSettings(steps=["deidentify:held", "forward:a", "forward:b"])
    got = _route(FakeDeidStep(), route)
    hold = "burned-in-annotation"
    assert got.items == [_item("a", "held", hold), _item("b", "held", hold)]
    assert all(i.state is ForwardState.QUARANTINED for i in got.items)
    assert got.outputs == []
    assert [e.step for e in got.events] == [Step.QUARANTINED]
    assert got.events[0].details["reason"] == hold


def test_without_the_deid_step_nothing_identified_is_sent() -> None:
    for deid in (None, FakeDeidStep()):
        route = RouteSettings(steps=["deidentify:missing", "forward:a"])
        got = _route(deid, route)
        assert got.items == [_item("a", "missing", "deid-unavailable")]
        assert got.events[0].details["reason"] == "deid-unavailable"


def test_profile_before_its_forwards_only() -> None:
    """A destination listed before the de-identification step gets the original."""
    route = RouteSettings(steps=["forward:a", "deidentify:held", "forward:b"])
    got = _route(FakeDeidStep(), route)
    assert got.items == [_item("a"), _item("b", "held", "burned-in-annotation")]
