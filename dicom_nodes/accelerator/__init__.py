"""Optional accelerator for pynetdicom associations, used by the receiver and the forwarder.

(The measurements that justify each part are filled in below.)

Switch
    ``scp.accelerate`` (receiver) and ``forward.accelerate`` (forwarder): ``auto`` uses the
    accelerator when the installed pynetdicom is one of :data:`VERIFIED_PYNETDICOM` and stock
    pynetdicom otherwise, with one warning; ``on`` refuses to start on any other version
    (:class:`AcceleratorUnavailable`, a configuration error naming the setting); ``off`` never
    touches pynetdicom's classes. This module imports no private name of pynetdicom; the
    modules that do (``_association``, ``_dul``, ``_dimse``) are imported only once the
    accelerator is enabled, so a pynetdicom release that renames its internals can never stop
    the receiver or the worker at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Final

import pynetdicom
from pynetdicom import AE

from config import ConfigError
from dicom_nodes.accelerator._parts import Part

if TYPE_CHECKING:  # pragma: no cover
    from pynetdicom.transport import AssociationServer

__all__ = [
    "PARTS",
    "VERIFIED_PYNETDICOM",
    "AcceleratorUnavailable",
    "Part",
    "accelerate_server",
    "enabled",
    "requestor_ae",
    "select_parts",
    "selected_parts",
]

LOGGER = logging.getLogger(__name__)

VERIFIED_PYNETDICOM: Final = ("3.0.4",)
"""pynetdicom versions whose internals the accelerator mirrors and was tested against."""

PARTS: Final = frozenset(Part)
"""Every part; all of them are used unless :func:`select_parts` says otherwise."""

_MODES: Final = ("auto", "on", "off")


class AcceleratorUnavailable(ConfigError):
    """``<section>.accelerate = on`` but the installed pynetdicom is not a verified version."""


class _State:
    """What this process chose: the parts in use, and the settings already warned about."""

    parts: frozenset[Part] = PARTS
    warned: set[str] = set()  # noqa: RUF012 - one process-wide set, by design


def select_parts(parts: Collection[Part | str]) -> None:
    """Use only *parts* from now on (benchmarks and tests measure them one by one)."""
    _State.parts = frozenset(Part(p) for p in parts)


def selected_parts() -> frozenset[Part]:
    """The parts used by associations accelerated from now on."""
    return _State.parts


def enabled(mode: str, key: str, *, version: str | None = None, warn: bool = True) -> bool:
    """Whether the setting *key* with value *mode* (``auto | on | off``) enables the
    accelerator with pynetdicom *version* (default: the installed one).

    ``auto`` on an unverified version logs one warning per *key* and process (unless *warn* is
    false); ``on`` raises :class:`AcceleratorUnavailable`, naming *key*.
    """
    value = str(mode).lower()
    if value not in _MODES:
        raise ConfigError(f"{key}: expected one of {', '.join(_MODES)}, got {mode!r}")
    if value == "off":
        return False
    found = version if version is not None else pynetdicom.__version__
    if found in VERIFIED_PYNETDICOM:
        return True
    verified = ", ".join(VERIFIED_PYNETDICOM)
    if value == "on":
        raise AcceleratorUnavailable(
            f"{key} = on, but pynetdicom {found} is installed and the accelerator was verified "
            f"with pynetdicom {verified} only; set {key} to auto (stock pynetdicom on other "
            "versions) or off"
        )
    if warn and key not in _State.warned:
        _State.warned.add(key)
        LOGGER.warning(
            "%s = auto: pynetdicom %s is not a version the accelerator was verified with (%s); "
            "using stock pynetdicom",
            key,
            found,
            verified,
        )
    return False


def accelerate_server(server: AssociationServer, mode: str, key: str = "scp.accelerate") -> bool:
    """Accelerate the associations *server* accepts if *mode* enables it; return whether."""
    if not enabled(mode, key):
        LOGGER.info("%s = %s: stock pynetdicom %s", key, mode, pynetdicom.__version__)
        return False
    from dicom_nodes.accelerator import _association

    _association.install(server, _State.parts)
    LOGGER.info(
        "%s = %s: accelerated associations (pynetdicom %s; %s)",
        key,
        mode,
        pynetdicom.__version__,
        ", ".join(sorted(_State.parts)),
    )
    return True


def requestor_ae(ae_title: str, accelerate: bool) -> Any:
    """An AE whose requested associations are accelerated if *accelerate* (see
    :func:`enabled`), otherwise pynetdicom's own :class:`~pynetdicom.ae.ApplicationEntity`."""
    if not accelerate:
        return AE(ae_title=ae_title)
    from dicom_nodes.accelerator._association import AcceleratedAE

    ae = AcceleratedAE(ae_title=ae_title)
    ae.accelerator_parts = _State.parts
    return ae
