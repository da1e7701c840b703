"""A real ``radiogate run`` (PostgreSQL, Orthanc, sealer, SCP, worker) on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_nodes.services.credentials import HttpCredentials, load_credentials
from dicom_nodes.services.postgres import PrivateCluster
from tests.support import dcmtk, free_port, kill_process_group, wait_for_echo

__all__ = ["RADIOLOGIST", "Stack", "http_json", "make_site", "radiogate"]

RADIOLOGIST = """
[[pacs.user]]
name = "alice"
role = "radiologist"
token_file = "pacs/alice.token"
"""
"""Configuration of one reading user, ``alice`` (radiologist), whose token the stack writes
to ``<data_dir>/pacs/alice.token``."""


def http_json(
    url: str, who: HttpCredentials, body: bytes | None = None, *, accept: str | None = None
) -> Any:
    """GET *url* (POST *body*) as *who*: the decoded JSON, or the bytes of any other answer."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    req.add_header("Authorization", who.authorization)
    if accept is not None:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=30) as rsp:
        data = rsp.read()
    return json.loads(data) if data[:1] in (b"{", b"[") else data


def make_site(prefix: str = "radiogate-site-") -> Path:
    """A directory for a configuration file and its ``var`` (0755: the cluster runs as
    ``postgres`` when we are root, and must reach its data directory)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RADIOGATE_")}


def radiogate(
    *args: str, cwd: Path | None = None, timeout: float = 120.0, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``radiogate ARGS`` to completion (the current interpreter's installation)."""
    return subprocess.run(
        [sys.executable, "-m", "dicom_nodes.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **popen,
    )


@dataclass
class Stack:
    """``radiogate -c SITE/radiogate.toml run`` with ``node.data_dir = "var"``."""

    site: Path
    db_port: int = field(default_factory=free_port)
    scp_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    scp_metrics: int = field(default_factory=free_port)
    worker_metrics: int = field(default_factory=free_port)
    viewer_port: int = field(default_factory=free_port)
    extra_toml: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.site / "radiogate.toml"

    @property
    def data_dir(self) -> Path:
        return self.site / "var"

    @property
    def log_path(self) -> Path:
        return self.site / "run.log"

    def write_config(self) -> None:
        self.config_file.write_text(
            f"""
[node]
data_dir = "var"
[database]
port = {self.db_port}
[scp]
port = {self.scp_port}
processes = 1
metrics_port = {self.scp_metrics}
[spool]
min_free_bytes = 0
min_free_percent = 0.0
[orthanc]
executable = "/usr/sbin/Orthanc"
http_port = {self.http_port}
dicom_port = {self.dicom_port}
[viewer]
port = {self.viewer_port}
[worker]
metrics_port = {self.worker_metrics}
concurrency = 2
[pipeline]
quiet_period = 1.0
retry_initial = 0.5
retry_max = 2.0
[audit]
checkpoint_seconds = 1.0
[[destinations]]
name = "archive"
port = {self.dicom_port}
{self.extra_toml}
"""
        )

    def start(self, timeout: float = 120.0) -> Stack:
        if not self.config_file.exists():
            self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dicom_nodes.cli", "-c", str(self.config_file), "run"],
            env=_env(),
            cwd="/",
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while "Press Ctrl-C to stop." not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"radiogate run exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"radiogate run did not start:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        wait_for_echo(self.scp_port, "RADIOGATE", timeout=60)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lock_info(self) -> dict[str, Any]:
        doc = json.loads((self.data_dir / "radiogate.lock").read_text())
        assert isinstance(doc, dict)
        return doc

    def service_pid(self, name: str) -> int:
        return int(self.lock_info()["services"][name]["pid"])

    def restarts(self, name: str) -> int:
        return int(self.lock_info()["services"][name]["restarts"])

    def orthanc_get(self, path: str) -> Any:
        creds = load_credentials(self.data_dir / "orthanc" / "http-credentials")
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        req.add_header("Authorization", creds.authorization)
        with urllib.request.urlopen(req, timeout=30) as rsp:
            return json.loads(rsp.read())

    def archived(self) -> int:
        return int(self.orthanc_get("/statistics")["CountInstances"])

    def send(self, files: list[Path], aet: str = "CT1") -> None:
        subprocess.run(
            [dcmtk("storescu"), "-aet", aet, "-aec", "RADIOGATE", "127.0.0.1",
             str(self.scp_port), *map(str, files)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def wait_archived(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = -1
        while True:
            try:
                last = self.archived()
            except OSError:
                last = -1  # Orthanc restarting
            if last >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"archived {last}/{count}:\n{self.log()[-4000:]}")
            time.sleep(0.5)

    def radiogate(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return radiogate("-c", str(self.config_file), *args, cwd=cwd)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_process_group(self.proc)
        code = self.proc.returncode
        self.proc = None
        return code

    def remove(self) -> None:
        """Stop whatever is left (a cluster started by hand too) and delete the site."""
        self.stop()
        cluster = PrivateCluster(self.data_dir / "postgres", self.db_port)
        if cluster.initialised():
            cluster.stop(mode="immediate")
        shutil.rmtree(self.site, ignore_errors=True)
