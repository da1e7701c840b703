"""The accelerator on the accepting side: the same bytes stored and the same responses as stock
pynetdicom, part by part; the reactors behave (release, abort, timeouts, idle waits).

A pynetdicom SCU talks to an in-process pynetdicom SCP on loopback, with and without the
accelerator, and the tests compare what each side sees.
"""

from __future__ import annotations

import copy
import io
import select
import struct
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicom_nodes.accelerator import PARTS, Part
from dicom_nodes.dimse import codec
from tests.unit.accelerator.support import (
    CT,
    Scp,
    exchange,
    scu,
    skip_unless_verified,
    wait_until,
)

skip_unless_verified()

from dicom_nodes.accelerator import _association, _dimse, _wake  # noqa: E402
from dicom_nodes.accelerator._association import FastAssociation  # noqa: E402
from dicom_nodes.accelerator._dimse import FastDIMSE  # noqa: E402
from dicom_nodes.accelerator._dul import FastDUL  # noqa: E402

# --------------------------------------------------------------------------- wake-ups


def test_waker_and_waking_queue() -> None:
    waker = _wake.Waker()
    try:
        assert select.select([waker.fd], [], [], 0)[0] == []
        queue = _wake.WakingQueue(waker.wake)
        queue.put("x")
        assert select.select([waker.fd], [], [], 0)[0] == [waker.fd]
        waker.drain()
        assert select.select([waker.fd], [], [], 0)[0] == []
        assert queue.get_nowait() == "x"
    finally:
        waker.close()
    waker.close()
    waker.wake()  # after close: ignored, never writes to a reused descriptor
    assert waker.closed


# --------------------------------------------------------------------------- contexts


def test_shared_contexts_survive_deepcopy_and_negotiate_the_same() -> None:
    supported = [PresentationContext() for _ in range(3)]
    for cx, uid in zip(
        supported, (Verification, CTImageStorage, "1.2.840.10008.5.1.4.1.1.20"), strict=True
    ):
        cx.abstract_syntax = uid
        cx.transfer_syntax = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    originals = copy.deepcopy(supported)
    _association.share_contexts(supported)
    copied = copy.deepcopy(supported)
    assert all(a is b for a, b in zip(copied, supported, strict=True))
    requested = PresentationContext()
    requested.context_id = 1
    requested.abstract_syntax = CTImageStorage
    requested.transfer_syntax = ["1.2.840.10008.1.2"]
    got, _ = negotiate_as_acceptor([requested], copied)
    want, _ = negotiate_as_acceptor([requested], originals)
    assert [(c.context_id, c.result, c.transfer_syntax) for c in got] == [
        (c.context_id, c.result, c.transfer_syntax) for c in want
    ]
    assert [cx.transfer_syntax for cx in supported] == [cx.transfer_syntax for cx in originals]


# --------------------------------------------------------------------------- associations

_PART_SETS = [
    PARTS,
    *(frozenset({p}) for p in sorted(PARTS)),
    *(PARTS - {p} for p in sorted(PARTS)),
]


def _stock_result(chunked: Path, max_pdu: int) -> list[bytes]:
    scp = Scp(chunked, parts=())
    try:
        statuses, _ = exchange(scp, max_pdu)
    finally:
        scp.stop()
    assert statuses == [0, 0, 0, 0]
    assoc = scp.associations[0]
    assert type(assoc) is Association and type(assoc.dul) is DULServiceProvider
    return scp.stored


@pytest.mark.parametrize("max_pdu", [16382, 0, 4096])
def test_all_parts_store_the_same_bytes_as_stock(chunked: Path, max_pdu: int) -> None:
    expected = _stock_result(chunked, max_pdu)
    scp = Scp(chunked, PARTS)
    try:
        statuses, _ = exchange(scp, max_pdu)
        assert wait_until(lambda: not any(a.is_alive() for a in scp.associations))
    finally:
        scp.stop()
    assert statuses == [0, 0, 0, 0]
    assoc = scp.associations[0]
    assert isinstance(assoc, FastAssociation)
    assert isinstance(assoc.dul, FastDUL) and isinstance(assoc.dimse, FastDIMSE)
    assert scp.stored == expected and len(expected) == 3
    stored = pydicom.dcmread(io.BytesIO(scp.stored[0]))
    assert stored.SOPInstanceUID == pydicom.dcmread(CT).SOPInstanceUID
    # Nothing left behind: pynetdicom removes the handler's file.
    assert wait_until(lambda: list(chunked.iterdir()) == [], timeout=2)


