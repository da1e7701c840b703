"""The hash chain: ``hash[n] = BLAKE3(hash[n-1] ‖ seq ‖ len ‖ bytes)``.

``seq`` and ``len`` are unsigned 64-bit big-endian integers, so every field has a fixed width
or a length prefix and no byte can move from one field (or event) to another without changing
the hash. ``hash[0]`` (before the first event) is :data:`GENESIS`, 32 zero bytes. Sequence
numbers start at 1 and have no gaps.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from blake3 import blake3

__all__ = ["GENESIS", "HASH_SIZE", "chain_hashes", "link_hash"]

HASH_SIZE = 32
GENESIS = bytes(HASH_SIZE)
"""The hash "before" sequence number 1."""

_SEQ_LEN = struct.Struct(">QQ")


def link_hash(prev_hash: bytes, seq: int, body: bytes) -> bytes:
    """Hash of event *seq* with canonical *body*, chained to *prev_hash*."""
    h = blake3(prev_hash)
    h.update(_SEQ_LEN.pack(seq, len(body)))
    h.update(body)
    return bytes(h.digest())


def chain_hashes(prev_hash: bytes, first_seq: int, bodies: Iterable[bytes]) -> list[bytes]:
    """Hashes of consecutive events starting at *first_seq* after *prev_hash*."""
    out: list[bytes] = []
    for seq, body in enumerate(bodies, first_seq):
        prev_hash = link_hash(prev_hash, seq, body)
        out.append(prev_hash)
    return out
