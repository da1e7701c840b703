"""Forwarding benchmark: storescu → Orthanc directly vs storescu → Radiogate → Orthanc.

Run from the repository root::

    .venv/bin/python bench/bench_forward.py            # full run (1,000 instances per set)
    .venv/bin/python bench/bench_forward.py --quick    # smoke run (200 instances, fewer settings)

What it measures, in one run, on the same generated data (everything on 127.0.0.1):

1. **direct**: DCMTK ``storescu`` (one association, ``TCP_NODELAY=1``) sends N instances to a
   fresh Orthanc (``ManagedOrthanc``: SQLite index, ``TCP_NODELAY=1``); images/s = N / time
   until storescu has every C-STORE-RSP. Median of ``--direct-reps`` runs.
2. **via Radiogate**: the same storescu sends to ``radiogate scp`` while ``radiogate worker``
   (already running) routes and forwards to a fresh Orthanc and confirms by C-FIND; images/s =
   N / (last ``forward_item.confirmed_at`` - the moment storescu was started). A fresh database
   and a fresh Orthanc per run. Repeated for each worker setting of ``--settings``
   (destination ``parallel`` / pipeline ``batch_size`` / worker ``concurrency``).
3. **critical lane**: a routine backlog of N instances, then a 10-instance study with
   RequestedProcedurePriority = STAT (``[[lane_rules]]`` → critical). Two scenarios:
   ``backlog`` (the routine instances are received while no worker runs; the worker is started,
   and the critical study is sent once forwarding is under way) and ``live`` (the worker runs;
   the critical study is sent when half of the routine series has been received). Reported from
   the database: critical last confirmed_at - critical last received_at, and how many routine
   instances were confirmed before the critical study was.

With ``--accel CONFIGS`` (see ``bench/accel.py``; e.g. ``--accel stock,all``) each forwarding
run is repeated in every accelerator configuration (applied to the SCP and the worker), the
configurations interleaved in a rotated order within each round; the report pairs each with
stock pynetdicom in the same round. Split and critical-lane runs are skipped then.

CPU seconds of every component (SCP receivers, worker, Orthanc, PostgreSQL, storescu) are
recorded per run: on a small machine they show where the time goes. Results are printed as a
table and written as JSON to ``bench/results/``. Every process started here is stopped on exit,
also on Ctrl-C / SIGTERM / an exception; every wait is bounded.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from bench import accel  # noqa: E402
from dicom_nodes.db.migrate import migrate  # noqa: E402
from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer  # noqa: E402
from dicom_nodes.services.postgres import PrivateCluster  # noqa: E402
from tests.support import free_port, stop_group, wait_for_echo  # noqa: E402

STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = "/usr/sbin/Orthanc"
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CRITICAL_COUNT = 10

LANE_RULES = """
[[lane_rules]]
lane = "critical"
[lane_rules.match]
tags = { RequestedProcedurePriority = ["STAT"] }
"""


class Interrupted(Exception):
    """SIGTERM: unwind through every ``finally`` so all processes are stopped."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Interrupted


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSet:
    name: str
    label: str
    files: list[Path]
    bytes_per_file: int


