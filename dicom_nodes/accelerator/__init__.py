"""Optional accelerator for pynetdicom associations, used by the receiver and the forwarder.

pynetdicom runs each association as two threads that poll each other: the DUL reactor
(``dul.DULServiceProvider.run_reactor``) checks its socket and its outgoing queue and sleeps
1 ms whenever both are empty, and the association reactor (``Association._run_reactor``) sleeps
1 ms before every look at its incoming DIMSE message queue. A C-STORE round trip crosses those
sleeps several times, and at a few milliseconds per instance that is a large part of the time.
On top of that, C-STORE messages are encoded and decoded through pydicom datasets, which costs
more CPU than the transfer itself for small instances. The accelerator changes how the threads
wait and takes shortcuts whose results are byte-identical (the encodings themselves live in
:mod:`dicom_nodes.dimse.codec`). Each change is a :class:`Part`:

``reactors`` (``_dul.FastDUL``, ``_association.FastAssociation``)
    The DUL reactor blocks in ``select()`` on its socket and on an eventfd that every primitive
    queued for the peer signals; the association reactor blocks on a :class:`threading.Event`
    set whenever the DUL hands it something (DIMSE message, release/abort indication, the DUL
    thread ending, ``kill()``). Every step of both loops is pynetdicom's, in the same order;
    both still wake at least every 50 ms, so timers (ARTIM, network idle timeout) are seen as
    before. The association thread waits for its DUL thread in 1 ms steps instead of 10 ms, so
    a released association stops counting against ``scp.max_associations`` sooner. A
    requestor's reactor reports itself paused while it waits, so ``send_*`` does not spin.
``p-data`` (``_dul.FastDUL._read_pdu_data``, ``_dul.RequestorDUL``)
    In Sta6 a P-DATA-TF PDU always leads to DT-2 (received) or comes from DT-1 (sent), back to
    Sta6 (PS3.8 9.2.3). Received: the PDV items are split with memoryviews and handed to the
    DIMSE provider directly, instead of PDU objects, three copies and a state-machine event.
    Sent (forwarder): queued P-DATA requests are encoded directly and written together. Any
    other PDU or state, or a bound PDU/data event handler, takes pynetdicom's path.
    Only worth it with ``reactors``: pynetdicom's own loop sleeps 1 ms after every loop pass
    without a state-machine event, which the shortcut no longer queues.
``contexts`` (``_association.share_contexts``)
    pynetdicom deep-copies the server's supported presentation contexts for every association
    (170 SOP classes x 45 transfer syntaxes here); negotiation only reads them, so the copies
    share one list.
``store-rsp``, ``store-rq``, ``file-meta`` (``_dimse.FastDIMSE``)
    C-STORE-RSP packed with ``struct`` instead of a pydicom dataset encoded twice; a plainly
    encoded C-STORE-RQ parsed directly and its primitive filled through its validating
    setters; the Part 10 header of the temporary file packed directly, and the file flushed
    once per message instead of once per PDV. Unusual encodings, optional response fields and
    bound DIMSE event handlers take pynetdicom's path.
``spare-file`` (``_dimse.FastDIMSE.prepare_spare``)
    The next C-STORE's temporary file is created while the current handler runs (creating a
    file in the spool's directory waits for the ext4 journal while another fsync commits).
``writeback`` (``_dimse.FastDIMSE._decode``, ``_wake.start_writeback``)
    Every 128 KiB of a received dataset the kernel is asked to start writing the temporary
    file (``sync_file_range``), so that the handler's fsync waits for the tail only.

Not changed: the state machine and its actions (every PDU other than P-DATA-TF in Sta6 goes
through it), ACSE negotiation, service classes and handlers, timers, the receiver's durability
contract (the handler still fsyncs, renames and commits before the response is encoded),
statuses. TLS requestor associations keep pynetdicom's reactors.

Switch
    ``scp.accelerate`` (receiver) and ``forward.accelerate`` (forwarder): ``auto`` uses the
    accelerator when the installed pynetdicom is one of :data:`VERIFIED_PYNETDICOM` and stock
    pynetdicom otherwise, with one warning; ``on`` refuses to start on any other version
    (:class:`AcceleratorUnavailable`, a configuration error naming the setting); ``off`` never
    touches pynetdicom's classes. This module imports no private name of pynetdicom; the
    modules that do (``_association``, ``_dul``, ``_dimse``) are imported only once the
    accelerator is enabled, so a pynetdicom release that renames its internals can never stop
    the receiver or the worker at import time.

MEASUREMENTS
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
