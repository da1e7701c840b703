"""DimseDestination → a real Orthanc 1.10: verbatim forwarding, transcoding fallback,
storage commitment and C-FIND confirmation, outage and recovery."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_nodes.forward import (
    CommitmentListener,
    ConfirmationUnavailable,
    ConfirmMethod,
    DimseDestination,
    Instance,
    OutgoingFile,
)
from dicom_nodes.services.orthanc import ManagedOrthanc
from tests.integration.forward.conftest import dimse_settings, make_orthanc
from tests.integration.forward.instances import make_small_instances
from tests.integration.forward.orthanc_rest import OrthancRest
from tests.support.data import dataset_bytes, extract_ct, make_ts_files

pytestmark = pytest.mark.integration

EXPLICIT_LE = "1.2.840.10008.1.2.1"

REFUSED_BY_ORTHANC_1_10 = {
    # DCMTK 3.6.7 (Orthanc 1.10's network layer) does not know these syntaxes.
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless: decodable -> transcoded
    "1.2.840.10008.1.2.4.203",  # HTJ2K: decodable -> transcoded
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression: no decoder -> permanent
}
NOT_DECODABLE = {"1.2.840.10008.1.2.8.1"}


@pytest.fixture
def ct_files(tmp_path: Path) -> list[OutgoingFile]:
    return [OutgoingFile.from_path(p) for p in extract_ct(tmp_path / "ct")]


def test_ct_arrives_verbatim_and_is_confirmed_both_ways(
    destination: DimseDestination, orthanc_rest: OrthancRest, ct_files: list[OutgoingFile]
) -> None:
    results = destination.send(ct_files)

    assert [r.sop_instance_uid for r in results] == [f.sop_instance_uid for f in ct_files]
    assert all(r.ok and r.status == 0 and not r.retryable for r in results), results
    assert all(r.sent_transfer_syntax == EXPLICIT_LE and r.note == "" for r in results)
    assert orthanc_rest.count_instances() == len(ct_files)
    for file in ct_files:
        instance_id = orthanc_rest.instance_id(file.sop_instance_uid)
        assert instance_id is not None
        assert orthanc_rest.transfer_syntax(instance_id) == file.transfer_syntax_uid
        stored = orthanc_rest.file(instance_id)
        stored_path = file.path.with_suffix(".orthanc")
        stored_path.write_bytes(stored)
        # the dataset as Orthanc holds it is byte for byte the one we had: UIDs, pixel data…
        assert dataset_bytes(stored_path) == dataset_bytes(file.path)
        ds = pydicom.dcmread(stored_path)
        assert ds.SOPInstanceUID == file.sop_instance_uid
        assert ds.PixelData == pydicom.dcmread(file.path).PixelData

    assert destination.confirm_by_commitment(ct_files) == {
        f.sop_instance_uid: True for f in ct_files
    }
    assert destination.confirm_by_query(ct_files) == {f.sop_instance_uid: True for f in ct_files}


def test_missing_instance_is_not_confirmed(
    destination: DimseDestination,
    orthanc: ManagedOrthanc,
    orthanc_rest: OrthancRest,
    ct_files: list[OutgoingFile],
) -> None:
    files = ct_files[:5]
    assert all(r.ok for r in destination.send(files))
    deleted = files[2]
    instance_id = orthanc_rest.instance_id(deleted.sop_instance_uid)
    assert instance_id is not None
    orthanc_rest.delete(instance_id)
    never_sent = ct_files[10]
    wrong_class = Instance("1.2.840.10008.5.1.4.1.1.7", files[0].sop_instance_uid)
    expected = {f.sop_instance_uid: f is not deleted for f in files}
    expected[never_sent.sop_instance_uid] = False

    assert destination.confirm_by_commitment([*files, never_sent]) == expected
    assert destination.confirm_by_query([*files, never_sent]) == expected
    # an instance held under another SOP class is not the instance we sent
    assert destination.confirm_by_query([wrong_class]) == {wrong_class.sop_instance_uid: False}
    # without the class, the UID alone confirms: the same answers, but the reused UID counts
    by_uid = DimseDestination(
        dimse_settings(orthanc, confirm=ConfirmMethod.QUERY, confirm_class=False)
    )
    try:
        assert by_uid.confirm_by_query([*files, never_sent]) == expected
        assert by_uid.confirm_by_query([wrong_class]) == {wrong_class.sop_instance_uid: True}
    finally:
        by_uid.close()


def test_every_transfer_syntax(
    destination: DimseDestination, orthanc_rest: OrthancRest, tmp_path: Path
) -> None:
    ts_files = make_ts_files(tmp_path / "ts")
    files = [OutgoingFile.from_path(t.path) for t in ts_files]
    results = {r.sop_instance_uid: r for r in destination.send(files)}

    for file in files:
        ts = file.transfer_syntax_uid
        result = results[file.sop_instance_uid]
        instance_id = orthanc_rest.instance_id(file.sop_instance_uid)
        if ts in NOT_DECODABLE:
            assert not result.ok and not result.retryable and result.status is None, result
            assert result.sent_transfer_syntax is None
            assert "refused" in result.note and "cannot decode" in result.note
            assert instance_id is None
            continue
        assert result.ok and result.status == 0, result
        assert instance_id is not None
        stored = tmp_path / f"{ts}.orthanc"
        stored.write_bytes(orthanc_rest.file(instance_id))
        if ts in REFUSED_BY_ORTHANC_1_10:
            # fallback negotiation: refused syntax, decoded, sent as Explicit VR Little Endian
            assert result.transcoded_from == ts
            assert result.sent_transfer_syntax == EXPLICIT_LE
            assert result.note.startswith("transcoded from High-Throughput JPEG 2000")
            assert orthanc_rest.transfer_syntax(instance_id) == EXPLICIT_LE
            original = pydicom.dcmread(file.path)
            received = pydicom.dcmread(stored)
            assert received.SOPInstanceUID == file.sop_instance_uid
            assert (received.pixel_array == original.pixel_array).all()
        else:
            assert result.transcoded_from is None and result.note == ""
            assert result.sent_transfer_syntax == ts
            assert orthanc_rest.transfer_syntax(instance_id) == ts
            # Orthanc (DCMTK) stores sequences with explicit lengths, so compare elements;
            # that the bytes leave us unchanged is shown against a recording SCP
            # (test_dimse_peers.py).
            received, original = pydicom.dcmread(stored), pydicom.dcmread(file.path)
            assert received.PixelData == original.PixelData, ts
            del received.PixelData, original.PixelData  # (VR OW of one source file -> OB)
            assert Dataset(received) == Dataset(original), ts

    sent = [f for f in files if results[f.sop_instance_uid].ok]
    confirmed = destination.confirm_by_commitment(files)
    assert confirmed == {f.sop_instance_uid: f in sent for f in files}


def test_parallel_associations(
    orthanc: ManagedOrthanc,
    orthanc_rest: OrthancRest,
    commitment_listener: CommitmentListener,
    ct_files: list[OutgoingFile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dicom_nodes.forward import _association, pool

    opened: list[str] = []
    original = _association.open_association  # the function pool.py calls

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "open_association", counting)
    dest = DimseDestination(
        dimse_settings(orthanc, parallel=4, confirm=ConfirmMethod.QUERY),
        commitment_listener.sink,
    )
    results = dest.send(ct_files)
    assert all(r.ok for r in results)
    assert len(set(opened)) == 4 and len(opened) == 4
    assert orthanc_rest.count_instances() == len(ct_files)
    assert all(dest.confirm(ct_files).values())
    dest.close()


def test_associations_stay_open_between_batches_and_confirm_on_them(
    orthanc: ManagedOrthanc,
    orthanc_rest: OrthancRest,
    ct_files: list[OutgoingFile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PS3.8 7.1: one association carries several batches and their C-FINDs; one that the
    peer closed while idle costs no instance (sent again on a new association)."""
    from dicom_nodes.forward import _association, pool

    opened: list[int] = []
    original = _association.open_association  # the function pool.py calls

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(len(args[1]))  # type: ignore[arg-type]
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "open_association", counting)
    dest = DimseDestination(
        dimse_settings(orthanc, parallel=1, confirm=ConfirmMethod.QUERY, keep_open=60.0)
    )
    first, second, third = ct_files[:2], ct_files[2:4], ct_files[4:]
    assert all(r.ok for r in dest.send(first))
    assert all(dest.confirm(first).values())
    assert all(r.ok for r in dest.send(second))
    assert all(dest.confirm(second).values())
    assert len(opened) == 1 and dest.pool.idle == 1  # one association for all of it

    # The peer drops the idle association (its TCP connection is reset under us).
    lease = dest.pool.acquire_find()
    lease.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
    dest.pool.give_back(lease)
    results = dest.send(third)
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]
    assert all(dest.confirm(ct_files).values())
    assert len(opened) == 2
    assert orthanc_rest.count_instances() == len(ct_files)
    dest.close()
    assert dest.pool.idle == 0


