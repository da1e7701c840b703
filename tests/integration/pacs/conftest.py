"""A real Orthanc with ``pacs_plugin`` loaded by orthanc-python, on a fresh PostgreSQL database.

Users: ``alice`` (radiologist), ``olga`` (admin), ``mallory`` (an Orthanc user without a role),
plus the archive's own account. :class:`Pacs` answers HTTP as any of them.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import config
from dicom_nodes.services.credentials import HttpCredentials, load_credentials
from dicom_nodes.services.orthanc import ManagedOrthanc
from dicom_nodes.services.pacs import plugin_config, user_tokens
from tests.support import free_port

CONFIG = """
[node]
name = "node1"
data_dir = "{data}"

[database]
dsn = "{dsn}"

[pacs]
journal_sync_interval = 0.05
routine_max_wait_minutes = 60.0
urgent_max_wait_minutes = 30.0
archive_arrivals = "{arrivals}"

[[pacs.user]]
name = "alice"
role = "radiologist"
token_file = "pacs/alice.token"

[[pacs.user]]
name = "olga"
role = "admin"
token_file = "pacs/olga.token"
"""


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Pacs:
    orthanc: ManagedOrthanc
    settings: config.Settings
    config_file: Path
    dsn: str
    users: dict[str, HttpCredentials]

    def call(self, who: str, path: str, *, method: str = "GET", body: bytes | None = None,
             timeout: float = 30) -> Answer:  # fmt: skip
        req = urllib.request.Request(f"{self.orthanc.url}{path}", data=body, method=method)
        req.add_header("Authorization", self.users[who].authorization)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as rsp:
                return Answer(rsp.status, rsp.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read())

    def journal_lines(self) -> list[dict[str, Any]]:
        out = []
        for seg in sorted(Path(self.settings.pacs.journal_dir).glob("*.jsonl")):
            out += [json.loads(line) for line in seg.read_text().splitlines() if line]
        return out


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def start_pacs(dsn: str, base: Path, *, more_config: str = "", arrivals: str = "",
               orthanc_extra: dict[str, object] | None = None) -> Pacs:  # fmt: skip
    base.mkdir(parents=True, exist_ok=True)
    cfg = base / "radiogate.toml"
    cfg.write_text(CONFIG.format(data=base / "node", dsn=dsn, arrivals=arrivals) + more_config)
    settings = config.load(cfg, env={})
    orthanc = ManagedOrthanc(
        storage_dir=base / "orthanc", http_port=free_port(), dicom_port=free_port(),
        credentials_file=base / "orthanc-credentials",
    )  # fmt: skip
    service = orthanc.credentials
    orthanc.extra = plugin_config(
        settings, dsn=dsn, config_file=str(cfg), service_user=service.user
    ) | (orthanc_extra or {})
    orthanc.users = dict(user_tokens(settings))
    orthanc.users["mallory"] = "mallory-password"
    users = {u.name: load_credentials(Path(u.token_file)) for u in settings.pacs.user}
    users["service"] = service
    users["mallory"] = HttpCredentials("mallory", "mallory-password")
    orthanc.start(timeout=60)
    return Pacs(orthanc, settings, cfg, dsn, users)


@pytest.fixture
def pacs(fresh_dsn: str, tmp_path: Path) -> Iterator[Pacs]:
    running = start_pacs(fresh_dsn, tmp_path / "pacs")
    try:
        yield running
    finally:
        running.orthanc.stop()


def upload(pacs: Pacs, path: Path) -> dict[str, Any]:
    answer = pacs.call("service", "/instances", method="POST", body=path.read_bytes())
    assert answer.status == 200, answer.body
    return dict(answer.json())


def seed_study(dsn: str, archive_uid: str, *, lane: str, age_minutes: float,
               received_uid: str | None = None) -> str:  # fmt: skip
    """A study row as the pipeline leaves it (received under another UID, archived under
    *archive_uid*), *age_minutes* old."""
    uid = received_uid or f"{archive_uid}.9"
    with psycopg.connect(dsn) as conn:
        conn.execute(
            """INSERT INTO study (study_instance_uid, state, lane, first_received_at,
                   last_received_at, archive_study_uid)
               VALUES (%s, 'complete', %s, clock_timestamp() - make_interval(mins => %s),
                       clock_timestamp() - make_interval(mins => %s), %s)""",
            (uid, lane, age_minutes, age_minutes, archive_uid),
        )
    return uid


def recorder(pacs: Pacs, dsn: str | None = None, on_stable: Any = None) -> Any:
    from dicom_nodes.pacs.recorder import OrthancResolver, Recorder

    resolver = OrthancResolver(pacs.orthanc.url, pacs.users["service"].authorization)
    return Recorder(dsn or pacs.dsn, Path(pacs.settings.pacs.journal_dir), "node1", "ORTHANC",
                    resolver, on_stable)  # fmt: skip


def chained(dsn: str, **query: Any) -> list[Any]:
    """Seal what is pending, then the stored events matching *query*."""
    import audit

    with psycopg.connect(dsn, autocommit=True) as conn:
        while audit.seal(conn):
            pass
        return list(audit.search(conn, audit.AuditQuery(**query)))
