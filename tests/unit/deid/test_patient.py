"""The receiver's pseudonym (raw values from the structural check) equals the one
de-identification gives the same instance (parsed dataset), for every encoding.

pydicom's character set files carry patient names in ISO 2022, GB18030, UTF-8, Latin-1 and
more; with Patient ID removed, the key is the decoded name, so a decoding difference between the
two paths shows up as a different pseudonym.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import config
from dicom_nodes.deid.patient import patient_fields, patient_pseudonym, receiver_pseudonym
from dicom_nodes.deid.pseudonyms import Pseudonymiser
from dicom_nodes.spool.inspect import inspect_file

PSEUDO = Pseudonymiser(b"patient-test-secret-0123456789ab")
FILES = sorted(
    Path(p) for p in get_charset_files("*.dcm") if "PatientName" in pydicom.dcmread(p)
)  # two files hold names only inside sequences: no patient name to compare


def _engine_pseudonym(path: Path) -> str:
    ds = pydicom.dcmread(path)
    patient_id, issuer, name, birth, study = patient_fields(ds)
    return PSEUDO.patient(Pseudonymiser.patient_key(patient_id, issuer, name, birth, study))


def _instance(path: Path, syntax: str, **attrs: object) -> Path:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    ds.Modality = "OT"
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("source", FILES, ids=[p.name for p in FILES])
def test_charset_names_give_the_same_pseudonym(source: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(source)
    for keyword in ("PatientID", "IssuerOfPatientID"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    identity = inspect_file(path)
    assert patient_pseudonym(PSEUDO, identity.patient, identity.study_instance_uid) == (
        _engine_pseudonym(path)
    )


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    ExplicitVRBigEndian])  # fmt: skip
@pytest.mark.parametrize(
    "attrs",
    [
        {"PatientID": "12345", "IssuerOfPatientID": "HOSP", "PatientName": "Doe^John"},
        {"PatientID": "12345", "PatientName": "Other^Name"},
        {"PatientName": "Doe^John", "PatientBirthDate": "19700101"},
        {},
    ],
    ids=["id-issuer", "id", "name-birth", "anonymous"],
)
def test_syntaxes_give_the_same_pseudonym(
    syntax: str, attrs: dict[str, str], tmp_path: Path
) -> None:
    path = _instance(tmp_path / "in.dcm", syntax, **attrs)
    identity = inspect_file(path)
    assert patient_pseudonym(PSEUDO, identity.patient, identity.study_instance_uid) == (
        _engine_pseudonym(path)
    )


def test_the_patient_id_decides_not_the_name(tmp_path: Path) -> None:
    a = inspect_file(_instance(tmp_path / "a.dcm", ExplicitVRLittleEndian, PatientID="77",
                               PatientName="A^B"))  # fmt: skip
    b = inspect_file(_instance(tmp_path / "b.dcm", ExplicitVRLittleEndian, PatientID="77",
                               PatientName="C^D"))  # fmt: skip
    c = inspect_file(_instance(tmp_path / "c.dcm", ExplicitVRLittleEndian, PatientID="78",
                               PatientName="A^B"))  # fmt: skip
    pa, pb, pc = (patient_pseudonym(PSEUDO, x.patient, x.study_instance_uid) for x in (a, b, c))
    assert pa == pb != pc


def test_raw_values_are_not_in_the_repr(tmp_path: Path) -> None:
    identity = inspect_file(_instance(tmp_path / "a.dcm", ExplicitVRLittleEndian,
                                      PatientID="SECRET99", PatientName="Hidden^Name"))  # fmt: skip
    assert "SECRET99" not in repr(identity) and "Hidden" not in repr(identity)


def test_the_receivers_function_uses_the_site_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config.load(None, env={"RADIOGATE_NODE__DATA_DIR": str(tmp_path / "var")})
    monkeypatch.delenv("RADIOGATE_DEID_SECRET", raising=False)
    assert receiver_pseudonym(settings) is None  # no secret yet: recorded without, and warned
    secret = bytes(range(32))
    monkeypatch.setenv("RADIOGATE_DEID_SECRET", base64.b64encode(secret).decode())
    pseudonym = receiver_pseudonym(settings)
    assert pseudonym is not None
    paths = [
        _instance(tmp_path / f"{i}.dcm", ExplicitVRLittleEndian, PatientID=pid)
        for i, pid in enumerate(("11", "11", "12"))
    ]
    got = [pseudonym(inspect_file(p)) for p in paths]  # the second one from its cache
    want = [
        Pseudonymiser(secret).patient(
            Pseudonymiser.patient_key(*patient_fields(pydicom.dcmread(p)))
        )
        for p in paths
    ]
    assert got == want and got[0] == got[1] != got[2]
