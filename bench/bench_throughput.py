"""Throughput, one command: receive, end to end, the door under load, two nodes.

Run from the repository root::

    .venv/bin/python bench/bench_throughput.py           # ~40 min on a busy 2-core machine
    .venv/bin/python bench/bench_throughput.py --quick   # fewer repetitions

Each part is its own benchmark, run one after the other (never at the same time: they would
measure each other), each with its anchors measured in the same run:

1. ``bench_receive.py --count 500 --reps 2``: receive rates of ``radiogate scp`` against
   Orthanc (SQLite index) and DCMTK ``storescp --fork``; 0.5 MB and 10 KB, 1 and 4
   associations; CPU per stored instance.
2. ``bench_forward.py --quick`` with the identity route, then ``--deid`` with the default
   de-identifying route: storescu → Radiogate → Orthanc (last instance confirmed) against
   storescu → Orthanc; forwarding alone; CPU ms per instance and peak RSS per component.
3. ``bench_forward.py --door none,idle,10,0 --sizes ct512``: receive rate, end to end and a
   critical study's latency with no load, under a CPU-bound job lowered as the analysis process
   is (niceness 10 and the idle scheduling class), at niceness 10 only, and at 0.
4. ``bench_forward.py --two-nodes``: two nodes (own SCP, worker, spool) on one PostgreSQL, per
   node and together, against two storescu straight to Orthanc.

Every figure is a median over paired rounds with its range; a shared machine is noisy, so the
ratios (same round) are what to compare. Extra arguments after ``--`` go to the two end-to-end
parts (e.g. ``-- --trees base=/tmp/base,new=.`` to pair the current code with another tree).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(title: str, args: list[str]) -> int:
    print(f"\n{'=' * 100}\n{title}\n  {' '.join(args)}\n{'=' * 100}", flush=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, *args], cwd=ROOT)
    print(f"-- {title}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repetition less per part")
    parser.add_argument("--skip", default="", help="parts to skip: receive,forward,door,two")
    parser.add_argument("extra", nargs="*", help="after --: more bench_forward.py arguments")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    reps = "2" if args.quick else "3"
    forward = ["bench/bench_forward.py", "--quick", "--count", "200", "--settings", "2/50/4"]
    parts: list[tuple[str, str, list[str]]] = [
        ("receive", "Receive (the SCP alone)",
         ["bench/bench_receive.py", "--count", "500", "--reps", "1" if args.quick else "2"]),
        ("forward", "End to end, identity route", [*forward, "--reps", reps, *args.extra]),
        ("forward", "End to end, default de-identifying route",
         [*forward, "--deid", "--reps", reps, *args.extra]),
        ("door", "The door under a CPU-bound job",
         [*forward, "--sizes", "ct512", "--door", "none,idle,10,0", "--reps", reps]),
        ("two", "Two nodes on one PostgreSQL", [*forward, "--two-nodes", "--reps", reps]),
    ]  # fmt: skip
    failed = [title for key, title, argv in parts if key not in skip and _run(title, argv) != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
