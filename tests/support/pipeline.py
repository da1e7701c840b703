"""A whole node for end-to-end tests: Orthanc + ``radiogate scp`` + ``radiogate worker``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.support import ScpProcess, free_port, kill_process_group, stop_process

__all__ = ["Node", "WorkerProcess", "orthanc_instances", "site_keys"]


def site_keys() -> dict[str, str]:
    """A de-identifying node's two secrets (fresh, as ``radiogate run`` makes them): the keyed
    pseudonym secret and the re-identification vault key, as environment variables."""
    return {
        "RADIOGATE_DEID_SECRET": base64.b64encode(os.urandom(32)).decode(),
        "RADIOGATE_DEID_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),
    }


def orthanc_get(orthanc: ManagedOrthanc, path: str) -> Any:
    """GET *path* from the archive with its generated credentials (JSON decoded when it is)."""
    data = orthanc.request(path)
    return json.loads(data) if data[:1] in (b"{", b"[") else data


def orthanc_instances(orthanc: ManagedOrthanc) -> list[str]:
    result = orthanc_get(orthanc, "/instances")
    assert isinstance(result, list)
    return result


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    jobs: str = ""
    """``radiogate worker --jobs`` (empty: the default, all)."""

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dicom_nodes.cli", "worker"]
            + (["--jobs", self.jobs] if self.jobs else []),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        kill_process_group(self.proc)
        self.proc = None


@dataclass
class Node:
    """SCP + worker of one node with a config file forwarding to *orthanc*."""

    dsn: str
    data_dir: Path
    orthanc: ManagedOrthanc
    extra_toml: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    confirm: str = "query"
    """``confirm`` of the ``archive`` destination."""
    destination_toml: str = ""
    """More keys of the ``archive`` destination (e.g. ``commitment_timeout = 3``)."""
    scp_port: int = field(default_factory=free_port)
    """Known before the start, so a peer can be told where to send commitment reports."""
    scp: ScpProcess | None = None
    worker: WorkerProcess | None = None

    @property
    def config_file(self) -> Path:
        return self.data_dir / "radiogate.toml"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Pipeline tests look at the instances as sent; de-identifying tests set their routes.
        routes = (
            ""
            if "[[routes]]" in self.extra_toml
            else '\n[[routes]]\nname = "identified"\nsteps = ["forward:archive"]\n'
        )
        self.config_file.write_text(
            f"""
[pipeline]
quiet_period = 2.0
batch_size = 50
retry_initial = 0.5
retry_max = 2.0

[worker]
concurrency = 4
metrics_port = {self.metrics_port}

[[destinations]]
name = "archive"
ae_title = "{self.orthanc.ae_title}"
host = "127.0.0.1"
port = {self.orthanc.dicom_port}
parallel = 2
confirm = "{self.confirm}"
timeout = 20.0
{self.destination_toml}
{self.extra_toml}{routes}
"""
        )

    def start(self, *, worker: bool = True) -> Node:
        self.write_config()
        self.scp = ScpProcess(
            dsn=self.dsn,
            data_dir=self.data_dir,
            port=self.scp_port,
            extra_env={"RADIOGATE_CONFIG": str(self.config_file), **self.extra_env},
        ).start()
        if worker:
            self.start_worker()
        return self

    def start_worker(self) -> WorkerProcess:
        assert self.scp is not None
        self.worker = WorkerProcess(self.scp.env(), self.data_dir / "worker.log").start()
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.scp is not None:
            self.scp.stop()

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, params).fetchall()

    def wait_for(self, check: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll *check* until it holds; TimeoutError with the worker log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                log = self.worker.log_path.read_text()[-3000:] if self.worker else ""
                raise TimeoutError(f"condition not met in {timeout} s\n{log}")
            time.sleep(0.2)

    def wait_released(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            (row,) = self.query(
                "SELECT count(*) FILTER (WHERE state = 'released'), count(*) FROM ingest_instance"
            )
            if row[0] >= count:
                return
            if time.monotonic() > deadline:
                states = self.query("SELECT state, count(*) FROM ingest_instance GROUP BY state")
                items = self.query(
                    "SELECT state, count(*), max(last_error) FROM forward_item GROUP BY state"
                )
                log = self.worker.log_path.read_text()[-3000:] if self.worker else ""
                raise TimeoutError(f"released {row[0]}/{count}: {states} {items}\n{log}")
            time.sleep(0.25)
