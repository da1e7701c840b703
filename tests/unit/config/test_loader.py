from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

import config
from config import ConfigError, Settings, load


def test_defaults_without_file() -> None:
    s = load(env={})
    assert s == config.resolve_paths(Settings(), None)
    # No file: the default ./var lives in the source checkout, whatever the working directory.
    project = config.project_dir()
    assert project is not None
    assert s.node.data_dir == str(project / "var")
    assert s.spool.path == str(project / "var" / "spool")
    assert s.scp.ae_title == "RADIOGATE"
    assert s.scp.port == 11112
    assert s.scp.host == "127.0.0.1"


def test_default_file_documents_every_key_with_its_default() -> None:
    raw = tomllib.loads(config.DEFAULT_FILE.read_text())
    assert load(config.DEFAULT_FILE, env={}) == config.resolve_paths(
        Settings(), config.DEFAULT_FILE.parent
    )

    def keys(obj: object, prefix: str = "") -> set[str]:
        out = set()
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                out |= keys(value, f"{prefix}{f.name}.")
            elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                out |= keys(value[0], f"{prefix}{f.name}[].")
            elif f.name == "lane_rules":  # an empty array of tables: documented as an example
                assert f"[[{f.name}]]" in config.DEFAULT_FILE.read_text()
            else:
                out.add(f"{prefix}{f.name}")
        return out

    def file_keys(table: dict[str, object], prefix: str = "") -> set[str]:
        out = set()
        for k, v in table.items():
            if isinstance(v, dict) and k != "tags":
                out |= file_keys(v, f"{prefix}{k}.")
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                out |= file_keys(v[0], f"{prefix}{k}[].")
            else:
                out.add(f"{prefix}{k}")
        return out

    assert file_keys(raw) == keys(Settings())
    text = config.DEFAULT_FILE.read_text()
    for line_no, line in enumerate(text.splitlines()):
        if "=" in line and not line.lstrip().startswith("#"):
            previous = text.splitlines()[line_no - 1].strip()
            assert previous.startswith(("#", "[")) or "=" in previous, line


def test_file_and_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('[scp]\nport = 2000\nallowed_calling_aets = ["CT1"]\n[logging]\nlevel = "debug"\n')
    s = load(f, env={"RADIOGATE_SCP__PORT": "3000", "RADIOGATE_SCP__TLS__ENABLED": "false",
                     "RADIOGATE_SCP__ALLOWED_NETWORKS": "127.0.0.0/8, 10.0.0.0/8"})  # fmt: skip
    assert s.scp.port == 3000
    assert s.scp.allowed_calling_aets == ["CT1"]
    assert s.scp.allowed_networks == ["127.0.0.0/8", "10.0.0.0/8"]
    assert s.logging.level is config.LogLevel.DEBUG


@pytest.mark.parametrize(
    ("value", "policy"),
    [("quarantine", config.DifferentBytesArchived.QUARANTINE),
     ("replace-in-archive", config.DifferentBytesArchived.REPLACE_IN_ARCHIVE),
     ("Replace_In_Archive", config.DifferentBytesArchived.REPLACE_IN_ARCHIVE),
     ("keep", config.DifferentBytesArchived.KEEP)],
)  # fmt: skip
def test_different_bytes_archived(value: str, policy: object) -> None:
    assert load(env={}).scp.different_bytes_archived is config.DifferentBytesArchived.QUARANTINE
    env = {"RADIOGATE_SCP__DIFFERENT_BYTES_ARCHIVED": value}
    assert load(env=env).scp.different_bytes_archived is policy


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
        (
            '[[alerts.target]]\nname = "a b"\nkind = "mqtt"\n',
            {},
            "alerts.target[0].name: expected letters, digits or '-', '_', '.'",
        ),
        (
            '[[alerts.target]]\nname = "t"\nkind = "mqtt"\n[[alerts.target]]\nname = "t"\n'
            'kind = "mqtt"\n',
            {},
            "alerts.target[1].name: 't' is defined twice",
        ),
        ("[alerts]\nretry_max = 0\n", {}, "alerts.retry_max: expected a positive number"),
        ('[[pacs.user]]\nname = "al/ice"\n', {}, "pacs.user[0].name: expected letters"),
        (
            '[[pacs.user]]\nname = "alice"\n[[pacs.user]]\nname = "alice"\n',
            {},
            "pacs.user[1].name: 'alice' is defined twice",
        ),
        ("[pacs]\nrecord_interval = -1\n", {}, "pacs.record_interval: expected a positive"),
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


