"""The re-identification vault and ``radiogate reidentify`` against a real PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dicom_nodes.deid.model import VaultEntry
from dicom_nodes.deid.secrets import ENV_VAULT_KEY, VaultKey
from dicom_nodes.deid.vault import Vault, VaultIntegrityError, VaultKeyMismatch
from tests.support.roles import admin_role

pytestmark = pytest.mark.integration

KEY = VaultKey(bytes(range(32)))
OTHER_KEY = VaultKey(bytes(range(1, 33)))
PATIENT_PSEUDONYM = "RG4K7Q2M9X1T3B8CZN"
STUDY_PSEUDONYM = "2.25.271828182845904523536028747135266249"
PATIENT = VaultEntry(
    "patient",
    PATIENT_PSEUDONYM,
    {
        "patient_id": "MRN-00731942",
        "issuer": "HOSPITAL-NORTH",
        "name": "Müller^Hannelore^Erika",
        "birth_date": "19580214",
    },
)
STUDY = VaultEntry(
    "study",
    STUDY_PSEUDONYM,
    {
        "study_instance_uid": "1.2.840.113619.2.55.3.604688119.969.1268071029.320",
        "accession_number": "ACC20240117-0042",
        "study_id": "STUDY-5521",
        "patient_pseudonym": PATIENT_PSEUDONYM,
    },
)
ORIGINALS = [v for e in (PATIENT, STUDY) for k, v in e.original.items() if k != "patient_pseudonym"]


def _record(dsn: str, *entries: VaultEntry, key: VaultKey = KEY) -> int:
    with psycopg.connect(dsn) as conn, conn.transaction():
        return Vault(key).record(conn, entries)


def _reveal(dsn: str, pseudonym: str, key: VaultKey = KEY) -> VaultEntry | None:
    with psycopg.connect(dsn) as conn:
        return Vault(key).reveal(conn, pseudonym)


def _table_bytes(dsn: str, table: str) -> bytes:
    """Every column of every row, raw (bytea as bytes) and as PostgreSQL's text of the row."""
    blob = bytearray()
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(f"SELECT t.*, t::text FROM {table} t")
        for row in cur.fetchall():
            for value in row:
                if isinstance(value, bytes | bytearray | memoryview):
                    blob += bytes(value)
                elif isinstance(value, list):
                    blob += repr(value).encode()
                elif value is not None:
                    blob += str(value).encode()
                blob += b"\0"
    return bytes(blob)


def _assert_no_original(blob: bytes) -> None:
    for value in ORIGINALS:
        for form in (value, value.upper(), value.lower()):
            raw = form.encode()
            assert raw not in blob, "an original value is stored in clear"
            assert raw.hex().encode() not in blob.lower(), "an original value is stored as hex"
    for part in ("Müller", "Hannelore", "MRN-00731942", "00731942", "19580214", "1958-02-14"):
        assert part.encode() not in blob


def test_record_and_reveal_round_trip(fresh_dsn: str) -> None:
    assert _record(fresh_dsn, PATIENT, STUDY) == 2
    assert _reveal(fresh_dsn, PATIENT_PSEUDONYM) == PATIENT
    assert _reveal(fresh_dsn, STUDY_PSEUDONYM) == STUDY
    assert _reveal(fresh_dsn, "RG0000000000000099") is None
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute(
            "SELECT kind, key_id, length(nonce), length(ciphertext) FROM deid_vault ORDER BY kind"
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("patient", KEY.key_id, 12),
        ("study", KEY.key_id, 12),
    ]
    assert all((r[3] - 16) % 64 == 0 for r in rows)  # padded plaintext + 16-byte GCM tag


def test_empty_batch_and_batch_of_many(fresh_dsn: str) -> None:
    assert _record(fresh_dsn) == 0
    many = [VaultEntry("uid", f"2.25.{i}", {"uid": f"1.2.3.{i}"}) for i in range(500)]
    assert _record(fresh_dsn, *many) == 500
    assert _reveal(fresh_dsn, "2.25.417") == many[417]


