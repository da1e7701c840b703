"""The site secret and vault key: environment precedence, files, permissions, creation."""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
import threading
from pathlib import Path

import pytest

from config import NodeSettings, Settings
from config.deid import DeidSettings
from dicom_nodes.deid.secrets import (
    ENV_SITE_SECRET,
    ENV_VAULT_KEY,
    SecretError,
    VaultKey,
    ensure_secrets,
    key_id_of,
    load_site_secret,
    load_vault_key,
    secret_paths,
)

NO_ENV: dict[str, str] = {}


def _settings(tmp_path: Path, **deid: str) -> Settings:
    return dataclasses.replace(
        Settings(),
        node=NodeSettings(data_dir=str(tmp_path / "node")),
        deid=DeidSettings(**deid),  # type: ignore[arg-type]
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def test_ensure_creates_both_files_private_and_atomic(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    secret_path, vault_path = secret_paths(s)
    assert secret_path == tmp_path / "node" / "deid" / "site_secret"
    assert vault_path == tmp_path / "node" / "deid" / "vault.key"
    old_umask = os.umask(0o022)
    try:
        created = ensure_secrets(s, NO_ENV)
    finally:
        os.umask(old_umask)
    assert created == [secret_path, vault_path]
    for path in created:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_bytes()) == 32
    assert stat.S_IMODE(secret_path.parent.stat().st_mode) == 0o700
    assert secret_path.read_bytes() != vault_path.read_bytes()
    assert sorted(p.name for p in secret_path.parent.iterdir()) == ["site_secret", "vault.key"]
    assert load_site_secret(s, NO_ENV) == secret_path.read_bytes()
    assert load_vault_key(s, NO_ENV).key == vault_path.read_bytes()


def test_ensure_never_replaces_existing_files(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    ensure_secrets(s, NO_ENV)
    before = [p.read_bytes() for p in secret_paths(s)]
    assert ensure_secrets(s, NO_ENV) == []
    assert [p.read_bytes() for p in secret_paths(s)] == before


def test_ensure_creates_only_the_missing_file(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    secret_path, vault_path = secret_paths(s)
    _write(secret_path, b"s" * 32)
    secret_path.parent.chmod(0o700)
    assert ensure_secrets(s, NO_ENV) == [vault_path]
    assert secret_path.read_bytes() == b"s" * 32


def test_concurrent_starters_agree_on_one_secret(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    results: list[list[Path]] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(ensure_secrets(s, NO_ENV))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [p for r in results for p in r]
    assert sorted(created) == sorted(secret_paths(s))  # each file created exactly once
    assert not [p for p in secret_paths(s)[0].parent.iterdir() if p.name.endswith(".tmp")]


def test_ensure_skips_files_for_secrets_given_in_the_environment(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    env = {ENV_SITE_SECRET: _b64(b"e" * 32)}
    assert ensure_secrets(s, env) == [secret_paths(s)[1]]
    assert not secret_paths(s)[0].exists()
    assert load_site_secret(s, env) == b"e" * 32


def test_environment_takes_precedence_over_files(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    ensure_secrets(s, NO_ENV)
    env = {ENV_SITE_SECRET: _b64(b"a" * 32), ENV_VAULT_KEY: _b64(b"b" * 32) + "\n"}
    assert load_site_secret(s, env) == b"a" * 32
    key = load_vault_key(s, env)
    assert key.key == b"b" * 32
    assert key.key_id == key_id_of(b"b" * 32)
    assert load_vault_key(s, NO_ENV).key == secret_paths(s)[1].read_bytes()


def test_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAULT_KEY, _b64(b"k" * 32))
    assert load_vault_key(_settings(tmp_path)).key == b"k" * 32


@pytest.mark.parametrize(
    "value",
    [_b64(b"x" * 31), _b64(b"x" * 33), _b64(b"x" * 64), "not base64!", "YWJj*"],
)
def test_environment_value_must_be_base64_of_32_bytes(tmp_path: Path, value: str) -> None:
    s = _settings(tmp_path)
    with pytest.raises(SecretError, match=ENV_VAULT_KEY) as err:
        load_vault_key(s, {ENV_VAULT_KEY: value})
    assert value not in str(err.value)
    with pytest.raises(SecretError, match=ENV_SITE_SECRET):
        ensure_secrets(s, {ENV_SITE_SECRET: value})


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o660, 0o700 | 0o004])
def test_group_or_world_accessible_file_is_refused(tmp_path: Path, mode: int) -> None:
    s = _settings(tmp_path)
    secret_path, vault_path = secret_paths(s)
    _write(secret_path, os.urandom(32), mode)
    with pytest.raises(SecretError, match=r"group or others.*chmod 600"):
        load_site_secret(s, NO_ENV)
    with pytest.raises(SecretError, match="group or others"):
        ensure_secrets(s, NO_ENV)
    _write(vault_path, os.urandom(32), mode)
    with pytest.raises(SecretError, match="vault key"):
        load_vault_key(s, NO_ENV)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 44, 4096])
def test_file_of_the_wrong_length_is_refused(tmp_path: Path, length: int) -> None:
    s = _settings(tmp_path)
    _write(secret_paths(s)[1], b"k" * length)
    with pytest.raises(SecretError, match="expected exactly 32 raw bytes"):
        load_vault_key(s, NO_ENV)
    with pytest.raises(SecretError, match="expected exactly 32 raw bytes"):
        ensure_secrets(s, NO_ENV)


def test_base64_text_in_the_file_is_refused(tmp_path: Path) -> None:
    """A file must hold the raw bytes; base64 text (44 bytes) is a likely mistake."""
    s = _settings(tmp_path)
    _write(secret_paths(s)[0], (_b64(os.urandom(32)) + "\n").encode())
    with pytest.raises(SecretError, match="expected exactly 32"):
        load_site_secret(s, NO_ENV)


def test_missing_file_names_the_way_to_create_it(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    with pytest.raises(SecretError, match=f"does not exist.*{ENV_SITE_SECRET}"):
        load_site_secret(s, NO_ENV)
    with pytest.raises(SecretError, match=f"does not exist.*{ENV_VAULT_KEY}"):
        load_vault_key(s, NO_ENV)


def test_symlink_is_followed_and_its_target_checked(tmp_path: Path) -> None:
    """Secret stores mount files behind links; the permissions checked are the target's."""
    target = tmp_path / "store" / "vault.key"
    _write(target, b"v" * 32)
    link = tmp_path / "link"
    link.symlink_to(target)
    s = _settings(tmp_path, vault_key_file=str(link))
    assert load_vault_key(s, NO_ENV).key == b"v" * 32
    target.chmod(0o644)
    with pytest.raises(SecretError, match="group or others"):
        load_vault_key(s, NO_ENV)


def test_dangling_symlink_is_not_written_through(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    s = _settings(tmp_path, vault_key_file=str(link))
    with pytest.raises(SecretError, match="does not exist"):
        ensure_secrets(s, NO_ENV)
    assert not (tmp_path / "missing").exists()


def test_directory_is_refused(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    secret_paths(s)[1].mkdir(parents=True)
    with pytest.raises(SecretError, match="not a regular file"):
        load_vault_key(s, NO_ENV)


def test_absolute_paths_in_settings(tmp_path: Path) -> None:
    s = _settings(
        tmp_path, secret_file=str(tmp_path / "a" / "s.bin"), vault_key_file=str(tmp_path / "v")
    )
    created = ensure_secrets(s, NO_ENV)
    assert created == [tmp_path / "a" / "s.bin", tmp_path / "v"]


def test_vault_key_id_and_repr_never_show_the_key() -> None:
    raw = bytes(range(32))
    key = VaultKey(raw)
    assert len(key.key_id) == 16 and int(key.key_id, 16) >= 0
    assert key.key_id == VaultKey(raw).key_id != VaultKey(b"\0" * 32).key_id
    assert raw.hex()[:16] != key.key_id
    assert raw.hex() not in repr(key) and repr(raw) not in repr(key) and "key_id" in repr(key)
    with pytest.raises(SecretError):
        VaultKey(b"short")


def test_errors_never_contain_the_secret(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    raw = os.urandom(32)
    _write(secret_paths(s)[0], raw, 0o644)
    with pytest.raises(SecretError) as err:
        load_site_secret(s, NO_ENV)
    text = str(err.value)
    assert raw.hex() not in text and _b64(raw) not in text and repr(raw) not in text