def test_routes_and_destinations(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text(
        """
[[destinations]]
name = "archive"
[[destinations]]
name = "research"
kind = "stowrs"
url = "http://127.0.0.1:8080/dicom-web"
[[routes]]
name = "er"
steps = ["forward:archive", "forward:research", "triage"]
lane = "critical"
[routes.match]
calling_ae = ["ER_*"]
tags = { RequestedProcedurePriority = ["STAT", "HIGH"] }
[[routes]]
name = "rest"
[[lane_rules]]
lane = "urgent"
[lane_rules.match]
modality = ["CR"]
"""
    )
    s = load(f, env={})
    assert [d.name for d in s.destinations] == ["archive", "research"]
    assert s.routes[0].match.tags == {"RequestedProcedurePriority": ["STAT", "HIGH"]}
    # a route without steps de-identifies with the default profile, then archives
    assert s.routes[1].steps == ["deidentify:basic", "forward:archive"]
    assert s.lane_rules[0].match.modality == ["CR"]


def test_deid_profiles_are_validated(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    base = """
[[deid.profiles]]
name = "research"
options = ["Retain UIDs", "clean_descriptors"]
safe_private = ["GEMS_ACQU_01:0019,xx0C"]
burned_in = "mask"
[[deid.profiles.masks]]
model = ["Sono*"]
regions = [[0, 0, 100, 40]]
[[routes]]
steps = ["deidentify:research", "forward:archive"]
"""
    f.write_text(base)
    s = load(f, env={})
    profile = s.deid.profiles[0]
    assert [o.value for o in profile.options] == ["retain-uids", "clean-descriptors"]
    assert profile.masks[0].regions == [[0, 0, 100, 40]]
    for bad, message in [
        (base.replace("deidentify:research", "deidentify:nope"), "profile 'nope'"),
        (base.replace("0019,xx0C", "0018,xx0C"), "odd group"),
        (base.replace("[[0, 0, 100, 40]]", "[[10, 0, 5, 40]]"), "x0 < x1"),
        (base.replace('"Retain UIDs"', '"retain everything"'), "expected one of"),
        (
            base.replace('"Retain UIDs"', '"retain-longitudinal-full-dates", '
                         '"retain-longitudinal-modified-dates"'),
            "choose one",
        ),
    ]:  # fmt: skip
        f.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load(f, env={})


def test_storage_commitment_destination(tmp_path: Path) -> None:
    """Reports come back to the AE the destination knows as calling_ae: the SCP's own."""
    f = tmp_path / "c.toml"
    f.write_text(
        '[scp]\nae_title = "GATE1"\n[[destinations]]\nconfirm = "commitment-or-query"\n'
        'calling_ae = "GATE1"\ncommitment_timeout = 5\n'
    )
    d = load(f, env={}).destinations[0]
    assert (d.confirm, d.calling_ae, d.commitment_timeout) == ("commitment-or-query", "GATE1", 5.0)
    # another calling AE is fine when the SCP answers to any called AE title
    env = {"RADIOGATE_SCP__REQUIRE_CALLED_AET": "false"}
    f.write_text('[[destinations]]\nconfirm = "commitment"\ncalling_ae = "RG_FWD"\n')
    assert load(f, env=env).destinations[0].calling_ae == "RG_FWD"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[routes]]\nsteps = ["forward:nowhere"]\n', "destination 'nowhere' is not defined"),
        ('[[routes]]\nsteps = ["teleport"]\n', "routes[0].steps[0]: expected one of triage"),
        ('[[routes]]\nlane = "asap"\n', "routes[0].lane"),
        ('[[destinations]]\nname = "x"\nkind = "ftp"\n', "destinations[0].kind"),
        ("routes = []\n", "routes: expected at least one route"),
        ("[pipeline]\nfill_wait = -0.1\n", "pipeline.fill_wait: expected 0 to 5 seconds"),
        ("[pipeline]\nfill_wait = 30\n", "pipeline.fill_wait: expected 0 to 5 seconds"),
        ("[pipeline]\nresend_wait = -1\n", "pipeline.resend_wait: expected 0 to 604800"),
        ("[pipeline]\nresend_wait = 604801\n", "pipeline.resend_wait: expected 0 to 604800"),
        ("[routes]\nname = 'x'\n", "routes: expected an array of tables"),
        ('[[destinations]]\nconfirm = "c-move"\n', "destinations[0].confirm: expected one of"),
        (
            '[[destinations]]\nconfirm = "commitment"\ncommitment_timeout = 0\n',
            "destinations[0].commitment_timeout",
        ),
        (
            '[[destinations]]\nconfirm = "commitment"\ncalling_ae = "RG_FWD"\n',
            "destinations[0].calling_ae: with confirm = 'commitment'",
        ),
    ],
)
def test_invalid_pipeline_settings(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "r.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load(f, env={})
    assert message in str(exc.value)


def test_data_found_by_the_configuration_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "tls").mkdir()
    (site / "tls" / "c.pem").write_text("x")
    f = site / "radiogate.toml"
    f.write_text(
        '[node]\ndata_dir = "state"\n[audit]\nkeyring = "/elsewhere/keyring.json"\n'
        '[scp.tls]\nenabled = true\ncertificate = "tls/c.pem"\nprivate_key = "tls/c.pem"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load(Path("..") / "site" / "radiogate.toml", env={})
    assert s.node.data_dir == str(site / "state")
    assert s.spool.path == str(site / "state" / "spool")
    assert s.audit.signing_key == str(site / "state" / "audit" / "signing_key.pem")
    assert s.audit.keyring == "/elsewhere/keyring.json"  # absolute paths stay as given
    assert s.deid.vault_key_file == str(site / "state" / "deid" / "vault.key")
    assert s.orthanc.credentials_file == str(site / "state" / "orthanc" / "http-credentials")
    assert s.scp.tls.certificate == str(site / "tls" / "c.pem")
    # A relative data directory from the environment is also the file's, not the cwd's.
    s = load(f, env={"RADIOGATE_NODE__DATA_DIR": "other"})
    assert s.node.data_dir == str(site / "other")
    assert config.data_path(s, "spool") == site / "other" / "spool"
