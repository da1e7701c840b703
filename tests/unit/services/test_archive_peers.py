"""The managed Orthanc knows Radiogate's SCP under every AE our destinations call it from, so
that its storage commitment reports (PS3.4 J.3.3) reach ``radiogate scp``."""

from __future__ import annotations

from pathlib import Path

from config import Settings
from config.routes import DestinationSettings
from config.schema import OrthancSettings, ScpSettings
from dicom_nodes.services.orthanc import ManagedOrthanc, OrthancPeer
from dicom_nodes.services.stack import archive_peers


def test_default_settings_give_the_scp_entry() -> None:
    assert archive_peers(Settings()) == [OrthancPeer("radiogate", "RADIOGATE", "127.0.0.1", 11112)]


def test_wildcard_listen_address_is_reached_on_loopback() -> None:
    for listen, reached in [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.1.2.3", "10.1.2.3")]:
        peers = archive_peers(Settings(scp=ScpSettings(host=listen, port=11113)))
        assert [(p.host, p.port) for p in peers] == [(reached, 11113)]


def test_other_calling_aes_towards_this_archive_point_at_the_scp_too() -> None:
    settings = Settings(
        scp=ScpSettings(ae_title="GATE", require_called_aet=False),
        orthanc=OrthancSettings(ae_title="ARCH", dicom_port=4343),
        destinations=[
            DestinationSettings(name="a", ae_title="ARCH", port=4343, calling_ae="GATE_FWD"),
            DestinationSettings(name="b", ae_title="ARCH", port=4343, calling_ae="GATE"),
            DestinationSettings(name="c", ae_title="OTHER", port=104, calling_ae="GATE_X"),
        ],
    )
    assert [(p.name, p.ae_title, p.port) for p in archive_peers(settings)] == [
        ("radiogate", "GATE", 11112),
        ("radiogate-1", "GATE_FWD", 11112),
    ]


def test_orthanc_configuration_has_the_modality_entry(tmp_path: Path) -> None:
    orthanc = ManagedOrthanc(
        storage_dir=tmp_path,
        http_port=8042,
        dicom_port=4242,
        peers=archive_peers(Settings()),
    )
    modalities = orthanc.config()["DicomModalities"]
    assert isinstance(modalities, dict)
    entry = modalities["radiogate"]
    assert (entry["AET"], entry["Host"], entry["Port"]) == ("RADIOGATE", "127.0.0.1", 11112)
