"""Requests and JSON answers of Radiogate's routes, and the one place errors become statuses.

======================================  ======  ==========================
raised                                  status  ``error``
======================================  ======  ==========================
:class:`HttpError` (bad parameter…)     its own  its code
:class:`psycopg.OperationalError`       503     ``database-unavailable``
any other exception                     500     ``internal-error``
======================================  ======  ==========================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pacs_plugin.roles import Identity

__all__ = ["HttpError", "Request", "Response", "answer"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """The part after ``/radiogate/``."""
    query: Mapping[str, str]
    who: Identity
    address: str | None = None
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any] | list[Any] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), default=str).encode()


class HttpError(Exception):
    """An answer other than 200: *status* and a short machine-readable *code*."""

    def __init__(self, status: int, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.detail = detail

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.code}
        if self.detail:
            body["detail"] = self.detail
        return Response(self.status, body)


def answer(handler: Callable[[], Response]) -> Response:
    """Run *handler*, turning exceptions into JSON errors (the table above)."""
    try:
        return handler()
    except HttpError as exc:
        return exc.response()
    except psycopg.OperationalError as exc:
        LOGGER.warning("radiogate route: database unavailable (%s)", type(exc).__name__)
        return Response(503, {"error": "database-unavailable"})
    except Exception as exc:
        LOGGER.exception("radiogate route failed: %s", type(exc).__name__)
        return Response(500, {"error": "internal-error"})
