"""Triage latency end to end: a critical 300-slice CT behind a 1,000-instance routine backlog.

    .venv/bin/python bench/bench_triage_e2e.py             # 8 runs
    .venv/bin/python bench/bench_triage_e2e.py --runs 3    # quicker

Each run starts a fresh database, Orthanc and Mosquitto, and ``radiogate scp`` + ``worker``
with the defaults of ``[triage]`` and one MQTT alert target. DCMTK ``storescu`` sends 1,008
routine instances (21 copies of the 48-slice lung1 series; route: de-identify, forward) and, as
soon as they are received (no worker runs yet), the worker is started and the critical study
(300 slices built from the same CT, a large
hyperdense finding inserted in 20 of them; route: triage, de-identify, forward) is sent while
the worker works through the backlog. The critical series is complete when its association
is released (``[triage] association_grace``). The stages come from the rows the pipeline wrote
(``radiogate study show``: :func:`dicom_nodes.pipeline.timeline.study_timeline`), all stamped
by the same PostgreSQL clock:

- last instance received -> triage decided
- triage decided -> triage SR and KOS confirmed by Orthanc
- last instance received -> SR and KOS confirmed in Orthanc (the goal: p95 < 5 s); and where
  the results' time goes: decided -> written to the spool -> routed -> sent -> confirmed
- last instance received -> alert delivered to the MQTT broker (QoS 1 acknowledged); negative
  when the early decision (``[triage] early``: the model is sure before the series is
  complete) raised the alert while the series was still arriving; and from the first instance

and, as a check that the lane works, how many backlog instances were still unconfirmed when
the critical results were. p50 / p95 over the runs (with few runs p95 is close to the worst).
Inference throughput alone: ``bench/bench_triage.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from dicom_nodes.db.migrate import migrate  # noqa: E402
from dicom_nodes.pipeline.timeline import study_timeline  # noqa: E402
from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer  # noqa: E402
from dicom_nodes.services.postgres import PrivateCluster  # noqa: E402
from tests.support import dcmtk, free_port  # noqa: E402
from tests.support.data import extract_ct, series_copies  # noqa: E402
from tests.support.pipeline import Node  # noqa: E402
from tests.support.services import Mosquitto, mqtt_messages  # noqa: E402
from tests.support.triage import (  # noqa: E402
    TRIAGE_ROUTES,
    insert_dense_finding,
    node_secrets,
    storescu,
)

SLICES = 300
FINDING_SLICES = range(140, 160)


def critical_ct(ct: list[Path], dest: Path, slices: int = SLICES) -> list[Path]:
    """*slices* (300) slices of one new study: the 48 lung1 slices repeated along z (positions and
    instance numbers continue, so the series is one regular volume), with a hyperdense finding
    inserted in :data:`FINDING_SLICES`."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    sources = [pydicom.dcmread(p) for p in ct]
    sources.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    step = float(sources[1].ImagePositionPatient[2]) - float(sources[0].ImagePositionPatient[2])
    study, series = generate_uid(), generate_uid()
    out = []
    for index in range(slices):
        ds = pydicom.dcmread(ct[0])  # a fresh copy of the header
        source = sources[index % len(sources)]
        ds.PixelData = source.PixelData
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        x, y, z0 = (float(v) for v in sources[0].ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z0 + index * step]
        ds.SliceLocation = z0 + index * step
        ds.AccessionNumber = "BENCH1"
        if index in FINDING_SLICES:
            insert_dense_finding(ds, rng)
        path = dest / f"crit{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def _seconds(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


STAGES = (
    "received_to_complete",
    "complete_to_decided",
    "received_to_decided",
    "decided_to_results_confirmed",
    "received_to_results_confirmed",
    "results_written_after_decided",
    "results_routed_after_written",
    "results_sent_after_routed",
    "results_confirmed_after_sent",
    "received_to_alert_delivered",
    "first_received_to_alert_delivered",
)


