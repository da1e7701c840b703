"""Settings of analysis (``analyse:<pipeline>`` route steps): where the archive is, how much
time, CPU and memory a job may take, and how it keeps off the receiver.

What ``make run`` (``radiogate run``) does by default: analysis jobs go to a worker process of
their own (``separate_worker``: ``radiogate worker --jobs analysis``) in the idle scheduling
class at niceness 10, on one CPU (``cpus``: the highest-numbered), with one thread per
numerical library (``threads``), and a running analysis is held while a modality has an
association open at the receiver (``pause_while_receiving``, ``resume_after``, ``max_pause``);
the pipeline worker (routing, triage, forwarding) runs at normal priority. Measured in
docs/operations.md ("The door comes first")."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AnalysisSettings", "PreviousResults"]


class PreviousResults(StrEnum):
    REPLACE = "replace"
    """A re-run deletes the earlier run's result series from the archive before storing."""
    KEEP = "keep"
    """A re-run stores next to them (identical results keep their UIDs: one copy)."""

    @classmethod
    def _missing_(cls, value: object) -> PreviousResults | None:
        text = str(value).strip().lower()
        return next((m for m in cls if m.value == text), None)


@dataclass(frozen=True)
class AnalysisSettings:
    archive_url: str = ""
    """The archive's REST API that analysis reads series from and stores results into (empty:
    the Orthanc ``radiogate run`` manages)."""
    credentials_file: str = ""
    """``user:password`` file of that API (empty: the managed Orthanc's,
    ``orthanc.credentials_file``)."""
    time_limit: float = 900.0
    """Seconds a job may run before it is stopped and failed."""
    processes: int = 1
    """pyradiomics processes per job (segments in parallel). With 1, one forked process
    extracts the segments in turn while the job's own process builds the SEG."""
    nice: int = 10
    """Scheduling niceness of the analysis process: the receiver and forwarding come first."""
    idle: bool = True
    """Run the analysis process in the idle scheduling class (Linux ``SCHED_IDLE``): it gets a
    CPU only when nothing else wants one, and a waking receiver preempts it at once (niceness
    alone can leave a woken receiver waiting for the rest of the analysis time slice)."""
    separate_worker: bool = True
    """``radiogate run`` starts analysis jobs in a worker process of their own (``radiogate
    worker --jobs analysis``: the node's analysis queue only, in the idle scheduling class at
    ``nice``, on ``cpus`` CPUs), and the pipeline worker (routing, triage, forwarding) takes
    every other job at normal priority; off: one worker takes every job, as ``radiogate
    worker`` alone does."""
    cpus: int = 1
    """CPUs the analysis processes may run on (``sched_setaffinity``: the highest-numbered
    ones the service may use); 0: any. On a small machine one CPU stays free of analysis
    whatever the scheduler does."""
    threads: int = 1
    """Threads of each analysis process's numerical libraries (SimpleITK/ITK's thread pool,
    OpenMP and BLAS); 0: the libraries' own default (one per CPU)."""
    pause_while_receiving: bool = True
    """Hold a running analysis (``SIGSTOP``) while a peer has an association open at the
    receiver (``scp.port``, on this machine), and continue it ``resume_after`` seconds after
    the last one closed: what lowering the process cannot remove (caches, memory bandwidth, the
    host's cores) the receiver does not pay (:mod:`dicom_nodes.pipeline.door`)."""
    resume_after: float = 2.0
    """Seconds without an open association before a held analysis continues."""
    max_pause: float = 600.0
    """Seconds one analysis may be held in all; then it runs to its end (never starved)."""
    previous: PreviousResults = PreviousResults.REPLACE
    parameters: str = "ct_ibsi"
    """The shipped pyradiomics parameter set (analysis/radiomics/data/<name>.yaml)."""
    export_dir: str = "features"
    """Where each finished analysis writes its feature table (Parquet and CSV partitioned by
    date: :mod:`dicom_nodes.features.export`), relative to ``node.data_dir``; empty: none."""
