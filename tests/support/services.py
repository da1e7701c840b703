"""Small real services for tests: a private Mosquitto broker, an MQTT subscriber, and an HTTP
receiver that records what is POSTed to it (and can be down)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support import free_port

__all__ = ["HttpReceiver", "Mosquitto", "mqtt_messages"]

MOSQUITTO = "/usr/sbin/mosquitto"


@dataclass
class Mosquitto:
    """``mosquitto`` on a free loopback port, anonymous, no persistence."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@contextmanager
def mqtt_messages(port: int, topic: str) -> Iterator[queue.Queue[tuple[str, dict[str, Any]]]]:
    """Subscribe to *topic* (QoS 1); yields a queue of (topic, JSON body)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="radiogate-test-subscriber")
    client.on_message = lambda _c, _u, msg: received.put((msg.topic, json.loads(msg.payload)))
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    if not subscribed.wait(10):
        raise TimeoutError("subscription not acknowledged")
    try:
        yield received
    finally:
        client.disconnect()
        client.loop_stop()


class HttpReceiver:
    """Records POSTs (headers, body) and answers 200; ``up()``/``down()`` bind and free its
    port, so a sender meets a refused connection while it is down."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def up(self) -> None:
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
