"""Priority lanes: critical studies overtake the routine backlog.

Lanes map onto procrastinate job priorities (higher runs first) and order the forwarding queue.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Lane"]


class Lane(StrEnum):
    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"

    @property
    def priority(self) -> int:
        """procrastinate priority (higher first)."""
        return {"critical": 100, "urgent": 50, "routine": 0}[self.value]

    @property
    def rank(self) -> int:
        """Sort key, most urgent first."""
        return {"critical": 0, "urgent": 1, "routine": 2}[self.value]

    @classmethod
    def from_rank(cls, rank: int) -> Lane:
        """The lane whose :attr:`rank` is *rank*."""
        for lane in cls:
            if lane.rank == rank:
                return lane
        raise ValueError(f"no lane has rank {rank}")

    @classmethod
    def most_urgent(cls, *lanes: Lane) -> Lane:
        return min(lanes, key=lambda lane: lane.rank) if lanes else cls.ROUTINE
