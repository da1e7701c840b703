"""A private PostgreSQL cluster under a directory of ours (``make run`` and test fixtures).

``initdb``/``pg_ctl`` refuse to run as root; when we are root the cluster is owned by and run
as the ``postgres`` system user (created by Debian's ``postgresql`` package). The cluster listens
on 127.0.0.1 only, on the given port, with no Unix socket, and trusts local connections: it is a
private, loopback-only development/test cluster. Production sites set ``database.dsn``.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

__all__ = ["ClusterStartError", "PrivateCluster", "find_pg_bin"]

LOGGER = logging.getLogger(__name__)
_DB = "radiogate"
_USER = "radiogate"


class ClusterStartError(RuntimeError):
    """``initdb`` or ``pg_ctl start`` failed (the message names the log file)."""


def find_pg_bin() -> Path:
    """Directory with initdb/pg_ctl/postgres (newest installed major version)."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    if versions:
        return Path(versions[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql)")


class PrivateCluster:
    """A PostgreSQL cluster in *data_dir* listening on 127.0.0.1:*port*."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.bin = find_pg_bin()
        self.log_file = self.data_dir.parent / "postgres.log"
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={_DB} user={_USER}"

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user={_USER}"

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    def _chown(self, path: Path) -> None:
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster (idempotent)."""
        if self.initialised():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        parent = self.data_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        self._chown(self.log_file)
        LOGGER.info("initialising PostgreSQL cluster in %s", self.data_dir)
        subprocess.run(
            self._cmd(
                str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", _USER,
                "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        with (self.data_dir / "postgresql.auto.conf").open("a") as fh:
            fh.write(
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                f"port = {self.port}\n"
                "max_connections = 200\n"
                "shared_buffers = 128MB\n"
            )

    def running(self) -> bool:
        result = subprocess.run(
            self._cmd(str(self.bin / "pg_ctl"), "status", "-D", str(self.data_dir)),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def start(self, timeout: float = 60.0) -> bool:
        """Start the cluster (if not running), wait until it accepts connections, create the db.

        Returns True if this call started the server (so the caller may stop it), False if it
        was running already (someone else's: leave it running)."""
        self.init()
        started = False
        if not self.running():
            result = subprocess.run(
                self._cmd(
                    str(self.bin / "pg_ctl"), "start", "-D", str(self.data_dir), "-l",
                    str(self.log_file), "-o", f"-p {self.port}", "-w", "-t", str(int(timeout)),
                ),
                check=False,
                capture_output=True,
            )  # fmt: skip
            if result.returncode != 0:
                raise ClusterStartError(
                    f"PostgreSQL in {self.data_dir} did not start (pg_ctl status "
                    f"{result.returncode}); see {self.log_file}"
                )
            started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=2) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (_DB,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f"CREATE DATABASE {_DB}")
                return started
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``fast``, or ``immediate`` to simulate a crash)."""
        if self.running():
            subprocess.run(
                self._cmd(
                    str(self.bin / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w"
                ),
                check=False,
                capture_output=True,
            )