def test_duplicate_pseudonym_keeps_the_first_row(fresh_dsn: str) -> None:
    assert _record(fresh_dsn, PATIENT) == 1
    later = VaultEntry("patient", PATIENT_PSEUDONYM, {"patient_id": "SOMETHING-ELSE"})
    assert _record(fresh_dsn, later, STUDY) == 1
    assert _reveal(fresh_dsn, PATIENT_PSEUDONYM) == PATIENT
    # within one batch too: the first entry of a pseudonym wins
    first = VaultEntry("uid", "2.25.77", {"uid": "1.2.3.first"})
    second = VaultEntry("uid", "2.25.77", {"uid": "1.2.3.second"})
    assert _record(fresh_dsn, first, second) == 1
    assert _reveal(fresh_dsn, "2.25.77") == first


def test_concurrent_batches_sharing_pseudonyms_do_not_deadlock(fresh_dsn: str) -> None:
    """Batches in any input order insert in pseudonym order: overlapping batches wait for
    each other but never deadlock (PostgreSQL would abort one with 40P01)."""
    errors: list[BaseException] = []
    inserted: list[int] = []
    barrier = threading.Barrier(4)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(fresh_dsn) as conn:
                conn.execute("SET deadlock_timeout = '10ms'")
                for round_ in range(10):
                    batch = [
                        VaultEntry("uid", f"2.25.{round_}{i:04d}", {"uid": f"1.2.3.{i}"})
                        for i in range(2000)
                    ]
                    rng.shuffle(batch)
                    barrier.wait(timeout=30)
                    inserted.append(Vault(KEY).record(conn, batch))
                    conn.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(inserted) == 10 * 2000
    with psycopg.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM deid_vault").fetchone() == (20000,)


def test_wrong_key_is_reported_as_another_key(fresh_dsn: str) -> None:
    _record(fresh_dsn, PATIENT)
    with pytest.raises(VaultKeyMismatch, match=f"{KEY.key_id}.*{OTHER_KEY.key_id}") as err:
        _reveal(fresh_dsn, PATIENT_PSEUDONYM, OTHER_KEY)
    _assert_no_original(str(err.value).encode())


def test_same_key_id_but_other_key_fails_authentication(fresh_dsn: str) -> None:
    """A forged key_id does not help: AES-GCM still refuses to decrypt."""
    _record(fresh_dsn, PATIENT, key=OTHER_KEY)
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("UPDATE deid_vault SET key_id = %s", (KEY.key_id,))
    with pytest.raises(VaultIntegrityError, match="authentication"):
        _reveal(fresh_dsn, PATIENT_PSEUDONYM)


def test_ciphertext_swapped_between_rows_fails_authentication(fresh_dsn: str) -> None:
    other = VaultEntry("patient", "RG9Z8Y7X6W5V4T3S2R", {"patient_id": "MRN-55555555"})
    _record(fresh_dsn, PATIENT, other)
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute(
            """UPDATE deid_vault d SET nonce = s.nonce, ciphertext = s.ciphertext
               FROM deid_vault s
               WHERE (d.pseudonym, s.pseudonym) IN ((%s, %s), (%s, %s))""",
            (PATIENT_PSEUDONYM, other.pseudonym, other.pseudonym, PATIENT_PSEUDONYM),
        )
    for pseudonym in (PATIENT_PSEUDONYM, other.pseudonym):
        with pytest.raises(VaultIntegrityError, match="authentication") as err:
            _reveal(fresh_dsn, pseudonym)
        _assert_no_original(str(err.value).encode())


