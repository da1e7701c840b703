"""Receive benchmark: Radiogate's SCP against DCMTK storescp and Orthanc, all on loopback.

Run from the repository root::

    .venv/bin/python bench/bench_receive.py            # full run (1,000 instances, 3 repetitions)
    .venv/bin/python bench/bench_receive.py --quick    # smoke run (100 instances, 1 repetition)

What it does, in one process tree that it cleans up on exit:

- generates two data sets in a temporary directory: 1,000 CT instances 512x512 16-bit
  (~0.5 MB, explicit VR little endian, one study/series, a CT header as a scanner writes it,
  a smooth phantom plus noise as pixel data) and 1,000 instances of 64x64 16-bit (~10 KB);
- starts each receiver fresh for every run, on free loopback ports:
  Radiogate (``radiogate scp``: default settings, i.e. fsync on and one receiver per core but
  at least 4, on a private PostgreSQL cluster started here), DCMTK ``storescp`` writing to
  disk (also with ``--fork``) and Orthanc (SQLite index); storescp and Orthanc run with
  ``TCP_NODELAY=1``;
- sends with DCMTK ``storescu``: all files over one association, or over 4 concurrent
  associations (4 storescu, a quarter each), with and without ``TCP_NODELAY=1`` in the sender's
  environment (without it DCMTK leaves Nagle's algorithm on);
- for senders that keep Nagle on, also runs Radiogate with ``scp.tcp_quickack = false`` to show
  what the TCP_QUICKACK re-arm buys;
- images/s = instances the receiver stored / wall time of the senders (a run is capped at
  ``--max-run-seconds``; a capped run counts what was stored by then), medians over repetitions;
- prints the table and writes every run as JSON to ``bench/results/``.

With ``--accel CONFIGS`` (see ``bench/accel.py``; e.g. ``--accel parts`` or
``--accel stock,all``) the receivers are Radiogate in each accelerator configuration instead,
senders with ``TCP_NODELAY=1`` only; every round runs every configuration once per case, in
a rotated order, and the report pairs each configuration with stock pynetdicom *in the same
round* (median of the per-round ratios), which cancels most of the drift of a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from bench import accel  # noqa: E402
from dicom_nodes.db.migrate import migrate  # noqa: E402
from dicom_nodes.scp.runner import receivers_for  # noqa: E402
from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer  # noqa: E402
from dicom_nodes.services.postgres import PrivateCluster  # noqa: E402
from tests.support import free_port, stop_group, wait_for_echo  # noqa: E402

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = "/usr/sbin/Orthanc"
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"


# --------------------------------------------------------------------------- data


def _phantom(size: int, z: float) -> list[int]:
    """A smooth CT-like slice (stored values, rescale intercept -1024): air, body, lungs, bone."""
    out = [0] * (size * size)
    half = size / 2
    for y in range(size):
        ny = (y - half) / half
        for x in range(size):
            nx = (x - half) / half
            body = (nx / 0.85) ** 2 + (ny / 0.65) ** 2
            if body > 1.0:
                hu = -1000.0
            else:
                lung_l = ((nx + 0.38) / 0.28) ** 2 + ((ny + 0.05) / (0.42 - 0.05 * z)) ** 2
                lung_r = ((nx - 0.38) / 0.28) ** 2 + ((ny + 0.05) / (0.42 - 0.05 * z)) ** 2
                spine = (nx / 0.09) ** 2 + ((ny - 0.45) / 0.09) ** 2
                if spine < 1.0:
                    hu = 700.0 + 150.0 * math.cos(6 * nx)
                elif lung_l < 1.0 or lung_r < 1.0:
                    hu = -820.0 + 40.0 * math.sin(9 * nx + 7 * ny + z)
                elif body > 0.88:
                    hu = -90.0  # subcutaneous fat
                else:
                    hu = 40.0 + 25.0 * math.sin(5 * nx - 4 * ny + 2 * z)
            out[y * size + x] = max(0, int(hu + 1024))
    return out


def _pixel_bytes(bases: list[bytes], index: int, mask: int, rng: random.Random) -> bytes:
    """Base slice with random low bits (cheap noise without numpy); little endian int16."""
    base = bases[index % len(bases)]
    n = len(base)
    noise = int.from_bytes(rng.randbytes(n), "little") & mask
    return (int.from_bytes(base, "little") ^ noise).to_bytes(n, "little")


def _ct_dataset(study: str, series: str, frame: str, size: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240312"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AccessionNumber = "BENCH0001"
    ds.Modality = "CT"
    ds.Manufacturer = "Radiogate Bench"
    ds.InstitutionName = "Loopback Hospital"
    ds.ReferringPhysicianName = "Referrer^Bench"
    ds.StationName = "CT01"
    ds.StudyDescription = "CT CHEST WITHOUT CONTRAST"
    ds.SeriesDescription = "Thorax 1.0 B30f"
    ds.ManufacturerModelName = "Synthetic 64"
    ds.PatientName = "Bench^Patient"
    ds.PatientID = "BENCH-0001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.PatientAge = "064Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500.0"
    ds.SoftwareVersions = "bench-1"
    ds.ReconstructionDiameter = "380.0"
    ds.GantryDetectorTilt = "0.0"
    ds.TableHeight = "150.0"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "200"
    ds.Exposure = "100"
    ds.ConvolutionKernel = "B30f"
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "1"
    ds.SeriesNumber = "2"
    ds.AcquisitionNumber = "1"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    spacing = f"{380.0 / size:.6f}"
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


@dataclass(frozen=True)
class DataSet:
    name: str
    label: str
    files: list[Path]
    total_bytes: int


def generate(dest: Path, name: str, label: str, count: int, size: int, seed: int) -> DataSet:
    """*count* CT instances of *size* x *size* 16-bit pixels, one study/series, in *dest*."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    n_bases = 4
    bases = []
    for b in range(n_bases):
        values = _phantom(size, b / n_bases)
        bases.append(b"".join(v.to_bytes(2, "little", signed=True) for v in values))
    mask = int.from_bytes(b"\x0f\x00" * (size * size), "little")  # 4 bits of noise per pixel
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    template = _ct_dataset(study, series, frame, size)
    files = []
    total = 0
    for i in range(count):
        ds = Dataset()
        ds.update(template)
        sop = generate_uid()
        z = -300.0 + i * 1.0
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = str(i + 1)
        ds.ContentTime = ds.AcquisitionTime = f"1015{i % 60:02d}.{i % 1000:03d}"
        ds.ImagePositionPatient = ["-190.0", "-190.0", f"{z:.1f}"]
        ds.SliceLocation = f"{z:.1f}"
        ds.PixelData = _pixel_bytes(bases, i, mask, rng)
        ds["PixelData"].VR = "OW"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = dest / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
        files.append(path)
    return DataSet(name, label, files, total)


