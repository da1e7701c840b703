"""The backup and restore drill of ``docs/operations.md``, performed for real.

Back up (database with ``pg_dump``, files with ``tar``), wipe the data directory, restore into
a fresh cluster: the audit trail verifies intact and ``radiogate reidentify`` still finds the
patient behind the archive's pseudonym, and the archive still holds the images.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydicom import dcmread

from dicom_nodes.services.postgres import PrivateCluster, find_pg_bin
from tests.support.data import extract_ct
from tests.support.stack import Stack, make_site

pytestmark = pytest.mark.timeout(600)

# What docs/operations.md says to back up besides the database: everything under the data
# directory except the cluster itself and the lock.
_NOT_FILES = ("var/postgres", "var/postgres.log", "var/radiogate.lock")


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack(make_site())
    yield s
    s.remove()


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.name.startswith(_NOT_FILES) else info


def test_backup_wipe_restore_verify_and_reidentify(
    stack: Stack, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ct = extract_ct(tmp_path_factory.mktemp("ct"))[:3]
    original_patient = str(dcmread(ct[0]).PatientID)
    stack.start()
    stack.send(ct)
    stack.wait_archived(3)
    (patient_id,) = stack.orthanc_get("/patients")
    pseudonym = stack.orthanc_get(f"/patients/{patient_id}")["MainDicomTags"]["PatientID"]
    assert pseudonym and pseudonym != original_patient
    time.sleep(2.0)  # the sealer chains and signs what the pipeline recorded
    assert stack.stop() == 0

    # Back up: the database (cluster up on its own, nothing writing), then the files.
    backup = tmp_path / "backup"
    backup.mkdir()
    assert stack.radiogate("db", "start").returncode == 0
    pg = find_pg_bin()
    subprocess.run(
        [str(pg / "pg_dump"), "-h", "127.0.0.1", "-p", str(stack.db_port), "-U", "radiogate",
         "-d", "radiogate", "-Fc", "-f", str(backup / "radiogate.dump")],
        check=True, capture_output=True,
    )  # fmt: skip
    assert stack.radiogate("db", "stop").returncode == 0
    with tarfile.open(backup / "files.tar.gz", "w:gz") as tar:
        tar.add(stack.data_dir, arcname="var", filter=_tar_filter)

    # Wipe.
    shutil.rmtree(stack.data_dir)

    # Restore: files, a fresh cluster, the role the grants name, the dump.
    with tarfile.open(backup / "files.tar.gz") as tar:
        tar.extractall(stack.site, filter="tar")
    assert stack.radiogate("db", "start").returncode == 0
    cluster = PrivateCluster(stack.data_dir / "postgres", stack.db_port)
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE radiogate_app NOLOGIN")
    subprocess.run(
        [str(pg / "pg_restore"), "-h", "127.0.0.1", "-p", str(stack.db_port), "-U", "radiogate",
         "-d", "radiogate", "--no-owner", "--exit-on-error", str(backup / "radiogate.dump")],
        check=True, capture_output=True,
    )  # fmt: skip

    verified = stack.radiogate("audit", "verify", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout
    found = stack.radiogate("reidentify", pseudonym, "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert original_patient in json.dumps(json.loads(found.stdout))
    assert stack.radiogate("db", "stop").returncode == 0

    # The whole stack starts on the restored data: nothing to migrate, the archive is whole,
    # and the trail (with the re-identification in it) still verifies.
    stack.start()
    assert "schema       up to date (0 migrations applied now)" in stack.log()
    assert stack.archived() == 3
    assert stack.stop() == 0
    assert stack.radiogate("db", "start").returncode == 0
    again = stack.radiogate("audit", "verify", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
