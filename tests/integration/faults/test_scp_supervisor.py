"""The SCP supervisor killed with -9: its receivers and metrics process go with it, and a
new SCP never shares the port with a leftover listener."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dicom_nodes.exitcodes import ExitCode
from tests.support import ScpProcess, wait_for_echo

pytestmark = pytest.mark.integration


def _group(pgid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def test_receivers_die_with_a_killed_supervisor(fresh_dsn: str, tmp_path: Path) -> None:
    scp = ScpProcess(dsn=fresh_dsn, data_dir=tmp_path / "node", processes=2).start()
    assert scp.proc is not None
    pgid = scp.proc.pid
    assert len(_group(pgid)) == 4  # supervisor, two receivers, metrics
    os.kill(scp.proc.pid, signal.SIGKILL)
    scp.proc.wait()
    started = time.monotonic()
    try:
        while _group(pgid):
            assert time.monotonic() - started < 15, f"orphans left: {_group(pgid)}"
            time.sleep(0.1)
    finally:  # an orphan must not outlive the test (it would hold the port and a CPU)
        for pid in _group(pgid):
            os.kill(pid, signal.SIGKILL)
    gone = time.monotonic() - started
    # The port is free again: a new SCP serves alone on it.
    again = ScpProcess(
        dsn=fresh_dsn, data_dir=tmp_path / "node", port=scp.port, metrics_port=scp.metrics_port
    ).start()
    try:
        wait_for_echo(again.port)
    finally:
        again.stop()
    assert gone < 15


def test_a_leftover_listener_on_the_port_is_refused(fresh_dsn: str, tmp_path: Path) -> None:
    leftover = socket.socket()
    leftover.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    leftover.bind(("127.0.0.1", 0))
    leftover.listen()
    try:
        scp = ScpProcess(
            dsn=fresh_dsn, data_dir=tmp_path / "node", port=leftover.getsockname()[1]
        ).start(wait=False)
        assert scp.proc is not None
        assert scp.proc.wait(timeout=30) == ExitCode.PORT_IN_USE
        assert "is in use: set scp.port" in scp.log_text()
    finally:
        leftover.close()