def test_changed_kind_or_flipped_bit_fails_authentication(fresh_dsn: str) -> None:
    _record(fresh_dsn, STUDY, PATIENT)
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("UPDATE deid_vault SET kind = 'uid' WHERE pseudonym = %s", (STUDY_PSEUDONYM,))
        conn.execute(
            """UPDATE deid_vault SET ciphertext = set_byte(ciphertext, 3, get_byte(ciphertext, 3) # 1)
               WHERE pseudonym = %s""",
            (PATIENT_PSEUDONYM,),
        )
    for pseudonym in (STUDY_PSEUDONYM, PATIENT_PSEUDONYM):
        with pytest.raises(VaultIntegrityError):
            _reveal(fresh_dsn, pseudonym)


def test_table_reveals_nothing_without_the_key(fresh_dsn: str) -> None:
    _record(fresh_dsn, PATIENT, STUDY)
    _assert_no_original(_table_bytes(fresh_dsn, "deid_vault"))


def test_invalid_entries_are_refused_without_echoing_values(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        vault = Vault(KEY)
        with pytest.raises(ValueError, match="kind") as err:
            vault.record(conn, [VaultEntry("person", "RG12345678", {"name": "Hannelore"})])
        with pytest.raises(ValueError, match="original") as err:
            vault.record(conn, [VaultEntry("patient", "RG12345678", {"name": 1958})])  # type: ignore[dict-item]
        assert "1958" not in str(err.value)
    assert "Hannelore" not in repr(vault)


# -- radiogate reidentify --------------------------------------------------------------------


def _cli(
    dsn: str, data_dir: Path, *args: str, key: VaultKey | None = KEY, role: str = "admin"
) -> subprocess.CompletedProcess[str]:
    """``python -m dicom_nodes.deid.cli reidentify ...``: the real argparse path, a real process,
    run by the admin *role* (its own PostgreSQL login, a member of radiogate_privacy)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADIOGATE_")}
    env.update(RADIOGATE_DATABASE__DSN=dsn, RADIOGATE_NODE__DATA_DIR=str(data_dir))
    env["RADIOGATE_DATABASE__ADMIN_DSN"] = admin_role(dsn, role, "radiogate_privacy")
    if key is not None:
        env[ENV_VAULT_KEY] = base64.b64encode(key.key).decode()
    return subprocess.run(
        [sys.executable, "-m", "dicom_nodes.deid.cli", "reidentify", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _events(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT body FROM audit_event ORDER BY seq").fetchall()
        pending = conn.execute("SELECT count(*) FROM audit_pending").fetchone()
    assert pending == (0,)
    return [json.loads(bytes(r[0])) for r in rows]


def _audit_blob(dsn: str) -> bytes:
    return b"".join(_table_bytes(dsn, t) for t in ("audit_event", "audit_pending", "audit_head"))


def test_reidentify_patient_writes_one_audit_event(fresh_dsn: str, tmp_path: Path) -> None:
    _record(fresh_dsn, PATIENT, STUDY)
    result = _cli(
        fresh_dsn,
        tmp_path,
        PATIENT_PSEUDONYM,
        "--reason",
        "incidental-finding",
        role="dr.house",
    )
    assert result.returncode == 0, result.stderr
    for value in PATIENT.original.values():
        assert value in result.stdout
    assert "recorded as audit event 1" in result.stderr
    (event,) = _events(fresh_dsn)
    assert event["event"] == "110110" and event["action"] == "R"
    assert event["step"] == "re-identified" and event["outcome"] == 0
    assert event["reason"] == "incidental-finding"
    requestors = [p for p in event["participants"] if p["requestor"]]
    assert [p["user"] for p in requestors] == ["dr.house"]
    assert event["objects"] == [{"type": "patient", "id": PATIENT_PSEUDONYM}]
    _assert_no_original(_audit_blob(fresh_dsn))


def test_reidentify_study_as_json(fresh_dsn: str, tmp_path: Path) -> None:
    _record(fresh_dsn, PATIENT, STUDY)
    result = _cli(fresh_dsn, tmp_path, STUDY_PSEUDONYM, "--json", role="admin")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc == {
        "found": True,
        "kind": "study",
        "pseudonym": STUDY_PSEUDONYM,
        "original": STUDY.original,
    }
    (event,) = _events(fresh_dsn)
    assert event["objects"] == [
        {"type": "patient", "id": PATIENT_PSEUDONYM},
        {"type": "study", "uid": STUDY_PSEUDONYM},
    ]
    assert "reason" not in event
    _assert_no_original(_audit_blob(fresh_dsn))


def test_reidentify_not_found_is_audited(fresh_dsn: str, tmp_path: Path) -> None:
    result = _cli(fresh_dsn, tmp_path, "RG0000000000000099", role="admin")
    assert result.returncode == 1 and result.stdout == ""
    assert "no vault entry" in result.stderr
    result = _cli(fresh_dsn, tmp_path, "Müller^Hannelore", "--json", role="admin")
    assert result.returncode == 1 and json.loads(result.stdout) == {"found": False}
    first, second = _events(fresh_dsn)
    assert first["outcome"] == second["outcome"] == 4
    assert first["objects"] == [{"type": "patient", "id": "RG0000000000000099"}]
    assert "objects" not in second  # a name typed by mistake is not copied into the trail
    _assert_no_original(_audit_blob(fresh_dsn))


def test_reidentify_key_errors_exit_2_missing_key_4_and_are_audited(
    fresh_dsn: str, tmp_path: Path
) -> None:
    _record(fresh_dsn, PATIENT)
    result = _cli(fresh_dsn, tmp_path, PATIENT_PSEUDONYM, key=OTHER_KEY, role="admin")
    assert result.returncode == 2 and result.stdout == ""
    assert f"written under vault key {KEY.key_id}" in result.stderr
    assert OTHER_KEY.key_id in result.stderr
    # no key at all: no file under data_dir, no variable -> "missing" (4), the path named
    result = _cli(fresh_dsn, tmp_path, PATIENT_PSEUDONYM, key=None, role="admin")
    assert result.returncode == 4 and result.stdout == ""
    assert "vault key" in result.stderr and "does not exist" in result.stderr
    assert "vault.key" in result.stderr
    # tampered row
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("UPDATE deid_vault SET nonce = %s", (bytes(12),))
    result = _cli(fresh_dsn, tmp_path, PATIENT_PSEUDONYM, role="admin")
    assert result.returncode == 2 and result.stdout == ""
    assert "authentication" in result.stderr
    events = _events(fresh_dsn)
    assert [e["outcome"] for e in events] == [8, 8, 12]
    assert all(e["objects"] == [{"type": "patient", "id": PATIENT_PSEUDONYM}] for e in events)
    _assert_no_original(_audit_blob(fresh_dsn))


def test_reidentify_refuses_bad_user_and_uid_kinds(fresh_dsn: str, tmp_path: Path) -> None:
    _record(fresh_dsn, VaultEntry("uid", "2.25.99", {"uid": "1.2.840.99.1"}))
    result = _cli(fresh_dsn, tmp_path, PATIENT_PSEUDONYM, role="Dr House")
    assert result.returncode == 2 and "database role" in result.stderr
    result = _cli(fresh_dsn, tmp_path, PATIENT_PSEUDONYM, "--reason", "Free text", role="a")
    assert result.returncode == 2 and "--reason" in result.stderr
    assert _events(fresh_dsn) == []  # nothing read, nothing to audit
    result = _cli(fresh_dsn, tmp_path, "2.25.99", role="admin")
    assert result.returncode == 2 and "1.2.840.99.1" not in result.stdout + result.stderr
    (event,) = _events(fresh_dsn)
    assert event["outcome"] == 8 and "objects" not in event
    result = _cli(fresh_dsn, tmp_path, role="admin")  # argparse: pseudonym is required
    assert result.returncode == 2 and "pseudonym" in result.stderr
