"""The forwarder's associations alone: stock pynetdicom against accelerator configurations.

Run from the repository root::

    .venv/bin/python bench/bench_scu.py                    # stock,all,-reactors,-p-data
    .venv/bin/python bench/bench_scu.py --accel stock,all --count 500 --rounds 7

One association of ``dicom_nodes.forward``'s ``open_association`` (this process) sends every
generated CT instance (0.5 MB and 10 KB sets, as ``bench_forward.py`` makes them) with
``send_c_store(path)`` and ``STORE_SEND_CHUNKED_DATASET`` as the forwarder does, to DCMTK
``storescp`` (``TCP_NODELAY=1``, files to disk, so that the peer is cheap). Each round runs
every configuration once per data set, in a rotated order; reported are the sender's CPU
time per instance (this process: both association threads and the caller) and wall time,
each as the median over rounds of the ratio to stock pynetdicom in the same round.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pynetdicom import _config  # noqa: E402

from bench import accel  # noqa: E402
from bench.bench_forward import generate  # noqa: E402
from dicom_nodes import accelerator  # noqa: E402
from dicom_nodes.forward import _association  # noqa: E402
from dicom_nodes.forward._association import open_association, store_contexts  # noqa: E402
from dicom_nodes.forward.settings import DimseSettings  # noqa: E402
from tests.support import free_port, stop_group, wait_for_echo  # noqa: E402

STORESCP = "/usr/bin/storescp"


def send_all(port: int, files: list[Path], config: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to send *files* over one association in *config*."""
    parts = accel.parts_of(config)
    _association._Accelerator.enabled = parts is not None
    if parts is not None:
        accelerator.select_parts(parts)
    _config.STORE_SEND_CHUNKED_DATASET = True
    settings = DimseSettings(name="peer", ae_title="STORESCP", host="127.0.0.1", port=port)
    (group,) = store_contexts([("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    assoc = open_association(settings, group.contexts)
    try:
        for msg_id, path in enumerate(files, 1):
            status = assoc.send_c_store(path, msg_id=msg_id).Status
            if status != 0:
                raise RuntimeError(f"status 0x{status:04X}")
    finally:
        assoc.release()
    return time.process_time() - cpu0, time.perf_counter() - wall0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--accel", default="stock,all,-reactors,-p-data")
    parser.add_argument("--count", type=int, default=300, help="instances per data set")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configs = accel.expand(args.accel)
    base = Path(tempfile.mkdtemp(prefix="radiogate-scubench-"))
    port = free_port()
    (base / "out").mkdir()
    peer = subprocess.Popen(
        [STORESCP, "-aet", "STORESCP", "-od", str(base / "out"), str(port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_echo(port, "STORESCP")
        sets = {
            "0.5MB": generate(base / "ct512", "ct512", "0.5MB", args.count, 512, 1).files,
            "10KB": generate(base / "small64", "small64", "10KB", args.count, 64, 2).files,
        }
        results: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
        for rnd in range(args.rounds):
            for label, files in sets.items():
                shift = rnd % len(configs)
                for config in configs[shift:] + configs[:shift]:
                    cpu, wall = send_all(port, files, config)
                    results.setdefault((label, rnd), {})[config] = (cpu, wall)
                    print(
                        f"round {rnd} {label:>5} {config:<12} {1e3 * cpu / len(files):6.2f} "
                        f"CPU-ms/inst {len(files) / wall:7.1f} inst/s",
                        flush=True,
                    )
                for p in (base / "out").iterdir():
                    p.unlink()
        print("\nmedians over rounds; x = median of per-round ratios to stock")
        for label in sets:
            for config in configs:
                rounds = [r for (lb, _), r in results.items() if lb == label]
                cpu = statistics.median(1e3 * r[config][0] / args.count for r in rounds)
                rate = statistics.median(args.count / r[config][1] for r in rounds)
                xc = statistics.median(r[config][0] / r["stock"][0] for r in rounds)
                xr = statistics.median(r["stock"][1] / r[config][1] for r in rounds)
                print(
                    f"  {label:>5} {config:<12} CPU {cpu:6.2f} ms/inst x{xc:5.2f}   "
                    f"{rate:7.1f} inst/s x{xr:5.2f}"
                )
    finally:
        stop_group(peer, timeout=10)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
