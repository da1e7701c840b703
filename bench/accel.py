"""Accelerator configurations for the benchmarks: stock pynetdicom, all parts, one part alone,
all parts but one; and the paired comparison against stock in the same round.

A configuration runs ``radiogate <command>`` through :data:`LAUNCH`, which selects the parts
(``dicom_nodes.accelerator.select_parts``) before the CLI starts, so the receivers the SCP
forks and the worker inherit the choice; ``stock`` runs with ``scp.accelerate`` and
``forward.accelerate`` off instead.

Names: ``stock``, ``all``, ``+<part>`` (that part alone), ``-<part>`` (all parts but that one);
``parts`` expands to stock, all, every ``+<part>`` and every ``-<part>``.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterable, Sequence

from dicom_nodes.accelerator import PARTS, Part

__all__ = ["LAUNCH", "command", "environment", "expand", "paired", "parts_of"]

LAUNCH = (
    "import sys\n"
    "from dicom_nodes import accelerator, cli\n"
    "accelerator.select_parts([p for p in sys.argv[1].split(',') if p])\n"
    "sys.exit(cli.main(sys.argv[2:]))\n"
)


def expand(text: str, parts: Iterable[Part] = PARTS) -> list[str]:
    """The configuration names in *text* (comma-separated; ``parts`` as in the module doc)."""
    out: list[str] = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        if name == "parts":
            ordered = sorted(parts)
            out += ["stock", "all", *(f"+{p}" for p in ordered), *(f"-{p}" for p in ordered)]
        else:
            parts_of(name)  # validate
            out.append(name)
    return list(dict.fromkeys(out))


def parts_of(name: str) -> frozenset[Part] | None:
    """The parts of configuration *name*; None for stock pynetdicom."""
    if name == "stock":
        return None
    if name == "all":
        return frozenset(PARTS)
    if name[:1] in "+-" and name[1:] in {p.value for p in Part}:
        part = Part(name[1:])
        return frozenset({part}) if name[0] == "+" else frozenset(PARTS - {part})
    raise SystemExit(f"unknown accelerator configuration {name!r}")


def environment(name: str) -> dict[str, str]:
    """Settings for configuration *name* (added to the process's environment)."""
    mode = "off" if parts_of(name) is None else "on"
    return {"RADIOGATE_SCP__ACCELERATE": mode, "RADIOGATE_FORWARD__ACCELERATE": mode}


def command(name: str, cli_args: Sequence[str]) -> list[str]:
    """The command line that runs ``radiogate *cli_args*`` in configuration *name*."""
    parts = parts_of(name)
    if parts is None:
        return [sys.executable, "-m", "dicom_nodes.cli", *cli_args]
    return [sys.executable, "-c", LAUNCH, ",".join(sorted(parts)), *cli_args]


def paired(
    rounds: dict[int, dict[str, float]], name: str, reference: str = "stock"
) -> tuple[float, float, float]:
    """(median of *name*, median of *reference*, median of the per-round ratio
    name/reference) over the rounds where both ran; NaNs when there are none."""
    both = [r for r in rounds.values() if name in r and reference in r and r[reference] > 0]
    if not both:
        return float("nan"), float("nan"), float("nan")
    return (
        statistics.median(r[name] for r in both),
        statistics.median(r[reference] for r in both),
        statistics.median(r[name] / r[reference] for r in both),
    )
