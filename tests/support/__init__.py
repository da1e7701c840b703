"""Shared test helpers: free ports, DCMTK binaries, a real ``radiogate scp`` process."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ACCELERATOR_ENV",
    "DCMTK_BIN",
    "ScpProcess",
    "dcmtk",
    "free_port",
    "kill_process_group",
    "stop_process",
    "wait_for_echo",
]

DCMTK_BIN = Path("/usr/bin")
"""DCMTK's own binaries (pynetdicom installs scripts with the same names into the venv)."""


ACCELERATOR_ENV = ("RADIOGATE_SCP__ACCELERATE", "RADIOGATE_FORWARD__ACCELERATE")
"""Settings passed from the test run's environment to the processes it starts, so that
``make test`` can run the whole suite with the accelerator off."""


def dcmtk(name: str) -> str:
    """Absolute path of DCMTK's *name* (never the venv's pynetdicom script of that name)."""
    path = DCMTK_BIN / name
    if not path.exists():
        found = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
        if found is None:
            raise FileNotFoundError(f"DCMTK {name} not installed (apt-get install dcmtk)")
        return found
    return str(path)


_FIRST_PORT = 20000


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (ip-sysctl)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, chosen below the kernel's ephemeral range: a port
    the kernel chose for us (bind to 0) is one it may also give to any outgoing connection
    before the service we start binds it ("address already in use")."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200 if low - _FIRST_PORT > 1000 else 0):
        port = rng.randrange(_FIRST_PORT, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _running(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def wait_for_echo(
    port: int,
    aec: str = "RADIOGATE",
    timeout: float = 30.0,
    aet: str = "ECHOSCU",
    alive: Callable[[], bool] | None = None,
) -> None:
    """Until the SCP on *port* answers a C-ECHO; TimeoutError after *timeout* seconds, or as
    soon as *alive* says the process that should answer is gone."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            [dcmtk("echoscu"), "-aet", aet, "-aec", aec, "-to", "5", "127.0.0.1", str(port)],
            capture_output=True,
            check=False,
        )
        if result.returncode == 0:
            return
        if time.monotonic() > deadline or (alive is not None and not alive()):
            raise TimeoutError(f"no C-ECHO answer on port {port}: {result.stderr.decode()[-500:]}")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """SIGTERM *proc* and wait; SIGKILL its whole process group if it does not stop in time."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_process_group(proc)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the process group *proc* leads (started with ``start_new_session``); SIGKILL it
    after *timeout*, and any stragglers of the group afterwards (e.g. ``storescp --fork``
    children that outlive their parent)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def kill_process_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL *proc* and every process it started (its process group)."""
    if proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class ScpProcess:
    """A real ``radiogate scp`` (supervisor + receivers) run as a child process."""

    dsn: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    processes: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def spool(self) -> Path:
        return self.data_dir / "spool"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "scp.log"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RADIOGATE_") or k in ACCELERATOR_ENV
        }
        env.update(
            {
                "RADIOGATE_DATABASE__DSN": self.dsn,
                "RADIOGATE_NODE__DATA_DIR": str(self.data_dir),
                "RADIOGATE_SCP__PORT": str(self.port),
                "RADIOGATE_SCP__METRICS_PORT": str(self.metrics_port),
                "RADIOGATE_SCP__PROCESSES": str(self.processes),
                "RADIOGATE_SPOOL__MIN_FREE_BYTES": "0",
                "RADIOGATE_SPOOL__MIN_FREE_PERCENT": "0",
                "RADIOGATE_DATABASE__CONNECT_TIMEOUT": "2",
                "RADIOGATE_LOGGING__LEVEL": "DEBUG",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, *, wait: bool = True) -> ScpProcess:
        """Start it (and with *wait*, until it answers a C-ECHO). :func:`free_port` only finds
        a port free at that moment: when another process took one of ours before the SCP bound
        it, the SCP exits naming it, and it is started again on new ports (twice at most)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dicom_nodes.cli", "scp"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            if not wait:
                return self
            proc = self.proc
            try:
                wait_for_echo(self.port, aec=self.env().get("RADIOGATE_SCP__AE_TITLE", "RADIOGATE"),
                              alive=functools.partial(_running, proc))  # fmt: skip
                return self
            except TimeoutError as exc:
                code = proc.poll()
                tail = self.log_text()[-1500:]
                if code is not None and "is in use" in tail and attempt < 2:
                    self.port, self.metrics_port = free_port(), free_port()
                    continue
                raise TimeoutError(f"{exc}; scp exit status {code}; its log ends: {tail}") from exc
        raise AssertionError("unreachable")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the supervisor, the receivers and the metrics process."""
        kill_process_group(self.proc)
        self.proc = None

    def spooled_files(self) -> list[Path]:
        return sorted(p for p in self.spool.glob("??/*.dcm"))
