"""``radiogate run``: the whole system on one machine, on loopback, with working defaults.

Order, and what makes it safe to run twice:

1. take the data directory's lock (:mod:`.lock`): a second start in the same data directory
   says who runs there and exits with :attr:`ExitCode.ALREADY_RUNNING`, touching nothing;
2. check every port it will listen on (:mod:`.ports`); a busy one is named with the setting
   that moves it;
3. start (unless configured to use existing ones) a private PostgreSQL cluster — only a
   cluster this run started is stopped at the end — apply the migrations, create the
   secrets, keys and archive credentials that are missing;
4. start and supervise (:mod:`.supervisor`) the private Orthanc (closed: :mod:`.orthanc`), the audit
   sealer, the SCP and the workers — by default (``analysis.separate_worker``) one for the
   pipeline's jobs at normal priority and one for analysis jobs only, in the idle class on
   ``analysis.cpus`` CPUs (:mod:`dicom_nodes.pipeline.pools`); else one for all jobs. A child that
   dies is restarted with back-off, logged, counted (in the lock file) and audited (110100
   Application Activity: a Stop with outcome Serious Failure for the death; the restarted service
   records its own Start, Orthanc's is recorded here with reason ``restart``).

Only SIGINT/SIGTERM stop it; children are stopped in reverse order.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psycopg

import audit
from audit import EventOutcome
from config import Settings, data_path
from dicom_nodes.audit_events import application_event
from dicom_nodes.db.migrate import migrate
from dicom_nodes.lifecycle import config_hash, record_start, record_stop
from dicom_nodes.services.credentials import ensure_credentials
from dicom_nodes.services.lock import StackLock
from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer
from dicom_nodes.services.ports import PortUse, check_ports
from dicom_nodes.services.postgres import PrivateCluster
from dicom_nodes.services.supervisor import ProcessService, Supervised
from dicom_nodes.services.viewer import viewer_dist

__all__ = ["archive_peers", "database_dsn", "planned_ports", "run_stack", "worker_commands"]

LOGGER = logging.getLogger(__name__)

_POLL = 0.5


def database_dsn(settings: Settings) -> str:
    """The configured DSN, or the private cluster's."""
    if settings.database.dsn:
        return settings.database.dsn
    return _cluster(settings).dsn


def _cluster(settings: Settings) -> PrivateCluster:
    return PrivateCluster(data_path(settings, "postgres"), settings.database.port)


def apply_migrations(dsn: str) -> list[str]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return migrate(conn)


def _loopback_if_wildcard(host: str) -> str:
    try:
        address = ipaddress.ip_address(host) if host else None
    except ValueError:
        return host  # a host name
    if address is None or address.is_unspecified:
        return "::1" if address is not None and address.version == 6 else "127.0.0.1"
    return host


def archive_peers(settings: Settings) -> list[OrthancPeer]:
    """The ``DicomModalities`` entries of the managed Orthanc: Radiogate as Orthanc must know it.

    Orthanc accepts an N-ACTION (Storage Commitment, PS3.4 J.3.2) only from a calling AE it
    knows, and sends the N-EVENT-REPORT (J.3.3) on a new association to that entry's host and
    port: so each calling AE our destinations use towards this Orthanc gets an entry pointing
    at ``radiogate scp`` (normally the one entry for ``scp.ae_title``, which the configuration
    check requires of commitment destinations while ``scp.require_called_aet`` holds). A
    wildcard listen address is reached on loopback."""
    scp, archive = settings.scp, settings.orthanc
    host = _loopback_if_wildcard(scp.host)
    titles = [scp.ae_title] + [
        d.calling_ae
        for d in settings.destinations
        if d.kind == "dimse" and d.ae_title == archive.ae_title and d.port == archive.dicom_port
    ]
    unique = list(dict.fromkeys(t.strip() for t in titles))
    return [
        OrthancPeer("radiogate" if n == 0 else f"radiogate-{n}", title, host, scp.port)
        for n, title in enumerate(unique)
    ]


