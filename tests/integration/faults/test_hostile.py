"""Association slots cannot be held hostage: 200 hostile connections (silent, garbage, a 4 GB
length, a trickle) while a modality associates within a second, slots freed at once."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.support import ScpProcess, dcmtk

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ATTACKER = "127.0.0.2"


def _echo_seconds(port: int) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [dcmtk("echoscu"), "-aet", "CT1", "-aec", "RADIOGATE", "-to", "5", "127.0.0.1", str(port)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


def _connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((ATTACKER, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closed *sock* (EOF or reset) within *seconds*."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True
    return False


@pytest.fixture
def scp(fresh_dsn: str, tmp_path: Path) -> Iterator[ScpProcess]:
    proc = ScpProcess(
        dsn=fresh_dsn, data_dir=tmp_path / "node",
        extra_env={"RADIOGATE_SCP__MAX_ASSOCIATIONS": "4"},
    ).start()  # fmt: skip
    yield proc
    proc.stop()


def test_200_hostile_connections_do_not_keep_a_modality_out(scp: ScpProcess) -> None:
    kinds = {
        "silent": b"",
        "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "4-GB-length": struct.pack(">BBL", 1, 0, 0xFFFFFF00),
        "trickle": struct.pack(">BBL", 1, 0, 200) + b"\x00\x01",
    }
    socks: dict[str, list[socket.socket]] = {k: [] for k in kinds}
    try:
        for i in range(200):
            kind = list(kinds)[i % 4]
            try:
                sock = _connect(scp.port)
            except OSError:
                continue
            if kinds[kind]:
                with contextlib.suppress(OSError):
                    sock.sendall(kinds[kind])
            socks[kind].append(sock)
        # A modality on another address associates at once, again and again.
        times = [_echo_seconds(scp.port) for _ in range(3)]
        assert max(times) < 1.0, times
        # Garbage and impossible lengths are closed at once, not after a timeout.
        for kind in ("garbage", "4-GB-length"):
            closed = sum(_closed_within(s, 1.0) for s in socks[kind][:10])
            assert closed == 10, kind
    finally:
        for group in socks.values():
            for sock in group:
                sock.close()
    # Service right after the attacker leaves.
    assert _echo_seconds(scp.port) < 1.0
    log = scp.log_text()
    assert "scp.max_connections_per_peer" in log  # the flood beyond 32 was refused on accept
    assert "is not an A-ASSOCIATE-RQ" in log and "exceeds 262144" in log


def _associate_before(ae: AE, port: int, deadline: float) -> Association:
    """An established association to the SCP, asked for every 50 ms until *deadline*."""
    while True:
        assoc = ae.associate("127.0.0.1", port, ae_title="RADIOGATE")
        if assoc.is_established:
            return assoc
        assert time.monotonic() < deadline, "slot not freed within 1 s"
        time.sleep(0.05)


def test_aborted_and_closed_associations_free_their_slot_at_once(scp: ScpProcess) -> None:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", scp.port, ae_title="RADIOGATE") for _ in range(4)]
    assert all(a.is_established for a in held)
    extra = ae.associate("127.0.0.1", scp.port, ae_title="RADIOGATE")
    assert extra.is_rejected  # max_associations = 4
    held[0].abort()
    # A peer that just drops the TCP connection (no A-ABORT).
    transport = held[1].dul.socket
    assert transport is not None
    sock = transport.socket
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    # Both slots come back within 1 s of the drop (each when its receiver notices, in either
    # order: one association taken at once may find the other slot not freed yet).
    deadline = time.monotonic() + 1.0
    again = _associate_before(ae, scp.port, deadline)
    more = _associate_before(ae, scp.port, deadline)
    for a in (*held[2:], again, more):
        a.release()
    held[1].abort()


def test_an_oversized_p_data_pdu_ends_the_association_at_its_header(scp: ScpProcess) -> None:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="RADIOGATE")
    assert assoc.is_established
    transport = assoc.dul.socket
    assert transport is not None
    sock = transport.socket
    assert sock is not None
    started = time.monotonic()
    sock.sendall(struct.pack(">BBL", 4, 0, 0xFFFFFFF0))  # P-DATA-TF claiming ~4 GB
    while assoc.is_alive() and not assoc.is_aborted and time.monotonic() - started < 5:
        time.sleep(0.02)
    assert time.monotonic() - started < 1.0
    assert "exceeds the largest accepted" in scp.log_text()
