"""Alerts: critical and incomplete results announced to people, acknowledged, escalated.

``model`` (what an alert says, pseudonymous), ``targets`` (webhook, MQTT), ``outbox`` (raise,
deliver, escalate, acknowledge), ``cli`` (``radiogate alert list|ack``).
"""

__all__ = ["cli", "model", "outbox", "targets"]