@pytest.mark.parametrize("parts", _PART_SETS, ids=lambda p: "+".join(sorted(p)) or "none")
def test_each_part_alone_and_all_but_one_store_the_same_bytes(
    chunked: Path, parts: frozenset[Part]
) -> None:
    expected = _stock_result(chunked, 4096)
    scp = Scp(chunked, parts)
    try:
        statuses, _ = exchange(scp, 4096)
        assert wait_until(lambda: not any(a.is_alive() for a in scp.associations))
    finally:
        scp.stop()
    assert statuses == [0, 0, 0, 0]
    assert scp.stored == expected
    assoc = scp.associations[0]
    assert isinstance(assoc, FastAssociation) == (Part.REACTORS in parts)
    assert isinstance(assoc.dul, FastDUL) == bool(parts & {Part.REACTORS, Part.P_DATA})
    assert isinstance(assoc.dimse, FastDIMSE) == bool(parts & _dimse.DIMSE_PARTS)
    if not parts & _dimse.DIMSE_PARTS:
        assert type(assoc.dimse) is DIMSEServiceProvider
    assert wait_until(lambda: list(chunked.iterdir()) == [], timeout=2)


def test_failure_status_with_error_comment_goes_through_pynetdicom(chunked: Path) -> None:
    scp = Scp(chunked)
    status = Dataset()
    status.Status = 0xC000
    status.ErrorComment = "refused in test"
    scp.status = status
    try:
        assoc = scu(scp.port)
        rsp = assoc.send_c_store(pydicom.dcmread(CT))
        assoc.release()
    finally:
        scp.stop()
    assert rsp.Status == 0xC000
    assert rsp.ErrorComment == "refused in test"


def test_pdu_event_handlers_disable_the_shortcut(chunked: Path) -> None:
    seen: list[str] = []
    handlers = [(evt.EVT_PDU_RECV, lambda event: seen.append(type(event.pdu).__name__))]
    scp = Scp(chunked, extra_handlers=handlers)
    try:
        statuses, _ = exchange(scp)
    finally:
        scp.stop()
    assert statuses == [0, 0, 0, 0]
    assert seen.count("P_DATA_TF") >= 4  # every P-DATA-TF decoded by pynetdicom


def test_release_ends_the_association_thread_quickly(chunked: Path) -> None:
    scp = Scp(chunked)
    try:
        assoc = scu(scp.port)
        assert int(assoc.send_c_echo().Status) == 0
        started = time.monotonic()
        assoc.release()
        assert wait_until(lambda: not scp.associations[0].is_alive(), timeout=2)
        assert time.monotonic() - started < 0.5
        assert not scp.associations[0].dul.is_alive()
    finally:
        scp.stop()


def test_peer_abort_is_seen(chunked: Path) -> None:
    aborted = threading.Event()
    handlers = [(evt.EVT_ABORTED, lambda event: aborted.set())]
    scp = Scp(chunked, extra_handlers=handlers)
    try:
        assoc = scu(scp.port)
        assoc.abort()
        assert aborted.wait(2)
        assert wait_until(lambda: not scp.associations[0].is_alive(), timeout=2)
    finally:
        scp.stop()


def test_malformed_pdata_aborts_the_association(chunked: Path) -> None:
    scp = Scp(chunked)
    try:
        assoc = scu(scp.port)
        bad_item = struct.pack(">LB", 50, 1) + b"\x03short"  # item longer than the PDU
        pdu = struct.pack(">BBL", 0x04, 0, len(bad_item)) + bad_item
        assoc.dul.socket.send(pdu)
        assert wait_until(lambda: assoc.is_aborted, timeout=3)
        assert wait_until(lambda: not scp.associations[0].is_alive(), timeout=3)
    finally:
        if assoc.is_established:
            assoc.abort()
        scp.stop()
    assert scp.stored == []


