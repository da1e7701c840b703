"""The systemd units and the sample configuration under deploy/ stay runnable."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import config
from dicom_nodes.cli import _parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_POLICY = ("Restart", "RestartSec", "RestartSteps", "RestartMaxDelaySec", "KillMode")


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_units_run_radiogate_commands_with_one_restart_policy() -> None:
    units = sorted((DEPLOY / "systemd").glob("radiogate-*.service"))
    assert [u.name for u in units] == [
        "radiogate-analysis.service",
        "radiogate-scp.service",
        "radiogate-sealer.service",
        "radiogate-viewer.service",
        "radiogate-worker.service",
    ]
    policies = set()
    for path in units:
        unit = _unit(path)
        service = unit["Service"]
        argv = shlex.split(service["ExecStart"])
        assert argv[0].endswith("/radiogate")
        _parser().parse_args(argv[1:])  # a real subcommand (exits on a bad one)
        assert service["Environment"] == "RADIOGATE_CONFIG=/etc/radiogate/radiogate.toml"
        assert service["Restart"] == "always"
        assert unit["Unit"]["StartLimitIntervalSec"] == "0"
        policies.add(tuple(service[k] for k in _POLICY))
    assert len(policies) == 1


def test_the_target_starts_every_unit_and_the_workers_split_the_jobs() -> None:
    """The target wants every unit; the two workers take the pipeline's jobs and the analysis
    jobs (docs/operations.md, "The door comes first"), so every queue is served once."""
    units = {u.name for u in (DEPLOY / "systemd").glob("radiogate-*.service")}
    target = _unit(DEPLOY / "systemd" / "radiogate.target")
    assert set(target["Unit"]["Wants"].split()) == units
    jobs = []
    for name in ("radiogate-worker.service", "radiogate-analysis.service"):
        args = _parser().parse_args(
            shlex.split(_unit(DEPLOY / "systemd" / name)["Service"]["ExecStart"])[1:]
        )
        jobs.append(str(args.jobs))
    assert jobs == ["pipeline", "analysis"]


def test_sample_configuration_is_valid_and_absolute() -> None:
    settings = config.load(DEPLOY / "radiogate.toml", env={})
    assert settings.node.data_dir == "/var/lib/radiogate"
    assert settings.audit.keyring == "/var/lib/radiogate/audit/keyring.json"
    assert not settings.orthanc.managed
    assert settings.viewer.dist == "/opt/radiogate/ohif/dist"
