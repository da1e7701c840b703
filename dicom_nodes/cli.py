"""The ``radiogate`` command line (handlers and logging are configured here, once).

Expected failures of every command end here as one line on standard error and an exit status
of :class:`~dicom_nodes.exitcodes.ExitCode` (the table is in ``docs/cli.md``): a database that
cannot be reached, a missing file, a busy port, a second start, a closed output pipe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import psycopg

import config
from audit import SigningKeyMissingError
from dicom_nodes.deid.secrets import SecretError, SecretMissingError
from dicom_nodes.exitcodes import ExitCode, database_unavailable
from dicom_nodes.logsetup import configure_logging
from dicom_nodes.services.credentials import CredentialsError, CredentialsMissingError
from dicom_nodes.services.lock import AlreadyRunning, held_by
from dicom_nodes.services.orthanc import OrthancStartError
from dicom_nodes.services.ports import PortInUse
from dicom_nodes.services.postgres import ClusterStartError

__all__ = ["main", "version"]


def version() -> str:
    """The installed distribution's version (``pyproject.toml``)."""
    try:
        return metadata.version("radiogate")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="radiogate", description="DICOM-native PACS extension server")
    p.add_argument("-c", "--config", help="TOML configuration file (default: $RADIOGATE_CONFIG)")
    p.add_argument("--version", action="version", version=f"radiogate {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start PostgreSQL, Orthanc and the SCP (Ctrl-C stops all)")
    sub.add_parser("scp", help="run the Storage SCP (receiver processes)")
    sub.add_parser("viewer", help="serve OHIF on loopback, reading the archive over DICOMweb")
    db = sub.add_parser("db", help="database administration")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    dbsub.add_parser("migrate", help="apply pending schema migrations")
    dbsub.add_parser("start", help="start the private PostgreSQL cluster and exit")
    dbsub.add_parser("stop", help="stop the private PostgreSQL cluster")
    from dicom_nodes.pipeline import cli as pipeline_cli

    pipeline_cli.add_parsers(sub)
    cfg = sub.add_parser("config", help="configuration")
    cfgsub = cfg.add_subparsers(dest="config_command", required=True)
    cfgsub.add_parser("check", help="validate the configuration and exit")
    cfgsub.add_parser("show", help="print the effective configuration as JSON")
    cfgsub.add_parser("default", help="print the documented default configuration file")
    from dicom_nodes import audit_cli
    from dicom_nodes.alerts import cli as alert_cli
    from dicom_nodes.deid import cli as deid_cli
    from dicom_nodes.pacs import cli as pacs_cli

    pacs_cli.add_parser(sub)
    audit_cli.add_parser(sub)
    deid_cli.add_parser(sub)
    alert_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``radiogate`` command; return its exit status (:class:`ExitCode`)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        _fail("output closed before the end (broken pipe)")
        return ExitCode.BROKEN_PIPE
    except KeyboardInterrupt:
        _fail("interrupted")
        return ExitCode.INTERRUPTED
    except AlreadyRunning as exc:
        _fail(str(exc))
        return ExitCode.ALREADY_RUNNING
    except PortInUse as exc:
        _fail(str(exc))
        return ExitCode.PORT_IN_USE
    except (OrthancStartError, ClusterStartError) as exc:
        _fail(str(exc))
        return ExitCode.START_FAILED
    except (SecretMissingError, CredentialsMissingError, SigningKeyMissingError) as exc:
        _fail(str(exc))
        return ExitCode.MISSING_FILE
    except (SecretError, CredentialsError) as exc:
        _fail(str(exc))
        return ExitCode.USAGE
    except psycopg.OperationalError as exc:
        _fail(database_unavailable(exc))
        return ExitCode.DATABASE_UNAVAILABLE


def _fail(message: str) -> None:
    with contextlib.suppress(OSError):  # stderr closed too: nothing left to tell
        print(f"radiogate: {message}", file=sys.stderr, flush=True)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config" and args.config_command == "default":
        sys.stdout.write(config.DEFAULT_FILE.read_text())
        return 0
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"radiogate: configuration error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    configure_logging(settings.logging)
    try:
        _choose_accelerator(args.command, settings)
    except config.ConfigError as exc:
        print(f"radiogate: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        if args.config_command == "show":
            print(json.dumps(config.settings_to_dict(settings), indent=2))
        else:
            print("configuration OK")
        return 0
    if args.command == "audit":
        from dicom_nodes import audit_cli

        return audit_cli.run(args, settings)
    if args.command == "viewer":
        return _viewer(settings)
    from dicom_nodes.services.stack import apply_migrations, database_dsn, run_stack

    if args.command == "run":
        return run_stack(settings, args.config)
    if args.command == "scp":
        from dicom_nodes.scp.runner import run_scp

        return run_scp(settings, database_dsn(settings))
    from dicom_nodes.pipeline import cli as pipeline_cli

    if args.command == "reidentify":
        from dicom_nodes.deid import cli as deid_cli

        return deid_cli.main_reidentify(args, settings)
    if args.command == "pacs":
        from dicom_nodes.pacs import cli as pacs_cli

        return pacs_cli.run(args, settings, database_dsn(settings))
    if args.command == "alert":
        from dicom_nodes.alerts import cli as alert_cli

        return alert_cli.run(args, settings, database_dsn(settings))
    if args.command in pipeline_cli.COMMANDS:
        return pipeline_cli.run(args, settings, database_dsn(settings))
    if args.command == "db":
        from dicom_nodes.services.postgres import PrivateCluster

        cluster = PrivateCluster(config.data_path(settings, "postgres"), settings.database.port)
        if args.db_command == "migrate":
            applied = apply_migrations(database_dsn(settings))
            print(
                f"{len(applied)} migrations applied"
                + (": " + ", ".join(applied) if applied else "")
            )
        elif args.db_command == "start":
            cluster.start()
            print(f"PostgreSQL running: {cluster.dsn}")
        else:
            holder = held_by(Path(settings.node.data_dir))
            if holder is not None:
                _fail(
                    f"radiogate run (pid {holder.get('pid', '?')}) uses this cluster; "
                    "stop it (Ctrl-C or SIGTERM) instead"
                )
                return ExitCode.ALREADY_RUNNING
            cluster.stop()
        return 0
    return 2  # pragma: no cover - argparse enforces the choices


def _viewer(settings: config.Settings) -> int:
    from dicom_nodes.services.viewer import serve, viewer_dist

    v, o = settings.viewer, settings.orthanc
    try:
        serve(v.host, v.port, viewer_dist(settings), (o.host, o.http_port))
    except FileNotFoundError as exc:
        _fail(str(exc))
        return ExitCode.MISSING_FILE
    return 0


def _choose_accelerator(command: str, settings: config.Settings) -> None:
    """Apply ``scp.accelerate`` / ``forward.accelerate`` before anything starts: ``on`` with an
    unverified pynetdicom stops here with an error naming the setting; ``auto`` warns once, in
    this process (the receivers it forks inherit the decision and do not warn again)."""
    from dicom_nodes import accelerator

    if command in ("scp", "run", "config"):
        accelerator.enabled(settings.scp.accelerate, "scp.accelerate", warn=command == "scp")
    if command == "worker":
        from dicom_nodes.forward import use_accelerator

        use_accelerator(settings.forward.accelerate)
    elif command in ("run", "config"):
        accelerator.enabled(settings.forward.accelerate, "forward.accelerate", warn=False)


if __name__ == "__main__":
    sys.exit(main())
