"""Where alerts go: an HTTP webhook (JSON, HMAC-SHA256 signed) or an MQTT topic (QoS 1).

Both send the same pseudonymous JSON document (:func:`dicom_nodes.alerts.model.message`). A
webhook request carries ``X-Radiogate-Signature: sha256=<hex HMAC of the body>`` and
``X-Radiogate-Alert: <alert id>``; an MQTT message has no headers, so its body is the document
with a ``signature`` member computed over the canonical JSON of the rest. A target that does not
take the message raises :class:`DeliveryFailed` (the delivery is retried after a back-off).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from config import Settings, data_path
from config.alerts import AlertTargetSettings

__all__ = [
    "AlertTarget",
    "DeliveryFailed",
    "MqttTarget",
    "WebhookTarget",
    "build_targets",
    "canonical",
    "sign",
]

LOGGER = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The target did not take the message; *reason* is a short code (no PHI)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AlertTarget(Protocol):
    name: str

    def send(self, message: Mapping[str, Any]) -> None:
        """Deliver *message*; raise :class:`DeliveryFailed` when it was not taken."""
        ...


def canonical(message: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class WebhookTarget:
    """POST the message as JSON; any 2xx answer is delivery."""

    def __init__(self, name: str, url: str, key: bytes, timeout: float = 5.0) -> None:
        self.name, self.url, self.key, self.timeout = name, url, key, timeout

    def send(self, message: Mapping[str, Any]) -> None:
        body = canonical(message)
        request = urllib.request.Request(  # noqa: S310 - the URL scheme is checked at load
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Radiogate-Signature": sign(self.key, body),
                "X-Radiogate-Alert": str(message.get("alert_id", "")),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as rsp:  # noqa: S310
                status = rsp.status
        except urllib.error.HTTPError as exc:
            raise DeliveryFailed(f"http-{exc.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"unreachable-{type(exc).__name__.lower()}") from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"http-{status}")


class MqttTarget:
    """Publish with QoS 1 to ``<topic>/<category>``; delivery = the broker's PUBACK."""

    def __init__(
        self, name: str, host: str, port: int, topic: str, key: bytes, *, timeout: float = 5.0
    ) -> None:
        self.name, self.host, self.port, self.topic = name, host, port, topic
        self.key, self.timeout = key, timeout
        self._lock = threading.Lock()

    def send(self, message: Mapping[str, Any]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        body = dict(message)
        body["signature"] = sign(self.key, canonical(message))
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"radiogate-{self.name}",
            protocol=mqtt.MQTTv311,
        )
        with self._lock:
            try:
                client.connect(self.host, self.port, keepalive=30)
            except OSError as exc:
                raise DeliveryFailed(f"unreachable-{type(exc).__name__.lower()}") from None
            client.loop_start()
            try:
                info = client.publish(
                    f"{self.topic}/{message.get('category', 0)}", canonical(body), qos=1
                )
                info.wait_for_publish(timeout=self.timeout)
                if not info.is_published():
                    raise DeliveryFailed("no-puback")
            except (RuntimeError, ValueError) as exc:
                raise DeliveryFailed(f"publish-{type(exc).__name__.lower()}") from None
            finally:
                client.disconnect()
                client.loop_stop()


def build_targets(settings: Settings) -> dict[str, AlertTarget]:
    """The configured targets, with their HMAC keys (created under data_dir on first use)."""
    from dicom_nodes.deid.secrets import ensure_key_file

    out: dict[str, AlertTarget] = {}
    for t in settings.alerts.target:
        key = ensure_key_file(_key_path(settings, t), f"alert target {t.name} key")
        if t.kind == "webhook":
            out[t.name] = WebhookTarget(t.name, t.url, key, t.timeout)
        else:
            out[t.name] = MqttTarget(t.name, t.host, t.port, t.topic, key, timeout=t.timeout)
    return out


def _key_path(settings: Settings, target: AlertTargetSettings) -> Path:
    return data_path(settings, target.secret_file or f"alerts/{target.name}.key")