def test_a_data_set_fragment_without_its_command_aborts_cleanly(
    chunked: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scp = Scp(chunked)
    try:
        assoc = scu(scp.port)
        item = struct.pack(">LB", 6, 1) + b"\x02data"  # last data fragment, no command sent
        assoc.dul.socket.send(struct.pack(">BBL", 0x04, 0, len(item)) + item)
        assert wait_until(lambda: assoc.is_aborted, timeout=3)
        assert wait_until(lambda: not scp.associations[0].is_alive(), timeout=3)
    finally:
        if assoc.is_established:
            assoc.abort()
        scp.stop()
    assert "AssertionError" not in caplog.text
    assert "data set fragment without its command" in caplog.text


def test_idle_association_times_out(chunked: Path) -> None:
    scp = Scp(chunked)
    scp.server.ae.network_timeout = 0.3
    try:
        assoc = scu(scp.port)
        assert wait_until(lambda: assoc.is_aborted or not assoc.is_established, timeout=3)
        assert wait_until(lambda: not scp.associations[0].is_alive(), timeout=3)
    finally:
        scp.stop()


def test_upgrade_refuses_a_started_association(chunked: Path) -> None:
    scp = Scp(chunked)
    try:
        assoc = scu(scp.port)
        with pytest.raises(RuntimeError):
            _association.upgrade_association(assoc, PARTS)
        assoc.release()
    finally:
        scp.stop()


def test_odd_command_encoding_still_stores(chunked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A C-STORE-RQ the direct decoding declines goes through pydicom's decoding."""
    calls: list[Any] = []
    original = codec.decode_store_rq

    def declining(command: Any) -> Any:
        calls.append(original(command))
        return None  # as if the encoding were unusual

    monkeypatch.setattr(codec, "decode_store_rq", declining)
    scp = Scp(chunked)
    try:
        assoc = scu(scp.port)
        assert int(assoc.send_c_store(pydicom.dcmread(CT)).Status) == 0
        assoc.release()
    finally:
        scp.stop()
    assert calls and calls[0] is not None
    stored = pydicom.dcmread(io.BytesIO(scp.stored[0]))
    assert stored.SOPInstanceUID == pydicom.dcmread(CT).SOPInstanceUID


def test_idle_association_waits_instead_of_polling(
    chunked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    original = FastDUL._wait

    def counting(self: FastDUL) -> bool:
        waits.append(time.monotonic())
        return original(self)

    monkeypatch.setattr(FastDUL, "_wait", counting)
    scp = Scp(chunked)
    try:
        assoc = scu(scp.port)
        assert int(assoc.send_c_echo().Status) == 0
        time.sleep(0.1)
        before = len(waits)
        time.sleep(0.5)
        idle_waits = len(waits) - before
        assert scp.associations[0].dul._spurious == 0
        assoc.release()
    finally:
        scp.stop()
    # ~10 wake-ups per 0.5 s (MAX_WAIT = 50 ms), not pynetdicom's ~500.
    assert idle_waits <= 0.5 / _wake.MAX_WAIT + 5


def test_dul_module_mirrors_pynetdicom_names() -> None:
    """The names the DUL subclass relies on exist on pynetdicom's class."""
    for name in ("_read_pdu_data", "_process_recv_primitive", "_is_transport_event", "run_reactor"):
        assert callable(getattr(DULServiceProvider, name))


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.5.1.4.1.1.2",
        "0.0",
        "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678",  # 64 characters
        "1.02.3",  # leading zero: non-conformant, accepted with a warning
        "1..2",
        "1.2.",
        "1." + "2" * 63,  # 65 characters: refused
    ],
)
def test_store_rq_primitive_sets_uids_as_the_validating_setters(
    uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Conformant UIDs skip the setters' checks; the result, warnings and errors are the
    setters' for every UID (``codec.store_rq_primitive`` sets through them)."""
    values: dict[int, int | str] = {
        0x0002: "1.2.840.10008.5.1.4.1.1.2", 0x0100: 1, 0x0110: 7, 0x0700: 2, 0x0800: 1,
        0x1000: uid,
    }  # fmt: skip

    def outcome(build: Any) -> tuple[Any, ...]:
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                primitive = build(values)
            except ValueError as exc:
                result: tuple[Any, ...] = ("error", str(exc))
            else:
                result = tuple(
                    (getattr(primitive, name), type(getattr(primitive, name)))
                    for name in ("AffectedSOPClassUID", "AffectedSOPInstanceUID", "MessageID")
                )
        return result, [str(w.message) for w in caught], [r.getMessage() for r in caplog.records]

    assert outcome(_dimse._store_rq_primitive) == outcome(codec.store_rq_primitive)
