from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

import config
from config import ConfigError, Settings, load


def test_defaults_without_file() -> None:
    s = load(env={})
    assert s == Settings()
    assert s.scp.ae_title == "RADIOGATE"
    assert s.scp.port == 11112
    assert s.scp.host == "127.0.0.1"


def test_default_file_documents_every_key_with_its_default() -> None:
    raw = tomllib.loads(config.DEFAULT_FILE.read_text())
    assert load(config.DEFAULT_FILE, env={}) == Settings()

    def keys(obj: object, prefix: str = "") -> set[str]:
        out = set()
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                out |= keys(value, f"{prefix}{f.name}.")
            else:
                out.add(f"{prefix}{f.name}")
        return out

    def file_keys(table: dict[str, object], prefix: str = "") -> set[str]:
        out = set()
        for k, v in table.items():
            if isinstance(v, dict):
                out |= file_keys(v, f"{prefix}{k}.")
            else:
                out.add(f"{prefix}{k}")
        return out

    assert file_keys(raw) == keys(Settings())
    text = config.DEFAULT_FILE.read_text()
    for line_no, line in enumerate(text.splitlines()):
        if "=" in line and not line.lstrip().startswith("#"):
            previous = text.splitlines()[line_no - 1].strip()
            assert previous.startswith("#") or previous.endswith("=") or "=" in previous, line


def test_file_and_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('[scp]\nport = 2000\nallowed_calling_aets = ["CT1"]\n[logging]\nlevel = "debug"\n')
    s = load(f, env={"RADIOGATE_SCP__PORT": "3000", "RADIOGATE_SCP__TLS__ENABLED": "false",
                     "RADIOGATE_SCP__ALLOWED_NETWORKS": "127.0.0.0/8, 10.0.0.0/8"})  # fmt: skip
    assert s.scp.port == 3000
    assert s.scp.allowed_calling_aets == ["CT1"]
    assert s.scp.allowed_networks == ["127.0.0.0/8", "10.0.0.0/8"]
    assert s.logging.level is config.LogLevel.DEBUG


def test_config_file_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text("[node]\nname = 'edge-7'\n")
    assert load(env={"RADIOGATE_CONFIG": str(f)}).node.name == "edge-7"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[scp]\nprot = 1\n", {}, "unknown configuration key 'scp.prot'"),
        ("[nope]\n", {}, "unknown configuration key 'nope'"),
        ("", {"RADIOGATE_SCP__PROT": "1"}, "unknown configuration key 'scp.prot'"),
        ("[scp]\nport = 'x'\n", {}, "scp.port: expected an integer"),
        ("", {"RADIOGATE_SCP__PORT": "eleven"}, "scp.port: expected an integer"),
        ("[scp]\nport = 70000\n", {}, "scp.port: expected a TCP port"),
        ("[scp]\nae_title = 'WAY_TOO_LONG_AE_TITLE'\n", {}, "scp.ae_title: expected an AE title"),
        ("[scp]\nallowed_networks = ['nonsense']\n", {}, "scp.allowed_networks[0]"),
        ("[scp.tls]\nenabled = true\n", {}, "scp.tls.certificate: expected an existing PEM file"),
        ("[logging]\nlevel = 'LOUD'\n", {}, "logging.level: expected one of DEBUG, INFO"),
        ("", {"RADIOGATE_SPOOL__FSYNC": "maybe"}, "spool.fsync: expected true or false"),
        ("[spool]\nmin_free_percent = 120\n", {}, "spool.min_free_percent"),
        ("[scp]\n", {"RADIOGATE_SCP": "1"}, "scp: expected a table"),
    ],
)
def test_invalid_values_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    f = tmp_path / "r.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load(f, env=env)
    assert message in str(exc.value)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "absent.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[scp\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad, env={})


def test_data_path_resolution(tmp_path: Path) -> None:
    s = load(env={"RADIOGATE_NODE__DATA_DIR": str(tmp_path)})
    assert config.data_path(s, "spool") == tmp_path / "spool"
    assert config.data_path(s, "/abs/x") == Path("/abs/x")