def _phantom(size: int) -> np.ndarray:
    """A CT-like slice (stored values, intercept -1024): air, body, lungs, spine."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    nx, ny = (x - size / 2) / (size / 2), (y - size / 2) / (size / 2)
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    body = (nx / 0.85) ** 2 + (ny / 0.65) ** 2 < 1.0
    hu[body] = 40.0
    for cx in (-0.38, 0.38):
        hu[((nx - cx) / 0.28) ** 2 + ((ny + 0.05) / 0.42) ** 2 < 1.0] = -820.0
    hu[(nx / 0.09) ** 2 + ((ny - 0.45) / 0.09) ** 2 < 1.0] = 700.0
    return np.clip(hu + 1024, 0, 4095).astype(np.int16)


def generate(
    dest: Path, name: str, label: str, count: int, size: int, seed: int, priority: str = ""
) -> DataSet:
    """*count* CT instances (one study/series) of *size*² 16-bit pixels with a little noise."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = _phantom(size)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    for i in range(count):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = ds.SeriesDate = "20240312"
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.AccessionNumber = f"FWD{seed:04d}"
        ds.Modality = "CT"
        ds.Manufacturer = "Radiogate Bench"
        ds.StudyDescription = "CT CHEST"
        ds.PatientName = f"Bench^{name}"
        ds.PatientID = f"BENCH-{seed:04d}"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        if priority:
            ds.RequestedProcedurePriority = priority
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", "2", str(i + 1)
        ds.ImagePositionPatient = ["-190.0", "-190.0", f"{-300.0 + i:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceThickness = "1.0"
        ds.PixelSpacing = [f"{380.0 / size:.6f}"] * 2
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        noise = rng.integers(0, 16, (size, size), dtype=np.int16)
        ds.PixelData = (base ^ noise).tobytes()
        ds["PixelData"].VR = "OW"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = dest / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return DataSet(name, label, files, files[0].stat().st_size if files else 0)


# --------------------------------------------------------------------------- processes


def _stat(pid: int) -> tuple[int, int, int, float] | None:
    """(ppid, pgrp, own cpu ticks, reaped children's cpu ticks) of *pid*."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ppid, pgrp = int(fields[1]), int(fields[2])
    own = int(fields[11]) + int(fields[12])
    children = int(fields[13]) + int(fields[14])
    return ppid, pgrp, own, children


class CpuMeter:
    """CPU seconds per component, from /proc (processes alive at the snapshots)."""

    def __init__(self) -> None:
        self.groups: dict[str, Callable[[], float]] = {}
        self.members: dict[str, Callable[[], list[int]]] = {}
        self.peak: dict[str, float] = {}

    def peak_rss(self) -> dict[str, float]:
        """Peak RSS (MB) per component: the sum over its live processes of each one's peak
        (VmHWM), the highest seen at any call so far (call it at the end of a run too)."""
        for name, members in self.members.items():
            total = 0
            for pid in members():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1])
            self.peak[name] = max(self.peak.get(name, 0.0), round(total / 1024, 1))
        return dict(self.peak)

    def add_group(self, name: str, pgrp: int) -> None:
        """All processes of process group *pgrp* (the SCP supervisor + receivers, a worker)."""
        self.members[name] = lambda: [
            int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and (_stat(int(e.name)) or (0, -1))[1] == pgrp
        ]  # fmt: skip

        def total() -> float:
            ticks: float = 0
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    st = _stat(int(entry.name))
                    if st is not None and st[1] == pgrp:
                        ticks += st[2] + (st[3] if int(entry.name) == pgrp else 0)
            return ticks / CLK_TCK

        self.groups[name] = total

    def add_tree(self, name: str, pid: int) -> None:
        """*pid* (its reaped children included) and its live children (postgres backends)."""
        self.members[name] = lambda: [pid] + [
            int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and (_stat(int(e.name)) or (-1,))[0] == pid
        ]  # fmt: skip

        def total() -> float:
            ticks: float = 0
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    st = _stat(int(entry.name))
                    if st is None:
                        continue
                    if int(entry.name) == pid:
                        ticks += st[2] + st[3]
                    elif st[0] == pid:
                        ticks += st[2]
            return ticks / CLK_TCK

        self.groups[name] = total

    def snapshot(self) -> dict[str, float]:
        return {name: fn() for name, fn in self.groups.items()}


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Settings:
    parallel: int = 2
    batch_size: int = 50
    concurrency: int = 4

    @property
    def label(self) -> str:
        return f"p{self.parallel}/b{self.batch_size}/c{self.concurrency}"

    @classmethod
    def parse(cls, text: str) -> Settings:
        p, b, c = (int(x) for x in text.split("/"))
        return cls(p, b, c)


@dataclass
class Orthanc:
    workdir: Path
    managed: ManagedOrthanc | None = None

    def start(self) -> None:
        self.managed = ManagedOrthanc(
            storage_dir=self.workdir,
            http_port=free_port(),
            dicom_port=free_port(),
            executable=ORTHANC,
            # The archive is closed: only these AEs, from loopback, may associate.
            peers=[
                OrthancPeer(aet.lower(), aet, HOST, free_port())
                for aet in ("ECHOSCU", "BENCH", "RADIOGATE")
            ],
        )
        self.managed.start()
        wait_for_echo(self.managed.dicom_port, self.managed.ae_title, timeout=60.0)

    @property
    def pid(self) -> int:
        assert self.managed is not None and self.managed._proc is not None
        return self.managed._proc.pid

    def count(self) -> int:
        assert self.managed is not None
        return int(self.managed.get_json("/statistics")["CountInstances"])

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()
            self.managed = None
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Radiogate:
    """A fresh database + ``radiogate scp`` + ``radiogate worker`` forwarding to *orthanc*."""

    cluster: PrivateCluster
    workdir: Path
    archive: Orthanc
    settings: Settings
    extra_toml: str = ""
    accel: str = ""
    """Accelerator configuration (``bench/accel.py``); empty: the default settings."""
    tree: Path = ROOT
    """The source tree whose ``radiogate`` runs (``--trees``: the current code against another)."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Settings of this run (``--trees NAME=DIR@KEY=VALUE``)."""
    port: int = 0
    dsn: str = ""
    db: str = ""
    scp: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADIOGATE_")}
        env.pop("TCP_NODELAY", None)
        env.update(
            {
                "RADIOGATE_CONFIG": str(self.workdir / "radiogate.toml"),
                "RADIOGATE_DATABASE__DSN": self.dsn,
                "RADIOGATE_NODE__DATA_DIR": str(self.workdir),
                "RADIOGATE_SCP__PORT": str(self.port),
                "RADIOGATE_SPOOL__MIN_FREE_BYTES": "0",
                "RADIOGATE_SPOOL__MIN_FREE_PERCENT": "0",
                "RADIOGATE_DEID_SECRET": DEID_SECRET,
                "RADIOGATE_DEID_VAULT_KEY": DEID_SECRET,
            }
        )
        if self.accel:
            env.update(accel.environment(self.accel))
        env.update({k: v for k, v in self.extra_env.items() if not k.startswith(DEST_PREFIX)})
        return env

    def destination_toml(self) -> str:
        """``DEST__KEY=VALUE`` entries of ``--trees``: fields of the archive destination."""
        return "".join(
            f"{k[len(DEST_PREFIX) :].lower()} = {v}\n"
            for k, v in self.extra_env.items()
            if k.startswith(DEST_PREFIX)
        )

    def command(self, name: str) -> list[str]:
        if self.accel:
            return accel.command(self.accel, [name])
        return [sys.executable, "-m", "dicom_nodes.cli", name]

    @property
    def orthanc(self) -> ManagedOrthanc:
        assert self.archive.managed is not None
        return self.archive.managed

    def start(self, *, worker: bool = True, share: Radiogate | None = None) -> None:
        """A fresh database, or the database of *share* (another node of the same site)."""
        self.port = self.port or free_port()
        if share is not None:
            self.dsn = share.dsn  # self.db stays empty: *share* drops the database
        else:
            self.db = f"fwd_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(self.cluster.admin_dsn, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {self.db}")
            self.dsn = f"host={HOST} port={self.cluster.port} dbname={self.db} user=radiogate"
            with psycopg.connect(self.dsn) as conn:
                migrate(conn)
        self.workdir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        (self.workdir / "radiogate.toml").write_text(
            f"""
[pipeline]
quiet_period = 30.0
batch_size = {s.batch_size}
retry_initial = 0.5
retry_max = 2.0

[worker]
concurrency = {s.concurrency}
metrics_port = 0

[[destinations]]
name = "archive"
ae_title = "{self.orthanc.ae_title}"
host = "{HOST}"
port = {self.orthanc.dicom_port}
parallel = {s.parallel}
confirm = "query"
timeout = 30.0
{self.destination_toml()}{self.extra_toml}
{ROUTE[0]}
"""
        )
        with (self.workdir / "scp.log").open("ab") as log:
            self.scp = subprocess.Popen(
                self.command("scp"),
                env=self.env(),
                cwd=self.tree,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_echo(self.port, "RADIOGATE", timeout=60.0)
        if worker:
            self.start_worker()

    def start_worker(self) -> None:
        with (self.workdir / "worker.log").open("ab") as log:
            self.worker = subprocess.Popen(
                self.command("worker"),
                env=self.env(),
                cwd=self.tree,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, params).fetchall()

    def one(self, sql: str, *params: object) -> tuple[Any, ...]:
        rows = self.query(sql, *params)
        return rows[0]

    def stop(self) -> None:
        for proc in (self.worker, self.scp):
            if proc is not None:
                stop_group(proc)
        self.worker = self.scp = None
        if self.db:
            with psycopg.connect(self.cluster.admin_dsn, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
            self.db = ""


@dataclass
class Stopper:
    """Stops the sender processes in *procs* (for :func:`running`)."""

    procs: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for proc in self.procs:
            stop_group(proc, timeout=5)


@contextlib.contextmanager
def running(*things: Any) -> Iterator[None]:
    """Stop *things* (in reverse order) however the block ends."""
    try:
        yield
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                thing.stop()


def start_storescu(port: int, aec: str, files: list[Path], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TCP_NODELAY="1")
    with log.open("ab") as out:
        return subprocess.Popen(
            [STORESCU, "-aet", "BENCH", "-aec", aec, HOST, str(port), *map(str, files)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_storescu(proc: subprocess.Popen[bytes], deadline: float) -> int:
    try:
        return proc.wait(timeout=max(0.01, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        stop_group(proc, timeout=5)
        raise TimeoutError("storescu did not finish in time") from None


# --------------------------------------------------------------------------- runs


@dataclass
class DirectRun:
    data: str
    rep: int
    count: int
    stored: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def images_per_s(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0


def run_direct(data: DataSet, rep: int, base: Path, cap: float) -> DirectRun:
    orthanc = Orthanc(base / f"direct-{data.name}-{rep}")
    with running(orthanc):
        orthanc.start()
        assert orthanc.managed is not None
        meter = CpuMeter()
        meter.add_tree("orthanc", orthanc.pid)
        before, cpu0 = meter.snapshot(), children_cpu()
        started = time.perf_counter()
        proc = start_storescu(
            orthanc.managed.dicom_port,
            orthanc.managed.ae_title,
            data.files,
            base / "storescu.log",
        )
        rc = wait_storescu(proc, time.monotonic() + cap)
        seconds = time.perf_counter() - started
        after = meter.snapshot()
        cpu = {k: round(after[k] - before[k], 2) for k in after}
        cpu["storescu"] = round(children_cpu() - cpu0, 2)
        if rc != 0:
            raise RuntimeError(f"storescu → Orthanc exited with {rc}")
        stored = orthanc.count()
        return DirectRun(data.name, rep, len(data.files), stored, seconds, cpu)


@dataclass
class ForwardRun:
    data: str
    settings: str
    count: int
    confirmed: int
    orthanc_count: int
    send_seconds: float
    end_to_end_seconds: float
    drain_after_send_seconds: float
    first_confirm_seconds: float
    cpu: dict[str, float] = field(default_factory=dict)
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])
    round: int = 0
    """Index of the round (repetition) for the same data and settings."""
    rss_mb: dict[str, float] = field(default_factory=dict)
    """Peak RSS per component (MB, :meth:`CpuMeter.peak_rss`)."""

    @property
    def images_per_s(self) -> float:
        return self.confirmed / self.end_to_end_seconds if self.end_to_end_seconds > 0 else 0.0


def _meter_for(rg: Radiogate, cluster: PrivateCluster, orthanc: Orthanc) -> CpuMeter:
    meter = CpuMeter()
    assert rg.scp is not None
    meter.add_group("scp", rg.scp.pid)
    if rg.worker is not None:
        meter.add_group("worker", rg.worker.pid)
    meter.add_tree("orthanc", orthanc.pid)
    pm = postmaster_pid(cluster)
    if pm:
        meter.add_tree("postgres", pm)
    return meter


def postmaster_pid(cluster: PrivateCluster) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    return 0


def start_profilers(
    py_spy: str, rg: Radiogate, data: DataSet, settings: Settings
) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` (raw collapsed stacks, all threads) of the worker and the SCP."""
    if not py_spy:
        return []
    assert rg.worker is not None and rg.scp is not None
    stem = RESULTS / f"profile-{data.name}-{settings.label.replace('/', '-')}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid, extra in (
        ("worker", rg.worker.pid, []),
        ("scp", rg.scp.pid, ["--subprocesses"]),
    ):
        cmd = [py_spy, "record", "--format", "raw", "--rate", "200", "--threads"]
        cmd += ["--nonblocking", "-p", str(pid), "-o", f"{stem}-{name}.txt", *extra]
        spies.append(
            subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        )
    time.sleep(1.0)
    return spies


def stop_profilers(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        with contextlib.suppress(ProcessLookupError):
            spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_group(spy, timeout=5)


def run_forward(
    data: DataSet,
    settings: Settings,
    cluster: PrivateCluster,
    base: Path,
    cap: float,
    py_spy: str = "",
    accel_config: str = "",
    port: int = 0,
) -> ForwardRun:
    work = base / f"fwd-{data.name}-{settings.label.replace('/', '-')}"
    orthanc = Orthanc(work / "orthanc")
    tree, env = TREES.get(accel_config, (None, {}))
    rg = Radiogate(
        cluster, work / "node", orthanc, settings,
        accel="" if tree is not None else accel_config, tree=tree or ROOT, extra_env=env,
        port=port,
    )  # fmt: skip
    with running(orthanc, rg):
        orthanc.start()
        rg.start()
        meter = _meter_for(rg, cluster, orthanc)
        n = len(data.files)
        time.sleep(1.0)  # let the worker register with procrastinate
        spies = start_profilers(py_spy, rg, data, settings)
        proc: subprocess.Popen[bytes] | None = None
        try:
            before, cpu0 = meter.snapshot(), children_cpu()
            wall0 = time.time()
            t0 = time.monotonic()
            deadline = t0 + cap
            proc = start_storescu(rg.port, "RADIOGATE", data.files, work / "storescu.log")
            send_seconds = 0.0
            while time.monotonic() < deadline:
                if send_seconds == 0.0 and proc.poll() is not None:
                    send_seconds = time.monotonic() - t0
                    if proc.returncode != 0:
                        raise RuntimeError(f"storescu → Radiogate exited with {proc.returncode}")
                (confirmed,) = rg.one("SELECT count(*) FROM forward_item WHERE state = 'confirmed'")
                if confirmed >= n:
                    break
                time.sleep(0.1)
            if send_seconds == 0.0:
                wait_storescu(proc, deadline)
                send_seconds = time.monotonic() - t0
            after, cpu1 = meter.snapshot(), children_cpu()
            rss = meter.peak_rss()
        finally:
            if proc is not None:
                stop_group(proc, timeout=5)
            stop_profilers(spies)
        first, last, count = rg.one(
            "SELECT min(confirmed_at), max(confirmed_at), count(*) FROM forward_item "
            "WHERE state = 'confirmed'"
        )
        if count < n:
            states = rg.query("SELECT state, count(*) FROM forward_item GROUP BY state")
            print(f"  capped after {cap:.0f} s: {states}", flush=True)
        e2e = (last.timestamp() - wall0) if last else cap
        cpu = {k: round(after[k] - before[k], 2) for k in after}
        cpu["storescu"] = round(cpu1 - cpu0, 2)
        return ForwardRun(
            data=data.name,
            settings=settings.label + (f" [{accel_config}]" if accel_config else ""),
            count=n,
            confirmed=int(count),
            orthanc_count=orthanc.count(),
            send_seconds=round(send_seconds, 3),
            end_to_end_seconds=round(e2e, 3),
            drain_after_send_seconds=round(e2e - send_seconds, 3),
            first_confirm_seconds=round(first.timestamp() - wall0, 3) if first else -1.0,
            cpu=cpu,
            rss_mb=rss,
        )


@dataclass
class SplitRun:
    """Receive and forward one after the other: which side limits the end-to-end rate."""

    data: str
    settings: str
    count: int
    receive_seconds: float
    forward_seconds: float
    worker_start_to_last_confirmed_seconds: float
    confirmed: int
    cpu_receive: dict[str, float] = field(default_factory=dict)
    cpu_forward: dict[str, float] = field(default_factory=dict)

    @property
    def receive_per_s(self) -> float:
        return self.count / self.receive_seconds if self.receive_seconds > 0 else 0.0

    @property
    def forward_per_s(self) -> float:
        return self.confirmed / self.forward_seconds if self.forward_seconds > 0 else 0.0


def run_split(
    data: DataSet,
    settings: Settings,
    cluster: PrivateCluster,
    base: Path,
    cap: float,
    config: str = "",
) -> SplitRun:
    """storescu → SCP with the worker stopped (receive only); then the worker drains it all.

    The worker is started first and stopped (SIGSTOP) once it is idle, so its start-up (imports,
    pools) is not counted as forwarding CPU; it continues (SIGCONT) when everything is in."""
    work = base / f"split-{data.name}"
    orthanc = Orthanc(work / "orthanc")
    tree, env = TREES.get(config, (None, {}))
    rg = Radiogate(
        cluster, work / "node", orthanc, settings,
        accel="" if tree is not None else config, tree=tree or ROOT, extra_env=env,
    )  # fmt: skip
    senders: list[subprocess.Popen[bytes]] = []
    n = len(data.files)
    with running(orthanc, rg, Stopper(senders)):
        orthanc.start()
        rg.start()
        assert rg.worker is not None
        meter = _meter_for(rg, cluster, orthanc)
        deadline = time.monotonic() + cap
        settle_until = time.monotonic() + 30.0
        last = meter.snapshot()["worker"]
        while time.monotonic() < settle_until:  # idle: no CPU for half a second
            time.sleep(0.5)
            now = meter.snapshot()["worker"]
            if now - last < 0.02 and now > 0.3:
                break
            last = now
        os.killpg(rg.worker.pid, signal.SIGSTOP)
        c0 = meter.snapshot()
        t0 = time.monotonic()
        senders.append(start_storescu(rg.port, "RADIOGATE", data.files, work / "storescu.log"))
        if wait_storescu(senders[-1], deadline) != 0:
            raise RuntimeError("storescu → Radiogate failed")
        receive_seconds = time.monotonic() - t0
        c1 = meter.snapshot()
        wall0 = time.time()
        os.killpg(rg.worker.pid, signal.SIGCONT)
        while time.monotonic() < deadline:
            (confirmed,) = rg.one("SELECT count(*) FROM forward_item WHERE state = 'confirmed'")
            if confirmed >= n:
                break
            time.sleep(0.1)
        c2 = meter.snapshot()
        first, last, count = rg.one(
            "SELECT min(sent_at), max(confirmed_at), count(confirmed_at) FROM forward_item"
        )
        return SplitRun(
            data=data.name,
            settings=settings.label + (f" [{config}]" if config else ""),
            count=n,
            receive_seconds=round(receive_seconds, 3),
            forward_seconds=round((last - first).total_seconds(), 3) if last else cap,
            worker_start_to_last_confirmed_seconds=round(last.timestamp() - wall0, 3)
            if last
            else cap,
            confirmed=int(count),
            cpu_receive={k: round(c1[k] - c0[k], 2) for k in c1},
            cpu_forward={k: round(c2[k] - c1.get(k, 0.0), 2) for k in c2},
        )


@dataclass
class CriticalRun:
    scenario: str
    settings: str
    routine: int
    critical: int
    latency_seconds: float
    routine_confirmed_before: int
    routine_pending_when_critical_received: int
    critical_routed_seconds: float
    critical_first_sent_seconds: float
    total_seconds: float


def run_critical(
    scenario: str,
    routine: DataSet,
    critical: DataSet,
    settings: Settings,
    cluster: PrivateCluster,
    base: Path,
    cap: float,
    port: int = 0,
) -> CriticalRun:
    work = base / f"crit-{scenario}"
    orthanc = Orthanc(work / "orthanc")
    rg = Radiogate(cluster, work / "node", orthanc, settings, extra_toml=LANE_RULES, port=port)
    n = len(routine.files)
    senders: list[subprocess.Popen[bytes]] = []
    with running(orthanc, rg, Stopper(senders)):
        orthanc.start()
        t0 = time.monotonic()
        deadline = t0 + cap
        if scenario == "backlog":
            rg.start(worker=False)
            proc = start_storescu(rg.port, "RADIOGATE", routine.files, work / "storescu.log")
            senders.append(proc)
            if wait_storescu(proc, deadline) != 0:
                raise RuntimeError("storescu (routine backlog) failed")
            rg.start_worker()
            while time.monotonic() < deadline:
                (row,) = rg.query("SELECT count(*) FROM forward_item WHERE state = 'confirmed'")
                if row[0] >= 1:
                    break
                time.sleep(0.02)
        else:
            rg.start()
            time.sleep(1.0)
            proc = start_storescu(rg.port, "RADIOGATE", routine.files, work / "storescu.log")
            senders.append(proc)
            while time.monotonic() < deadline and proc.poll() is None:
                (row,) = rg.query("SELECT count(*) FROM ingest_instance")
                if row[0] >= n // 2:
                    break
                time.sleep(0.02)
        crit = start_storescu(rg.port, "RADIOGATE", critical.files, work / "storescu-crit.log")
        senders.append(crit)
        if wait_storescu(crit, deadline) != 0:
            raise RuntimeError("storescu (critical study) failed")
        if scenario == "live" and wait_storescu(proc, deadline) != 0:
            raise RuntimeError("storescu (routine) failed")
        total = n + len(critical.files)
        while time.monotonic() < deadline:
            (row,) = rg.query("SELECT count(*) FROM forward_item WHERE state = 'confirmed'")
            if row[0] >= total:
                break
            time.sleep(0.1)
        (c,) = rg.query(
            """SELECT max(f.confirmed_at), max(i.received_at), count(f.confirmed_at),
                      max(i.state_changed_at), min(f.sent_at)
               FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.lane = 'critical'"""
        )
        crit_confirmed, crit_received, crit_n, _changed, crit_first_sent = c
        if crit_n < len(critical.files) or crit_confirmed is None:
            raise RuntimeError(f"critical study not confirmed in time ({crit_n} confirmed)")
        (before,) = rg.query(
            """SELECT count(*) FROM forward_item f JOIN ingest_instance i USING (sop_instance_uid)
               WHERE i.lane = 'routine' AND f.confirmed_at <= %s""",
            crit_confirmed,
        )
        (pending,) = rg.query(
            """SELECT count(*) FROM ingest_instance i LEFT JOIN forward_item f
                   USING (sop_instance_uid)
               WHERE i.lane IS DISTINCT FROM 'critical'
                 AND (f.confirmed_at IS NULL OR f.confirmed_at > %s)""",
            crit_received,
        )
        (crit_routed,) = rg.query(
            """SELECT max(f.created_at) FROM forward_item f JOIN ingest_instance i
                   USING (sop_instance_uid) WHERE i.lane = 'critical'"""
        )
        return CriticalRun(
            scenario=scenario,
            settings=settings.label,
            routine=n,
            critical=len(critical.files),
            latency_seconds=round((crit_confirmed - crit_received).total_seconds(), 3),
            routine_confirmed_before=int(before[0]),
            routine_pending_when_critical_received=int(pending[0]),
            critical_routed_seconds=round((crit_routed[0] - crit_received).total_seconds(), 3),
            critical_first_sent_seconds=round((crit_first_sent - crit_received).total_seconds(), 3),
            total_seconds=round(time.monotonic() - t0, 1),
        )


# --------------------------------------------------------------------------- two nodes


@dataclass
class TwoNodeRun:
    data: str
    round: int
    count: int
    """Instances per node."""
    per_node: dict[str, float]
    """Node → its instances / (its last confirmed - start), img/s."""
    total_per_s: float
    direct_per_s: float
    """Anchor, same round: two storescu at once straight to a fresh Orthanc."""
    cpu: dict[str, float] = field(default_factory=dict)


def run_direct_pair(data: DataSet, other: DataSet, base: Path, cap: float) -> float:
    """Two storescu at once straight to Orthanc: images/s over both."""
    orthanc = Orthanc(base / f"direct2-{data.name}")
    with running(orthanc):
        orthanc.start()
        assert orthanc.managed is not None
        t0 = time.perf_counter()
        procs = [start_storescu(orthanc.managed.dicom_port, orthanc.managed.ae_title, d.files,
                                base / "storescu.log") for d in (data, other)]  # fmt: skip
        for proc in procs:
            if wait_storescu(proc, time.monotonic() + cap) != 0:
                raise RuntimeError("storescu → Orthanc failed")
        return orthanc.count() / (time.perf_counter() - t0)


def run_two_nodes(
    data: DataSet, other: DataSet, settings: Settings, cluster: PrivateCluster, base: Path,
    cap: float, rnd: int,
) -> TwoNodeRun:  # fmt: skip
    """Two ``radiogate scp`` + ``radiogate worker`` pairs (nodes a and b, own spools, own
    ports) on one database forwarding to one Orthanc; each node receives its own data set."""
    work = base / f"two-{data.name}-{rnd}"
    orthanc = Orthanc(work / "orthanc")
    a = Radiogate(cluster, work / "a", orthanc, settings,
                  extra_env={"RADIOGATE_NODE__NAME": "a"})  # fmt: skip
    b = Radiogate(cluster, work / "b", orthanc, settings,
                  extra_env={"RADIOGATE_NODE__NAME": "b"})  # fmt: skip
    senders: list[subprocess.Popen[bytes]] = []
    with running(orthanc, a, b, Stopper(senders)):
        orthanc.start()
        a.start()
        b.start(share=a)
        meter = CpuMeter()
        for name, rg in (("a", a), ("b", b)):
            assert rg.scp is not None and rg.worker is not None
            meter.add_group(f"scp-{name}", rg.scp.pid)
            meter.add_group(f"worker-{name}", rg.worker.pid)
        meter.add_tree("orthanc", orthanc.pid)
        if pm := postmaster_pid(cluster):
            meter.add_tree("postgres", pm)
        time.sleep(1.0)
        before = meter.snapshot()
        wall0 = time.time()
        deadline = time.monotonic() + cap
        for rg, d in ((a, data), (b, other)):
            senders.append(start_storescu(rg.port, "RADIOGATE", d.files, work / "storescu.log"))
        total = len(data.files) + len(other.files)
        while time.monotonic() < deadline:
            (done,) = a.one("SELECT count(*) FROM forward_item WHERE state = 'confirmed'")
            if done >= total:
                break
            time.sleep(0.1)
        after = meter.snapshot()
        rows = a.query(
            """SELECT i.node, count(*), max(f.confirmed_at) FROM forward_item f
               JOIN ingest_instance i USING (sop_instance_uid)
               WHERE f.state = 'confirmed' GROUP BY i.node"""
        )
        per_node = {str(node): round(int(n) / (last.timestamp() - wall0), 1)
                    for node, n, last in rows}  # fmt: skip
        last_all = max(last.timestamp() for _n, _c, last in rows) if rows else wall0 + cap
        done = sum(int(n) for _node, n, _l in rows)
        return TwoNodeRun(
            data.name,
            rnd,
            len(data.files),
            per_node,
            round(done / (last_all - wall0), 1),
            0.0,
            {k: round((after[k] - before[k]) / max(done, 1) * 1e3, 2) for k in after},
        )


def report_two_nodes(runs: list[TwoNodeRun], sets: dict[str, DataSet]) -> None:
    print("\nTwo nodes (own SCP, worker and spool each; one PostgreSQL, one Orthanc), paired by")
    print("round with two storescu at once straight to Orthanc; img/s to last confirmed")
    for data in sets.values():
        mine = [r for r in runs if r.data == data.name]
        if not mine:
            continue
        ratios = [r.total_per_s / r.direct_per_s for r in mine if r.direct_per_s]
        nodes = sorted({n for r in mine for n in r.per_node})
        per = "  ".join(
            f"node {n} {statistics.median(r.per_node.get(n, 0.0) for r in mine):6.1f}"
            for n in nodes
        )
        cpu = " ".join(
            f"{k}={statistics.median(r.cpu.get(k, 0.0) for r in mine):.2f}" for k in mine[0].cpu
        )
        print(
            f"  {data.label:<6} both {statistics.median(r.total_per_s for r in mine):6.1f} "
            f"direct {statistics.median(r.direct_per_s for r in mine):6.1f} x"
            f"{statistics.median(ratios) if ratios else float('nan'):5.2f} "
            f"[{min(ratios, default=0):.2f}-{max(ratios, default=0):.2f}]  {per}"
            f"  ({len(mine)} rounds)"
        )
        print(f"         CPU ms per instance (of all instances, both nodes): {cpu}")


# --------------------------------------------------------------------------- the door under load

BUSY = (
    "import sys\nfrom dicom_nodes.pipeline.priority import lower_priority\n"
    "lower_priority(int(sys.argv[1]), sys.argv[2] == 'idle')\nwhile True:\n    pass\n"
)
"""A synthetic CPU-bound job lowered as the analysis process lowers itself
(:func:`dicom_nodes.pipeline.priority.lower_priority`: ``analysis.nice``, default 10, and
``analysis.idle``, default on)."""

BUSY_MEMORY = (
    "import sys\nimport numpy as np\nfrom dicom_nodes.pipeline.priority import lower_priority\n"
    "lower_priority(10, True)\na = np.ones(64 << 20 >> 3)\nb = np.empty_like(a)\n"
    "while True:\n    np.multiply(a, 1.0001, out=b)\n    a, b = b, a\n"
)
"""The same, but streaming through 2 x 64 MB (far more than the caches): what the idle class
cannot keep from the receiver if memory bandwidth or the shared cache is what costs it."""

ANALYSIS_LOAD = """
import sys
from dicom_nodes.pipeline.analyse import Analysis, _Claimed, _run_in_process
from dicom_nodes.pipeline.pools import enter_analysis_pool
url, user, password, study, series, mode, cpus, threads, door = sys.argv[1:10]
cpus, threads = int(cpus), int(threads)
if mode != "before":  # as `radiogate worker --jobs analysis` starts
    enter_analysis_pool(10, True, cpus, threads)
ports = (int(door),) if mode == "door" else ()  # analysis.pause_while_receiving
analysis = Analysis(url, user, password, 1800.0, 1, 10, "ct_ibsi", True, "", True, cpus, threads,
                    ports, 2.0, 600.0)
claimed = _Claimed("door", series, study, "chest-ct", series, study, 1, (None, None))
while True:
    _run_in_process(analysis, claimed)
"""
"""The real analysis job, one after the other (:func:`dicom_nodes.pipeline.analyse._run_in_process`:
the spawned process reads the 300-slice series from its archive, builds the volume, segments the
lungs, extracts the IBSI features, writes SEG + SR): ``pool`` is how ``radiogate run`` runs it
(``radiogate worker --jobs analysis``: the worker and its job process in the idle class on
``analysis.cpus`` CPUs with ``analysis.threads`` threads), ``before`` as a worker taking every
job ran it before there were pools (the job process at niceness 10 in the idle class, the
libraries' own thread counts, any CPU)."""


@dataclass
class AnalysisArchive:
    """An Orthanc (normal priority, like the archive) holding a 300-slice chest CT that the
    ``analysis`` loads analyse again and again."""

    workdir: Path
    slices: int = 300
    orthanc: ManagedOrthanc | None = None
    study: str = ""
    series: str = ""

    def start(self) -> None:
        import pydicom

        from bench.bench_triage_e2e import critical_ct
        from tests.support.data import extract_ct

        files = critical_ct(extract_ct(self.workdir / "ct"), self.workdir / "long", self.slices)
        self.orthanc = ManagedOrthanc(
            storage_dir=self.workdir / "orthanc",
            http_port=free_port(),
            dicom_port=free_port(),
            executable=ORTHANC,
            peers=[],
        )
        self.orthanc.start()
        for f in files:
            self.orthanc.request("/instances", method="POST", body=f.read_bytes())
        head = pydicom.dcmread(files[0], stop_before_pixels=True)
        self.study, self.series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)

    def argv(self) -> list[str]:
        assert self.orthanc is not None
        c = self.orthanc.credentials
        return [self.orthanc.url, c.user, c.password, self.study, self.series]

    def stop(self) -> None:
        if self.orthanc is not None:
            self.orthanc.stop()
            self.orthanc = None


LOAD_LABELS = {
    None: "no load",
    "idle": "busy idle+10",
    "idle-mem": "numpy idle+10",
    "analysis": "analysis pool",
    "analysis-door": "analysis pool+door",
    "analysis-before": "analysis before",
}


@dataclass
class Load:
    """What runs next to the receiver: *spec* is None (nothing), a niceness or ``idle``
    (niceness 10 and the idle class) for :data:`BUSY`, ``idle-mem`` for :data:`BUSY_MEMORY`,
    ``analysis`` / ``analysis-before`` for :data:`ANALYSIS_LOAD` (the real job, with the pool's
    bounds / as before)."""

    spec: str | None
    count: int = 0
    """Busy processes (0: one per core); one analysis job runs at a time whatever it is."""
    archive: AnalysisArchive | None = None
    cpus: int = 1
    """``analysis.cpus`` of the ``analysis`` load."""
    threads: int = 1
    """``analysis.threads`` of the ``analysis`` load."""
    door_port: int = 0
    """The receiver's port that ``analysis-door`` watches (``analysis.pause_while_receiving``)."""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    """Threads of the load seen per (scheduling class, niceness, CPUs allowed): the most at once."""
    sampler: Any = None
    stopping: Any = None

    @property
    def label(self) -> str:
        spec, _, pin = (self.spec or "").partition("@")
        label = LOAD_LABELS.get(spec or None, f"busy nice {spec}")
        return f"{label} on {pin} CPU" if pin else label

    def start(self) -> None:
        import threading

        if self.spec is None:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADIOGATE_")}
        spec, _, pin = self.spec.partition("@")  # idle@1: on the last CPU only
        pinned = set(sorted(os.sched_getaffinity(0))[-int(pin) :]) if pin else None
        if spec.startswith("analysis"):
            assert self.archive is not None
            mode = {"analysis": "pool", "analysis-door": "door"}.get(spec, "before")
            cpus, threads = (self.cpus, self.threads) if mode != "before" else (0, 0)
            argv = [*self.archive.argv(), mode, str(cpus), str(threads), str(self.door_port)]
            commands = [[sys.executable, "-c", ANALYSIS_LOAD, *argv]]
        elif spec == "idle-mem":
            commands = [[sys.executable, "-c", BUSY_MEMORY]] * (self.count or os.cpu_count() or 1)
        else:
            nice, mode = ("10", "idle") if spec == "idle" else (spec, "nice")
            commands = [[sys.executable, "-c", BUSY, nice, mode]] * (
                self.count or os.cpu_count() or 1
            )
        for command in commands:
            quiet = subprocess.DEVNULL
            proc = subprocess.Popen(
                command, start_new_session=True, cwd=ROOT, env=env, stdout=quiet, stderr=quiet
            )
            if pinned is not None:  # before its interpreter has started (threads inherit it)
                os.sched_setaffinity(proc.pid, pinned)
            self.procs.append(proc)
        self.stopping = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        time.sleep(0.5)

    def _sample(self) -> None:
        """Every second: ``ps -eLo`` of the load's process groups (their children included)."""
        groups = {str(p.pid) for p in self.procs}
        while not self.stopping.wait(1.0):
            out = subprocess.run(
                ["ps", "-eLo", "pgid=,pid=,tid=,cls=,ni=,psr=,comm="],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            now: dict[str, int] = {}
            for line in out.splitlines():
                parts = line.split(None, 6)
                if len(parts) < 7 or parts[0] not in groups:
                    continue
                try:
                    allowed = sorted(os.sched_getaffinity(int(parts[2])))
                except OSError:
                    continue
                key = f"{parts[3]} ni {parts[4]} cpus {','.join(map(str, allowed))}"
                now[key] = now.get(key, 0) + 1
            for key, n in now.items():
                self.seen[key] = max(self.seen.get(key, 0), n)

    def stop(self) -> None:
        if self.stopping is not None:
            self.stopping.set()
        for proc in self.procs:
            stop_group(proc, timeout=5)
        self.procs = []


@dataclass
class DoorRun:
    data: str
    load: str
    round: int
    count: int
    receive_per_s: float
    end_to_end_per_s: float
    critical_latency_seconds: float = -1.0
    critical: str = "forward"
    """``forward``: the critical lane's last received -> last confirmed (:func:`run_critical`);
    ``triage``: a critical 300-slice CT's last instance received -> triage SR and KOS confirmed
    in Orthanc (``bench/bench_triage_e2e.py``, scenario live)."""
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])
    load_threads: dict[str, int] = field(default_factory=dict)
    """The load's threads by (scheduling class, niceness, CPUs allowed), at most at once."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds per component of the receive-rate run."""


@dataclass
class TriageCase:
    """The data of ``bench/bench_triage_e2e.py``: a 1,008-instance routine backlog and a critical
    300-slice CT (built once)."""

    backlog: list[Path]
    critical: list[Path]
    study_uid: str


def run_door(
    data: DataSet,
    crit_set: DataSet,
    settings: Settings,
    cluster: PrivateCluster,
    base: Path,
    cap: float,
    load: Load,
    rnd: int,
    triage: TriageCase | None = None,
) -> DoorRun:
    """The receive rate (storescu's time) and end to end with the worker running, under *load*;
    then, under the same load, the critical study behind a live routine transfer: the critical
    lane (:func:`run_critical`), or with *triage* the triage SR and KOS of a critical 300-slice
    CT (:func:`bench_triage_e2e.one_run`)."""
    load.door_port = port = free_port()  # every Radiogate of this run receives here
    with running(load):
        load.start()
        archive = load.archive.orthanc if load.archive is not None else None
        pid = archive.pid if archive is not None and archive.pid else 0
        archive_cpu = _stat(pid) if pid else None
        f = run_forward(data, settings, cluster, base, cap, port=port)
        after = _stat(pid) if pid else None
        if archive_cpu and after and load.spec and load.spec.startswith("analysis"):
            f.cpu["analysis-archive"] = round((after[2] - archive_cpu[2]) / CLK_TCK, 2)
        if triage is None:
            latency = run_critical("live", data, crit_set, settings, cluster, base, cap, port)
            critical, seconds = "forward", latency.latency_seconds
        else:
            from bench.bench_triage_e2e import one_run

            result = one_run(cluster, base / "triage-e2e", triage.backlog, triage.critical,
                             triage.study_uid, "live", scp_port=port)  # fmt: skip
            critical, seconds = "triage", float(result["received_to_results_confirmed"])
        seen = dict(load.seen)
    return DoorRun(
        data.name, load.label, rnd, f.count, round(f.count / f.send_seconds, 1),
        round(f.images_per_s, 1), round(seconds, 2), critical, load_threads=seen, cpu=f.cpu,
    )  # fmt: skip


def report_door(door: list[DoorRun], sets: dict[str, DataSet]) -> None:
    print("\nThe door under load, paired by round: receive img/s (storescu's time, worker")
    print("running), ratio to no load in the same round [min-max], end to end img/s, critical")
    print("study's latency (s): forward = last received -> last confirmed; triage = last instance")
    print("received -> triage SR + KOS confirmed in Orthanc; load average (1 min) at the end")
    for data in sets.values():
        runs = [d for d in door if d.data == data.name]
        rounds = {d.round for d in runs}
        ref = {d.round: d.receive_per_s for d in runs if d.load == "no load"}
        for label in dict.fromkeys(d.load for d in runs):
            mine = [d for d in runs if d.load == label]
            ratios = [d.receive_per_s / ref[d.round] for d in mine if ref.get(d.round)]
            print(
                f"  {data.label:<6} {label:<16} receive "
                f"{statistics.median(d.receive_per_s for d in mine):7.1f} x"
                f"{statistics.median(ratios) if ratios else float('nan'):5.2f} "
                f"[{min(ratios, default=0):.2f}-{max(ratios, default=0):.2f}]  e2e "
                f"{statistics.median(d.end_to_end_per_s for d in mine):7.1f}  {mine[0].critical} "
                f"{statistics.median(d.critical_latency_seconds for d in mine):5.2f} s "
                f"[{min(d.critical_latency_seconds for d in mine):.2f}-"
                f"{max(d.critical_latency_seconds for d in mine):.2f}]  load "
                f"{statistics.median(d.loadavg for d in mine):.1f}  ({len(rounds)} rounds)"
            )
            threads: dict[str, int] = {}
            for d in mine:
                for key, n in d.load_threads.items():
                    threads[key] = max(threads.get(key, 0), n)
            if threads:
                print("         load threads: " + "; ".join(f"{n} {k}" for k, n in threads.items()))
    print("goal: receive drops <= 20 % under the analysis job; critical triage SR < 5 s")


# --------------------------------------------------------------------------- main


def pydicom_read(path: Path) -> Dataset:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--short").splitlines()}


DEST_PREFIX = "DEST__"
"""``--trees`` entries with this prefix are fields of the archive destination (TOML values)."""
TREES: dict[str, tuple[Path, dict[str, str]]] = {}
"""``--trees``: name → (source tree, environment); each Radiogate run is repeated with each."""
DEID_SECRET = base64.b64encode(os.urandom(32)).decode()
ROUTE = ['[[routes]]\nname = "identified"\nsteps = ["forward:archive"]\n']
"""The route of every Radiogate run; ``--deid`` makes it de-identify first (profile basic)."""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 instances, fewer settings")
    parser.add_argument("--count", type=int, help="instances per data set (default 1000)")
    parser.add_argument(
        "--settings",
        help="worker settings parallel/batch_size/concurrency, comma-separated "
        "(default: 2/50/4,4/50/4,2/100/4,4/100/4,2/50/2,4/100/2)",
    )
    parser.add_argument("--sizes", default="ct512,small64", help="data sets: ct512,small64")
    parser.add_argument(
        "--reps", type=int, help="repetitions of each Radiogate setting (default 2; quick 1)"
    )
    parser.add_argument(
        "--direct-reps", type=int, default=1, help="minimum direct runs per data set"
    )
    parser.add_argument("--no-critical", action="store_true", help="skip the critical-lane runs")
    parser.add_argument(
        "--critical-only",
        action="store_true",
        help="only the critical-lane runs, with the first of --settings",
    )
    parser.add_argument(
        "--max-run-seconds", type=float, default=300.0, help="cap per run (default 300)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--deid",
        action="store_true",
        help="route with deidentify:basic before forwarding (the default route of make run)",
    )
    parser.add_argument(
        "--deid-processes", type=int, default=0, help="deid.processes with --deid (0: automatic)"
    )
    parser.add_argument(
        "--py-spy",
        default="",
        help="path of py-spy: profile worker and SCP of every Radiogate run "
        "(raw stacks to bench/results/profile-*.txt)",
    )
    parser.add_argument(
        "--accel",
        default="",
        help="accelerator configurations to pair (bench/accel.py), e.g. stock,all",
    )
    parser.add_argument(
        "--trees",
        default="",
        help="pair source trees in the same round: NAME=DIR[@ENV=VALUE...],... (the first is the "
        "reference; e.g. base=/tmp/base,new=.,nice=.@RADIOGATE_WORKER__NICE=5); the SCP and the "
        "worker run from each tree in turn, with the environment given; DEST__KEY=VALUE sets a "
        "field of the archive destination (e.g. .@DEST__CONFIRM_CLASS=false)",
    )
    parser.add_argument(
        "--door",
        default="",
        help="only the door under load, comma-separated loads: 'none'; 'analysis' (the real "
        "analysis job on a 300-slice CT, bounded as radiogate run's analysis worker bounds it: "
        "--door-cpus, --door-threads), 'analysis-before' (the same job lowered as before the "
        "pools: idle class, niceness 10, no CPU or thread bound); synthetic: a niceness or "
        "'idle' (niceness 10 + SCHED_IDLE) for a busy loop per core, 'idle-mem' (a memory-bound "
        "numpy loop per core, idle+10); e.g. none,analysis-before,analysis; each round runs them "
        "in a rotated order",
    )
    parser.add_argument(
        "--door-procs",
        type=int,
        default=0,
        help="busy processes of the --door load (default: one per core; analysis.processes "
        "is 1 by default)",
    )
    parser.add_argument(
        "--door-cpus", type=int, default=1, help="analysis.cpus of the 'analysis' load (1)"
    )
    parser.add_argument(
        "--door-threads", type=int, default=1, help="analysis.threads of the 'analysis' load (1)"
    )
    parser.add_argument(
        "--door-triage",
        action="store_true",
        help="the critical study of --door is bench_triage_e2e's (a 300-slice CT behind a "
        "1,008-instance backlog; last instance -> triage SR confirmed) instead of the "
        "10-instance critical lane",
    )
    parser.add_argument(
        "--two-nodes",
        action="store_true",
        help="only two nodes on one database (own SCP, worker, spool), each sent its own data "
        "set at the same time, paired with two storescu straight to Orthanc",
    )
    args = parser.parse_args()
    configs = accel.expand(args.accel) if args.accel else [""]
    if args.trees:
        for entry in args.trees.split(","):
            name, _, spec = entry.partition("=")
            path, *pairs = spec.split("@")
            env = dict(pair.split("=", 1) for pair in pairs)
            TREES[name.strip()] = (Path(path.strip()).resolve(), env)
        configs = list(TREES)
    if args.accel or args.trees:
        args.no_critical = True
    if args.deid:
        ROUTE[0] = (
            f"[deid]\nprocesses = {args.deid_processes}\n"
            '[[routes]]\nname = "deid"\nsteps = ["deidentify:basic", "forward:archive"]\n'
        )
    count = args.count or (200 if args.quick else 1000)
    default_settings = "2/50/4,4/100/4" if args.quick else "2/50/4,4/50/4,2/100/4,4/100/4,2/50/2"
    settings = [Settings.parse(s) for s in (args.settings or default_settings).split(",") if s]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    direct_reps = args.direct_reps
    reps = args.reps or (1 if args.quick else 2)

    for binary in (STORESCU, ECHOSCU, ORTHANC):
        if not Path(binary).exists():
            print(f"missing {binary}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_sigterm)

    base = Path(tempfile.mkdtemp(prefix="radiogate-fwdbench-", dir=os.environ.get("BENCH_TMP")))
    base.chmod(0o755)  # the private cluster runs as 'postgres' when we are root
    cluster: PrivateCluster | None = None
    direct: list[DirectRun] = []
    forward: list[ForwardRun] = []
    critical: list[CriticalRun] = []
    split: list[SplitRun] = []
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        t0 = time.perf_counter()
        sets: dict[str, DataSet] = {}
        if "ct512" in sizes:
            sets["ct512"] = generate(base / "data" / "ct512", "ct512", "0.5MB", count, 512, 1)
        if "small64" in sizes:
            sets["small64"] = generate(base / "data" / "small64", "small64", "10KB", count, 64, 2)
        crit_set = generate(base / "data" / "stat", "stat", "STAT", CRITICAL_COUNT, 512, 3, "STAT")
        for s in sets.values():
            print(f"data {s.name}: {len(s.files)} files of {s.bytes_per_file / 1e3:.1f} kB")
        print(f"generated in {time.perf_counter() - t0:.1f} s", flush=True)
        cluster = PrivateCluster(base / "pg" / "data", free_port())
        cluster.start()
        if args.two_nodes:
            two: list[TwoNodeRun] = []
            for data in sets.values():
                size = 512 if data.name == "ct512" else 64
                other = generate(
                    base / "data" / f"{data.name}-b", f"{data.name}-b", data.label,
                    len(data.files), size, 11,
                )  # fmt: skip
                for rnd in range(reps):
                    r = run_two_nodes(data, other, settings[0], cluster, base,
                                      args.max_run_seconds, rnd)  # fmt: skip
                    r.direct_per_s = round(
                        run_direct_pair(data, other, base, args.max_run_seconds), 1
                    )
                    two.append(r)
                    print(f"two nodes {data.label:>5} {r.per_node} both {r.total_per_s} img/s, "
                          f"direct {r.direct_per_s} cpu {r.cpu} load {os.getloadavg()[0]:.1f}",
                          flush=True)  # fmt: skip
            report_two_nodes(two, sets)
            RESULTS.mkdir(parents=True, exist_ok=True)
            name = f"two-nodes-{time.strftime('%Y%m%d-%H%M%S')}.json"
            (RESULTS / name).write_text(json.dumps([asdict(r) for r in two], indent=2))
            print(f"\nresults: {RESULTS / name}")
            return 0
        if args.door:
            loads = [None if x.strip() == "none" else x.strip() for x in args.door.split(",")]
            door: list[DoorRun] = []
            archive = AnalysisArchive(base / "analysis-archive")
            triage: TriageCase | None = None
            with running(archive):
                if any(x and x.startswith("analysis") for x in loads):
                    archive.start()
                if args.door_triage:
                    from bench.bench_triage_e2e import critical_ct
                    from tests.support.data import extract_ct, series_copies

                    ct = extract_ct(base / "triage-ct")
                    crit = critical_ct(ct, base / "triage-critical")
                    uid = str(pydicom_read(crit[0]).StudyInstanceUID)
                    triage = TriageCase(series_copies(ct, base / "triage-backlog", 21), crit, uid)
                for rnd in range(reps):
                    shift = rnd % len(loads)
                    for spec in loads[shift:] + loads[:shift]:
                        for data in sets.values():
                            load = Load(spec, args.door_procs, archive, args.door_cpus,
                                        args.door_threads)  # fmt: skip
                            d = run_door(data, crit_set, settings[0], cluster, base,
                                         args.max_run_seconds, load, rnd, triage)  # fmt: skip
                            door.append(d)
                            print(f"door      {data.label:>5} {d.load:<16} receive "
                                  f"{d.receive_per_s:7.1f} img/s, e2e {d.end_to_end_per_s:7.1f},"
                                  f" {d.critical} {d.critical_latency_seconds:.2f} s load "
                                  f"{d.loadavg:.1f} threads {d.load_threads} cpu {d.cpu}",
                                  flush=True)  # fmt: skip
            report_door(door, sets)
            RESULTS.mkdir(parents=True, exist_ok=True)
            name = f"door-{time.strftime('%Y%m%d-%H%M%S')}.json"
            (RESULTS / name).write_text(json.dumps([asdict(d) for d in door], indent=2))
            print(f"\nresults: {RESULTS / name}")
            return 0

        for data in sets.values() if not args.critical_only else ():
            # Direct runs interleaved with the Radiogate runs: the machine's load drifts.
            plan: list[tuple[Settings, str] | None] = []
            for rep in range(reps):
                for st in settings:
                    shift = rep % len(configs)
                    rotated = configs[shift:] + configs[:shift]
                    plan += [None] if not args.accel or args.trees else []
                    plan += [(st, c) for c in rotated]
            plan += [None] * max(0, direct_reps - plan.count(None))
            for rep, step in enumerate(plan):
                if step is None:
                    run = run_direct(data, rep, base, args.max_run_seconds)
                    direct.append(run)
                    print(
                        f"direct    {data.label:>5} {'':<11} {run.images_per_s:7.1f} img/s  "
                        f"({run.seconds:.2f} s, stored {run.stored}/{run.count}) cpu {run.cpu} "
                        f"load {run.loadavg:.1f}",
                        flush=True,
                    )
                    continue
                st, config = step
                f = run_forward(data, st, cluster, base, args.max_run_seconds, args.py_spy, config)
                f.round = len(
                    [x for x in forward if x.data == data.name and x.settings == f.settings]
                )
                forward.append(f)
                if args.trees:  # forwarding alone, from a full spool, with the same tree
                    sp = run_split(data, st, cluster, base, args.max_run_seconds, config)
                    split.append(sp)
                    print(
                        f"split     {data.label:>5} {sp.settings:<11} receive only "
                        f"{sp.receive_per_s:7.1f} img/s, forward only {sp.forward_per_s:7.1f}"
                        f" img/s (confirmed {sp.confirmed}/{sp.count}) worker cpu "
                        f"{sp.cpu_forward.get('worker', 0.0) / sp.count * 1e3:.2f} ms/instance",
                        flush=True,
                    )
                print(
                    f"radiogate {data.label:>5} {f.settings:<11} {f.images_per_s:7.1f} img/s  "
                    f"(send {f.send_seconds:.2f} s, last confirmed {f.end_to_end_seconds:.2f} s,"
                    f" confirmed {f.confirmed}/{f.count}, orthanc {f.orthanc_count}) "
                    f"cpu {f.cpu} load {f.loadavg:.1f}",
                    flush=True,
                )
        best = pick_best(forward, "ct512" if "ct512" in sets else next(iter(sets), ""), settings)
        for data in sets.values() if not (args.critical_only or args.accel or args.trees) else ():
            sp = run_split(data, best, cluster, base, args.max_run_seconds)
            split.append(sp)
            print(
                f"split     {data.label:>5} {best.label:<11} receive only {sp.receive_per_s:7.1f}"
                f" img/s, then forward only {sp.forward_per_s:7.1f} img/s "
                f"(confirmed {sp.confirmed}/{sp.count}) cpu {sp.cpu_receive} / {sp.cpu_forward}",
                flush=True,
            )
        if not args.no_critical and "ct512" in sets:
            for scenario in ("backlog", "live"):
                c = run_critical(
                    scenario,
                    sets["ct512"],
                    crit_set,
                    best,
                    cluster,
                    base,
                    args.max_run_seconds,
                )
                critical.append(c)
                print(
                    f"critical {scenario:<8} {best.label}: {c.latency_seconds:.2f} s "
                    f"(routed +{c.critical_routed_seconds:.2f} s, first sent "
                    f"+{c.critical_first_sent_seconds:.2f} s); {c.routine_confirmed_before} of "
                    f"{c.routine} routine confirmed before it, "
                    f"{c.routine_pending_when_critical_received} pending when it arrived",
                    flush=True,
                )
        report(direct, forward, split, critical, sets, best)
        if args.accel or args.trees:
            report_paired(forward, sets, configs, configs[0] if args.trees else "stock")
        if args.trees:
            report_split_paired(split, sets, configs)
        out = {
            "benchmark": "forward",
            "started_at": started_at,
            "host": {"cores": os.cpu_count(), "platform": platform.platform()},
            "git": git_state(),
            "count": count,
            "quick": args.quick,
            "data": {
                s.name: {"files": len(s.files), "bytes": s.bytes_per_file} for s in sets.values()
            },
            "direct": [asdict(d) | {"images_per_s": d.images_per_s} for d in direct],
            "forward": [asdict(f) | {"images_per_s": f.images_per_s} for f in forward],
            "split": [
                asdict(x) | {"receive_per_s": x.receive_per_s, "forward_per_s": x.forward_per_s}
                for x in split
            ],
            "critical": [asdict(c) for c in critical],
            "best_settings": best.label,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = f"forward-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
        (RESULTS / name).write_text(json.dumps(out, indent=2, default=str))
        print(f"\nresults: {RESULTS / name}")
    except (KeyboardInterrupt, Interrupted):
        print("interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.stop(mode="fast")
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def report_paired(
    forward: list[ForwardRun], sets: dict[str, DataSet], configs: list[str], reference: str
) -> None:
    """Each configuration (or tree) against *reference* in the same round."""
    print(f"\nPaired with {reference} in the same round (medians over rounds): end-to-end img/s,")
    print(f"x = median of per-round ratios to {reference} [min-max]; CPU s of worker and SCP")
    for data in sets.values():
        by_setting: dict[str, dict[int, dict[str, ForwardRun]]] = {}
        for f in forward:
            if f.data == data.name and "[" in f.settings:
                label, config = f.settings[:-1].split(" [")
                by_setting.setdefault(label, {}).setdefault(f.round, {})[config] = f
        for label, rounds in by_setting.items():
            rate = {r: {c: f.images_per_s for c, f in fs.items()} for r, fs in rounds.items()}
            for config in configs:
                ips, _stock, ratio = accel.paired(rate, config, reference)
                runs = [fs[config] for fs in rounds.values() if config in fs]
                ratios = [r[config] / r[reference] for r in rate.values()
                          if config in r and r.get(reference)]  # fmt: skip
                spread = f"[{min(ratios):.2f}-{max(ratios):.2f}]" if ratios else ""
                worker = statistics.median(f.cpu.get("worker", 0.0) for f in runs)
                scp = statistics.median(f.cpu.get("scp", 0.0) for f in runs)
                print(
                    f"  {data.label:<6} {label:<11} {config:<14} {ips:7.1f} img/s x{ratio:5.2f}"
                    f" {spread}"
                    f"  worker {worker:5.1f} s  scp {scp:5.1f} s  ({len(runs)} rounds)"
                )


def report_split_paired(
    split: list[SplitRun], sets: dict[str, DataSet], configs: list[str]
) -> None:
    """Forwarding alone (from a full spool) per tree, paired with the first tree by round;
    CPU milliseconds per instance of each component while forwarding."""
    reference = configs[0]
    print(f"\nForwarding alone, paired with {reference} (medians over rounds [min-max]); CPU ms")
    print("per instance while forwarding")
    for data in sets.values():
        runs: dict[str, list[SplitRun]] = {}
        for x in split:
            if x.data == data.name and "[" in x.settings:
                runs.setdefault(x.settings[:-1].split(" [")[1], []).append(x)
        ref = runs.get(reference, [])
        for config in configs:
            mine = runs.get(config, [])
            if not mine:
                continue
            ratios = [a.forward_per_s / b.forward_per_s
                      for a, b in zip(mine, ref, strict=False) if b.forward_per_s]  # fmt: skip
            ips = statistics.median(x.forward_per_s for x in mine)
            per = {k: [x.cpu_forward.get(k, 0.0) / x.count * 1e3 for x in mine]
                   for k in ("worker", "orthanc", "postgres", "scp")}  # fmt: skip
            cpu = " ".join(f"{k}={statistics.median(v):.2f}" for k, v in per.items())
            spread = f"[{min(ratios):.2f}-{max(ratios):.2f}]" if ratios else ""
            ratio = statistics.median(ratios) if ratios else float("nan")
            print(
                f"  {data.label:<6} {config:<10} {ips:7.1f} img/s x{ratio:5.2f} {spread}  {cpu}"
                f"  ({len(mine)} rounds)"
            )


def per_setting(forward: list[ForwardRun], data: str) -> dict[str, list[ForwardRun]]:
    out: dict[str, list[ForwardRun]] = {}
    for f in forward:
        if f.data == data:
            out.setdefault(f.settings, []).append(f)
    return out


def pick_best(forward: list[ForwardRun], data: str, settings: list[Settings]) -> Settings:
    """The setting with the best median throughput on *data* (complete runs only)."""
    medians = {
        label: statistics.median(f.images_per_s for f in runs)
        for label, runs in per_setting(forward, data).items()
        if all(f.confirmed == f.count for f in runs)
    }
    if not medians:
        return settings[0]
    top = max(medians, key=lambda k: medians[k]).split(" [")[0]
    return next(s for s in settings if s.label == top)


RATIO_GOAL = 0.70
"""End to end through Radiogate against storescu straight to Orthanc."""


def budget_line(total_ms: float, direct_ips: float, direct_ms: float) -> str:
    """What the CPU per instance of a run allows on this machine's cores.

    Every component of a run (SCP, worker, PostgreSQL, Orthanc, storescu) shares the same
    cores, so a run that needs *total_ms* of CPU per instance cannot go faster than
    ``cores * 1000 / total_ms`` instances per second however well it overlaps; reaching
    :data:`RATIO_GOAL` of the direct rate needs ``total_ms <= cores * 1000 / (goal * direct)``.
    """
    cores = os.cpu_count() or 1
    if total_ms <= 0 or direct_ips <= 0:
        return f"{'':<35}cpu budget: no figures"
    allowed = cores * 1e3 / (RATIO_GOAL * direct_ips)
    ceiling = cores * 1e3 / total_ms
    return (
        f"{'':<35}cpu budget on {cores} cores: all components {total_ms:.1f} ms/instance "
        f"(direct {direct_ms:.1f}); {RATIO_GOAL:.2f}x direct allows {allowed:.1f}; "
        f"ceiling at this CPU {ceiling:.0f} img/s ({ceiling / direct_ips:.2f}x direct)"
    )


def report(
    direct: list[DirectRun],
    forward: list[ForwardRun],
    split: list[SplitRun],
    critical: list[CriticalRun],
    sets: dict[str, DataSet],
    best: Settings,
) -> None:
    print()
    print(f"Forwarding benchmark, {os.cpu_count()} cores, loopback, storescu TCP_NODELAY=1")
    print("medians over runs; ratio = Radiogate img/s / direct img/s; e2e = first sent → last")
    print("confirmed in Orthanc; cpu = CPU seconds per component during the run")
    print(f"{'data':<7}{'path':<28}{'img/s':>8}{'ratio':>7}{'send s':>8}{'e2e s':>8}  cpu s")
    for data in sets.values():
        ds = [d.images_per_s for d in direct if d.data == data.name]
        ref = statistics.median(ds) if ds else 0.0
        dsec = statistics.median([d.seconds for d in direct if d.data == data.name] or [0])
        direct_cpu = statistics.median(
            [sum(d.cpu.values()) / d.count * 1e3 for d in direct if d.data == data.name] or [0]
        )
        print(f"{data.label:<7}{'direct → Orthanc':<28}{ref:8.1f}{1.0:7.2f}{dsec:8.2f}{dsec:8.2f}")
        for label, runs in per_setting(forward, data.name).items():
            ips = statistics.median(f.images_per_s for f in runs)
            send = statistics.median(f.send_seconds for f in runs)
            e2e = statistics.median(f.end_to_end_seconds for f in runs)
            cpu = " ".join(
                f"{k}={statistics.median(f.cpu.get(k, 0.0) for f in runs):.1f}" for k in runs[0].cpu
            )
            bad = sum(f.count - f.confirmed for f in runs)
            flag = f" ({bad} NOT CONFIRMED)" if bad else ""
            per = " ".join(
                f"{k}={statistics.median(f.cpu.get(k, 0.0) / f.count * 1e3 for f in runs):.1f}"
                for k in runs[0].cpu
            )
            rss = " ".join(
                f"{k}={statistics.median(f.rss_mb.get(k, 0.0) for f in runs):.0f}"
                for k in runs[0].rss_mb
            )
            flag += f"\n{'':<35}cpu ms/instance {per}; peak RSS MB {rss}"
            total = statistics.median(sum(f.cpu.values()) / f.count * 1e3 for f in runs)
            flag += "\n" + budget_line(total, ref, direct_cpu)
            ratio = ips / ref if ref else 0.0
            print(
                f"{'':<7}{'Radiogate ' + label:<28}{ips:8.1f}{ratio:7.2f}"
                f"{send:8.2f}{e2e:8.2f}  {cpu}{flag}"
            )
    if split:
        print(f"\nOne side at a time ({best.label}): receive with no worker, then forward only")
        for x in split:
            ref = statistics.median([d.images_per_s for d in direct if d.data == x.data] or [0])
            label = sets[x.data].label
            rr, fr = (x.receive_per_s / ref, x.forward_per_s / ref) if ref else (0.0, 0.0)
            print(
                f"  {label:<6} receive only {x.receive_per_s:7.1f} img/s ({rr:.2f} of direct);"
                f" forward only {x.forward_per_s:7.1f} img/s ({fr:.2f} of direct)"
            )
    if critical:
        print(f"\nCritical study ({CRITICAL_COUNT} STAT instances) behind routine, {best.label}:")
        for c in critical:
            ok = "OK" if c.latency_seconds < 5.0 else "OVER 5 s"
            print(
                f"  {c.scenario:<8} last received → last confirmed {c.latency_seconds:6.2f} s "
                f"[{ok}]; routine confirmed before it {c.routine_confirmed_before}/{c.routine}; "
                f"routine pending when it arrived {c.routine_pending_when_critical_received}"
            )
    print(f"ratio goal ≥ {RATIO_GOAL:.2f} of direct; critical goal < 5 s")


if __name__ == "__main__":
    sys.exit(main())