def _print_states(node: Any) -> None:
    """Where the pipeline stood when a run timed out (counts and states only, no identifiers)."""
    for title, sql in (
        (
            "series_triage",
            "SELECT state, lane, sr_sop_instance_uid IS NOT NULL, "
            "kos_sop_instance_uid IS NOT NULL FROM series_triage",
        ),
        ("forward_item", "SELECT state, lane_rank, count(*) FROM forward_item GROUP BY 1, 2"),
        ("ingest_instance", "SELECT state, count(*) FROM ingest_instance GROUP BY 1"),
        (
            "results",
            "SELECT i.sop_class_uid, i.state, f.state, f.last_error FROM series_triage t "
            "JOIN ingest_instance i ON i.sop_instance_uid IN (t.sr_sop_instance_uid, "
            "t.kos_sop_instance_uid) LEFT JOIN forward_item f USING (sop_instance_uid)",
        ),
    ):
        print(title, node.query(sql), file=sys.stderr)


def one_run(cluster: PrivateCluster, work: Path, backlog: list[Path], critical: list[Path],
            study_uid: str, scenario: str, scp_port: int = 0) -> dict[str, Any]:  # fmt: skip
    """One run on fresh services; the stage durations (seconds) of the critical study. The SCP
    listens on *scp_port* (0: a free port)."""
    name = f"b_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"host=127.0.0.1 port={cluster.port} dbname={name} user=radiogate"
    with psycopg.connect(dsn) as conn:
        migrate(conn)
    orthanc = ManagedOrthanc(
        storage_dir=work / "orthanc", http_port=free_port(), dicom_port=free_port(),
        peers=[OrthancPeer("radiogate", "RADIOGATE", "127.0.0.1", free_port())],
    )  # fmt: skip
    orthanc.start()
    broker = Mosquitto(work / "mosquitto").start()
    extra = f"""
[alerts]
targets = ["mqtt"]

[[alerts.target]]
name = "mqtt"
kind = "mqtt"
port = {broker.port}
topic = "rg/alerts"
{TRIAGE_ROUTES}"""
    node = Node(dsn, work / "node", orthanc, extra_toml=extra, extra_env=node_secrets(),
                scp_port=scp_port or free_port())  # fmt: skip
    node.start(worker=scenario == "live")
    try:
        assert node.scp is not None
        with mqtt_messages(broker.port, "rg/#") as inbox:
            if scenario == "queued":
                storescu(node.scp.port, "ROUTINE", backlog)  # received, no worker yet
                node.start_worker()
                storescu(node.scp.port, "CT1", critical)
            else:
                routine = subprocess.Popen(
                    [dcmtk("storescu"), "-aet", "ROUTINE", "-aec", "RADIOGATE", "127.0.0.1",
                     str(node.scp.port), *map(str, backlog)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    node.wait_for(lambda: node.query(
                        "SELECT count(*) FROM ingest_instance")[0][0] >= len(backlog) // 2,
                        timeout=120)  # fmt: skip
                    storescu(node.scp.port, "CT1", critical)
                finally:
                    if routine.wait(timeout=300) != 0:
                        raise RuntimeError("the routine storescu failed")
            inbox.get(timeout=300)
            try:
                node.wait_for(lambda: _results_confirmed(node, study_uid), timeout=300)
            except TimeoutError:
                _print_states(node)
                raise
        with psycopg.connect(dsn) as conn:
            shown = study_timeline(conn, study_uid)
        assert shown is not None
        (series,) = [s for s in shown["series"] if s["triage"] is not None]
        triage = series["triage"]
        (alert,) = shown["alerts"]
        first, last = shown["first_instance_received"], series["last_instance_received"]
        (waiting,) = node.query(
            """SELECT count(*) FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.calling_ae = 'ROUTINE'
                 AND (f.confirmed_at IS NULL OR f.confirmed_at > %s)""",
            dt.datetime.fromisoformat(triage["results_confirmed"]),
        )[0]
        written, routed, sent = node.query(
            """SELECT max(i.received_at), max(f.created_at), max(f.sent_at)
               FROM series_triage t JOIN ingest_instance i
                 ON i.sop_instance_uid IN (t.sr_sop_instance_uid, t.kos_sop_instance_uid)
               JOIN forward_item f USING (sop_instance_uid)
               WHERE t.study_instance_uid = %s""",
            study_uid,
        )[0]
        decided = dt.datetime.fromisoformat(triage["decided"])
        confirmed = dt.datetime.fromisoformat(triage["results_confirmed"])
        return {
            "scenario": scenario,
            "lane": triage["lane"],
            "score": triage["score"],
            "early_alert": triage["early"],
            "received_to_complete": _seconds(last, series["complete"]),
            "complete_to_decided": _seconds(series["complete"], triage["decided"]),
            "received_to_decided": _seconds(last, triage["decided"]),
            "decided_to_results_confirmed": _seconds(triage["decided"],
                                                     triage["results_confirmed"]),
            "received_to_results_confirmed": _seconds(last, triage["results_confirmed"]),
            "results_written_after_decided": (written - decided).total_seconds(),
            "results_routed_after_written": (routed - written).total_seconds(),
            "results_sent_after_routed": (sent - routed).total_seconds(),
            "results_confirmed_after_sent": (confirmed - sent).total_seconds(),
            "received_to_alert_delivered": _seconds(last, alert["delivered"]),
            "first_received_to_alert_delivered": _seconds(first, alert["delivered"]),
            "backlog_unconfirmed_at_results": int(waiting),
        }  # fmt: skip
    finally:
        node.stop()
        broker.stop()
        orthanc.stop()
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


def _results_confirmed(node: Node, study_uid: str) -> bool:
    rows = node.query(
        """SELECT t.sr_sop_instance_uid, t.kos_sop_instance_uid FROM series_triage t
           JOIN series s USING (series_instance_uid) WHERE s.study_instance_uid = %s""",
        study_uid,
    )
    if not rows or not all(rows[0]):
        return False
    (confirmed,) = node.query(
        "SELECT count(*) FROM forward_item WHERE sop_instance_uid IN (%s, %s) "
        "AND state = 'confirmed'",
        *rows[0],
    )[0]
    return bool(confirmed == 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="runs per scenario")
    parser.add_argument("--scenarios", default="live,queued")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="radiogate-bench-triage-"))
    base.chmod(0o755)
    cluster = PrivateCluster(base / "pg", free_port())
    cluster.start()
    try:
        ct = extract_ct(base / "ct")
        backlog = series_copies(ct, base / "backlog", 21)
        critical = critical_ct(ct, base / "critical")
        study_uid = str(pydicom.dcmread(critical[0], stop_before_pixels=True).StudyInstanceUID)
        print(f"backlog {len(backlog)} instances, critical study {len(critical)} slices")
        runs = []
        for number in range(args.runs):
            for scenario in args.scenarios.split(","):
                result = one_run(cluster, base / f"run{number}", backlog, critical, study_uid,
                                 scenario)  # fmt: skip
                runs.append(result)
                print(json.dumps(result), flush=True)
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
    for scenario in args.scenarios.split(","):
        mine = [r for r in runs if r["scenario"] == scenario]
        print(f"\n{scenario}: {'stage (s)':<34}{'p50':>8}{'p95':>8}{'max':>8}   "
              f"({len(mine)} runs)")  # fmt: skip
        for key in STAGES:
            values = [r[key] for r in mine if r[key] is not None]
            p50, p95 = np.percentile(values, [50, 95])
            print(f"{'':<{len(scenario) + 2}}{key:<34}{p50:8.2f}{p95:8.2f}{max(values):8.2f}")
        lanes = {r["lane"] for r in mine}
        behind = [r["backlog_unconfirmed_at_results"] for r in mine]
        print(f"lane {sorted(lanes)}; backlog instances still unconfirmed when the critical "
              f"results were: median {int(np.median(behind))} of {len(backlog)}")  # fmt: skip
    out = ROOT / "bench" / "results" / f"triage_e2e_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                               "runs": runs}, indent=1))  # fmt: skip
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
