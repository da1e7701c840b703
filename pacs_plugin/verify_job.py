"""``python -m pacs_plugin.verify_job``: verify the audit chain in a process of its own.

Verification recomputes a BLAKE3 hash per event in Python; inside Orthanc it would hold the
interpreter lock that every HTTP filter call needs, and stall image reads for as long as the
chain takes. So the ``audit/verify`` route runs this module with the project's interpreter
(``Radiogate.Python``) and waits for its one line of JSON.

Arguments: the DSN, the keyring file, the checkpoint file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psycopg

import audit

__all__ = ["main"]


def main(argv: list[str]) -> int:
    dsn, keyring, checkpoints = argv
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        report = audit.verify(
            conn, audit.Keyring.load(Path(keyring)), audit.read_checkpoint_file(Path(checkpoints))
        )
    first = report.damage
    print(json.dumps({
        "ok": report.ok, "chain_id": report.chain_id, "head_seq": report.head_seq,
        "checked": report.checked, "last_signed_seq": report.last_signed_seq,
        "checkpoints": {"database": report.checkpoints_db, "file": report.checkpoints_file},
        "damages": [{"kind": d.kind.value, "seq": d.seq} for d in report.damages],
        "first_damage": None if first is None else first.kind.value,
        "warnings": list(report.warnings),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except psycopg.OperationalError:
        print(json.dumps({"error": "database-unavailable"}))
        sys.exit(3)
