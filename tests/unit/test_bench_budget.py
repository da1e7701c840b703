"""The forwarding benchmark's CPU budget line (bench/bench_forward.py ``budget_line``)."""

from __future__ import annotations

import pytest

from bench import bench_forward


def test_the_budget_is_what_the_cores_allow_at_the_goal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    line = bench_forward.budget_line(total_ms=8.0, direct_ips=500.0, direct_ms=1.5)
    # 2 cores x 1000 ms / (0.70 x 500 img/s) = 5.7 ms; 2 x 1000 / 8.0 = 250 img/s = 0.50 x 500
    assert "all components 8.0 ms/instance (direct 1.5)" in line
    assert "0.70x direct allows 5.7" in line
    assert "ceiling at this CPU 250 img/s (0.50x direct)" in line


def test_no_figures_no_budget() -> None:
    assert bench_forward.budget_line(0.0, 500.0, 1.0).endswith("cpu budget: no figures")
    assert bench_forward.budget_line(5.0, 0.0, 1.0).endswith("cpu budget: no figures")
