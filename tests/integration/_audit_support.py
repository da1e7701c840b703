"""Helpers for audit integration tests: a chain with checkpoints, superuser tampering."""

from __future__ import annotations

from pathlib import Path

import psycopg

from audit import Checkpointer, FileSink, Keyring, Signer, append_many, generate_key, verify
from audit.checkpoint import read_checkpoint_file
from audit.verify import VerifyReport
from tests.unit.audit._factory import received


class Trail:
    """An audit chain of *n* events with a signed checkpoint every *every* events."""

    def __init__(self, dsn: str, tmp: Path, n: int = 100, every: int = 25) -> None:
        self.dsn = dsn
        self.file = tmp / "checkpoints.jsonl"
        self.keyring_path = tmp / "keyring.json"
        self.signer: Signer = generate_key(tmp / "signing_key.pem", self.keyring_path)
        cpr = Checkpointer(self.signer, [FileSink(self.file)], every=every, seconds=0)
        with psycopg.connect(dsn) as conn:
            for start in range(0, n, every):
                with conn.transaction():
                    append_many(conn, [received(i) for i in range(start, min(n, start + every))])
                assert cpr.maybe_checkpoint(conn) is not None

    def verify(self) -> VerifyReport:
        with psycopg.connect(self.dsn) as conn:
            return verify(conn, Keyring.load(self.keyring_path), read_checkpoint_file(self.file))

    def tamper(self, *statements: str | tuple[str, tuple[object, ...]]) -> None:
        """Run *statements* as superuser with the append-only triggers bypassed."""
        with psycopg.connect(self.dsn) as conn:
            conn.execute("SET session_replication_role = replica")
            for st in statements:
                if isinstance(st, tuple):
                    conn.execute(st[0].encode(), st[1])
                else:
                    conn.execute(st.encode())

    def row(self, seq: int) -> tuple[bytes, bytes]:
        with psycopg.connect(self.dsn) as conn:
            r = conn.execute("SELECT hash, body FROM audit_event WHERE seq = %s", (seq,)).fetchone()
            assert r is not None
            return bytes(r[0]), bytes(r[1])
