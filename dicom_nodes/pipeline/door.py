"""An analysis waits while a modality is sending: the door comes first.

Lowering the analysis process (the idle class, one CPU, one thread per library:
:mod:`dicom_nodes.pipeline.pools`) decides who gets a CPU, not what a running analysis costs
the receiver beside it: on a small virtual machine the two share caches, memory bandwidth and
the host's cores, and a receiver on the other CPU still loses some of its rate
(``bench/bench_forward.py --door``; docs/operations.md). So while the job runs, the worker
that started it looks every :data:`POLL` seconds for an open association at the receiver
(:func:`open_connections`: an established TCP connection to ``scp.port``, asked of the
kernel through sock_diag netlink, on this machine); while there is one, the job process and
its children are stopped (``SIGSTOP``), and they continue (``SIGCONT``) once none has been open for
``analysis.resume_after`` seconds. A job is held at most ``analysis.max_pause`` seconds in all,
then runs to its end whatever arrives: analysis is delayed, never starved. Held time does not
count against ``analysis.time_limit``. A job does not start while the door is busy (it waits
as it would be held: :meth:`DoorGuard.wait_quiet`); once started, it is held only after it has
downloaded its series (a held download could time out at the archive), so process start,
imports and the download run while the door is quiet.

A receiver on another machine is not seen (nothing to protect there); a peer that keeps an
association open without sending holds analysis up to ``max_pause``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["POLL", "DoorGuard", "open_connections", "process_tree"]

POLL = 0.25
"""Seconds between looks at the door while a job runs."""
_ESTABLISHED = "01"  # include/net/tcp_states.h
_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def open_connections(ports: Collection[int], tables: Collection[str] = _TABLES) -> int:
    """Established TCP connections whose local port is one of *ports* (this machine's
    network namespace): asked of the kernel's ``sock_diag`` netlink interface, or read from
    its tables (proc(5)) where that is not available. Reading ``/proc/net/tcp`` walks the
    kernel's whole connection hash table, ~4 ms per table here, where the netlink dump of
    established sockets takes ~0.7 ms."""
    wanted = frozenset(ports)
    with contextlib.suppress(OSError):
        return _netlink_established(wanted)
    return _proc_established(wanted, tables)


def _proc_established(ports: Collection[int], tables: Collection[str]) -> int:
    wanted = {f"{p:04X}" for p in ports}
    count = 0
    for table in tables:
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split(None, 4)
                established = len(parts) > 3 and parts[3] == _ESTABLISHED
                if established and parts[1].rpartition(":")[2] in wanted:
                    count += 1
    return count


_NETLINK_SOCK_DIAG: Final = 4  # linux/netlink.h
_SOCK_DIAG_BY_FAMILY: Final = 20  # linux/sock_diag.h
_NLM_F_DUMP_REQUEST: Final = 0x0301  # NLM_F_REQUEST | NLM_F_ROOT | NLM_F_MATCH
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_ESTABLISHED: Final = 1  # include/net/tcp_states.h
_NLMSG: Final = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST: Final = struct.Struct("=BBBBI48x")  # struct inet_diag_req_v2, id all zero
_SPORT: Final = struct.Struct(">H")  # inet_diag_msg.id.idiag_sport, network order


def _netlink_established(ports: Collection[int]) -> int:
    """Established TCP connections with a local port in *ports*, asked of the kernel's
    ``sock_diag`` netlink interface (sock_diag(7)): IPv4 and IPv6, established sockets only.
    Raises OSError where the interface is missing."""
    count = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(2.0)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_ESTABLISHED)
            sock.send(_NLMSG.pack(_NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY,
                                  _NLM_F_DUMP_REQUEST, seq, 0) + body)  # fmt: skip
            done = False
            while not done:
                data = sock.recv(65536)
                if not data:
                    break
                offset = 0
                while offset + _NLMSG.size <= len(data):
                    length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
                    if kind == _NLMSG_ERROR:
                        (errno,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
                        raise OSError(-errno, "sock_diag refused the request")
                    if kind == _NLMSG_DONE or length < _NLMSG.size:
                        done = True
                        break
                    msg = offset + _NLMSG.size  # struct inet_diag_msg
                    state = data[msg + 1]
                    (sport,) = _SPORT.unpack_from(data, msg + 4)
                    if state == _TCP_ESTABLISHED and sport in ports:
                        count += 1
                    offset += (length + 3) & ~3
    return count


def process_tree(pid: int) -> list[int]:
    """*pid* and its descendants (``/proc/<pid>/task/*/children``)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
                todo.extend(int(c) for c in text.split())
    return out


def _signal_tree(pid: int, sig: signal.Signals) -> None:
    for member in process_tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)


@dataclass
class DoorGuard:
    """Holds one job process while :meth:`busy`; :meth:`tick` once per :data:`POLL`."""

    ports: tuple[int, ...]
    resume_after: float = 2.0
    max_pause: float = 600.0
    clock: Callable[[], float] = time.monotonic
    held: float = 0.0
    """Seconds the job has been held so far (the current hold included once it ends)."""
    holds: int = 0
    _since: float | None = field(default=None, repr=False)
    _quiet_since: float | None = field(default=None, repr=False)

    def busy(self) -> bool:
        return open_connections(self.ports) > 0

    @property
    def holding(self) -> bool:
        return self._since is not None

    def held_now(self) -> float:
        """Seconds held so far, the current hold included."""
        return self.held + (self.clock() - self._since if self._since is not None else 0.0)

    def tick(self, pid: int) -> None:
        """Stop the job (*pid* and its children) when the door is busy, continue it when it has
        been quiet for ``resume_after`` seconds or the job has been held ``max_pause``."""
        now = self.clock()
        if self._since is None:
            if self.held < self.max_pause and self.busy():
                _signal_tree(pid, signal.SIGSTOP)
                self._since, self._quiet_since = now, None
                self.holds += 1
            return
        if self.busy():
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = now
        quiet = self._quiet_since is not None and now - self._quiet_since >= self.resume_after
        if quiet or self.held_now() >= self.max_pause:
            self.release(pid)

    def wait_quiet(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Before the job starts: return at once if the door is quiet; else once it has been
        quiet for ``resume_after`` seconds, or the job has waited ``max_pause`` in all (the
        wait counts as held)."""
        if not self.busy():
            return
        start = self.clock()
        self.holds += 1
        quiet_since: float | None = None
        while self.held + (self.clock() - start) < self.max_pause:
            now = self.clock()
            if self.busy():
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= self.resume_after:
                break
            sleep(POLL)
        self.held += self.clock() - start

    def release(self, pid: int) -> None:
        """Continue the job if it is held (always before it is killed or waited for)."""
        if self._since is None:
            return
        self.held += self.clock() - self._since
        self._since = self._quiet_since = None
        _signal_tree(pid, signal.SIGCONT)
