"""Fixtures: a private PostgreSQL cluster per session, a fresh database per test, SCP processes."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import config
from dicom_nodes.db.migrate import migrate
from dicom_nodes.forward import use_accelerator
from dicom_nodes.services.postgres import PrivateCluster
from tests.support import ScpProcess, free_port


@pytest.fixture(scope="session", autouse=True)
def _forward_accelerator_from_environment() -> None:
    """Associations this test process requests follow ``forward.accelerate`` from the
    environment, as in ``radiogate worker`` (``make test`` runs the suite again with it off)."""
    use_accelerator(config.load().forward.accelerate)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PrivateCluster]:
    """A real PostgreSQL cluster on a free loopback port, owned by this test session."""
    # Not under pytest's 0700 tmp dirs: when we are root the cluster runs as 'postgres'.
    base = Path(tempfile.mkdtemp(prefix="radiogate-pg-"))
    base.chmod(0o755)
    cluster = PrivateCluster(base / "data", free_port())
    cluster.start()
    yield cluster
    cluster.stop(mode="immediate")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_dsn(pg_cluster: PrivateCluster) -> Iterator[str]:
    """DSN of a new, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"host=127.0.0.1 port={pg_cluster.port} dbname={name} user=radiogate"
    with psycopg.connect(dsn) as conn:
        migrate(conn)
    yield dsn
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def scp(fresh_dsn: str, tmp_path: Path) -> Iterator[ScpProcess]:
    """A running ``radiogate scp`` with one receiver process on a free port."""
    proc = ScpProcess(dsn=fresh_dsn, data_dir=tmp_path / "node").start()
    yield proc
    proc.stop()


@pytest.fixture
def own_cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster for one test, free to be stopped and restarted (fault tests)."""
    base = Path(tempfile.mkdtemp(prefix="radiogate-pg-"))
    base.chmod(0o755)
    cluster = PrivateCluster(base / "data", free_port())
    cluster.start()
    with psycopg.connect(cluster.dsn) as conn:
        migrate(conn)
    yield cluster
    cluster.stop(mode="immediate")
    shutil.rmtree(base, ignore_errors=True)
