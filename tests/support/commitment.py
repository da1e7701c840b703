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

    # a late report (its requester no longer waits): committed and failed kept apart, and
    # the committed ones count for this destination and AE only, under the same class
    sink.expect("2.25.1", "archive", "ORTHANC", "RADIOGATE", a)
    sink.put(report("2.25.1", ["1.2.3.1", "1.2.3.2"], {"1.2.3.3": 0x0112}))
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

    # a report put from another thread wakes its waiter, which takes it: taken reports
    # have done their job and no longer count, even over an earlier late one
    sink.expect("2.25.4", "archive", "ORTHANC", "RADIOGATE", [(CT, "1.2.3.2"), (CT, "1.2.3.4")])
    got: list[CommitmentReport | None] = []
    waiter = threading.Thread(target=lambda: got.append(sink.wait("2.25.4", timeout=20)))
    waiter.start()
    time.sleep(0.3)
    sink.put(report("2.25.4", ["1.2.3.2", "1.2.3.4"]))
    waiter.join()
    taken = got[0]
    assert taken is not None and taken.committed == {"1.2.3.2", "1.2.3.4"}
    assert taken.event_type == EventType.SUCCESSFUL and taken.reporter_ae == "ORTHANC"
    asked = [*a, (CT, "1.2.3.4")]
    assert sink.committed_earlier("archive", "ORTHANC", asked) == {"1.2.3.3"}
    # a second look finds the report again
    again = sink.wait("2.25.4", timeout=0)
    assert again is not None and again.committed == taken.committed

    # a report for a transaction we never asked for is kept but confirms nothing
    sink.put(report("2.25.99", ["1.2.3.9"]))
    assert sink.wait("2.25.99", timeout=0) is not None
    assert sink.committed_earlier("archive", "ORTHANC", [(CT, "1.2.3.9")]) == set()
