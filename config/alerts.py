"""Settings of alerts: where critical and incomplete results are announced, and when an alert
nobody acknowledged escalates. Example (TOML)::

    [alerts]
    targets = ["reading-room"]             # level 0: first delivery
    escalation_targets = ["on-call"]       # from level 2 on (level 1 re-sends to targets)
    category1_minutes = 5.0                # ACR category 1: re-send after 5 min without ack
    category2_minutes = 60.0

    [[alerts.target]]
    name = "reading-room"
    kind = "webhook"
    url = "https://ris.example.org/radiogate-alerts"
    secret_file = "alerts/webhook.key"     # HMAC-SHA256 key; relative to node.data_dir

    [[alerts.target]]
    name = "on-call"
    kind = "mqtt"
    host = "127.0.0.1"
    port = 1883
    topic = "radiogate/alerts"
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AlertSettings", "AlertTargetSettings"]


@dataclass(frozen=True)
class AlertTargetSettings:
    """One place alerts go: an HTTP webhook (JSON, HMAC-signed) or an MQTT topic (QoS 1)."""

    name: str = ""
    kind: str = "webhook"
    """webhook or mqtt."""
    url: str = ""
    """webhook: the URL alerts are POSTed to."""
    host: str = "127.0.0.1"
    """mqtt: broker host."""
    port: int = 1883
    topic: str = "radiogate/alerts"
    """mqtt: topic; the category is appended (``radiogate/alerts/1``)."""
    secret_file: str = ""
    """HMAC-SHA256 key signing each message (relative to node.data_dir; created on first use)."""
    timeout: float = 5.0


@dataclass(frozen=True)
class AlertSettings:
    targets: list[str] = field(default_factory=list)
    """Targets of the first delivery (level 0) and of the re-send (level 1). Empty: alerts are
    recorded and listed (``radiogate alert list``) but sent nowhere."""
    escalation_targets: list[str] = field(default_factory=list)
    """Targets from level 2 on; empty: the first targets again."""
    category1_minutes: float = 5.0
    """ACR actionable finding category 1: minutes without acknowledgement before escalating."""
    category2_minutes: float = 60.0
    category3_minutes: float = 1440.0
    retry_initial: float = 2.0
    """Seconds before retrying a failed delivery (doubling up to retry_max)."""
    retry_max: float = 120.0
    target: list[AlertTargetSettings] = field(default_factory=list)
