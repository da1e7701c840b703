"""Route steps → deliveries: which destination gets which version, and when nothing is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config.routes import RouteSettings
from dicom_nodes.deid.step import DeidCopy, Quarantine
from dicom_nodes.pipeline import store
from dicom_nodes.pipeline.lanes import Lane
from dicom_nodes.pipeline.tasks import (
    PipelineContext,
    _Collected,
    _deidentify_batch,
    _deliveries,
)

INSTANCE = store.ReceivedInstance(
    "1.2.3.4", "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1",
    Path("/spool/ab/abc.dcm"), "CT1", "RADIOGATE",
)  # fmt: skip


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


def _route(ctx: PipelineContext, route: RouteSettings) -> tuple[list[store.Delivery], _Collected]:
    """What a routing round does for one instance: the batch's copies, then the deliveries."""
    acc = _Collected()
    acc.copies = _deidentify_batch(ctx, [(INSTANCE, route, Lane.ROUTINE)])
    return _deliveries(ctx, route, INSTANCE, acc), acc


def _ctx(deid: Any) -> PipelineContext:
    return PipelineContext(
        node="n", pool=None,  # type: ignore[arg-type]
        routes=[], lane_rules=[], destinations={"a": None, "b": None, "c": None},  # type: ignore[dict-item]
        deid=deid,
    )  # fmt: skip


def test_forward_steps_send_the_version_made_before_them() -> None:
    fake = FakeDeidStep()
    route = RouteSettings(steps=["forward:a", "deidentify:ok", "forward:b", "forward:c"])
    got, acc = _route(_ctx(fake), route)
    assert got == [
        store.Delivery("a", "", False),
        store.Delivery("b", "ok", False),
        store.Delivery("c", "ok", False),
    ]
    assert fake.calls == [(INSTANCE.spool_path, "ok")]  # one copy, however many destinations
    assert [o.profile for o in acc.outputs] == ["ok"]
    assert [e[0] for e in acc.events] == ["de-identified"]


def test_quarantine_holds_every_destination_of_that_profile() -> None:
    route = RouteSettings(steps=["deidentify:held", "forward:a", "forward:b"])
    got, acc = _route(_ctx(FakeDeidStep()), route)
    assert got == [store.Delivery("a", "held", True), store.Delivery("b", "held", True)]
    assert acc.outputs == []
    assert [e[0] for e in acc.events] == ["quarantined"]
    assert acc.events[0][1]["reason"] == "burned-in-annotation"


def test_without_the_deid_step_nothing_identified_is_sent() -> None:
    for deid in (None, FakeDeidStep()):
        route = RouteSettings(steps=["deidentify:missing", "forward:a"])
        got, acc = _route(_ctx(deid), route)
        assert got == [store.Delivery("a", "missing", True)]
        assert acc.events[0][1]["reason"] == "deid-unavailable"