def test_keep_open_zero_releases_after_each_batch(
    orthanc: ManagedOrthanc, ct_files: list[OutgoingFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicom_nodes.forward import _association, pool

    opened: list[int] = []
    original = _association.open_association  # the function pool.py calls

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "open_association", counting)
    dest = DimseDestination(
        dimse_settings(orthanc, parallel=1, confirm=ConfirmMethod.QUERY, keep_open=0.0)
    )
    assert all(r.ok for r in dest.send(ct_files[:2]))
    assert all(dest.confirm(ct_files[:2]).values())
    assert all(r.ok for r in dest.send(ct_files[2:4]))
    assert len(opened) == 3 and dest.pool.idle == 0


def test_commitment_falls_back_to_query_without_a_sink(
    orthanc: ManagedOrthanc, orthanc_rest: OrthancRest, ct_files: list[OutgoingFile]
) -> None:
    files = ct_files[:3]
    strict = DimseDestination(dimse_settings(orthanc), commitment_sink=None)
    assert all(r.ok for r in strict.send(files))
    with pytest.raises(ConfirmationUnavailable):
        strict.confirm(files)
    lenient = DimseDestination(
        dimse_settings(orthanc, confirm=ConfirmMethod.COMMITMENT_OR_QUERY), commitment_sink=None
    )
    assert lenient.confirm(files) == {f.sop_instance_uid: True for f in files}


@pytest.fixture
def own_orthanc(
    tmp_path: Path, commitment_listener: CommitmentListener
) -> Iterator[ManagedOrthanc]:
    server = make_orthanc(tmp_path / "own-orthanc", commitment_listener)
    server.start()
    yield server
    server.stop()


def test_orthanc_down_then_up(
    own_orthanc: ManagedOrthanc,
    commitment_listener: CommitmentListener,
    ct_files: list[OutgoingFile],
) -> None:
    dest = DimseDestination(
        dimse_settings(own_orthanc, connect_timeout=2.0, parallel=2), commitment_listener.sink
    )
    own_orthanc.stop()

    started = time.monotonic()
    results = dest.send(ct_files)
    assert time.monotonic() - started < 30
    assert not any(r.ok for r in results)
    assert all(r.retryable and r.status is None for r in results)
    assert all("not sent" in r.note for r in results)
    with pytest.raises(ConfirmationUnavailable):
        dest.confirm_by_commitment(ct_files)
    with pytest.raises(ConfirmationUnavailable):
        dest.confirm_by_query(ct_files)

    own_orthanc.start()
    results = dest.send(ct_files)
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]
    assert all(dest.confirm(ct_files).values())


