"""A small HTTP endpoint for Prometheus (``/metrics``) and liveness checks (``/health``).

``/health`` answers 200 with a JSON body when every check passes and 503 otherwise, so load
balancers and supervisors can use it as is; any other path is 404.

:class:`ServiceProcessCollector` reports the standard ``process_*`` metrics for a whole
service, its main process and every descendant (the SCP's receiver processes, the worker's
de-identification and analysis processes), read from ``/proc`` at scrape time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["HealthCheck", "ServiceProcessCollector", "serve"]

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
        path = environ.get("PATH_INFO")
        if path == "/health":
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
        if path != "/metrics":
            body = b"not found: use /metrics or /health\n"
            start_response(
                "404 Not Found",
                [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
            )
            return [body]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    server = make_server(host, port, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat(pid: int) -> tuple[int, float, int, int, float] | None:
    """(parent pid, CPU seconds, resident bytes, virtual bytes, start ticks) from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    # fields[0] is field 3 (state) of proc(5)
    ppid = int(fields[1])
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    return ppid, cpu, int(fields[21]) * _PAGE, int(fields[20]), float(fields[19])


def _boot_time() -> float:
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


class ServiceProcessCollector(Collector):
    """``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
    ``process_virtual_memory_bytes``, ``process_open_fds``, ``process_start_time_seconds``
    (of the main process) and ``radiogate_service_processes``, summed over the process tree
    rooted at ``root()`` (resident memory counts pages shared by forks once per process)."""

    def __init__(self, root: Callable[[], int] = os.getpid) -> None:
        self.root = root
        self.boot = _boot_time()

    def _tree(self, root: int) -> dict[int, tuple[int, float, int, int, float]]:
        stats: dict[int, tuple[int, float, int, int, float]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = _stat(int(name))
                if st is not None:
                    stats[int(name)] = st
        members = {root} if root in stats else set()
        grew = True
        while grew:
            grew = False
            for pid, st in stats.items():
                if pid not in members and st[0] in members:
                    members.add(pid)
                    grew = True
        return {pid: stats[pid] for pid in members}

    def collect(self) -> Iterator[Any]:
        if not os.path.isdir("/proc"):
            return
        root = self.root()
        tree = self._tree(root)
        if not tree:
            return
        fds = 0
        for pid in tree:
            with contextlib.suppress(OSError):
                fds += len(os.listdir(f"/proc/{pid}/fd"))
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "Total user and system CPU time of the service's processes"
        )
        cpu.add_metric([], sum(s[1] for s in tree.values()))
        yield cpu
        for name, doc, value in (
            ("process_resident_memory_bytes", "Resident memory of the service's processes",
             sum(s[2] for s in tree.values())),
            ("process_virtual_memory_bytes", "Virtual memory of the service's processes",
             sum(s[3] for s in tree.values())),
            ("process_open_fds", "Open file descriptors of the service's processes", fds),
            ("process_start_time_seconds", "Start time of the service's main process (Unix)",
             self.boot + tree[root][4] / _TICKS if root in tree else 0.0),
            ("radiogate_service_processes", "Processes of this service (main and children)",
             len(tree)),
        ):  # fmt: skip
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g