def worker_commands(settings: Settings) -> list[tuple[str, list[str]]]:
    """The worker services ``radiogate run`` supervises: (name, ``radiogate`` arguments)."""
    if not settings.analysis.separate_worker:
        return [("worker", ["worker"])]
    return [
        ("worker", ["worker", "--jobs", "pipeline"]),
        ("analysis-worker", ["worker", "--jobs", "analysis"]),
    ]


def planned_ports(settings: Settings, *, cluster_running: bool = False) -> list[PortUse]:
    """Every port ``radiogate run`` will listen on, with the setting that chooses it."""
    uses: list[PortUse] = []
    if not settings.database.dsn and not cluster_running:
        uses.append(PortUse("database.port", settings.database.port))
    if settings.orthanc.managed:
        # Orthanc 1.10.1 listens on every interface, whatever orthanc.host says.
        uses.append(PortUse("orthanc.http_port", settings.orthanc.http_port, "0.0.0.0"))  # noqa: S104
        uses.append(PortUse("orthanc.dicom_port", settings.orthanc.dicom_port, "0.0.0.0"))  # noqa: S104
    if settings.viewer.enabled:
        uses.append(PortUse("viewer.port", settings.viewer.port, settings.viewer.host))
    uses.append(PortUse("scp.port", settings.scp.port, settings.scp.host))
    uses.append(PortUse("scp.metrics_port", settings.scp.metrics_port))
    uses.append(PortUse("worker.metrics_port", settings.worker.metrics_port))
    return uses


@dataclass
class _OrthancService:
    """:class:`ManagedOrthanc` as a supervised service."""

    orthanc: ManagedOrthanc
    name: str = "orthanc"

    @property
    def pid(self) -> int | None:
        return self.orthanc.pid

    def start(self) -> None:
        self.orthanc.start()

    def running(self) -> bool:
        return self.orthanc.running()

    def exit_status(self) -> int | None:
        return self.orthanc.exit_status()

    def stop(self) -> None:
        self.orthanc.stop()


