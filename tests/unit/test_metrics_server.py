"""The metrics endpoint: /metrics, /health (200 or 503 with the checks), 404 for anything else;
process figures of a service's process tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dicom_nodes.metrics_server import ServiceProcessCollector, serve


def test_paths() -> None:
    registry = CollectorRegistry()
    checks = {"database": True}
    server = serve("127.0.0.1", 0, registry, lambda: checks)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as rsp:
            assert rsp.status == 200
        with urllib.request.urlopen(f"{base}/health", timeout=5) as rsp:
            assert json.loads(rsp.read()) == {"status": "ok", "checks": {"database": True}}
        checks["database"] = False
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(f"{base}/health", timeout=5)
        assert unhealthy.value.code == 503
        for path in ("/", "/metricsx", "/health/x", "/favicon.ico"):
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(base + path, timeout=5)
            assert missing.value.code == 404, path
    finally:
        server.shutdown()


def test_process_tree_includes_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        registry = CollectorRegistry()
        registry.register(ServiceProcessCollector(os.getpid))
        values = {
            s.name: s.value
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            for s in f.samples
        }
        assert values["radiogate_service_processes"] >= 2  # this process and its child
        assert values["process_resident_memory_bytes"] > 0
        assert values["process_open_fds"] >= 3
        assert values["process_cpu_seconds_total"] > 0
    finally:
        child.kill()
        child.wait()
