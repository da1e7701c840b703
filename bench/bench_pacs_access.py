"""Cost of the access audit: reads/s through Orthanc with and without ``pacs_plugin``, same run.

    python bench/bench_pacs_access.py                 # 4 rounds x 2,000 reads per archive
    python bench/bench_pacs_access.py --reads 500 --rounds 2
    python bench/bench_pacs_access.py --record        # then time the recorder and the sealer
    python bench/bench_pacs_access.py --file CT.dcm   # read another instance

Three private Orthancs are started side by side with the same configuration: one without a
plugin, one with an empty Python filter (what orthanc-python costs for any filter), one with
``pacs_plugin`` (the HTTP filter classifies each request and appends one journal line per
read; nothing reaches PostgreSQL on that path, so the plugin gets a DSN nothing listens on).
The same instance is stored in each; a radiologist reads ``GET /instances/{id}/file`` with 4
keep-alive client threads, alternating rounds between the archives so that noise hits all.
Reported per archive: reads/s (wall clock, client included) and Orthanc's CPU time per read
(utime + stime of its process from /proc, which the client's load does not inflate); the
difference is the plugin's cost per read. On a shared 2-core machine the wall-clock figure is
noisy; the CPU-per-read difference is the one to quote.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config
from dicom_nodes.services.orthanc import ManagedOrthanc
from dicom_nodes.services.pacs import plugin_config
from tests.support import free_port

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "ctbrain1.dcm"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _reads(port: int, path: str, auth: str, count: int, threads: int) -> float:
    """Seconds for *count* reads spread over *threads* keep-alive connections."""
    per = count // threads

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per):
            conn.request("GET", path, headers={"Authorization": auth})
            rsp = conn.getresponse()
            rsp.read()
            assert rsp.status == 200, rsp.status
        conn.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def _record(base: Path, journal: Path, archive: ManagedOrthanc) -> None:
    """Time ``radiogate pacs record`` (one pass) and the sealer over the journal just written."""
    import psycopg

    import audit
    from dicom_nodes.db.migrate import migrate
    from dicom_nodes.pacs.recorder import OrthancResolver, Recorder
    from dicom_nodes.services.postgres import PrivateCluster

    (base / "pg").mkdir(mode=0o755)
    base.chmod(0o755)
    cluster = PrivateCluster(base / "pg" / "data", free_port())
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn) as conn:
            migrate(conn)
        resolver = OrthancResolver(archive.url, archive.credentials.authorization)
        recorder = Recorder(cluster.dsn, journal, "node1", "ORTHANC", resolver)
        start = time.perf_counter()
        recorded = recorder.record_once()
        recording = time.perf_counter() - start
        start = time.perf_counter()
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            while audit.seal(conn):
                pass
        sealing = time.perf_counter() - start
        print(f"  recorder: {recorded} lines -> audit_pending in {recording:.2f} s"
              f" ({recorded / recording:,.0f} events/s); sealer chained them in {sealing:.2f} s"
              f" ({recorded / sealing:,.0f} events/s)")  # fmt: skip
    finally:
        cluster.stop(mode="immediate")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument(
        "--record",
        action="store_true",
        help="then time the recorder chaining the journal into PostgreSQL",
    )
    ap.add_argument("--file", type=Path, default=DATA, help="the instance read (default: 15 kB)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="radiogate-bench-pacs-"))
    cfg = base / "radiogate.toml"
    cfg.write_text(f'[node]\ndata_dir = "{base}/node"\n[[pacs.user]]\nname = "alice"\n'
                   'role = "radiologist"\n')  # fmt: skip
    settings = config.load(cfg, env={})
    noop = base / "noop.py"
    noop.write_text("import orthanc\northanc.RegisterIncomingHttpRequestFilter("
                    "lambda uri, **request: True)\n")  # fmt: skip
    archives: dict[str, ManagedOrthanc] = {}
    for name in ("without plugin", "no-op filter", "with plugin"):
        o = ManagedOrthanc(base / name.replace(" ", "-"), free_port(), free_port())
        if name == "no-op filter":  # the floor: orthanc-python calling an empty filter
            found = plugin_config(settings, dsn="", config_file=None, service_user="")
            plugins = found["Plugins"]
            assert isinstance(plugins, list)
            o.extra = {"Plugins": plugins[:1], "PythonScript": str(noop)}
        if name == "with plugin":
            nowhere = f"host=127.0.0.1 port={free_port()}"
            o.extra = plugin_config(
                settings, dsn=nowhere, config_file=str(cfg), service_user=o.credentials.user
            )
        o.users = {"alice": "alice-password"}
        o.start()
        archives[name] = o
    try:
        paths = {}
        for name, o in archives.items():
            stored = o.request("/instances", method="POST", body=args.file.read_bytes())
            paths[name] = f"/instances/{json.loads(stored)['ID']}/file"
        auth = _auth("alice", "alice-password")
        totals = {n: [0.0, 0.0, 0] for n in archives}  # wall, cpu, reads
        for name, o in archives.items():  # warm-up
            _reads(o.http_port, paths[name], auth, 200, args.threads)
        for _ in range(args.rounds):
            for name, o in archives.items():
                assert o.pid is not None
                cpu0 = _cpu_seconds(o.pid)
                wall = _reads(o.http_port, paths[name], auth, args.reads, args.threads)
                totals[name][0] += wall
                totals[name][1] += _cpu_seconds(o.pid) - cpu0
                totals[name][2] += args.reads // args.threads * args.threads
        size = args.file.stat().st_size
        print(f"{args.rounds} rounds x {args.reads} reads of a {size} B instance,"
              f" {args.threads} client threads, alternating archives")  # fmt: skip
        per_read = {}
        for name, (wall, cpu, n) in totals.items():
            per_read[name] = cpu / n * 1e6
            print(
                f"  {name:15s} {n / wall:8.0f} reads/s   Orthanc CPU {per_read[name]:6.0f} us/read"
            )
        extra = per_read["with plugin"] - per_read["without plugin"]
        floor = per_read["no-op filter"] - per_read["without plugin"]
        print(f"  plugin cost: {extra:+.0f} us of Orthanc CPU per read "
              f"({extra / per_read['without plugin'] * 100:+.0f} %), of which {floor:+.0f} us "
              "is orthanc-python calling any Python filter")  # fmt: skip
        journal = Path(settings.pacs.journal_dir)
        lines = sum(p.read_bytes().count(b"\n") for p in journal.glob("*.jsonl"))
        print(f"  journal lines written: {lines}")
        if args.record:
            _record(base, journal, archives["with plugin"])
    finally:
        for o in archives.values():
            o.stop()


if __name__ == "__main__":
    main()
