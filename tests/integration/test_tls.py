"""DICOM TLS (PS3.15 B.12) with DCMTK's echoscu/storescu as the peer."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ScpProcess, dcmtk
from tests.support.certs import Pki, make_pki
from tests.support.data import extract_ct

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def _tls_env(pki: Pki) -> dict[str, str]:
    """A TLS-only SCP with the test PKI's server certificate, requiring client certificates."""
    return {
        "RADIOGATE_SCP__TLS__ENABLED": "true",
        "RADIOGATE_SCP__TLS__CERTIFICATE": str(pki.server_cert),
        "RADIOGATE_SCP__TLS__PRIVATE_KEY": str(pki.server_key),
        "RADIOGATE_SCP__TLS__CA_CERTIFICATES": str(pki.ca_cert),
        "RADIOGATE_SCP__TLS__REQUIRE_CLIENT_CERTIFICATE": "true",
    }


@pytest.fixture
def tls_scp(fresh_dsn: str, tmp_path: Path, pki: Pki) -> Iterator[ScpProcess]:
    proc = ScpProcess(
        dsn=fresh_dsn,
        data_dir=tmp_path / "node",
        extra_env=_tls_env(pki),
    )
    proc.start(wait=False)
    yield proc
    proc.stop()


def _echo(port: int, *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            dcmtk("echoscu"),
            "-aet",
            "CT1",
            "-aec",
            "RADIOGATE",
            "-to",
            "10",
            *tls,
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _wait_tls_echo(port: int, pki: Pki) -> subprocess.CompletedProcess[str]:
    import time

    deadline = time.monotonic() + 30
    while True:
        result = _echo(
            port, "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert)
        )
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def test_tls_with_client_certificate(tls_scp: ScpProcess, pki: Pki, tmp_path: Path) -> None:
    ok = _wait_tls_echo(tls_scp.port, pki)
    assert ok.returncode == 0, ok.stderr
    files = extract_ct(tmp_path / "ct")[:3]
    stored = subprocess.run(
        [
            dcmtk("storescu"), "-aet", "CT1", "-aec", "RADIOGATE",
            "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert),
            "127.0.0.1", str(tls_scp.port), *map(str, files),
        ],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    assert len(tls_scp.spooled_files()) == 3


def test_tls_refuses_peers_without_valid_client_certificate(tls_scp: ScpProcess, pki: Pki) -> None:
    assert _wait_tls_echo(tls_scp.port, pki).returncode == 0
    anonymous = _echo(tls_scp.port, "+tla", "+cf", str(pki.ca_cert))
    assert anonymous.returncode != 0
    rogue = _echo(
        tls_scp.port, "+tls", str(pki.rogue_key), str(pki.rogue_cert), "+cf", str(pki.ca_cert)
    )
    assert rogue.returncode != 0
    plain = _echo(tls_scp.port)
    assert plain.returncode != 0
    log = tls_scp.log_text()
    assert log.count("TLS handshake with 127.0.0.1 failed") >= 3, log[-2000:]
    # Still serving authenticated peers afterwards.
    assert _wait_tls_echo(tls_scp.port, pki).returncode == 0
    # Each refused handshake is a Security Alert in the audit trail.
    import psycopg

    with psycopg.connect(tls_scp.dsn) as conn:
        alerts = conn.execute(
            "SELECT count(*) FROM audit_pending WHERE convert_from(body, 'UTF8') LIKE %s",
            ("%tls-handshake-failed%",),
        ).fetchone()
    assert alerts is not None and alerts[0] >= 3


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closed *sock* (EOF, reset or a TLS close) within *seconds*."""
    sock.settimeout(seconds)
    try:
        return not sock.recv(65536)
    except TimeoutError:
        return False
    except (OSError, ssl.SSLError):
        return True


@pytest.mark.parametrize("silence", ["before-handshake", "after-handshake"])
def test_silent_tls_peers_time_out_without_holding_a_slot(
    fresh_dsn: str, tmp_path: Path, pki: Pki, silence: str
) -> None:
    """PS3.8 9.1.5 (ARTIM): a TLS peer must complete its handshake and start its
    A-ASSOCIATE-RQ within ``scp.artim_timeout``; until then it holds no association slot."""
    proc = ScpProcess(
        dsn=fresh_dsn, data_dir=tmp_path / "node",
        extra_env={
            **_tls_env(pki),
            "RADIOGATE_SCP__MAX_ASSOCIATIONS": "2",
            "RADIOGATE_SCP__ARTIM_TIMEOUT": "2",
            "RADIOGATE_SCP__ACSE_TIMEOUT": "60",
        },
    )  # fmt: skip
    proc.start(wait=False)
    silent: list[socket.socket] = []
    try:
        assert _wait_tls_echo(proc.port, pki).returncode == 0
        client = ssl.create_default_context(cafile=str(pki.ca_cert))
        client.check_hostname = False
        client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        for _ in range(4):  # twice max_associations
            sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
            if silence == "after-handshake":
                sock = client.wrap_socket(sock)  # handshake done, then nothing
            silent.append(sock)
        # A modality is served while they are open: they hold no slot.
        ok = _echo(proc.port, "+tls", str(pki.client_key), str(pki.client_cert),
                   "+cf", str(pki.ca_cert))  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        # And each is closed by the ARTIM timeout (2 s), long before the ACSE timeout (60 s).
        assert all(_closed_within(s, 20) for s in silent)
    finally:
        for sock in silent:
            sock.close()
        proc.stop()
