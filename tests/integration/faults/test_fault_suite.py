"""Fault injection against ``radiogate run``: two modalities send while every process is
killed with -9 (worker, SCP supervisor, a receiver, Orthanc, the sealer, ``radiogate run``
itself), PostgreSQL is stopped under load and hostile clients hold connections. Modalities
re-send what was refused, as they do. The run ends by checking that every acknowledged
instance is archived, nothing is orphaned, no partial file is left and the audit trail is
intact and complete; its figures (acknowledged, archived, answers by status, recovery times)
are written to ``fault-figures.json`` in the test's directory and printed.

The database outage lasts ``FAULTS_OUTAGE_SECONDS`` seconds (20 by default, so that
``make test`` stays short; 60 and more are waited out the same way).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest

from dicom_nodes.services.postgres import PrivateCluster
from tests.support import dcmtk, wait_for_echo
from tests.support.data import extract_ct, series_copies
from tests.support.stack import Stack, _env, make_site

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

OUTAGE = float(os.environ.get("FAULTS_OUTAGE_SECONDS", "20"))
_SENDING = re.compile(r"Sending file: (\S+)")
_RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")


@dataclass
class Modality:
    """A sender that re-sends until every file is acknowledged (storescu, one association per
    round, continuing after failures)."""

    name: str
    port: int
    files: list[Path]
    acked: set[Path] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    rounds: int = 0
    last_ok: float = 0.0
    batch: int = 2
    pause: float = 1.0
    """A few images a second: the load lasts through the whole fault sequence."""

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set() and len(self.acked) < len(self.files):
            todo = [f for f in self.files if f not in self.acked][: self.batch]
            self.rounds += 1
            try:
                out = subprocess.run(
                    [dcmtk("storescu"), "-v", "-nh", "-to", "10", "-ta", "10", "-td", "20",
                     "-aet", self.name, "-aec", "RADIOGATE", "127.0.0.1", str(self.port),
                     *map(str, todo)],
                    capture_output=True, text=True, check=False, timeout=120,
                ).stderr  # fmt: skip
            except subprocess.TimeoutExpired:
                self.answers["no answer (timeout)"] += 1
                continue
            current: Path | None = None
            for line in out.splitlines():
                if m := _SENDING.search(line):
                    current = Path(m.group(1))
                elif (m := _RESPONSE.search(line)) and current is not None:
                    self.answers[m.group(1)] += 1
                    if m.group(1) == "Success":
                        self.acked.add(current)
                        self.last_ok = time.monotonic()
                    current = None
            if "Association Request Failed" in out or "Association Aborted" in out:
                self.answers["association failed"] += 1
            if current is not None:
                self.answers["no response (connection lost)"] += 1
            time.sleep(self.pause)


def _hostile(port: int, stop: threading.Event, count: int = 60) -> None:
    """Silent, garbage and impossible-length connections from another address, renewed."""
    payloads = [b"", b"\x16\x03\x01garbage", struct.pack(">BBL", 1, 0, 0xFFFFFF00)]
    while not stop.is_set():
        socks = []
        for i in range(count):
            with contextlib.suppress(OSError):
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.settimeout(1)
                s.connect(("127.0.0.1", port))
                if payloads[i % 3]:
                    s.sendall(payloads[i % 3])
                socks.append(s)
        stop.wait(3)
        for s in socks:
            s.close()


def _site_processes(site: Path) -> list[str]:
    """Processes of this site other than PostgreSQL's: those whose command line or environment
    (``RADIOGATE_CONFIG`` of ``radiogate run``'s children) names it."""
    needle = str(site).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "comm").read_text().strip() == "postgres":
                continue
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if needle in cmdline or needle in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name} {command}")
    return found


