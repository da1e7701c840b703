"""DimseDestination against in-process pynetdicom SCPs that behave as we tell them: record
the exact bytes, refuse syntaxes or SOP classes, answer given statuses, stall, abort."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, _config, evt
from pynetdicom.dsutils import decode, split_dataset

from dicom_nodes.forward import (
    DimseDestination,
    DimseSettings,
    OutgoingFile,
    StoreStatus,
    TlsSettings,
)
from tests.integration.forward.instances import make_small_instances
from tests.support import free_port
from tests.support.certs import make_pki
from tests.support.data import extract_ct, make_ts_files

pytestmark = pytest.mark.integration

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_LE = "1.2.840.10008.1.2"


class Peer:
    """A pynetdicom Storage SCP on a free port; ``on_store(uid) -> status`` decides."""

    def __init__(
        self,
        contexts: list[tuple[str, list[str]]],
        on_store: Callable[[Any], int] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.port = free_port()
        self.received: dict[str, tuple[str, bytes]] = {}
        self.associations = 0
        self._lock = threading.Lock()
        self._on_store = on_store or (lambda _event: 0)
        ae = AE(ae_title="PEER")
        ae.maximum_associations = 16
        for sop_class, syntaxes in contexts:
            ae.add_supported_context(sop_class, syntaxes)
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_ACCEPTED, self._accepted),
        ]
        server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=ssl_context,
        )
        assert server is not None  # not blocking: the running server is returned
        self._server = server

    def _accepted(self, _event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        status = self._on_store(event)
        if status in (0, 0xB000):
            with self._lock:
                self.received[uid] = (
                    str(event.context.transfer_syntax),
                    event.request.DataSet.getvalue(),
                )
        return status

    def settings(self, **overrides: Any) -> DimseSettings:
        values: dict[str, Any] = {
            "name": "peer",
            "ae_title": "PEER",
            "host": "127.0.0.1",
            "port": self.port,
            "timeout": 10.0,
            "confirm": "query",
        }
        values.update(overrides)
        return DimseSettings(**values)

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.stop()


def raw_dataset(path: Path) -> bytes:
    """The bytes after the file meta, exactly as in the file (deflated stays deflated)."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def test_bytes_leave_exactly_as_in_the_file(peers: list[Peer], tmp_path: Path) -> None:
    ts_files = make_ts_files(tmp_path / "ts")
    contexts: dict[str, list[str]] = {}
    for t in ts_files:
        meta = pydicom.filereader.read_file_meta_info(t.path)
        contexts.setdefault(str(meta.MediaStorageSOPClassUID), []).append(t.transfer_syntax)
    peer = Peer(list(contexts.items()))
    peers.append(peer)
    _config.STORE_SEND_CHUNKED_DATASET = False  # someone else reset it: must not matter
    files = [OutgoingFile.from_path(t.path) for t in ts_files]

    results = DimseDestination(peer.settings()).send(files)

    assert all(r.ok and r.note == "" for r in results), results
    for file in files:
        syntax, data = peer.received[file.sop_instance_uid]
        assert syntax == file.transfer_syntax_uid
        assert data == raw_dataset(file.path), syntax
    assert peer.associations == 1


def test_transcodes_only_when_the_own_syntax_is_refused(peers: list[Peer], tmp_path: Path) -> None:
    peer = Peer([(CT_IMAGE, [IMPLICIT_LE])])
    peers.append(peer)
    files = [OutgoingFile.from_path(p) for p in extract_ct(tmp_path / "ct")[:3]]

    results = DimseDestination(peer.settings()).send(files)

    for file, result in zip(files, results, strict=True):
        assert result.ok and result.sent_transfer_syntax == IMPLICIT_LE
        assert result.transcoded_from == file.transfer_syntax_uid
        assert result.note.startswith("transcoded from Explicit VR Little Endian to Implicit")
        syntax, data = peer.received[file.sop_instance_uid]
        assert syntax == IMPLICIT_LE
        sent = decode(BytesIO(data), True, True)
        original = pydicom.dcmread(file.path)
        assert sent.SOPInstanceUID == file.sop_instance_uid
        assert sent.PixelData == original.PixelData


