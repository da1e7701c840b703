"""The accelerator's own tests force it on, whatever ``scp.accelerate`` / ``forward.accelerate``
say in the environment; on a pynetdicom version it was not verified with, the modules that
exercise its class swaps skip themselves with that reason (``support.skip_unless_verified``);
the switch's tests (``test_switch.py``) run always."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import _config


@pytest.fixture
def chunked(tmp_path: Path) -> Iterator[Path]:
    """pynetdicom configured as the receiver configures it: datasets streamed to files."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    saved = (_config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir, _config.LOG_HANDLER_LEVEL)
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    tempfile.tempdir = str(incoming)
    yield incoming
    _config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir, _config.LOG_HANDLER_LEVEL = saved
