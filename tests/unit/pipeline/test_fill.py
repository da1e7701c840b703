"""A routing round that found less than a full batch waits for more only while instances
keep arriving, and no longer than it must."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from config.routes import PipelineSettings
from dicom_nodes.pipeline.context import PipelineContext
from dicom_nodes.pipeline.route import ARRIVING, FILL_STEP, fill

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


class Clock:
    """A monotonic clock that moves only when slept on."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def _ctx(fill_wait: float = 0.25, batch_size: int = 50) -> PipelineContext:
    return PipelineContext(
        node="n", pool=None,  # type: ignore[arg-type]
        routes=[], lane_rules=[], destinations={},
        settings=PipelineSettings(batch_size=batch_size, fill_wait=fill_wait),
    )  # fmt: skip


def _fill(claimed: int, age: float | None, counts: list[int], fill_wait: float = 0.25) -> Clock:
    clock = Clock()
    seq: Iterator[int] = iter(counts)
    newest = None if age is None else NOW - dt.timedelta(seconds=age)
    waited = fill(
        _ctx(fill_wait), claimed, newest,
        now=lambda: NOW, clock=clock, sleep=clock.sleep, count=lambda: next(seq),
    )  # fmt: skip
    assert waited == pytest.approx(sum(clock.sleeps))
    return clock


@pytest.mark.parametrize(
    ("claimed", "age", "fill_wait"),
    [
        (50, 0.01, 0.25),  # a full batch: more may wait already
        (0, 0.01, 0.25),  # nothing claimed: the job ends
        (5, ARRIVING, 0.25),  # the newest is not that new: this is all there is
        (5, 60.0, 0.25),
        (5, None, 0.25),  # no arrival time known
        (5, 0.01, 0.0),  # switched off
    ],
)
def test_no_wait_unless_a_partial_batch_while_arriving(
    claimed: int, age: float | None, fill_wait: float
) -> None:
    assert _fill(claimed, age, [], fill_wait).sleeps == []


def test_waits_while_the_count_grows_until_a_batch_waits() -> None:
    clock = _fill(5, 0.01, [4, 12, 30, 50, 51])
    assert clock.sleeps == [FILL_STEP] * 4


def test_stops_when_the_stream_pauses() -> None:
    clock = _fill(5, 0.01, [4, 9, 9, 20])
    assert clock.sleeps == [FILL_STEP] * 3


def test_never_longer_than_fill_wait() -> None:
    clock = _fill(5, 0.01, list(range(1, 49)), fill_wait=0.05)
    assert sum(clock.sleeps) == pytest.approx(0.05)
    assert len(clock.sleeps) == 3  # 0.02 + 0.02 + the 0.01 left