def test_sop_class_not_accepted_is_permanent(peers: list[Peer], tmp_path: Path) -> None:
    peer = Peer([(CT_IMAGE, ["1.2.840.10008.1.2.1"])])
    peers.append(peer)
    ct = [OutgoingFile.from_path(p) for p in extract_ct(tmp_path / "ct")[:2]]
    sc = [OutgoingFile.from_path(p) for p in make_small_instances(tmp_path / "sc", 2)]

    results = DimseDestination(peer.settings()).send([ct[0], sc[0], ct[1], sc[1]])

    assert [r.ok for r in results] == [True, False, True, False]
    for result in (results[1], results[3]):
        assert not result.retryable and result.status is None
        assert "accepts SOP class Secondary Capture Image Storage in neither" in result.note


@pytest.mark.parametrize(
    ("status", "ok", "retryable"),
    [
        (StoreStatus.OUT_OF_RESOURCES, False, True),
        (0xA7FE, False, True),
        (StoreStatus.HANDLER_FAILURE, False, True),
        (StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, False, False),
        (StoreStatus.CANNOT_UNDERSTAND, False, False),
        (StoreStatus.REFUSED_NOT_AUTHORIZED, False, False),
        (StoreStatus.WARNING_COERCION, True, False),
    ],
)
def test_status_classification_end_to_end(
    peers: list[Peer], tmp_path: Path, status: int, ok: bool, retryable: bool
) -> None:
    files = [OutgoingFile.from_path(p) for p in make_small_instances(tmp_path / "sc", 3)]
    special = files[1].sop_instance_uid

    def on_store(event: Any) -> int:
        return status if event.request.AffectedSOPInstanceUID == special else 0

    peer = Peer([(SC_IMAGE, ["1.2.840.10008.1.2.1"])], on_store)
    peers.append(peer)

    results = DimseDestination(peer.settings()).send(files)

    assert (results[1].status, results[1].ok, results[1].retryable) == (status, ok, retryable)
    assert f"0x{status:04X}" in results[1].note
    assert results[0].ok and results[2].ok
    assert peer.associations == 1  # a failure status does not cost the association


def test_timeout_and_abort_lose_nothing(peers: list[Peer], tmp_path: Path) -> None:
    files = [OutgoingFile.from_path(p) for p in make_small_instances(tmp_path / "sc", 6)]
    stall, abort = files[1].sop_instance_uid, files[3].sop_instance_uid
    release = threading.Event()

    def on_store(event: Any) -> int:
        uid = event.request.AffectedSOPInstanceUID
        if uid == stall and not release.is_set():
            release.wait(5)  # longer than the DIMSE timeout below
            release.set()
        if uid == abort and peer.associations < 3:
            event.assoc.abort()
        return 0

    peer = Peer([(SC_IMAGE, ["1.2.840.10008.1.2.1"])], on_store)
    peers.append(peer)

    started = time.monotonic()
    results = DimseDestination(peer.settings(timeout=1.5)).send(files)

    assert time.monotonic() - started < 15
    assert [r.ok for r in results] == [True, False, True, False, True, True]
    for failed in (results[1], results[3]):
        assert failed.retryable and failed.status is None
    assert peer.associations == 3  # re-associated after each failure and went on


def test_unreachable_peer_is_retryable(tmp_path: Path) -> None:
    files = [OutgoingFile.from_path(p) for p in make_small_instances(tmp_path / "sc", 4)]
    settings = DimseSettings(
        name="nowhere", ae_title="NOWHERE", host="127.0.0.1", port=free_port(), parallel=2
    )

    started = time.monotonic()
    results = DimseDestination(settings).send(files)

    assert time.monotonic() - started < 10
    assert all(r.retryable and not r.ok and r.status is None for r in results)
    assert all("cannot connect to destination nowhere" in r.note for r in results)


def test_dicom_tls_with_client_certificate(peers: list[Peer], tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server_ctx.load_verify_locations(pki.ca_cert)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    peer = Peer([(SC_IMAGE, ["1.2.840.10008.1.2.1"])], ssl_context=server_ctx)
    peers.append(peer)
    files = [OutgoingFile.from_path(p) for p in make_small_instances(tmp_path / "sc", 3)]
    tls = TlsSettings(
        enabled=True,
        ca_certificates=str(pki.ca_cert),
        certificate=str(pki.client_cert),
        private_key=str(pki.client_key),
        server_name="localhost",
    )

    assert all(r.ok for r in DimseDestination(peer.settings(tls=tls)).send(files))
    assert set(peer.received) == {f.sop_instance_uid for f in files}

    # a peer whose certificate we do not trust gets nothing, and it is retryable
    untrusting = TlsSettings(enabled=True, server_name="localhost")  # system CAs only
    results = DimseDestination(peer.settings(tls=untrusting, connect_timeout=5)).send(files)
    assert all(r.retryable and not r.ok for r in results)
