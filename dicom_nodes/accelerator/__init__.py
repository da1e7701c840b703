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
``responses`` (``_dimse.FastDIMSE`` on requestor associations)
    The command sets of the C-STORE-RSPs and C-FIND-RSPs the forwarder receives parsed
    directly (one of each per forwarded instance: its store and its confirming query), their
    primitives filled through the validating setters; a C-FIND-RSP's identifier is decoded by
    pynetdicom as before. Optional fields (Error Comment, Offending Element, Error ID) and
    bound DIMSE event handlers take pynetdicom's path.

Not changed: the state machine and its actions (every PDU other than P-DATA-TF in Sta6 goes
through it), ACSE negotiation, service classes and handlers, timers, the receiver's durability
contract (the handler still answers only once the file is synced and the row committed),
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

Measurements
    ``bench/bench_receive.py --accel parts --count 300 --reps 4``: DCMTK ``storescu``
    (``TCP_NODELAY=1``) sends 300 CT instances of 0.5 MB or 10 KB over 1 or 4 associations to
    ``radiogate scp`` with default settings (fsync on, 2 receivers, one PostgreSQL commit per
    instance). Each round runs every configuration once per case, in a rotated order; a
    figure is the median over the 4 rounds of the ratio to stock pynetdicom *in the same
    round*. CPU = receiver processes plus their PostgreSQL backends, per instance. The machine
    has 2 cores shared with other work (1-min load average 6.2 median, 9.0 max during the
    run), so img/s is noisy: the per-round ratios all/stock spread 0.60-1.65 for img/s and
    0.46-0.85 for CPU. Differences below ~30 % in img/s or ~15 % in CPU are within the noise;
    CPU is the steadier measure and decides. ``+part`` = that part alone, ``-part`` = all
    parts but that one. A cell is "CPU ratio | img/s ratio" to stock; the stock row gives CPU
    ms per instance | img/s.

    ==============  ===========  ===========  ===========  ===========
    CPU x, img/s x  0.5 MB x1    0.5 MB x4    10 KB x1     10 KB x4
    ==============  ===========  ===========  ===========  ===========
    stock (ms, /s)  5.82 |  55   7.27 | 109   6.20 |  53   5.67 | 123
    all             0.74 | 1.05  0.56 | 1.32  0.70 | 1.16  0.65 | 1.16
    +reactors       0.91 | 1.34  0.92 | 0.88  0.96 | 1.01  0.84 | 0.97
    +p-data         1.07 | 0.74  0.97 | 0.95  0.97 | 0.97  0.87 | 0.99
    +contexts       1.02 | 1.15  0.90 | 1.03  0.84 | 1.10  0.86 | 1.12
    +store-rsp      0.95 | 1.41  1.01 | 0.91  0.91 | 1.20  0.84 | 0.98
    +store-rq       1.08 | 1.30  1.01 | 0.93  0.99 | 1.08  0.83 | 1.20
    +file-meta      0.95 | 1.12  0.99 | 0.93  0.85 | 1.15  0.87 | 1.25
    -reactors       0.90 | 0.79  0.64 | 1.27  0.75 | 1.15  0.65 | 1.51
    -p-data         0.76 | 1.01  0.69 | 1.14  0.62 | 1.65  0.62 | 1.29
    -contexts       0.76 | 0.85  0.71 | 0.94  0.73 | 1.32  0.74 | 1.05
    -store-rsp      0.83 | 0.90  0.70 | 1.11  0.88 | 1.10  0.81 | 1.10
    -store-rq       0.74 | 1.10  0.60 | 1.36  0.69 | 1.22  0.70 | 1.00
    -file-meta      0.84 | 1.00  0.78 | 0.99  0.80 | 1.27  0.64 | 1.17
    ==============  ===========  ===========  ===========  ===========

    Each part kept saves CPU in the whole (``-part`` against ``all`` in the same rounds, CPU
    ratio > 1 means the part saves; this run / an earlier 3-round run of 200 instances at load
    4.1): reactors 1.23 1.13 1.10 1.18 / 1.22 1.16 1.16 1.09; p-data 1.03 1.27 0.90 1.04 /
    1.09 1.25 0.97 1.06; contexts 1.02 1.26 1.05 1.31 / 0.98 1.35 1.15 1.26 (it saves a deep
    copy per association, so it counts with many short associations); store-rsp 1.12 1.22
    1.26 1.31 / 1.07 1.09 1.22 1.17; file-meta 1.12 1.37 1.13 1.13 / 1.21 1.07 1.28 1.11.
    store-rq is small against this noise (1.02 1.15 1.00 1.20 / 1.01 1.05 0.94 1.05); measured
    on its own (CPU time of 7 x 2,000 decodes, alternating) it takes 0.023 ms per C-STORE-RQ
    instead of pynetdicom's 0.185 ms, so it stays. ``+p-data`` alone is slower than stock
    (img/s x0.74 at 0.5 MB x1): pynetdicom's own loop sleeps 1 ms after every pass that queued
    no state-machine event, and the shortcut queues none; it is meant for the event-driven
    reactors only.

    Deleted after the earlier run (all eight parts against all but one, 3 rounds): a spare
    temporary file created ahead (img/s without it x1.31 1.02 1.18 0.92 of all parts, CPU
    0.89-1.25: no consistent effect either way) and early write-back with
    ``sync_file_range`` every 128 KiB (img/s without it x1.17 1.53 2.27 0.90 of all parts,
    CPU 0.83-1.09). Both were meant to shorten the wait for fsync; neither won.

    Before and after the split (``--accel stock,all --baseline <previous commit>``, 5 rounds,
    load 3.6 median): all/stock CPU 0.62 0.61 0.67 0.69, img/s x1.69 1.42 1.33 1.35;
    all/previous fast path (eight parts) CPU 0.87 0.97 0.96 0.96, img/s x1.20 0.98 0.99 1.07.

    Forwarder (``bench/bench_scu.py --count 300 --rounds 5``: one association of
    ``open_association`` sends 300 files with ``send_c_store(path)`` to DCMTK ``storescp``;
    sender CPU and wall time, per-round ratios to stock, load 4-6): all parts CPU x0.80
    (0.5 MB) and x0.75 (10 KB), instances/s x1.24 and x1.94 (per-round CPU ratios 0.58-1.01,
    rates 0.80-2.45). Without ``reactors`` CPU rises x1.16 / x1.26 against all parts, without
    ``p-data`` x1.56 / x1.31. End to end (``bench/bench_forward.py --quick --accel
    stock,all,-reactors,-p-data --settings 2/50/4 --reps 3``: storescu -> SCP -> worker ->
    Orthanc, 200 instances) the difference disappears in the noise: img/s x1.09 (0.5 MB) and
    x0.97 (10 KB), worker CPU per run x0.95 / x0.96 (per-round 0.86-1.21); the SCP's CPU
    there is x0.62 / x0.61.
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