class _Auditor:
    """Records what the services cannot record themselves; never raises (the database may be
    what is down). The SCP, worker and sealer record their own start and stop
    (:mod:`dicom_nodes.lifecycle`); here: Orthanc's start and stop, and any child's death."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.node = settings.node.name
        self.dsn = dsn
        self.config_hash = config_hash(settings)

    def __call__(self, name: str, what: str, restarts: int) -> None:
        if what == "died":
            event = application_event(
                self.node,
                name,
                started=False,
                config_hash=self.config_hash,
                outcome=EventOutcome.SERIOUS_FAILURE,
                reason="exited-unexpectedly",
            )
        elif name == "orthanc":
            event = application_event(
                self.node,
                name,
                started=what == "started",
                config_hash=self.config_hash,
                reason="restart" if what == "started" and restarts else None,
            )
        else:
            return
        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                audit.enqueue(conn, event)
        except psycopg.Error as exc:
            LOGGER.warning("audit event %s not recorded: %s", event.step.value, type(exc).__name__)


def run_stack(settings: Settings, config_file: str | None) -> int:
    """Run PostgreSQL, Orthanc, the sealer, the SCP and the worker until a signal.

    Raises :class:`~dicom_nodes.services.lock.AlreadyRunning`,
    :class:`~dicom_nodes.services.ports.PortInUse`, or a start error of PostgreSQL or Orthanc
    (the CLI turns each into one line and its exit code)."""
    data_dir = Path(settings.node.data_dir)
    cluster = None if settings.database.dsn else _cluster(settings)
    lock = StackLock(data_dir)
    info: dict[str, object] = {"pid": os.getpid(), "data_dir": str(data_dir)}
    lock.acquire(info)  # first: a second start looks at nothing else
    try:
        ports = planned_ports(settings, cluster_running=cluster is not None and _running(cluster))
        info["ports"] = {u.setting: u.port for u in ports if u.port}
        lock.update(info)
        check_ports(ports)
        with _signals() as stop:
            return _Stack(settings, config_file, cluster, lock, info).run(stop)
    finally:
        lock.release()


def _running(cluster: PrivateCluster) -> bool:
    return cluster.initialised() and cluster.running()


class _StopFlag:
    def __init__(self) -> None:
        self.set = False


@contextlib.contextmanager
def _signals() -> Iterator[_StopFlag]:
    flag = _StopFlag()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        flag.set = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class _Stack:
    def __init__(
        self,
        settings: Settings,
        config_file: str | None,
        cluster: PrivateCluster | None,
        lock: StackLock,
        info: dict[str, object],
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self.cluster = cluster
        self.cluster_started = False
        self.lock = lock
        self.info = info
        self.children: list[Supervised] = []
        self.lines: list[str] = []
        self.recorded_start = False

    def run(self, stop: _StopFlag) -> int:
        try:
            self._start()
            print(
                "\nRadiogate is running:\n  "
                + "\n  ".join(self.lines)
                + "\nPress Ctrl-C to stop.\n",
                flush=True,
            )
            while not stop.set:
                for child in self.children:
                    if stop.set:
                        break
                    before = child.restarts
                    child.check()
                    if child.restarts != before:
                        self._record_restarts()
                time.sleep(_POLL)
            return 0
        finally:
            self._stop()

    def _start(self) -> None:
        s = self.settings
        if self.cluster is not None:
            self.cluster_started = self.cluster.start()
            how = "private cluster" if self.cluster_started else "private cluster, already running"
            self.lines.append(
                f"PostgreSQL   127.0.0.1:{self.cluster.port}  ({how} in {self.cluster.data_dir};"
                f" log {self.cluster.log_file})"
            )
        else:
            self.lines.append("PostgreSQL   configured DSN (database.dsn)")
        dsn = database_dsn(s)
        applied = apply_migrations(dsn)
        self.lines.append(f"schema       up to date ({len(applied)} migrations applied now)")
        self.recorded_start = record_start(dsn, s, "stack")
        self._secrets()
        env = dict(os.environ)
        if self.config_file:
            env["RADIOGATE_CONFIG"] = str(Path(self.config_file).absolute())
        env["RADIOGATE_SUPERVISOR_PID"] = str(os.getpid())  # children stop if it is gone
        auditor = _Auditor(s, dsn)
        o = s.orthanc
        if o.managed:
            peers = archive_peers(s)
            orthanc = ManagedOrthanc(
                storage_dir=data_path(s, o.storage),
                http_port=o.http_port,
                dicom_port=o.dicom_port,
                ae_title=o.ae_title,
                host=o.host,
                executable=o.executable,
                peers=peers,
                credentials_file=data_path(s, o.credentials_file),
                dicomweb=s.viewer.enabled,
            )
            if s.pacs.plugin:
                from dicom_nodes.services.pacs import plugin_config, user_tokens

                orthanc.extra = plugin_config(s, dsn=dsn, config_file=self.config_file,
                                              service_user=orthanc.credentials.user)  # fmt: skip
                orthanc.users = user_tokens(s)
            self._supervise(_OrthancService(orthanc), auditor)
            allowed = ", ".join(f"{p.ae_title}@{p.host}" for p in peers)
            self.lines.append(
                f"Orthanc      http://{o.host}:{o.http_port} (loopback only, user "
                f"{orthanc.credentials.user}, password in {orthanc.credentials_path})"
                f"  DICOM {o.ae_title}@{o.host}:{o.dicom_port} (accepts {allowed} only;"
                f" log {orthanc.log_path})"
            )
        else:
            self.lines.append(f"Orthanc      http://{o.host}:{o.http_port} (not managed)")
        cli = [sys.executable, "-m", "dicom_nodes.cli"]
        self._viewer(cli, env, auditor)
        # Chains the events the SCP and workers enqueue, and signs checkpoints.
        self._supervise(
            ProcessService("sealer", [*cli, "audit", "checkpoint", "--watch"], env), auditor
        )
        self.lines.append(
            f"audit        sealer + signed checkpoints -> {data_path(s, s.audit.checkpoint_file)}"
        )
        if s.pacs.plugin and o.managed:
            # Chains the access events the plugin journals (reads survive a database outage).
            self._supervise(ProcessService("pacs", [*cli, "pacs", "record"], env), auditor)
            self.lines.append(
                f"PACS         /radiogate/ routes and Explorer extension in Orthanc; access"
                f" journal {s.pacs.journal_dir}"
            )
        self._supervise(ProcessService("scp", [*cli, "scp"], env), auditor)
        for name, command in worker_commands(s):
            self._supervise(ProcessService(name, [*cli, *command], env), auditor)
        sc = s.scp
        self.lines.append(
            f"Radiogate    SCP {sc.ae_title}@{sc.host}:{sc.port}"
            f"{' (TLS)' if sc.tls.enabled else ''}, spool {data_path(s, s.spool.path)}"
            + (f"; metrics http://127.0.0.1:{sc.metrics_port}/metrics" if sc.metrics_port else "")
        )
        metrics = s.worker.metrics_port
        self.lines.append(
            "Worker       routes: "
            + ", ".join(r.name for r in s.routes)
            + (f"; metrics http://127.0.0.1:{metrics}/metrics" if metrics else "")
        )
        a = s.analysis
        self.lines.append(
            f"analysis     worker of its own: idle class, niceness {a.nice}, "
            f"{a.cpus or 'any'} CPU(s), {a.threads or 'default'} thread(s) per library"
            if a.separate_worker
            else "analysis     in the worker (analysis.separate_worker = false)"
        )
        self.lines.append(
            f"logs         this terminal (SCP, worker, sealer); lock {self.lock.path}"
            f" (pid {os.getpid()})"
        )
        self._record_restarts()

    def _viewer(self, cli: list[str], env: dict[str, str], auditor: _Auditor) -> None:
        """OHIF next to the archive (:mod:`.viewer`), when enabled and installed."""
        v = self.settings.viewer
        if not v.enabled:
            return
        dist = viewer_dist(self.settings)
        if not (dist / "index.html").is_file():
            self.lines.append(f"viewer       not served: no OHIF build in {dist} (make ohif)")
            return
        self._supervise(ProcessService("viewer", [*cli, "viewer"], env), auditor)
        self.lines.append(
            f"viewer       OHIF http://{v.host}:{v.port}/ (sign in with an archive user;"
            " DICOMweb of the archive at /dicom-web/)"
        )

    def _secrets(self) -> None:
        s = self.settings
        key_path = data_path(s, s.audit.signing_key)
        if not key_path.exists():
            signer = audit.generate_key(key_path, data_path(s, s.audit.keyring))
            self.lines.append(f"audit        signing key {signer.key_id} generated in {key_path}")
        from dicom_nodes.deid.secrets import ensure_secrets

        for created in ensure_secrets(s):
            self.lines.append(f"deid         new secret {created} (keep it, never commit it)")
        if s.orthanc.managed:
            path = data_path(s, s.orthanc.credentials_file)
            _creds, created_creds = ensure_credentials(path)
            if created_creds:
                self.lines.append(
                    f"Orthanc      new REST credentials {path} (keep them, never commit them)"
                )
        profiles = sorted(
            {st.partition(":")[2] for r in s.routes for st in r.steps if st.startswith("deid")}
        )
        if profiles:
            self.lines.append(
                f"deid         routes de-identify with profile(s) {', '.join(profiles)}"
            )

    def _supervise(self, service: ProcessService | _OrthancService, auditor: _Auditor) -> None:
        child = Supervised(service, on_event=auditor)
        child.start()
        self.children.append(child)

    def _record_restarts(self) -> None:
        self.info["services"] = {
            c.name: {"pid": c.service.pid, "restarts": c.restarts} for c in self.children
        }
        self.lock.update(self.info)

    def _stop(self) -> None:
        print("stopping ...", flush=True)
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception:
                LOGGER.exception("stopping %s failed", child.name)
        if self.recorded_start:
            record_stop(database_dsn(self.settings), self.settings, "stack")
        if self.children or self.recorded_start:
            # Chain the stop events now rather than at the next start.
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(database_dsn(self.settings), connect_timeout=3) as conn,
            ):
                while audit.seal(conn):
                    pass
        if self.cluster is not None and self.cluster_started:
            self.cluster.stop()
        print("stopped.", flush=True)
