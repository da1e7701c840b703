"""A small HTTP endpoint for Prometheus (``/metrics``) and liveness checks (``/health``).

``/health`` answers 200 with a JSON body when every check passes and 503 otherwise, so load
balancers and supervisors can use it as is.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["HealthCheck", "serve"]

LOGGER = logging.getLogger(__name__)

HealthCheck = Callable[[], Mapping[str, bool]]
"""Returns named checks, e.g. ``{"database": True, "spool_space": True}``."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def serve(host: str, port: int, registry: CollectorRegistry, health: HealthCheck) -> WSGIServer:
    """Serve ``/metrics`` and ``/health`` on *host*:*port* from a daemon thread."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            try:
                checks = dict(health())
            except Exception as exc:  # a failing check is an unhealthy answer, not a 500
                checks = {type(exc).__name__: False}
            ok = all(checks.values())
            body = json.dumps({"status": "ok" if ok else "unhealthy", "checks": checks}).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    server = make_server(host, port, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
