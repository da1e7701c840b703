"""scp.accelerate / forward.accelerate: auto, on and off on verified and unverified pynetdicom.

An unverified version is simulated by changing ``pynetdicom.__version__`` for the test; these
tests run whatever the installed version and whatever the environment says.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

import config
from dicom_nodes import accelerator, cli
from dicom_nodes.accelerator import AcceleratorUnavailable, enabled
from dicom_nodes.forward import use_accelerator
from dicom_nodes.forward._association import _Accelerator, open_association
from dicom_nodes.forward.settings import DimseSettings
from dicom_nodes.scp.app import build_server
from dicom_nodes.scp.transport import ReceiverServer
from dicom_nodes.spool.store import Spool
from tests.support.data import PYDICOM_FILES
from tests.unit.scp.test_handlers import FakeRecorder

UNVERIFIED = "3.0.99"
CT = PYDICOM_FILES / "CT_small.dcm"


@pytest.fixture(autouse=True)
def _fresh_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: nothing warned, nothing chosen yet."""
    monkeypatch.setattr(accelerator._State, "warned", set())
    monkeypatch.setattr(_Accelerator, "enabled", None)


@pytest.fixture
def unverified(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(pynetdicom, "__version__", UNVERIFIED)
    return UNVERIFIED


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- the decision


def test_decision_table() -> None:
    verified = accelerator.VERIFIED_PYNETDICOM[0]
    assert enabled("auto", "k", version=verified) is True
    assert enabled("on", "k", version=verified) is True
    assert enabled("off", "k", version=verified) is False
    assert enabled("off", "k", version=UNVERIFIED) is False
    assert enabled("auto", "k", version=UNVERIFIED) is False
    assert enabled(config.Accelerate.AUTO, "k", version=verified) is True


def test_verified_versions_allow_what_pyproject_allows() -> None:
    """Every verified version is a 3.0.x release, the range pyproject.toml admits."""
    for version in accelerator.VERIFIED_PYNETDICOM:
        major, minor, patch = (int(x) for x in version.split("."))
        assert (major, minor) == (3, 0) and patch >= 4
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    assert '"pynetdicom>=3.0.4,<3.1"' in pyproject


def test_on_with_an_unverified_version_names_the_setting() -> None:
    with pytest.raises(AcceleratorUnavailable) as info:
        enabled("on", "scp.accelerate", version="3.0.7")
    message = str(info.value)
    assert "scp.accelerate" in message and "3.0.7" in message
    assert isinstance(info.value, config.ConfigError)


def test_auto_with_an_unverified_version_warns_once_per_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert enabled("auto", "scp.accelerate", version=UNVERIFIED) is False
    assert enabled("auto", "forward.accelerate", version=UNVERIFIED) is False
    warnings = _warnings(caplog)
    assert len(warnings) == 2
    assert "scp.accelerate" in warnings[0] and UNVERIFIED in warnings[0]
    assert "forward.accelerate" in warnings[1]


def test_unknown_mode_is_a_configuration_error() -> None:
    with pytest.raises(config.ConfigError, match=r"scp\.accelerate"):
        enabled("fast", "scp.accelerate")


def test_settings_and_environment_overrides() -> None:
    assert config.load(env={}).scp.accelerate is config.Accelerate.AUTO
    assert config.load(env={}).forward.accelerate is config.Accelerate.AUTO
    s = config.load(env={"RADIOGATE_SCP__ACCELERATE": "off", "RADIOGATE_FORWARD__ACCELERATE": "ON"})
    assert s.scp.accelerate is config.Accelerate.OFF
    assert s.forward.accelerate is config.Accelerate.ON
    with pytest.raises(config.ConfigError, match=r"forward\.accelerate"):
        config.load(env={"RADIOGATE_FORWARD__ACCELERATE": "yes"})
    default_toml = config.DEFAULT_FILE.read_text()
    assert "[forward]\n" in default_toml and default_toml.count('accelerate = "auto"') == 2


# --------------------------------------------------------------------------- the receiver


@pytest.fixture
def receiver_env(tmp_path: Path) -> Iterator[Spool]:
    saved = (_config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir, _config.LOG_HANDLER_LEVEL)
    saved_cls = (ReceiverServer.quickack, ReceiverServer.allowed_networks)
    spool = Spool(tmp_path / "spool", min_free_bytes=0, min_free_percent=0)
    spool.prepare()
    yield spool
    _config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir, _config.LOG_HANDLER_LEVEL = saved
    ReceiverServer.quickack, ReceiverServer.allowed_networks = saved_cls


def _receive(spool: Spool, mode: str) -> tuple[ReceiverServer, list[Association], int]:
    """build_server with scp.accelerate = *mode*; one C-ECHO and one C-STORE through it."""
    settings = config.Settings()
    settings = replace(
        settings, scp=replace(settings.scp, port=0, accelerate=config.Accelerate(mode))
    )
    recorder = FakeRecorder()
    server = build_server(settings, spool, recorder)
    accepted: list[Association] = []
    try:
        import threading

        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}).start()
        ae = AE(ae_title="SCU")
        ae.add_requested_context(Verification)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="RADIOGATE")
        assert assoc.is_established
        accepted.extend(server.active_associations)
        assert assoc.send_c_echo().Status == 0
        status = int(assoc.send_c_store(pydicom.dcmread(CT)).Status)
        assoc.release()
    finally:
        server.shutdown()
        server.server_close()
    assert len(recorder.calls) == (1 if status == 0 else 0)
    return server, accepted, status


