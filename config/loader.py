"""Load :class:`~config.schema.Settings` from TOML plus ``RADIOGATE_*`` environment overrides.

Precedence, lowest first: defaults in :mod:`config.schema`, the TOML file, the environment.
Environment variables name a key by its path with ``__`` between levels, e.g.
``RADIOGATE_SCP__PORT=11113`` or ``RADIOGATE_SCP__TLS__ENABLED=true``; lists are
comma-separated. ``RADIOGATE_CONFIG`` names the TOML file.

Unknown keys and values of the wrong type or range stop start-up with :class:`ConfigError`,
whose message names the key and what was expected.

Paths are made absolute here, once (:func:`resolve_paths`): a relative ``node.data_dir`` against
the configuration file's directory (no file: the source checkout that holds ``config/``), and
the state files below it against ``node.data_dir``; so every command finds the same data
whatever the working directory.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from config.routes import DestinationSettings
from config.schema import Settings

__all__ = ["ENV_PREFIX", "ConfigError", "load", "project_dir", "resolve_paths", "settings_to_dict"]

ENV_PREFIX = "RADIOGATE_"
_CONFIG_ENV = "RADIOGATE_CONFIG"
_NOT_SETTINGS = frozenset(
    {_CONFIG_ENV, "RADIOGATE_DEID_SECRET", "RADIOGATE_DEID_VAULT_KEY", "RADIOGATE_SUPERVISOR_PID"}
)
"""Variables with the prefix that are not settings: the config file, the deid secrets and the
pid of the ``radiogate run`` a child must not outlive."""

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key is unknown or its value is invalid (not retryable)."""


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from *path* (or ``$RADIOGATE_CONFIG``) and the environment, validated."""
    environ = os.environ if env is None else env
    raw: dict[str, Any] = {}
    file_name = path if path is not None else environ.get(_CONFIG_ENV)
    base: Path | None = None
    if file_name:
        file_path = Path(os.path.abspath(file_name))
        base = file_path.parent
        try:
            with file_path.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {file_path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {file_path} is not valid TOML: {exc}") from exc
    _apply_env(raw, environ)
    settings = resolve_paths(_build(Settings, raw, ""), base)
    _check_semantics(settings)
    return settings


def project_dir() -> Path | None:
    """The source checkout this package runs from (holding ``pyproject.toml``), or None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def resolve_paths(settings: Settings, config_dir: Path | None) -> Settings:
    """*settings* with absolute paths: ``node.data_dir`` against *config_dir* (None: the source
    checkout), state files against ``node.data_dir``, TLS files against *config_dir*."""
    base = config_dir if config_dir is not None else project_dir()
    data_dir = Path(settings.node.data_dir)
    if not data_dir.is_absolute():
        if base is None:
            raise ConfigError(
                f"node.data_dir: {settings.node.data_dir!r} is relative and there is no "
                "configuration file to resolve it against; set an absolute node.data_dir "
                "(RADIOGATE_NODE__DATA_DIR) or give a file with -c / RADIOGATE_CONFIG"
            )
        data_dir = base / data_dir
    data_dir = Path(os.path.normpath(data_dir))

    def under_data(value: str) -> str:
        return value if not value or Path(value).is_absolute() else str(data_dir / value)

    def under_config(value: str) -> str:
        if not value or Path(value).is_absolute() or config_dir is None:
            return value
        return str(config_dir / value)

    tls = settings.scp.tls
    a = settings.audit
    d = settings.deid
    return dataclasses.replace(
        settings,
        node=dataclasses.replace(settings.node, data_dir=str(data_dir)),
        spool=dataclasses.replace(settings.spool, path=under_data(settings.spool.path)),
        orthanc=dataclasses.replace(
            settings.orthanc,
            storage=under_data(settings.orthanc.storage),
            credentials_file=under_data(settings.orthanc.credentials_file),
        ),
        audit=dataclasses.replace(
            a,
            checkpoint_file=under_data(a.checkpoint_file),
            signing_key=under_data(a.signing_key),
            keyring=under_data(a.keyring),
        ),
        deid=dataclasses.replace(
            d, secret_file=under_data(d.secret_file), vault_key_file=under_data(d.vault_key_file)
        ),
        pacs=dataclasses.replace(
            settings.pacs,
            journal_dir=under_data(settings.pacs.journal_dir),
            user=[
                dataclasses.replace(u, token_file=under_data(u.token_file))
                for u in settings.pacs.user
            ],
        ),
        destinations=[
            dataclasses.replace(dest, credentials_file=under_data(dest.credentials_file))
            for dest in settings.destinations
        ],
        scp=dataclasses.replace(
            settings.scp,
            tls=dataclasses.replace(
                tls,
                certificate=under_config(tls.certificate),
                private_key=under_config(tls.private_key),
                ca_certificates=under_config(tls.ca_certificates),
            ),
        ),
    )


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """Plain-dict view of *settings* (enums as strings), e.g. for ``radiogate config show``."""

    def conv(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {k: conv(v) for k, v in value.items()}
        if isinstance(value, list):
            return [conv(v) for v in value]
        return value

    return typing.cast(dict[str, Any], conv(dataclasses.asdict(settings)))


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(f"environment variable {name}: empty key segment")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: {part} is not a table")
            node = child
        node[parts[-1]] = _EnvString(value)


class _EnvString(str):
    """A value that came from the environment and still needs converting to the field type."""

    __slots__ = ()


def _build(cls: type[T], raw: Any, prefix: str) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'configuration'}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"unknown configuration key {key!r}; known here: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        kwargs[name] = _convert(hints[name], value, key)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, f"{key}.")
    origin = typing.get_origin(tp)
    if origin is dict:
        _key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict) or isinstance(value, _EnvString):
            raise ConfigError(f"{key}: expected a table")
        return {str(k): _convert(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if dataclasses.is_dataclass(item_tp):
            if not isinstance(value, list):
                raise ConfigError(f"{key}: expected an array of tables ([[{key}]])")
            return [
                _build(typing.cast(type, item_tp), v, f"{key}[{i}].") for i, v in enumerate(value)
            ]
        if isinstance(value, _EnvString):
            items: list[Any] = [_EnvString(v.strip()) for v in value.split(",") if v.strip()]
        elif isinstance(value, list):
            items = value
        else:
            raise ConfigError(f"{key}: expected a list of {item_tp.__name__}, got {value!r}")
        return [_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(items)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported union type")  # pragma: no cover - schema guard
    if isinstance(tp, type) and issubclass(tp, Enum):
        allowed = ", ".join(str(m.value) for m in tp)
        try:
            return tp(str(value).upper() if isinstance(value, str) else value)
        except ValueError:
            raise ConfigError(f"{key}: expected one of {allowed}, got {value!r}") from None
    if tp is bool:
        if isinstance(value, _EnvString):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, _EnvString):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, _EnvString):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - schema guard


def _check_port(key: str, port: int, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(f"{key}: expected a TCP port {low}..65535, got {port}")


def _check_ae(key: str, title: str) -> None:
    """AE titles: 1-16 characters of the default repertoire, no backslash (PS3.5 6.2, VR AE)."""
    stripped = title.strip(" ")
    if (
        not stripped
        or len(title) > 16
        or "\\" in title
        or not title.isascii()
        or not title.isprintable()
    ):
        raise ConfigError(
            f"{key}: expected an AE title of 1-16 printable ASCII characters "
            f"without '\\', got {title!r}"
        )


_STEP_KINDS = ("triage", "deidentify", "forward", "analyse")
_CONFIRM = ("query", "commitment", "commitment-or-query", "none")


def _check_commitment(s: Settings, key: str, d: DestinationSettings) -> None:
    """Storage commitment reports come back on an association the peer opens to the AE it
    knows as our ``calling_ae`` (PS3.4 J.3.3); the SCP that receives them answers only to
    ``scp.ae_title`` while ``scp.require_called_aet`` holds."""
    if (
        d.confirm.startswith("commitment")
        and s.scp.require_called_aet
        and d.calling_ae.strip() != s.scp.ae_title.strip()
    ):
        raise ConfigError(
            f"{key}.calling_ae: with confirm = {d.confirm!r} the destination reports to the AE "
            f"it knows as {d.calling_ae!r}, and our SCP only answers to scp.ae_title "
            f"{s.scp.ae_title!r}; use calling_ae = {s.scp.ae_title!r} (or set "
            "scp.require_called_aet = false)"
        )


_LANES = ("critical", "urgent", "routine")


def _check_pipeline(s: Settings) -> None:
    names = [d.name for d in s.destinations]
    for i, d in enumerate(s.destinations):
        key = f"destinations[{i}]"
        if not d.name or names.count(d.name) > 1:
            raise ConfigError(f"{key}.name: expected a unique, non-empty name, got {d.name!r}")
        if d.kind not in ("dimse", "stowrs", "directory"):
            raise ConfigError(f"{key}.kind: expected dimse, stowrs or directory, got {d.kind!r}")
        if d.confirm not in _CONFIRM:
            raise ConfigError(
                f"{key}.confirm: expected one of {', '.join(_CONFIRM)}, got {d.confirm!r}"
            )
        if d.kind == "dimse":
            _check_ae(f"{key}.ae_title", d.ae_title)
            _check_ae(f"{key}.calling_ae", d.calling_ae)
            _check_port(f"{key}.port", d.port)
            _check_commitment(s, key, d)
        elif not d.url:
            raise ConfigError(f"{key}.url: expected a URL (stowrs) or a directory (directory)")
        if d.parallel < 1 or d.timeout <= 0:
            raise ConfigError(f"{key}: parallel must be >= 1 and timeout > 0")
        if d.commitment_timeout <= 0:
            raise ConfigError(
                f"{key}.commitment_timeout: expected a number > 0, got {d.commitment_timeout}"
            )
    profiles = _check_deid(s)
    if not s.routes:
        raise ConfigError("routes: expected at least one route ([[routes]])")
    for i, r in enumerate(s.routes):
        key = f"routes[{i}]"
        if r.lane and r.lane not in _LANES:
            raise ConfigError(
                f"{key}.lane: expected one of {', '.join(_LANES)} or empty, got {r.lane!r}"
            )
        for j, step in enumerate(r.steps):
            kind, _, arg = step.partition(":")
            if kind not in _STEP_KINDS:
                raise ConfigError(
                    f"{key}.steps[{j}]: expected one of {', '.join(_STEP_KINDS)} "
                    f"(with :name where needed), got {step!r}"
                )
            if kind == "forward" and arg not in names:
                raise ConfigError(
                    f"{key}.steps[{j}]: destination {arg!r} is not defined in [[destinations]]"
                )
            if kind in ("deidentify", "analyse") and not arg:
                raise ConfigError(f"{key}.steps[{j}]: expected {kind}:<name>")
            if kind == "deidentify" and arg not in profiles:
                raise ConfigError(
                    f"{key}.steps[{j}]: de-identification profile {arg!r} is not defined in "
                    "[[deid.profiles]]"
                )
    for i, rule in enumerate(s.lane_rules):
        if rule.lane not in _LANES:
            raise ConfigError(f"lane_rules[{i}].lane: expected one of {', '.join(_LANES)}")
    p = s.pipeline
    if (
        p.quiet_period < 0
        or p.batch_size < 1
        or p.retry_initial <= 0
        or p.retry_max < p.retry_initial
    ):
        raise ConfigError(
            "pipeline: expected quiet_period >= 0, batch_size >= 1, 0 < retry_initial <= retry_max"
        )
    if not 0 <= p.fill_wait <= 5:
        raise ConfigError(f"pipeline.fill_wait: expected 0 to 5 seconds, got {p.fill_wait}")
    if not 0 <= p.resend_wait <= 604800:
        raise ConfigError(
            f"pipeline.resend_wait: expected 0 to 604800 seconds (7 days), got {p.resend_wait}"
        )
    if not 1 <= p.confirm_batches <= 100:
        raise ConfigError(f"pipeline.confirm_batches: expected 1 to 100, got {p.confirm_batches}")
    if s.worker.concurrency < 1:
        raise ConfigError("worker.concurrency: expected 1 or more")
    if not 0 <= s.worker.nice <= 19:
        raise ConfigError(f"worker.nice: expected 0 to 19, got {s.worker.nice}")
    _check_port("worker.metrics_port", s.worker.metrics_port, allow_zero=True)


def _check_deid(s: Settings) -> set[str]:
    """Profile names unique, safe-private entries and mask regions well formed."""
    names: set[str] = set()
    for i, p in enumerate(s.deid.profiles):
        key = f"deid.profiles[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", p.name):
            raise ConfigError(
                f"{key}.name: expected letters, digits, '_', '.', '-', got {p.name!r}"
            )
        if p.name in names:
            raise ConfigError(f"{key}.name: profile {p.name!r} is defined twice")
        names.add(p.name)
        if len(set(p.options)) != len(p.options):
            raise ConfigError(f"{key}.options: an option is named twice")
        full, modified = "retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"
        if full in p.options and modified in p.options:
            raise ConfigError(f"{key}.options: choose one of {full} and {modified}")
        for j, entry in enumerate(p.safe_private):
            if not _SAFE_PRIVATE_RE.fullmatch(entry):
                raise ConfigError(
                    f"{key}.safe_private[{j}]: expected CREATOR:gggg,xxee with an odd group "
                    f"(e.g. 'GEMS_ACQU_01:0019,xx0C'), got {entry!r}"
                )
        for j, rule in enumerate(p.masks):
            for k, region in enumerate(rule.regions):
                if (
                    len(region) != 4
                    or region[0] >= region[2]
                    or region[1] >= region[3]
                    or min(region) < 0
                ):
                    raise ConfigError(
                        f"{key}.masks[{j}].regions[{k}]: expected [x0, y0, x1, y1] with "
                        f"0 <= x0 < x1 and 0 <= y0 < y1, got {region!r}"
                    )
        if p.date_shift_days < 1:
            raise ConfigError(f"{key}.date_shift_days: expected 1 or more")
    if s.deid.processes < 0:
        raise ConfigError("deid.processes: expected 0 (automatic) or more")
    return names


_SAFE_PRIVATE_RE = re.compile(r"[^\\\n]{1,64}:[0-9A-Fa-f]{3}[13579BDFbdf],(xx|XX)[0-9A-Fa-f]{2}")


def _check_semantics(s: Settings) -> None:
    _check_pipeline(s)
    _check_ae("scp.ae_title", s.scp.ae_title)
    _check_ae("orthanc.ae_title", s.orthanc.ae_title)
    for i, aet in enumerate(s.scp.allowed_calling_aets):
        _check_ae(f"scp.allowed_calling_aets[{i}]", aet)
    for i, net in enumerate(s.scp.allowed_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(
                f"scp.allowed_networks[{i}]: expected a network such as 127.0.0.0/8, got {net!r}"
            ) from None
    _check_port("scp.port", s.scp.port, allow_zero=True)
    _check_port("scp.metrics_port", s.scp.metrics_port, allow_zero=True)
    _check_port("database.port", s.database.port)
    _check_port("orthanc.http_port", s.orthanc.http_port)
    _check_port("orthanc.dicom_port", s.orthanc.dicom_port)
    if s.scp.processes < 0:
        raise ConfigError(f"scp.processes: expected 0 (automatic) or more, got {s.scp.processes}")
    if s.scp.max_associations < 1:
        raise ConfigError(f"scp.max_associations: expected 1 or more, got {s.scp.max_associations}")
    for name in ("acse_timeout", "dimse_timeout", "network_timeout"):
        if getattr(s.scp, name) <= 0:
            raise ConfigError(f"scp.{name}: expected a positive number of seconds")
    if s.scp.max_pdu_size != 0 and s.scp.max_pdu_size < 4096:
        raise ConfigError(
            f"scp.max_pdu_size: expected 0 or at least 4096, got {s.scp.max_pdu_size}"
        )
    if s.database.pool_size < 1:
        raise ConfigError(f"database.pool_size: expected 1 or more, got {s.database.pool_size}")
    if s.database.connect_timeout <= 0:
        raise ConfigError("database.connect_timeout: expected a positive number of seconds")
    if s.spool.min_free_bytes < 0:
        raise ConfigError("spool.min_free_bytes: expected 0 or more")
    if not 0 <= s.spool.min_free_percent < 100:
        raise ConfigError(
            f"spool.min_free_percent: expected 0..100, got {s.spool.min_free_percent}"
        )
    if not s.node.name or not all(c.isalnum() or c in "-_." for c in s.node.name):
        raise ConfigError(
            f"node.name: expected letters, digits, '-', '_' or '.', got {s.node.name!r}"
        )
    _check_audit(s)
    _check_alerts(s)
    _check_pacs(s)
    if s.triage.threads < 1:
        raise ConfigError(f"triage.threads: expected 1 or more, got {s.triage.threads}")
    if s.triage.incomplete_category not in (0, 1, 2, 3):
        raise ConfigError(
            f"triage.incomplete_category: expected 0 (no alert), 1, 2 or 3, "
            f"got {s.triage.incomplete_category}"
        )
    if s.analysis.time_limit <= 0:
        raise ConfigError("analysis.time_limit: expected a positive number of seconds")
    if s.analysis.processes < 1:
        raise ConfigError(f"analysis.processes: expected 1 or more, got {s.analysis.processes}")
    if not 0 <= s.analysis.nice <= 19:
        raise ConfigError(f"analysis.nice: expected 0..19, got {s.analysis.nice}")
    if s.analysis.resume_after < 0 or s.analysis.max_pause < 0:
        raise ConfigError("analysis.resume_after, analysis.max_pause: expected 0 or more seconds")
    if s.analysis.cpus < 0:
        raise ConfigError(f"analysis.cpus: expected 0 or more, got {s.analysis.cpus}")
    if s.analysis.threads < 0:
        raise ConfigError(f"analysis.threads: expected 0 or more, got {s.analysis.threads}")
    if s.analysis.archive_url and not s.analysis.archive_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"analysis.archive_url: expected an http(s) URL, got {s.analysis.archive_url!r}"
        )
    if s.triage.association_grace < 0:
        raise ConfigError("triage.association_grace: expected 0 or more seconds")
    tls = s.scp.tls
    if tls.enabled:
        for name in ("certificate", "private_key"):
            value = getattr(tls, name)
            if not value or not Path(value).is_file():
                raise ConfigError(f"scp.tls.{name}: expected an existing PEM file, got {value!r}")
        if tls.require_client_certificate and (
            not tls.ca_certificates or not Path(tls.ca_certificates).is_file()
        ):
            raise ConfigError(
                "scp.tls.ca_certificates: expected an existing PEM file when "
                "require_client_certificate is true"
            )


def _unique_names(key: str, names: Sequence[str], punctuation: str) -> set[str]:
    """The names of a list of tables (``key[i].name``): letters, digits and *punctuation*,
    each defined once."""
    allowed = ", ".join(repr(c) for c in punctuation)
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name or not all(c.isalnum() or c in punctuation for c in name):
            raise ConfigError(f"{key}[{i}].name: expected letters, digits or {allowed}")
        if name in seen:
            raise ConfigError(f"{key}[{i}].name: {name!r} is defined twice")
        seen.add(name)
    return seen


def _positive(section: str, values: object, *names: str) -> None:
    """Each of *names* of the *section* settings is a positive number."""
    for name in names:
        if getattr(values, name) <= 0:
            raise ConfigError(f"{section}.{name}: expected a positive number")


def _check_alerts(s: Settings) -> None:
    a = s.alerts
    names = _unique_names("alerts.target", [t.name for t in a.target], "-_.")
    for i, t in enumerate(a.target):
        key = f"alerts.target[{i}]"
        if t.kind not in ("webhook", "mqtt"):
            raise ConfigError(f"{key}.kind: expected webhook or mqtt, got {t.kind!r}")
        if t.kind == "webhook" and not t.url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url: expected an http:// or https:// URL, got {t.url!r}")
        if t.kind == "mqtt":
            _check_port(f"{key}.port", t.port)
            if not t.topic or any(c in t.topic for c in "#+"):
                raise ConfigError(f"{key}.topic: expected a topic without wildcards")
        if t.timeout <= 0:
            raise ConfigError(f"{key}.timeout: expected a positive number of seconds")
    for field_name in ("targets", "escalation_targets"):
        for i, name in enumerate(getattr(a, field_name)):
            if name not in names:
                raise ConfigError(
                    f"alerts.{field_name}[{i}]: no [[alerts.target]] is named {name!r}"
                )
    _positive("alerts", a, "category1_minutes", "category2_minutes", "category3_minutes",
              "retry_initial", "retry_max")  # fmt: skip


def _check_pacs(s: Settings) -> None:
    p = s.pacs
    _unique_names("pacs.user", [u.name for u in p.user], "-_.@")
    _positive("pacs", p, "journal_sync_interval", "record_interval", "routine_max_wait_minutes",
              "urgent_max_wait_minutes")  # fmt: skip
    if p.journal_segment_bytes < 4096:
        raise ConfigError("pacs.journal_segment_bytes: expected 4096 or more")
    if p.worklist_limit < 1:
        raise ConfigError("pacs.worklist_limit: expected 1 or more")
    if p.archive_arrivals and p.archive_arrivals not in {r.name for r in s.routes}:
        raise ConfigError(f"pacs.archive_arrivals: no route is named {p.archive_arrivals!r}")


def _check_audit(s: Settings) -> None:
    a = s.audit
    if a.checkpoint_every < 0:
        raise ConfigError(f"audit.checkpoint_every: expected 0 or more, got {a.checkpoint_every}")
    if a.checkpoint_seconds < 0:
        raise ConfigError("audit.checkpoint_seconds: expected 0 or more seconds")
    if a.seal_interval <= 0:
        raise ConfigError("audit.seal_interval: expected a positive number of seconds")
    if a.checkpoint_every == 0 and a.checkpoint_seconds == 0:
        raise ConfigError(
            "audit.checkpoint_every, audit.checkpoint_seconds: at least one must be positive"
        )
    for name in ("checkpoint_file", "signing_key", "keyring"):
        if not getattr(a, name):
            raise ConfigError(f"audit.{name}: expected a file path")
    if a.site_id and not all(c.isalnum() or c in "-_.:" for c in a.site_id):
        raise ConfigError(
            f"audit.site_id: expected letters, digits, '-', '_', '.' or ':', got {a.site_id!r}"
        )
    if a.syslog_host:
        _check_port("audit.syslog_port", a.syslog_port)
