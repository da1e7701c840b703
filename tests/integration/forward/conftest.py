"""Fixtures: a private Orthanc on free loopback ports that knows our commitment listener."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_nodes.forward import (
    CommitmentListener,
    ConfirmMethod,
    DimseDestination,
    DimseSettings,
)
from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer
from tests.integration.forward.orthanc_rest import OrthancRest
from tests.support import free_port

CALLING_AE = "RGFORWARD"


@pytest.fixture(scope="session")
def commitment_listener() -> Iterator[CommitmentListener]:
    """Our storage commitment SCP (receives Orthanc's N-EVENT-REPORTs)."""
    listener = CommitmentListener(CALLING_AE, free_port()).start()
    yield listener
    listener.stop()


def make_orthanc(base: Path, listener: CommitmentListener) -> ManagedOrthanc:
    return ManagedOrthanc(
        storage_dir=base,
        http_port=free_port(),
        dicom_port=free_port(),
        executable="/usr/sbin/Orthanc",
        peers=[OrthancPeer("radiogate", CALLING_AE, listener.host, listener.port)],
    )


@pytest.fixture(scope="session")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory, commitment_listener: CommitmentListener
) -> Iterator[ManagedOrthanc]:
    """One Orthanc for the session; tests clear it with ``orthanc_rest.clear()`` as needed."""
    server = make_orthanc(tmp_path_factory.mktemp("orthanc"), commitment_listener)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def orthanc_rest(orthanc: ManagedOrthanc) -> OrthancRest:
    rest = OrthancRest(orthanc.url, orthanc.credentials)
    rest.clear()
    return rest


def dimse_settings(orthanc: ManagedOrthanc, **overrides: object) -> DimseSettings:
    values: dict[str, object] = {
        "name": "orthanc",
        "ae_title": orthanc.ae_title,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "calling_ae": CALLING_AE,
        "timeout": 30.0,
        "commitment_timeout": 30.0,
        "confirm": ConfirmMethod.STORAGE_COMMITMENT,
    }
    values.update(overrides)
    return DimseSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def destination(
    orthanc: ManagedOrthanc, commitment_listener: CommitmentListener
) -> DimseDestination:
    return DimseDestination(dimse_settings(orthanc), commitment_listener.sink)