def test_off_never_installs_a_class_swap(receiver_env: Spool) -> None:
    server, accepted, status = _receive(receiver_env, "off")
    assert status == 0x0000
    handler = server.RequestHandlerClass
    assert handler.__module__ != "dicom_nodes.accelerator._association"
    assert not handler.__name__.startswith("Accelerated")
    assert all(type(cx) is PresentationContext for cx in server.contexts)
    assert accepted and all(type(a) is Association for a in accepted)
    assert all(type(a.dul) is DULServiceProvider for a in accepted)
    assert all(type(a.dimse) is DIMSEServiceProvider for a in accepted)


def test_auto_on_an_unverified_version_falls_back_and_works(
    receiver_env: Spool, unverified: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(2):  # e.g. two receiver processes' servers: one warning
        server, accepted, status = _receive(receiver_env, "auto")
        assert status == 0x0000
        assert all(type(a) is Association for a in accepted)
        assert all(type(cx) is PresentationContext for cx in server.contexts)
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "scp.accelerate" in warnings[0] and unverified in warnings[0]


def test_on_with_an_unverified_version_refuses_to_build_the_server(
    receiver_env: Spool, unverified: str
) -> None:
    settings = config.Settings()
    settings = replace(settings, scp=replace(settings.scp, port=0, accelerate=config.Accelerate.ON))
    with pytest.raises(AcceleratorUnavailable, match=r"scp\.accelerate"):
        build_server(settings, receiver_env, FakeRecorder())


@pytest.mark.parametrize(
    ("command", "key"), [("scp", "scp.accelerate"), ("worker", "forward.accelerate")]
)
def test_cli_stops_with_a_clear_error(
    command: str,
    key: str,
    unverified: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``radiogate scp`` / ``worker`` with ``on`` stop before starting anything: exit 2 and one
    line naming the setting, no traceback."""
    for name in ("RADIOGATE_SCP__ACCELERATE", "RADIOGATE_FORWARD__ACCELERATE"):
        monkeypatch.setenv(name, "on")
    monkeypatch.setenv("RADIOGATE_DATABASE__DSN", "host=192.0.2.1 dbname=never")
    assert cli.main([command]) == 2
    err = capsys.readouterr().err
    assert err.startswith("radiogate: configuration error: ")
    assert key in err and unverified in err and "Traceback" not in err


# --------------------------------------------------------------------------- the forwarder


def _echo_peer() -> tuple[object, int]:
    scp = AE(ae_title="PEER")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    assert server is not None  # not blocking: the running server is returned
    return server, server.server_address[1]


@pytest.mark.parametrize("mode", ["off", "auto-unverified"])
def test_forwarder_uses_stock_pynetdicom(
    mode: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    if mode == "auto-unverified":
        monkeypatch.setattr(pynetdicom, "__version__", UNVERIFIED)
    assert use_accelerator(mode.split("-", maxsplit=1)[0]) is False
    server, port = _echo_peer()
    try:
        settings = DimseSettings(name="peer", ae_title="PEER", host="127.0.0.1", port=port)
        for _ in range(2):
            assoc = open_association(settings, [])
            assert type(assoc) is Association
            assert type(assoc.dul) is DULServiceProvider
            assert assoc.send_c_echo().Status == 0
            assoc.release()
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    warnings = _warnings(caplog)
    assert len(warnings) == (1 if mode == "auto-unverified" else 0)


def test_forwarder_on_with_an_unverified_version_refuses(unverified: str) -> None:
    with pytest.raises(AcceleratorUnavailable, match=r"forward\.accelerate"):
        use_accelerator("on")


# --------------------------------------------------------------------------- imports


def test_importing_receiver_and_forwarder_loads_no_class_swap() -> None:
    """The modules that touch pynetdicom's internals load only once the accelerator is on."""
    code = (
        "import sys\n"
        "import dicom_nodes.scp.app, dicom_nodes.scp.runner, dicom_nodes.forward, "
        "dicom_nodes.cli\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('dicom_nodes.accelerator.'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['dicom_nodes.accelerator._parts']"
