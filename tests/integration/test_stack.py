"""``radiogate run`` as a person runs it: a closed archive, one stack per data directory,
busy ports named, dead children restarted, commands that work from any directory and fail
with one line and a documented exit status."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from dicom_nodes.exitcodes import ExitCode
from dicom_nodes.services.postgres import PrivateCluster
from tests.support import free_port, wait_for_echo
from tests.support.data import extract_ct
from tests.support.stack import Stack, make_site, radiogate

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return extract_ct(tmp_path_factory.mktemp("ct"))


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(make_site()).start()
    yield s
    s.remove()


def _ae(calling: str) -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.network_timeout = 10
    return ae


def _try_store_and_find(stack: Stack, calling: str, source: str, path: Path) -> str:
    """C-STORE *path* and C-FIND studies as *calling* from *source*: 'refused' or statuses."""
    assoc = _ae(calling).associate(
        "127.0.0.1", stack.dicom_port, ae_title="ORTHANC", bind_address=(source, 0)
    )
    if not assoc.is_established:
        return "refused"
    try:
        store = assoc.send_c_store(dcmread(path))
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        found = [
            (status.Status, identifier)
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
            if status
        ]
        return f"store {getattr(store, 'Status', None)} find {found}"
    finally:
        assoc.release()


def test_archive_is_closed_to_everyone_but_radiogate(stack: Stack, ct: list[Path]) -> None:
    before = stack.archived()
    # Another source address (127.0.0.2 is loopback too): neither a rogue AE nor Radiogate's
    # own AE title gets an association, so nothing is stored and nothing can be queried.
    assert _try_store_and_find(stack, "ROGUE", "127.0.0.2", ct[0]) == "refused"
    assert _try_store_and_find(stack, "RADIOGATE", "127.0.0.2", ct[0]) == "refused"
    # The right address with a wrong AE title, or a wrong called AE title: refused too.
    assert _try_store_and_find(stack, "ROGUE", "127.0.0.1", ct[0]) == "refused"
    assert stack.archived() == before
    # HTTP: no credentials, wrong credentials -> 401; the credentials file is 0600.
    for auth in (None, "Basic cmFkaW9nYXRlOndyb25n"):
        req = urllib.request.Request(f"http://127.0.0.1:{stack.http_port}/instances")
        if auth:
            req.add_header("Authorization", auth)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
    creds = stack.data_dir / "orthanc" / "http-credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE((stack.data_dir / "orthanc" / "orthanc.json").stat().st_mode) == 0o600
    assert f"password in {creds}" in stack.log()
    # Radiogate's own forwarding (calling AE RADIOGATE from 127.0.0.1) still works.
    stack.send(ct[:3])
    stack.wait_archived(before + 3)


def test_the_viewer_reads_the_archive_as_the_signed_in_user(stack: Stack, ct: list[Path]) -> None:
    """OHIF is served next to the archive; pages and DICOMweb need an archive user, and
    DICOMweb answers with what the archive holds."""
    from dicom_nodes.services.credentials import load_credentials
    from dicom_nodes.services.viewer import default_dist

    if not (default_dist() / "index.html").is_file():
        assert "no OHIF build" in stack.log()
        pytest.fail("OHIF is not installed: make ohif")
    stack.send(ct[:1])
    stack.wait_archived(1)
    base = f"http://127.0.0.1:{stack.viewer_port}"
    creds = load_credentials(stack.data_dir / "orthanc" / "http-credentials")
    for path in ("/", "/viewer?StudyInstanceUIDs=1.2.3", "/dicom-web/studies"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}{path}", timeout=10)
        assert err.value.code == 401, path

    def get(path: str) -> tuple[str, bytes]:
        req = urllib.request.Request(f"{base}{path}")
        req.add_header("Authorization", creds.authorization)
        req.add_header("Accept", "application/dicom+json")
        with urllib.request.urlopen(req, timeout=30) as rsp:
            return str(rsp.headers["Content-Type"]), bytes(rsp.read())

    kind, page = get("/viewer?StudyInstanceUIDs=1.2.3")  # an OHIF route: the app's page
    assert kind.startswith("text/html") and b"app-config.js" in page
    kind, config = get("/app-config.js")
    assert b"'/dicom-web'" in config
    kind, studies = get("/dicom-web/studies")
    assert kind.startswith("application/dicom+json")
    archived = {
        s["MainDicomTags"]["StudyInstanceUID"] for s in stack.orthanc_get("/studies?expand")
    }
    assert {s["0020000D"]["Value"][0] for s in json.loads(studies)} == archived


def test_second_start_is_refused_and_the_first_stack_is_unharmed(
    stack: Stack, ct: list[Path]
) -> None:
    info = stack.lock_info()
    second = radiogate("-c", str(stack.config_file), "run", cwd=Path("/"), timeout=60)
    assert second.returncode == ExitCode.ALREADY_RUNNING, second.stderr
    line = second.stderr.strip()
    assert "Traceback" not in line and len(line.splitlines()) == 1
    assert f"already running (pid {info['pid']}" in line and f"scp.port {stack.scp_port}" in line
    assert stack.lock_info() == info  # nothing touched: same pids, same restarts
    before = stack.archived()
    stack.send(ct[3:5])
    stack.wait_archived(before + 2)
    # The cluster belongs to the running stack: `db stop` refuses instead of breaking it.
    stopped = stack.radiogate("db", "stop")
    assert stopped.returncode == ExitCode.ALREADY_RUNNING
    assert f"pid {info['pid']}" in stopped.stderr


@pytest.mark.parametrize("name", ["worker", "scp", "orthanc", "sealer"])
def test_a_killed_child_is_restarted_and_work_goes_on(
    stack: Stack, ct: list[Path], name: str
) -> None:
    pid = stack.service_pid(name)
    restarts = stack.restarts(name)
    os.kill(pid, 9)
    deadline = time.monotonic() + 60
    while stack.restarts(name) == restarts or stack.service_pid(name) == pid:
        assert time.monotonic() < deadline, stack.log()[-3000:]
        time.sleep(0.3)
    # Whatever the dead child had started (the SCP's receivers) went with it: its process
    # group is empty, so no orphan keeps the port.
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert f"{name} exited (status -9); restarting" in stack.log()
    before = stack.archived()
    index = {"worker": 5, "scp": 6, "orthanc": 7, "sealer": 8}[name]
    wait_for_echo(stack.scp_port, "RADIOGATE", timeout=60)
    stack.send([ct[index]])
    stack.wait_archived(before + 1)
    query = stack.radiogate("audit", "query", "--step", "application-stopped", "--format", "jsonl")
    assert query.returncode == 0, query.stderr
    deaths = [
        e
        for e in (json.loads(line)["event"] for line in query.stdout.splitlines())
        if e.get("reason") == "exited-unexpectedly"
        and e["participants"][0]["user"] == f"radiogate-{name}"
    ]
    assert len(deaths) == 1 and deaths[0]["outcome"] == 8
    started = stack.radiogate(
        "audit", "query", "--step", "application-started", "--format", "jsonl"
    )
    starts = [
        e
        for e in (json.loads(line)["event"] for line in started.stdout.splitlines())
        if e["participants"][0]["user"] == f"radiogate-{name}"
    ]
    assert len(starts) == 2  # the first start and the restart
    if name == "orthanc":
        assert starts[-1].get("reason") == "restart"


def test_analysis_has_a_worker_of_its_own_idle_on_the_last_cpu(stack: Stack) -> None:
    """What ``make run`` starts by default: the pipeline worker at normal priority, the analysis
    worker (every thread) in the idle class at niceness 10 on the highest-numbered CPU."""
    analysis, pipeline = stack.service_pid("analysis-worker"), stack.service_pid("worker")
    argv = Path(f"/proc/{analysis}/cmdline").read_bytes().split(b"\0")
    assert argv[-3:-1] == [b"--jobs", b"analysis"]
    allowed = sorted(os.sched_getaffinity(0))
    for tid in (int(t) for t in os.listdir(f"/proc/{analysis}/task")):
        assert os.sched_getscheduler(tid) == os.SCHED_IDLE, tid
        assert os.getpriority(os.PRIO_PROCESS, tid) == 10, tid
        assert sorted(os.sched_getaffinity(tid)) == allowed[-1:], tid
    assert os.sched_getscheduler(pipeline) == os.SCHED_OTHER
    assert os.getpriority(os.PRIO_PROCESS, pipeline) == 0
    assert sorted(os.sched_getaffinity(pipeline)) == allowed


def test_audit_verify_from_any_directory_and_a_missing_keyring(
    stack: Stack, tmp_path: Path
) -> None:
    time.sleep(2.0)  # a checkpoint covers the events so far (audit.checkpoint_seconds = 1)
    ok = stack.radiogate("audit", "verify", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout
    keyring = stack.data_dir / "audit" / "keyring.json"
    moved = keyring.with_name("keyring.json.away")
    keyring.rename(moved)
    try:
        missing = stack.radiogate("audit", "verify", cwd=tmp_path)
    finally:
        moved.rename(keyring)
    assert missing.returncode == ExitCode.MISSING_FILE
    assert f"keyring {keyring} does not exist" in missing.stderr
    assert "DAMAGED" not in missing.stdout + missing.stderr
    assert "Traceback" not in missing.stderr


def test_closed_output_pipe_is_one_line(stack: Stack) -> None:
    read, write = os.pipe()
    os.close(read)  # like `| head` that has already exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dicom_nodes.cli", "-c", str(stack.config_file),
             "audit", "query"],
            stdout=write, stderr=subprocess.PIPE, text=True, check=False, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    assert result.returncode == ExitCode.BROKEN_PIPE
    assert result.stderr.strip() == "radiogate: output closed before the end (broken pipe)"


def test_busy_port_is_named_with_its_setting() -> None:
    s = Stack(make_site())
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", s.http_port))
            busy.listen()
            s.write_config()
            result = s.radiogate("run")
        assert result.returncode == ExitCode.PORT_IN_USE, result.stdout + result.stderr
        assert result.stderr.strip() == (
            f"radiogate: port {s.http_port} is in use: set orthanc.http_port "
            "or RADIOGATE_ORTHANC__HTTP_PORT"
        )
        assert not (s.data_dir / "postgres").exists()  # nothing was started
        # The same port configured twice is named too.
        s.config_file.write_text(
            s.config_file.read_text().replace(f"port = {s.scp_port}", f"port = {s.db_port}")
        )
        twice = s.radiogate("run")
        assert twice.returncode == ExitCode.PORT_IN_USE
        assert f"port {s.db_port} is configured twice (database.port and scp.port)" in (
            twice.stderr
        )
    finally:
        s.remove()


def test_run_never_stops_a_cluster_it_did_not_start(ct: list[Path]) -> None:
    s = Stack(make_site())
    try:
        s.write_config()
        started = s.radiogate("db", "start")
        assert started.returncode == 0, started.stderr
        s.start()
        assert "already running" in s.log()
        assert s.stop() == 0
        cluster = PrivateCluster(s.data_dir / "postgres", s.db_port)
        assert cluster.running()  # still there for whoever started it
        assert s.radiogate("db", "stop").returncode == 0
        assert not cluster.running()
    finally:
        s.remove()


def test_database_down_is_one_line_for_every_command(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[database]\ndsn = "host=127.0.0.1 port={free_port()} dbname=x user=x"\n')
    (tmp_path / "var" / "audit").mkdir(parents=True)
    (tmp_path / "var" / "audit" / "keyring.json").write_text('{"keys": []}')
    for args in (
        ["audit", "query"],
        ["audit", "verify"],
        ["audit", "seal"],
        ["db", "migrate"],
        ["status"],
        ["job", "list"],
    ):
        result = radiogate("-c", str(cfg), *args, cwd=Path("/"))
        assert result.returncode == ExitCode.DATABASE_UNAVAILABLE, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert "database" in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    # config commands do not need the database at all.
    assert radiogate("-c", str(cfg), "config", "check").returncode == 0


def test_version() -> None:
    result = radiogate("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("radiogate ")
