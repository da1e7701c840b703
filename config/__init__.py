"""Radiogate settings: typed schema, loader with environment overrides, documented defaults.

This package imports nothing else of Radiogate's.
"""

from __future__ import annotations

from pathlib import Path

from config.loader import (
    ENV_PREFIX,
    ConfigError,
    load,
    project_dir,
    resolve_paths,
    settings_to_dict,
)
from config.schema import (
    Accelerate,
    AuditSettings,
    DatabaseSettings,
    DifferentBytes,
    DifferentBytesArchived,
    ForwardSettings,
    LoggingSettings,
    LogLevel,
    NodeSettings,
    OrthancSettings,
    ScpSettings,
    Settings,
    SpoolSettings,
    SyslogProtocol,
    TlsSettings,
    ViewerSettings,
)

__all__ = [
    "DEFAULT_FILE",
    "ENV_PREFIX",
    "Accelerate",
    "AuditSettings",
    "ConfigError",
    "DatabaseSettings",
    "DifferentBytes",
    "DifferentBytesArchived",
    "ForwardSettings",
    "LogLevel",
    "LoggingSettings",
    "NodeSettings",
    "OrthancSettings",
    "ScpSettings",
    "Settings",
    "SpoolSettings",
    "SyslogProtocol",
    "TlsSettings",
    "ViewerSettings",
    "data_path",
    "load",
    "project_dir",
    "resolve_paths",
    "settings_to_dict",
]

DEFAULT_FILE = Path(__file__).with_name("default.toml")
"""The documented default configuration (every key, commented)."""


def data_path(settings: Settings, value: str) -> Path:
    """Resolve *value* against ``node.data_dir`` unless it is absolute (:func:`load` has made
    ``node.data_dir`` absolute, so the working directory never matters)."""
    path = Path(value)
    if path.is_absolute():
        return path
    return (Path(settings.node.data_dir) / path).resolve()
