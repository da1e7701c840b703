"""The metric names the shipped Grafana dashboard and Prometheus alert rules use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "radiogate-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "radiogate-alerts.yml"
_NAME = re.compile(r"\b((?:radiogate|process)_[a-z0-9_]+)\b")


def expressions() -> list[str]:
    """Every PromQL expression (and template query) in the dashboard and the alert rules."""
    found = [
        rule["expr"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads(DASHBOARD.read_text())
    found += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    found += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def metric_names() -> set[str]:
    """The metric (sample) names those expressions name."""
    return {name for expr in expressions() for name in _NAME.findall(expr)}
