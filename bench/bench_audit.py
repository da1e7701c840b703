"""Audit trail throughput: appends/s with 1, 4 and 16 writers, verify events/s over a long chain.

    python bench/bench_audit.py            # 1,000,000-event chain for verify
    python bench/bench_audit.py --quick    # smaller runs (about a minute)
    python bench/bench_audit.py --dsn "host=... dbname=..."   # an existing, migrated database

Without --dsn a private PostgreSQL cluster is started in a temporary directory. Each writer is a
process with its own connection. "append N" appends N events per transaction with the head lock
(N = 1 is the SCP's pattern: the instance row and its event commit together); "enqueue 1" records
one event per transaction without the lock while a sealer process chains them (audit.sealer);
rates count events until all are in the chain.
The verify chain is bulk-generated through append_many in large batches (the real append path).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import (
    Keyring,
    append_many,
    enqueue,
    enqueue_many,
    pending_count,
    read_head,
    seal,
    verify,
)
from audit.verify import PARALLEL_FROM
from dicom_nodes.db.migrate import migrate
from dicom_nodes.services.postgres import PrivateCluster
from tests.support import free_port
from tests.unit.audit._factory import received


def _new_db(admin_dsn: str, base_dsn: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    dsn = f"{base_dsn} dbname={name}"
    with psycopg.connect(dsn) as conn:
        migrate(conn)
    return dsn


def _writer(dsn: str, events: int, batch: int, start: Any, deferred: bool) -> None:
    evs = [received(i, ae=f"CT{i % 7}") for i in range(batch)]
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        start.wait()
        for _ in range(events // batch):
            with conn.transaction():
                if deferred:
                    enqueue_many(conn, evs) if batch > 1 else enqueue(conn, evs[0])
                else:
                    append_many(conn, evs)


def _sealer(dsn: str, stop: Any) -> None:
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            if not seal(conn):
                stop.wait(0.02)


def bench_appends(dsn: str, writers: int, total: int, batch: int, deferred: bool) -> float:
    """Events/s until every event is in the chain (for enqueue: sealed by a sealer process)."""
    per = max(batch, total // writers // batch * batch)
    start, stop = mp.Event(), mp.Event()
    procs = [
        mp.Process(target=_writer, args=(dsn, per, batch, start, deferred)) for _ in range(writers)
    ]
    sealer = mp.Process(target=_sealer, args=(dsn, stop))
    for p in procs:
        p.start()
    if deferred:
        sealer.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    with psycopg.connect(dsn) as conn:
        while pending_count(conn):
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        assert read_head(conn).seq == per * writers
    stop.set()
    if deferred:
        sealer.join()
    return per * writers / elapsed


def generate_chain(dsn: str, n: int, batch: int = 10_000) -> float:
    """Append *n* events through append_many in large batches; return seconds taken."""
    pool = [received(i, study=f"1.2.826.0.1.3680043.2.1125.{i % 97}") for i in range(1000)]
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        done = 0
        while done < n:
            k = min(batch, n - done)
            with conn.transaction():
                append_many(conn, [pool[(done + j) % len(pool)] for j in range(k)])
            done += k
            print(f"\r  generated {done:,}/{n:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dsn", help="libpq DSN of a server whose user may CREATE DATABASE")
    ap.add_argument("--quick", action="store_true", help="small runs")
    ap.add_argument("--chain", type=int, help="events in the verify chain (default 1,000,000)")
    args = ap.parse_args()
    chain_n = args.chain or (100_000 if args.quick else 1_000_000)
    append_total = 1_600 if args.quick else 8_000

    cluster = None
    if args.dsn:
        base = " ".join(p for p in args.dsn.split() if not p.startswith("dbname="))
        admin = f"{base} dbname=postgres"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="radiogate-bench-"))
        tmp.chmod(0o755)
        cluster = PrivateCluster(tmp / "data", free_port())
        cluster.start()
        admin = cluster.admin_dsn
        base = f"host=127.0.0.1 port={cluster.port} user=radiogate"
    try:
        print(f"appends ({append_total:,} events per run; each writer its own process/connection)")
        results = {}
        for mode, batch in (("append", 1), ("enqueue", 1), ("append", 10), ("append", 100)):
            for writers in (1, 4, 16):
                dsn = _new_db(admin, base)
                rate = bench_appends(dsn, writers, append_total, batch, mode == "enqueue")
                results[(mode, batch, writers)] = rate
                print(
                    f"  {mode:>7} {batch:>3}/tx  writers={writers:<2}  {rate:8,.0f} events/s",
                    flush=True,
                )
        print(f"verify over a {chain_n:,}-event chain")
        dsn = _new_db(admin, base)
        gen = generate_chain(dsn, chain_n)
        print(f"  generated in {gen:.1f} s ({chain_n / gen:,.0f} events/s via append_many)")
        with psycopg.connect(dsn, autocommit=True) as conn:  # as autovacuum would, in time
            conn.execute("VACUUM (FREEZE, ANALYZE) audit_event")
        rates = {}
        cores = os.cpu_count() or 1
        for workers in sorted({1, cores}) if chain_n >= PARALLEL_FROM else [1]:
            with psycopg.connect(dsn) as conn:
                report = verify(conn, Keyring(), dsn=dsn, workers=workers)
            assert report.ok, report.summary()
            rates[workers] = report.checked / report.elapsed
            print(
                f"  verify, {workers} process(es): {report.checked:,} events in"
                f" {report.elapsed:.2f} s = {rates[workers]:,.0f} events/s",
                flush=True,
            )
        print("summary: events/s with 1/4/16 writers:")
        for mode, batch in (("append", 1), ("enqueue", 1), ("append", 10), ("append", 100)):
            rates_w = "/".join(f"{results[(mode, batch, w)]:,.0f}" for w in (1, 4, 16))
            print(f"  {mode} {batch} event(s) per transaction: {rates_w}")
        print(f"  verify: {max(rates.values()):,.0f} events/s")
    finally:
        if cluster is not None:
            cluster.stop(mode="immediate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
