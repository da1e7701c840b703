"""Building a destination from its settings (or from a configuration entry).

:func:`make_destination` takes this package's settings dataclasses. :func:`build_destination`
takes anything shaped like a ``[[destinations]]`` entry of the configuration (``kind``,
``name``, ``ae_title``, ``host``, ``port``, ``url``, ``calling_ae``, ``parallel``,
``confirm``, ``timeout``, ``commitment_timeout``, ``keep_open``, ``credentials_file``) without
importing the configuration package, so the two can evolve separately; settings it does not
carry keep their defaults here.

A DIMSE destination that confirms by storage commitment needs a
:class:`~dicom_nodes.forward.commitment.CommitmentSink` passed in (``radiogate worker`` passes
the PostgreSQL sink that ``radiogate scp`` writes the reports into). Without one,
:func:`build_destination` refuses such a destination rather than let every confirmation fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from dicom_nodes.forward.commitment import CommitmentSink
from dicom_nodes.forward.dimse import DimseDestination
from dicom_nodes.forward.directory import DirectoryDestination
from dicom_nodes.forward.model import Destination
from dicom_nodes.forward.settings import (
    ConfirmMethod,
    DimseSettings,
    DirectorySettings,
    StowSettings,
)
from dicom_nodes.forward.stow import StowRsDestination
from dicom_nodes.services.credentials import CredentialsError, load_credentials

__all__ = ["DestinationConfig", "build_destination", "make_destination"]


class DestinationConfig(Protocol):
    """The shape of a configured destination (``config.routes.DestinationSettings``)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def ae_title(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def calling_ae(self) -> str: ...
    @property
    def parallel(self) -> int: ...
    @property
    def confirm(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def credentials_file(self) -> str: ...
    @property
    def commitment_timeout(self) -> float: ...
    @property
    def keep_open(self) -> float: ...
    @property
    def confirm_class(self) -> bool: ...


_NEEDS_SINK = (ConfirmMethod.STORAGE_COMMITMENT, ConfirmMethod.COMMITMENT_OR_QUERY)


def make_destination(
    settings: DimseSettings | StowSettings | DirectorySettings,
    *,
    commitment_sink: CommitmentSink | None = None,
    workdir: Path | None = None,
) -> Destination:
    """The destination for *settings* (*commitment_sink* and *workdir*: DIMSE only)."""
    if isinstance(settings, DimseSettings):
        return DimseDestination(settings, commitment_sink=commitment_sink, workdir=workdir)
    if isinstance(settings, StowSettings):
        return StowRsDestination(settings)
    return DirectoryDestination(settings)


def build_destination(
    cfg: DestinationConfig,
    workdir: Path | None = None,
    commitment_sink: CommitmentSink | None = None,
) -> Destination:
    """Map a configuration entry onto settings and build the destination.

    Raises ValueError naming the destination when a value is invalid."""
    try:
        settings: DimseSettings | StowSettings | DirectorySettings
        if cfg.kind == "dimse":
            settings = DimseSettings(
                name=cfg.name,
                ae_title=cfg.ae_title,
                host=cfg.host,
                port=cfg.port,
                calling_ae=cfg.calling_ae,
                parallel=cfg.parallel,
                timeout=cfg.timeout,
                confirm=ConfirmMethod(cfg.confirm),
                commitment_timeout=cfg.commitment_timeout,
                keep_open=cfg.keep_open,
                confirm_class=cfg.confirm_class,
            )
            if settings.confirm in _NEEDS_SINK and commitment_sink is None:
                raise ValueError(
                    f"confirm = {settings.confirm.value!r} needs a storage commitment sink "
                    "(radiogate worker passes one)"
                )
        elif cfg.kind == "stowrs":
            headers: tuple[tuple[str, str], ...] = ()
            if cfg.credentials_file:
                creds = load_credentials(Path(cfg.credentials_file))
                headers = (("Authorization", creds.authorization),)
            settings = StowSettings(
                name=cfg.name,
                url=cfg.url,
                parallel=cfg.parallel,
                timeout=cfg.timeout,
                headers=headers,
            )
        elif cfg.kind == "directory":
            settings = DirectorySettings(name=cfg.name, path=Path(cfg.url))
        else:
            raise ValueError(f"unknown kind {cfg.kind!r} (dimse, stowrs or directory)")
    except (ValueError, CredentialsError) as exc:
        raise ValueError(f"destination {cfg.name!r}: {exc}") from exc
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    return make_destination(settings, commitment_sink=commitment_sink, workdir=workdir)
