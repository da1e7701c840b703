"""Objects validate themselves; enumerations accept their strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_nodes.forward import (
    ConfirmMethod,
    DimseSettings,
    Instance,
    OutgoingFile,
    SendResult,
    StowSettings,
    TlsSettings,
)
from dicom_nodes.forward._association import MAX_CONTEXTS, store_contexts
from tests.support.data import extract_ct


def test_outgoing_file_from_path(tmp_path: Path) -> None:
    path = extract_ct(tmp_path)[0]
    f = OutgoingFile.from_path(path)
    assert f.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert f.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(ValueError, match="sop_instance_uid"):
        OutgoingFile(path, f.sop_class_uid, "not a uid", f.transfer_syntax_uid)
    with pytest.raises(ValueError):
        Instance("1.2", "")


@pytest.mark.parametrize(
    "uid", ["", "1.2.x", "1.2 ", "1.\u0663", "1.2\u00b2", "1." + "2" * 63, None, 12]
)
def test_a_uid_is_digits_and_periods_up_to_64(uid: object) -> None:
    """PS3.5 9.1: ASCII digits and periods, at most 64 (other Unicode digits are not)."""
    with pytest.raises(ValueError, match="not a valid UID"):
        Instance("1.2.840.10008.5.1.4.1.1.2", uid)  # type: ignore[arg-type]
    assert Instance("1.2.840.10008.5.1.4.1.1.2", "1." + "2" * 62).sop_instance_uid


def test_send_result_invariants() -> None:
    with pytest.raises(ValueError, match="both ok and retryable"):
        SendResult("1.2.3", 0, ok=True, retryable=True)
    with pytest.raises(ValueError, match="without a status"):
        SendResult("1.2.3", None, ok=True, retryable=False)
    assert SendResult("1.2.3", None, ok=False, retryable=False).status is None


def test_dimse_settings_validation() -> None:
    base = {"name": "a", "ae_title": "ORTHANC", "host": "h", "port": 104}
    s = DimseSettings(**base, confirm="query")  # type: ignore[arg-type]
    assert s.confirm is ConfirmMethod.QUERY
    assert DimseSettings(**base, confirm="storage-commitment").confirm is (  # type: ignore[arg-type]
        ConfirmMethod.STORAGE_COMMITMENT
    )
    for bad in (
        {"ae_title": "A" * 17},
        {"ae_title": "BAD\\AE"},
        {"ae_title": "   "},
        {"calling_ae": ""},
        {"port": 0},
        {"port": 70000},
        {"parallel": 0},
        {"timeout": 0},
        {"confirm": "carrier-pigeon"},
    ):
        with pytest.raises(ValueError):
            DimseSettings(**{**base, **bad})  # type: ignore[arg-type]


def test_tls_and_stow_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        TlsSettings(enabled=True, certificate="c.pem")
    with pytest.raises(ValueError, match="no such file"):
        TlsSettings(enabled=True, ca_certificates=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="http"):
        StowSettings(name="w", url="ftp://x")
    assert StowSettings(name="w", url="http://x/dicom-web/").url == "http://x/dicom-web"


def test_presentation_contexts_per_pair_and_fallback() -> None:
    groups = store_contexts(
        [("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4.90")] * 3
        + [("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")]
    )
    assert len(groups) == 1
    contexts = [
        (str(c.abstract_syntax), [str(t) for t in c.transfer_syntax]) for c in groups[0].contexts
    ]
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert contexts == [
        (ct, ["1.2.840.10008.1.2.4.90"]),
        (ct, ["1.2.840.10008.1.2.1"]),
        (ct, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]),
    ]
    assert groups[0].pairs == {(ct, "1.2.840.10008.1.2.4.90"), (ct, "1.2.840.10008.1.2.1")}


def test_presentation_contexts_split_at_128() -> None:
    pairs = [(f"1.2.3.{n}", "1.2.840.10008.1.2.1") for n in range(100)]
    groups = store_contexts(pairs)
    assert [len(g.contexts) for g in groups] == [128, 72]
    assert all(len(g.contexts) <= MAX_CONTEXTS for g in groups)
    assert set().union(*(g.pairs for g in groups)) == set(pairs)
