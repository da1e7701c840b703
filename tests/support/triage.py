"""Triage material shared by the end-to-end test and ``bench/bench_triage_e2e.py``: CT slices
with an inserted finding, the routes that triage one sender's studies behind a routine backlog,
the secrets a de-identifying node needs, and DCMTK's ``storescu`` as the modality."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom

from analysis.training.synthetic import FindingKind, Site, insert_finding
from tests.support import dcmtk
from tests.support.pipeline import site_keys

__all__ = ["TRIAGE_ROUTES", "insert_dense_finding", "node_secrets", "storescu"]

TRIAGE_ROUTES = """
[[routes]]
name = "backlog"
steps = ["deidentify:basic", "forward:archive"]
[routes.match]
calling_ae = ["ROUTINE"]

[[routes]]
name = "triaged"
steps = ["triage", "deidentify:basic", "forward:archive"]
"""
"""Calling AE ``ROUTINE`` is de-identified and forwarded; anything else is triaged first."""


def node_secrets() -> dict[str, str]:
    """The environment of a node that de-identifies (fresh keys), completing series by
    association release, MPPS or count only (the quiet period is an hour)."""
    return {**site_keys(), "RADIOGATE_PIPELINE__QUIET_PERIOD": "3600"}


def insert_dense_finding(ds: pydicom.Dataset, rng: np.random.Generator) -> np.ndarray | None:
    """Insert a large hyperdense soft-tissue finding into the Pixel Data of the CT slice *ds*
    (in place, stored values clipped to their type); returns the slice in HU with the finding,
    or None when none fitted (the slice is unchanged)."""
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    spacing = [float(v) for v in ds.PixelSpacing]
    pixels = ds.pixel_array
    hu = pixels.astype(np.float32) * slope + intercept
    changed, finding = insert_finding(hu, spacing, rng, FindingKind.DENSE, Site.SOFT_TISSUE)
    if finding is None:
        return None
    info = np.iinfo(pixels.dtype)
    stored = np.round((changed - intercept) / slope).clip(info.min, info.max)
    ds.PixelData = stored.astype(pixels.dtype).tobytes()
    return changed


def storescu(port: int, calling: str, files: Sequence[Path]) -> None:
    """Send *files* to the node's SCP on *port* as *calling* in one association."""
    done = subprocess.run(
        [dcmtk("storescu"), "-aet", calling, "-aec", "RADIOGATE", "127.0.0.1", str(port),
         *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-500:]}")