def _start_again(stack: Stack) -> None:
    """``radiogate run`` again after its supervisor was killed (the log is appended to)."""
    mark = len(stack.log())
    log = stack.log_path.open("ab")
    stack.proc = subprocess.Popen(
        [sys.executable, "-m", "dicom_nodes.cli", "-c", str(stack.config_file), "run"],
        env=_env(), cwd="/", stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 120
    while "Press Ctrl-C to stop." not in stack.log()[mark:]:
        assert stack.proc.poll() is None, stack.log()[mark:]
        assert time.monotonic() < deadline, stack.log()[mark:][-3000:]
        time.sleep(0.2)


def _wait(check: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what} not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - started


def _restarted(stack: Stack, name: str, pid: int) -> bool:
    try:
        return stack.service_pid(name) != pid and stack.restarts(name) > 0
    except (OSError, KeyError, ValueError):
        return False


def _echo_ok(port: int) -> bool:
    try:
        wait_for_echo(port, "RADIOGATE", timeout=0.5)
    except TimeoutError:
        return False
    return True


def _psql(stack: Stack, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    cluster = PrivateCluster(stack.data_dir / "postgres", stack.db_port)
    with psycopg.connect(cluster.dsn) as conn:
        return list(conn.execute(sql.encode()).fetchall())


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack(make_site("radiogate-faults-"))
    try:
        yield s
    finally:
        s.remove()


def test_fault_injection_run(stack: Stack, tmp_path: Path) -> None:
    ct = extract_ct(tmp_path / "ct")
    files = series_copies(ct[:24], tmp_path / "series", 4)  # 96 instances, 4 series
    probe_files = series_copies(ct[:4], tmp_path / "probe", 1)  # sent once the database is back
    uid_of = {
        f: str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        for f in [*files, *probe_files]
    }
    stack.start()
    figures: dict[str, object] = {}
    recovery: dict[str, float] = {}
    modalities = [
        Modality("CT1", stack.scp_port, files[0::2]),
        Modality("CT2", stack.scp_port, files[1::2]),
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=m.run, args=(stop,), daemon=True) for m in modalities]
    threads.append(threading.Thread(target=_hostile, args=(stack.scp_port, stop), daemon=True))
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        for name in ("worker", "sealer", "orthanc", "scp"):
            pid = stack.service_pid(name)
            os.kill(pid, signal.SIGKILL)
            recovery[f"kill -9 {name} → restarted"] = _wait(
                lambda n=name, p=pid: _restarted(stack, n, p), 90, f"{name} restart"
            )
            if name == "scp":
                recovery["kill -9 scp → associations again"] = _wait(
                    lambda: _echo_ok(stack.scp_port), 60, "scp service"
                )
            time.sleep(2)
        # A receiver alone (a child of the SCP supervisor).
        scp_pid = stack.service_pid("scp")
        children = subprocess.run(
            ["pgrep", "-P", str(scp_pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert children, "the SCP has no children"
        os.kill(int(children[-1]), signal.SIGKILL)
        time.sleep(2)
        # PostgreSQL stopped under load.
        cluster = PrivateCluster(stack.data_dir / "postgres", stack.db_port)
        before = {n: stack.restarts(n) for n in ("scp", "worker", "sealer")}
        cluster.stop(mode="immediate")
        time.sleep(OUTAGE)
        cluster.start()
        back = time.monotonic()
        probe = Modality("CT3", stack.scp_port, probe_files)
        modalities.append(probe)
        threads.insert(2, threading.Thread(target=probe.run, args=(stop,), daemon=True))
        threads[2].start()
        recovery["database back → next acknowledged C-STORE"] = _wait(
            lambda: probe.last_ok > back, 90, "a C-STORE after the outage"
        )
        # The receivers and the worker waited the outage out; none of them died of it.
        time.sleep(3)
        after = {n: stack.restarts(n) for n in before}
        figures["restarts_during_outage"] = {n: after[n] - before[n] for n in before}
        assert after["scp"] == before["scp"] and after["worker"] == before["worker"], after
        # radiogate run itself, killed with -9: its children go with it; then it starts again.
        run_pid = stack.proc.pid if stack.proc else 0
        os.kill(run_pid, signal.SIGKILL)
        stack.proc.wait() if stack.proc else None
        try:
            gone = _wait(lambda: not _site_processes(stack.site), 30, "children of a killed run")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {_site_processes(stack.site)}") from None
        recovery["kill -9 radiogate run → children gone"] = gone
        started = time.monotonic()
        _start_again(stack)
        recovery["radiogate run restarted → ready"] = time.monotonic() - started
        for t in threads[:3]:
            t.join(timeout=240)
        assert all(len(m.acked) == len(m.files) for m in modalities), [
            (m.name, len(m.acked), m.answers) for m in modalities
        ]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    acked = {uid_of[f] for m in modalities for f in m.acked}
    settle = _wait(
        lambda: len(
            _psql(stack, "SELECT 1 FROM ingest_instance WHERE state = 'released'")
        ) >= len(acked),
        180, "every acknowledged instance released",
    )  # fmt: skip
    released = {str(r[0]) for r in _psql(
        stack, "SELECT sop_instance_uid FROM ingest_instance WHERE state = 'released'")}  # fmt: skip
    states = Counter(str(r[0]) for r in _psql(stack, "SELECT state FROM ingest_instance"))
    archived = stack.archived()
    # Acknowledged = archived: every instance with a 0x0000 went out and was confirmed, and
    # the archive holds exactly as many instances (its de-identified copies).
    assert acked <= released, sorted(acked - released)[:5]
    assert archived == len(acked)
    # No partial files.
    incoming = list((stack.data_dir / "spool" / ".incoming").glob("*"))
    assert incoming == []
    # Audit intact and complete.
    _wait(lambda: not _psql(stack, "SELECT 1 FROM audit_pending LIMIT 1"), 60, "sealing")
    verify = stack.radiogate("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    received = stack.radiogate("audit", "query", "--step", "received", "--format", "jsonl")
    audited = set()
    for line in received.stdout.splitlines():
        for obj in json.loads(line)["event"].get("objects", []):
            for inst in obj.get("instances", []):
                audited.add(inst[0])
    assert acked <= audited, sorted(acked - audited)[:5]
    accepted_logged = stack.log().count(" accepted calling=")
    accepted_events = len(
        _psql(stack, "SELECT 1 FROM audit_event WHERE step = 'association-accepted'")
    )
    assert accepted_events >= accepted_logged
    stack.stop()
    # No orphans: nothing of this site runs once radiogate run stopped (but the cluster,
    # which it did not start the second time; remove() stops it).
    assert _site_processes(stack.site) == []

    answers: Counter[str] = Counter()
    for m in modalities:
        answers.update(m.answers)
    figures |= {
        "instances": len(files) + len(probe_files),
        "acknowledged": len(acked),
        "archived": archived,
        "released": len(released),
        "instance_states": dict(states),
        "answers_by_status": dict(answers),
        "send_rounds": {m.name: m.rounds for m in modalities},
        "recovery_seconds": {k: round(v, 2) for k, v in recovery.items()},
        "settle_seconds": round(settle, 2),
        "database_outage_seconds": OUTAGE,
        "association_events": accepted_events,
        "association_log_lines": accepted_logged,
    }
    (tmp_path / "fault-figures.json").write_text(json.dumps(figures, indent=2))
    print("\nfault-injection figures:", json.dumps(figures, indent=2))
