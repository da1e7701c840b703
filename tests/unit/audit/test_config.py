"""The [audit] configuration section."""

from __future__ import annotations

import pytest

import config
from config import ConfigError, SyslogProtocol


def test_defaults_and_documented_file_agree() -> None:
    from_file = config.load(config.DEFAULT_FILE, env={})
    assert from_file == config.resolve_paths(config.Settings(), config.DEFAULT_FILE.parent)
    assert from_file.audit.checkpoint_every == 1000


def test_env_overrides() -> None:
    s = config.load(
        env={"RADIOGATE_AUDIT__SYSLOG_PROTOCOL": "tcp", "RADIOGATE_AUDIT__SYSLOG_HOST": "log1"}
    )
    assert s.audit.syslog_protocol is SyslogProtocol.TCP
    assert s.audit.syslog_host == "log1"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"RADIOGATE_AUDIT__CHECKPOINT_EVERY": "-1"}, "audit.checkpoint_every"),
        ({"RADIOGATE_AUDIT__CHECKPOINT_EVERY": "0", "RADIOGATE_AUDIT__CHECKPOINT_SECONDS": "0"},
         "audit.checkpoint_every"),
        ({"RADIOGATE_AUDIT__SYSLOG_HOST": "h", "RADIOGATE_AUDIT__SYSLOG_PORT": "0"},
         "audit.syslog_port"),
        ({"RADIOGATE_AUDIT__SYSLOG_PROTOCOL": "smoke"}, "audit.syslog_protocol"),
        ({"RADIOGATE_AUDIT__SIGNING_KEY": ""}, "audit.signing_key"),
        ({"RADIOGATE_AUDIT__SEAL_INTERVAL": "0"}, "audit.seal_interval"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(env=env)
