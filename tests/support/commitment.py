"""What every storage commitment sink must do (run against each implementation)."""

from __future__ import annotations

import threading
import time

from dicom_nodes.forward.commitment import CommitmentReport, CommitmentSink, EventType

__all__ = ["CT", "MR", "check_sink_contract", "report"]

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def report(
    tx: str,
    committed: list[str],
    failed: dict[str, int] | None = None,
    sop_class: str = CT,
    reporter: str = "ORTHANC",
) -> CommitmentReport:
    failed = failed or {}
    return CommitmentReport(
        tx,
        frozenset(committed),
        failed,
        {uid: sop_class for uid in [*committed, *failed]},
        event_type=EventType.FAILURES_EXIST if failed else EventType.SUCCESSFUL,
        reporter_ae=reporter,
        reporter_address="127.0.0.1",
    )


def check_sink_contract(sink: CommitmentSink) -> None:
    """Requests, reports, waiting and the reuse rule of :mod:`dicom_nodes.forward.commitment`."""
    a = [(CT, "1.2.3.1"), (CT, "1.2.3.2"), (CT, "1.2.3.3")]

    # nothing reported: wait times out (and takes about as long as asked)
    started = time.monotonic()
    assert sink.wait("2.25.100", timeout=0.3) is None
    assert 0.25 <= time.monotonic() - started < 5
    assert sink.committed_earlier("archive", "ORTHANC", a) == set()

    # a report put from another thread wakes the waiter, committed and failed kept apart
    sink.expect("2.25.1", "archive", "ORTHANC", "RADIOGATE", a)
    got: list[CommitmentReport | None] = []
    waiter = threading.Thread(target=lambda: got.append(sink.wait("2.25.1", timeout=20)))
    waiter.start()
    time.sleep(0.2)
    sink.put(report("2.25.1", ["1.2.3.1", "1.2.3.2"], {"1.2.3.3": 0x0112}))
    waiter.join()
    first = got[0]
    assert first is not None
    assert first.committed == {"1.2.3.1", "1.2.3.2"}
    assert dict(first.failed) == {"1.2.3.3": 0x0112}
    assert first.event_type == EventType.FAILURES_EXIST
    assert first.reporter_ae == "ORTHANC"
    # kept, not taken: a second look finds it again
    again = sink.wait("2.25.1", timeout=0)
    assert again is not None and again.committed == first.committed

    # reuse: committed before, for this destination and AE only, under the same class
    assert sink.committed_earlier("archive", "ORTHANC", a) == {"1.2.3.1", "1.2.3.2"}
    assert sink.committed_earlier("other", "ORTHANC", a) == set()
    assert sink.committed_earlier("archive", "PACS2", a) == set()
    assert sink.committed_earlier("archive", "ORTHANC", [(MR, "1.2.3.1")]) == set()

    # the most recent result wins: a later failure outweighs the earlier success...
    sink.expect("2.25.2", "archive", "ORTHANC", "RADIOGATE", a[:1])
    time.sleep(0.05)
    sink.put(report("2.25.2", [], {"1.2.3.1": 0x0112}))
    assert sink.committed_earlier("archive", "ORTHANC", a) == {"1.2.3.2"}
    # ...and a later success the earlier failure
    sink.expect("2.25.3", "archive", "ORTHANC", "RADIOGATE", a[2:])
    time.sleep(0.05)
    sink.put(report("2.25.3", ["1.2.3.3"]))
    assert sink.committed_earlier("archive", "ORTHANC", a) == {"1.2.3.2", "1.2.3.3"}

    # a report for a transaction we never asked for is kept but confirms nothing
    sink.put(report("2.25.99", ["1.2.3.9"]))
    assert sink.wait("2.25.99", timeout=0) is not None
    assert sink.committed_earlier("archive", "ORTHANC", [(CT, "1.2.3.9")]) == set()