# --------------------------------------------------------------------------- processes


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of *pid* in KiB, 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of *pid* (plus its waited-for children), seconds; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(c) for c in (task / "children").read_text().split())
    return out


class Receiver(Protocol):
    name: str
    ae_title: str
    port: int

    def start(self) -> None: ...
    def stored(self) -> int: ...
    def memory(self) -> dict[str, int]: ...
    def cpu(self) -> dict[str, float]: ...
    def stop(self) -> None: ...


@dataclass
class Radiogate:
    cluster: PrivateCluster
    workdir: Path
    quickack: bool = True
    name: str = "radiogate"
    extra_env: dict[str, str] = field(default_factory=dict)
    accel: str = ""
    """Accelerator configuration (``bench/accel.py``); empty: the default settings."""
    source: Path = ROOT
    """Checkout whose code runs (``--baseline``: another one, e.g. the previous commit)."""
    ae_title: str = "RADIOGATE"
    port: int = 0
    dsn: str = ""
    db: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = free_port()
        self.db = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.cluster.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.db}")
        self.dsn = f"host={HOST} port={self.cluster.port} dbname={self.db} user=radiogate"
        with psycopg.connect(self.dsn) as conn:
            migrate(conn)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADIOGATE_")}
        env.pop("TCP_NODELAY", None)
        env.update(
            {
                "RADIOGATE_DATABASE__DSN": self.dsn,
                "RADIOGATE_NODE__DATA_DIR": str(self.workdir),
                "RADIOGATE_SCP__PORT": str(self.port),
                "RADIOGATE_SCP__TCP_QUICKACK": "true" if self.quickack else "false",
                # Default settings, but the metrics endpoint on a free port, not the fixed 9463.
                "RADIOGATE_SCP__METRICS_PORT": str(free_port()),
            }
        )
        env.update(self.extra_env)
        cmd = [sys.executable, "-m", "dicom_nodes.cli", "scp"]
        if self.accel:
            env.update(accel.environment(self.accel))
            cmd = accel.command(self.accel, ["scp"])
        if self.source != ROOT:
            env["PYTHONPATH"] = str(self.source)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "scp.log").open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.source,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_echo(self.port, self.ae_title, timeout=60.0)

    def stored(self) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute("SELECT count(*) FROM ingest_instance").fetchone()
        return int(row[0]) if row else 0

    def receiver_pids(self) -> list[int]:
        """The receiver processes (the supervisor's other child serves /metrics)."""
        assert self.proc is not None
        log = (self.workdir / "scp.log").read_text(errors="replace")
        logged = {int(m) for m in re.findall(r"receiver \d+ \(pid (\d+)\) accepting", log)}
        return [p for p in children_of(self.proc.pid) if p in logged]

    def memory(self) -> dict[str, int]:
        assert self.proc is not None
        receivers = [vm_hwm_kib(p) for p in self.receiver_pids()]
        others = [
            vm_hwm_kib(p) for p in children_of(self.proc.pid) if p not in self.receiver_pids()
        ]
        return {
            "receivers": len(receivers),
            "sum_vmhwm_kib": sum(receivers),
            "max_vmhwm_kib": max(receivers, default=0),
            "supervisor_vmhwm_kib": vm_hwm_kib(self.proc.pid),
            "other_children_vmhwm_kib": sum(others),
        }

    def cpu(self) -> dict[str, float]:
        assert self.proc is not None
        receivers = sum(cpu_seconds(p) for p in self.receiver_pids())
        pid_file = self.cluster.data_dir / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        backends = sum(cpu_seconds(p) for p in children_of(postmaster))
        return {"receiver": receivers, "postgres": backends}

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=20.0)
            self.proc = None
        if self.db:
            with psycopg.connect(self.cluster.admin_dsn, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
            self.db = ""


@dataclass
class Storescp:
    workdir: Path
    fork: bool = False
    name: str = "storescp"
    ae_title: str = "STORESCP"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.fork:
            self.name = "storescp --fork"

    @property
    def out(self) -> Path:
        return self.workdir / "out"

    def start(self) -> None:
        self.port = free_port()
        self.out.mkdir(parents=True, exist_ok=True)
        cmd = [STORESCP, "-aet", self.ae_title, "-od", str(self.out)]
        if self.fork:
            cmd.append("--fork")
        cmd.append(str(self.port))
        with (self.workdir / "storescp.log").open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=dict(os.environ, TCP_NODELAY="1"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_echo(self.port, self.ae_title, timeout=60.0)

    def stored(self) -> int:
        return sum(1 for p in self.out.iterdir() if p.name.startswith("CT."))

    def memory(self) -> dict[str, int]:
        assert self.proc is not None
        return {"max_vmhwm_kib": vm_hwm_kib(self.proc.pid)}

    def cpu(self) -> dict[str, float]:
        assert self.proc is not None
        return {"receiver": cpu_seconds(self.proc.pid, children=True)}

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=20.0)
            self.proc = None


@dataclass
class Orthanc:
    workdir: Path
    name: str = "orthanc"
    ae_title: str = "ORTHANC"
    port: int = 0
    managed: ManagedOrthanc | None = None

    def start(self) -> None:
        self.port = free_port()
        self.managed = ManagedOrthanc(
            storage_dir=self.workdir,
            http_port=free_port(),
            dicom_port=self.port,
            ae_title=self.ae_title,
            executable=ORTHANC,
            # The archive is closed: only these AEs, from loopback, may associate.
            peers=[
                OrthancPeer(aet.lower(), aet, HOST, free_port())
                for aet in ("ECHOSCU", "BENCH", "RADIOGATE")
            ],
        )
        self.managed.start()
        wait_for_echo(self.port, self.ae_title, timeout=60.0)

    def stored(self) -> int:
        assert self.managed is not None
        return int(self.managed.get_json("/statistics")["CountInstances"])

    def memory(self) -> dict[str, int]:
        assert self.managed is not None and self.managed._proc is not None
        return {"max_vmhwm_kib": vm_hwm_kib(self.managed._proc.pid)}

    def cpu(self) -> dict[str, float]:
        assert self.managed is not None and self.managed._proc is not None
        return {"receiver": cpu_seconds(self.managed._proc.pid)}

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()
            self.managed = None


def settle(
    receiver: Receiver, window: float = 0.2, quiet: float = 0.01, limit: float = 15.0
) -> None:
    """Wait until *receiver* has finished starting: the CPU it is charged with (its processes
    as :meth:`Receiver.cpu` finds them) grew by less than *quiet* seconds over two windows in a
    row. The SCP answers C-ECHO as soon as its first receiver accepts, while the others may
    still be forking and connecting; their start must not be counted as the run's work."""
    deadline = time.monotonic() + limit
    before, calm = sum(receiver.cpu().values()), 0
    while calm < 2 and time.monotonic() < deadline:
        time.sleep(window)
        now = sum(receiver.cpu().values())
        calm = calm + 1 if now - before < quiet else 0
        before = now


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class Case:
    data: str
    assocs: int
    nodelay: bool

    def label(self, sets: dict[str, DataSet]) -> str:
        nd = "NODELAY=1" if self.nodelay else "Nagle on "
        return f"{sets[self.data].label:>6} {self.assocs} assoc sender {nd}"


@dataclass
class Run:
    receiver: str
    case: Case
    rep: int
    sent: int
    stored: int
    seconds: float
    capped: bool
    failures: int
    bytes: int
    memory: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def cpu_ms_per_image(self) -> float:
        """Receiver CPU (plus its PostgreSQL backends for Radiogate) per stored instance, ms."""
        return 1000 * sum(self.cpu.values()) / self.stored if self.stored else float("nan")

    @property
    def images_per_s(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        if self.sent == 0 or self.seconds <= 0:
            return 0.0
        return self.bytes * (self.stored / self.sent) / self.seconds / 1e6


def send(
    receiver: Receiver, data: DataSet, assocs: int, nodelay: bool, cap: float, log: Path
) -> tuple[float, bool, int]:
    """Send every file of *data* over *assocs* concurrent storescu; (seconds, capped, failed)."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    n = len(data.files)
    chunks = [data.files[k * n // assocs : (k + 1) * n // assocs] for k in range(assocs)]
    procs: list[subprocess.Popen[bytes]] = []
    capped = False
    with log.open("ab") as out:
        started = time.perf_counter()
        try:
            for chunk in chunks:
                cmd = [STORESCU, "-aet", "BENCH", "-aec", receiver.ae_title, HOST]
                procs.append(
                    subprocess.Popen(
                        [*cmd, str(receiver.port), *map(str, chunk)],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            deadline = started + cap
            for p in procs:
                try:
                    p.wait(timeout=max(0.01, deadline - time.perf_counter()))
                except subprocess.TimeoutExpired:
                    capped = True
                    break
            elapsed = time.perf_counter() - started
        finally:
            for p in procs:
                if p.poll() is None:
                    stop_group(p, timeout=5)
    failed = sum(1 for p in procs if p.returncode not in (0, None) and not capped)
    return elapsed, capped, failed


# --------------------------------------------------------------------------- main


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 instances, 1 repetition")
    parser.add_argument("--count", type=int, help="instances per data set (default 1000)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3)")
    parser.add_argument(
        "--max-run-seconds", type=float, default=90.0, help="cap per run (default 90)"
    )
    parser.add_argument(
        "--receivers",
        default="radiogate,storescp,storescp-fork,orthanc,radiogate-noquickack",
        help="comma-separated subset to run; radiogate@SCP__PROCESSES=4 runs the SCP with "
        "that setting overridden (RADIOGATE_SCP__PROCESSES=4)",
    )
    parser.add_argument("--sizes", default="ct512,small64", help="data sets: ct512,small64")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--accel",
        default="",
        help="accelerator configurations instead of --receivers (bench/accel.py), e.g. parts",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the SCP of this checkout with its default settings as "
        "radiogate[baseline] (e.g. `git archive HEAD~1 | tar -x -C DIR`); with --accel "
        "paired like the configurations",
    )
    parser.add_argument(
        "--nodelay-only",
        action="store_true",
        help="only senders with TCP_NODELAY=1 (the cases compared with Orthanc)",
    )
    args = parser.parse_args()
    # SIGTERM/SIGHUP unwind like Ctrl-C, so that the finally block stops every process started.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda n, _f: sys.exit(128 + n))
    count = args.count or (100 if args.quick else 1000)
    reps = args.reps or (1 if args.quick else 3)
    wanted = [r.strip() for r in args.receivers.split(",") if r.strip()]
    if args.accel:
        wanted = [f"radiogate[{c}]" for c in accel.expand(args.accel)]
    if args.baseline:
        wanted.append("radiogate[baseline]")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]

    for binary in (STORESCU, STORESCP, ECHOSCU, ORTHANC):
        if not Path(binary).exists():
            print(f"missing {binary}", file=sys.stderr)
            return 2

    base = Path(tempfile.mkdtemp(prefix="radiogate-bench-", dir=os.environ.get("BENCH_TMP")))
    base.chmod(0o755)  # the private cluster runs as 'postgres' when we are root
    cluster: PrivateCluster | None = None
    current: Receiver | None = None
    runs: list[Run] = []
    cores = os.cpu_count() or 1
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        t0 = time.perf_counter()
        sets: dict[str, DataSet] = {}
        if "ct512" in sizes:
            sets["ct512"] = generate(base / "data" / "ct512", "ct512", "0.5MB", count, 512, 1)
        if "small64" in sizes:
            sets["small64"] = generate(base / "data" / "small64", "small64", "10KB", count, 64, 2)
        for s in sets.values():
            print(
                f"data {s.name}: {len(s.files)} files, {s.total_bytes / len(s.files) / 1e3:.1f} kB"
                f" each, generated in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
        if any(r.startswith("radiogate") for r in wanted):
            cluster = PrivateCluster(base / "pg" / "data", free_port())
            cluster.start()

        nodelays = (True,) if args.accel or args.nodelay_only else (True, False)
        cases = [Case(d, a, nd) for d in sets for a in (1, 4) for nd in nodelays]

        def make(name: str, workdir: Path) -> Receiver | None:
            if name == "radiogate":
                assert cluster is not None
                return Radiogate(cluster, workdir)
            if name == "radiogate[baseline]":
                assert cluster is not None
                return Radiogate(cluster, workdir, name=name, source=args.baseline.resolve())
            if name.startswith("radiogate@"):
                # radiogate@SECTION__KEY=VALUE[@...]: default settings but these overrides
                assert cluster is not None
                pairs = (kv.split("=", 1) for kv in name.split("@")[1:])
                env = {f"RADIOGATE_{k.upper()}": v for k, v in pairs}
                return Radiogate(cluster, workdir, name=name, extra_env=env)
            if name.startswith("radiogate["):
                assert cluster is not None
                return Radiogate(cluster, workdir, name=name, accel=name[10:-1])
            if name == "radiogate-noquickack":
                assert cluster is not None
                return Radiogate(cluster, workdir, quickack=False, name=name)
            if name == "storescp":
                return Storescp(workdir)
            if name == "storescp-fork":
                return Storescp(workdir, fork=True)
            if name == "orthanc":
                return Orthanc(workdir)
            raise SystemExit(f"unknown receiver {name}")

        total_runs = reps * len(cases) * len(wanted)
        done = 0
        for rep in range(reps):
            for case in cases:
                # Rotated each round, so that no configuration always follows the same one.
                shift = (rep * len(cases) + cases.index(case)) % len(wanted)
                for name in wanted[shift:] + wanted[:shift]:
                    if name == "radiogate-noquickack" and case.nodelay:
                        continue  # only meaningful for senders that keep Nagle on
                    done += 1
                    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
                    workdir = base / "runs" / f"{tag}-{case.data}-{case.assocs}-{rep}"
                    receiver = make(name, workdir)
                    assert receiver is not None
                    current = receiver
                    receiver.start()
                    settle(receiver)
                    data = sets[case.data]
                    load_before = os.getloadavg()[0]
                    cpu_before = receiver.cpu()
                    seconds, capped, failed = send(
                        receiver,
                        data,
                        case.assocs,
                        case.nodelay,
                        args.max_run_seconds,
                        workdir / "storescu.log",
                    )
                    time.sleep(0.2)  # let the last acknowledged instance settle (Orthanc index)
                    cpu_after = receiver.cpu()
                    run = Run(
                        receiver=receiver.name,
                        case=case,
                        rep=rep,
                        sent=len(data.files),
                        stored=receiver.stored(),
                        seconds=seconds,
                        capped=capped,
                        failures=failed,
                        bytes=data.total_bytes,
                        memory=receiver.memory(),
                        cpu={k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after},
                        load=(load_before, os.getloadavg()[0]),
                    )
                    receiver.stop()
                    current = None
                    if args.keep:
                        shutil.rmtree(workdir / "spool", ignore_errors=True)
                    else:
                        shutil.rmtree(workdir, ignore_errors=True)
                    runs.append(run)
                    flag = " CAPPED" if capped else ""
                    flag += f" {failed} storescu FAILED" if failed else ""
                    flag += f" stored {run.stored}/{run.sent}" if run.stored != run.sent else ""
                    print(
                        f"[{done}/{total_runs}] {receiver.name:<22} {case.label(sets)}"
                        f"  {run.images_per_s:8.1f} img/s {run.mb_per_s:7.1f} MB/s"
                        f" {run.cpu_ms_per_image:5.2f} CPU-ms/img load {run.load[0]:.1f}{flag}",
                        flush=True,
                    )
        report(runs, sets, cores, count, reps, args, started_at)
    finally:
        if current is not None:
            with contextlib.suppress(Exception):
                current.stop()
        if cluster is not None:
            cluster.stop(mode="fast")
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def report(
    runs: list[Run],
    sets: dict[str, DataSet],
    cores: int,
    count: int,
    reps: int,
    args: argparse.Namespace,
    started_at: str,
) -> None:
    receivers = list(dict.fromkeys(r.receiver for r in runs))
    cases = list(dict.fromkeys(r.case for r in runs))
    med: dict[tuple[str, Case], tuple[float, float, bool]] = {}
    for name in receivers:
        for case in cases:
            sel = [r for r in runs if r.receiver == name and r.case == case]
            if sel:
                med[(name, case)] = (
                    median([r.images_per_s for r in sel]),
                    median([r.mb_per_s for r in sel]),
                    any(r.capped or r.failures or r.stored != r.sent for r in sel),
                )
    print()
    print(
        f"Receive benchmark: {count} instances per set, {reps} repetition(s), medians; "
        f"{cores} cores; loopback; DCMTK storescu senders"
    )
    print(
        "storescp and Orthanc run with TCP_NODELAY=1; Radiogate: default settings (fsync on, "
        f"{receivers_for(cores)} receiver processes, PostgreSQL commit per instance)"
    )
    col = {n: max(17, len(n) + 2) for n in receivers}
    head = f"{'case':<34}" + "".join(f"{n:>{col[n]}}" for n in receivers)
    head += f"{'RG/storescp':>13}{'RG/Orthanc':>12}"
    base = "radiogate[baseline]"
    with_base = base in receivers and "radiogate" in receivers
    if with_base:
        head += f"{'base/Orthanc':>14}{'RG/base':>9}"
    print(head)
    print(f"{'':<34}" + "".join(f"{'img/s   MB/s':>{col[n]}}" for n in receivers))
    for case in cases:
        line = f"{case.label(sets):<34}"
        for name in receivers:
            if (name, case) in med:
                ips, mbs, bad = med[(name, case)]
                cell = f"{ips:.1f} {mbs:6.1f}{'*' if bad else ' '}"
                line += f"{cell:>{col[name]}}"
            else:
                line += f"{'-':>{col[name]}}"
        rg = med.get(("radiogate", case))
        for other in ("storescp", "orthanc"):
            ref = med.get((other, case))
            width = 13 if other == "storescp" else 12
            if rg and ref and ref[0] > 0:
                line += f"{rg[0] / ref[0]:>{width}.2f}"
            else:
                line += f"{'-':>{width}}"
        if with_base:
            b, ref = med.get((base, case)), med.get(("orthanc", case))
            line += f"{b[0] / ref[0]:>14.2f}" if b and ref and ref[0] > 0 else f"{'-':>14}"
            line += f"{_paired_ratio(runs, case, 'radiogate', base):>9.2f}"
        print(line)
    print("* = a run was capped, failed or stored fewer than sent (see JSON)")
    if with_base:
        print(
            "RG/base: median over repetitions of the ratio radiogate / radiogate[baseline] "
            "(img/s) in the same repetition"
        )
    if any(n.startswith("radiogate[") and n != base for n in receivers):
        report_paired(runs, sets, receivers, cases)
    print()
    print("CPU ms per stored instance (receiver processes; Radiogate includes its PostgreSQL")
    print("backends), medians - less sensitive than img/s to other load on the machine:")
    print(f"{'case':<34}" + "".join(f"{n:>{col[n]}}" for n in receivers))
    for case in cases:
        line = f"{case.label(sets):<34}"
        for name in receivers:
            cpu_ms = [r.cpu_ms_per_image for r in runs if r.receiver == name and r.case == case]
            line += f"{median(cpu_ms):>{col[name]}.2f}" if cpu_ms else f"{'-':>{col[name]}}"
        print(line)
    loads = [x for r in runs for x in r.load]
    if loads:
        print(
            f"1-min load average during the runs: median {median(loads):.1f}, "
            f"max {max(loads):.1f} (on {cores} cores; other work on the machine shows here)"
        )
    rg_runs = [r for r in runs if r.receiver == "radiogate" and r.memory]
    if rg_runs:
        peak_sum = max(r.memory.get("sum_vmhwm_kib", 0) for r in rg_runs)
        peak_max = max(r.memory.get("max_vmhwm_kib", 0) for r in rg_runs)
        procs = max(r.memory.get("receivers", 0) for r in rg_runs)
        sup = max(r.memory.get("supervisor_vmhwm_kib", 0) for r in rg_runs)
        print(
            f"Radiogate SCP peak RSS: {peak_sum / 1024:.1f} MiB summed over {procs} receiver "
            f"processes (VmHWM), largest process {peak_max / 1024:.1f} MiB; supervisor "
            f"{sup / 1024:.1f} MiB, metrics process "
            f"{max(r.memory.get('other_children_vmhwm_kib', 0) for r in rg_runs) / 1024:.1f} MiB"
        )
    for other in ("orthanc", "storescp"):
        sel = [r for r in runs if r.receiver == other and r.memory]
        if sel:
            peak = max(r.memory.get("max_vmhwm_kib", 0) for r in sel)
            print(f"{other} peak RSS (VmHWM): {peak / 1024:.1f} MiB")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"receive-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    payload: dict[str, Any] = {
        "started_at": started_at,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cores": cores,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "pynetdicom": _version("pynetdicom"),
        "pydicom": pydicom.__version__,
        "count": count,
        "repetitions": reps,
        "data_sets": {
            k: {"files": len(v.files), "bytes": v.total_bytes, "label": v.label}
            for k, v in sets.items()
        },
        "medians": [
            {
                "receiver": name,
                "data": case.data,
                "associations": case.assocs,
                "sender_tcp_nodelay": case.nodelay,
                "images_per_s": ips,
                "mb_per_s": mbs,
                "incomplete": bad,
            }
            for (name, case), (ips, mbs, bad) in med.items()
        ],
        "runs": [
            {
                "receiver": r.receiver,
                "data": r.case.data,
                "associations": r.case.assocs,
                "sender_tcp_nodelay": r.case.nodelay,
                "rep": r.rep,
                "sent": r.sent,
                "stored": r.stored,
                "seconds": r.seconds,
                "capped": r.capped,
                "storescu_failures": r.failures,
                "images_per_s": r.images_per_s,
                "mb_per_s": r.mb_per_s,
                "memory": r.memory,
                "cpu_seconds": r.cpu,
                "cpu_ms_per_image": r.cpu_ms_per_image,
                "load_average_1min": list(r.load),
            }
            for r in runs
        ],
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"results: {out.relative_to(ROOT)}")


def _paired_ratio(runs: list[Run], case: Case, name: str, reference: str) -> float:
    """Median over repetitions of img/s of *name* over *reference* in the same repetition."""
    by_rep: dict[int, dict[str, float]] = {}
    for r in runs:
        if r.case == case and r.receiver in (name, reference):
            by_rep.setdefault(r.rep, {})[r.receiver] = r.images_per_s
    ratios = [d[name] / d[reference] for d in by_rep.values()
              if name in d and d.get(reference, 0) > 0]  # fmt: skip
    return median(ratios)


def report_paired(
    runs: list[Run], sets: dict[str, DataSet], receivers: list[str], cases: list[Case]
) -> None:
    """Each accelerator configuration against stock pynetdicom in the same rounds."""
    configs = [n[10:-1] for n in receivers if n.startswith("radiogate[")]
    print()
    print("Paired with stock pynetdicom in the same round (medians over rounds):")
    print("img/s of the configuration; x = median of the per-round ratios of img/s to stock,")
    print("a = to all parts; CPU ms per instance (receivers and their PostgreSQL backends) and")
    print("its per-round ratio to all parts")
    for case in cases:
        print(f"{sets[case.data].label} x{case.assocs}")
        rate: dict[int, dict[str, float]] = {}
        cpu: dict[int, dict[str, float]] = {}
        for r in runs:
            if r.case == case and r.receiver.startswith("radiogate["):
                rate.setdefault(r.rep, {})[r.receiver[10:-1]] = r.images_per_s
                cpu.setdefault(r.rep, {})[r.receiver[10:-1]] = r.cpu_ms_per_image
        for config in configs:
            ips, _stock, ratio = accel.paired(rate, config)
            _ips, _all, to_all = accel.paired(rate, config, "all")
            ms, _ms_all, cpu_to_all = accel.paired(cpu, config, "all")
            print(
                f"  {config:<16}{ips:8.1f} img/s  x{ratio:5.2f}  a{to_all:5.2f}"
                f"  {ms:5.2f} ms  a{cpu_to_all:5.2f}"
            )


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    sys.exit(main())