def test_orthanc_killed_while_sending(
    own_orthanc: ManagedOrthanc, commitment_listener: CommitmentListener, tmp_path: Path
) -> None:
    """SIGKILL mid-stream: every instance reported ok is really stored, every other one is
    retryable, and after a restart the rest goes through."""
    dest = DimseDestination(
        dimse_settings(own_orthanc, connect_timeout=2.0, timeout=10.0, confirm="query"),
        commitment_listener.sink,
    )
    files = [OutgoingFile.from_path(p) for p in make_small_instances(tmp_path / "small", 600)]

    def kill() -> None:
        assert own_orthanc._proc is not None
        own_orthanc._proc.kill()

    killer = threading.Timer(0.8, kill)
    killer.start()
    results = dest.send(files)
    killer.join()
    own_orthanc.stop()
    ok = [f for f, r in zip(files, results, strict=True) if r.ok]
    assert all(r.retryable for r in results if not r.ok)
    assert 0 < len(ok) < len(files), "Orthanc killed too early or too late to test anything"

    own_orthanc.start()
    held = dest.confirm_by_query(files)
    assert all(held[f.sop_instance_uid] for f in ok)
    again = dest.send([f for f in files if not held[f.sop_instance_uid]])
    assert all(r.ok for r in again)
    assert all(dest.confirm_by_query(files).values())
