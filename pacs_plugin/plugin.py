"""Registration: everything Orthanc calls, built once and registered on the module passed in.

:func:`register` takes the ``orthanc`` module as a parameter (a stub in unit tests). The
callbacks are thin:

* the HTTP filter classifies the request (:mod:`.access`, :mod:`.roles`), appends one journal
  line for a study read or a refusal (:mod:`.journal`; never the database) and answers;
* the REST callback turns Orthanc's arguments into a :class:`~.http.Request`, asks
  :class:`~.routes.Routes` and writes the JSON answer;
* the change callback appends a ``stable-study`` line (the recorder defers the job).

Orthanc >= 1.12 is detected (``CheckVersionAdvanced``) and reported by ``/radiogate/status``
as ``labels: true``; Debian 12's 1.10.1 is the floor and needs nothing newer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

import config
from pacs_plugin.access import classify_read
from pacs_plugin.http import Request
from pacs_plugin.journal import JournalWriter
from pacs_plugin.roles import Roles, refusal
from pacs_plugin.routes import Routes

__all__ = ["Plugin", "register"]

LOGGER = logging.getLogger("pacs_plugin")
_METHODS = {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE"}


def _now() -> float:
    """Seconds since the epoch (the recorder makes the event's UTC time of it)."""
    return time.time()


class _OrthancLog(logging.Handler):
    def __init__(self, orthanc: Any) -> None:
        super().__init__()
        self.orthanc = orthanc

    def emit(self, record: logging.LogRecord) -> None:
        text = f"radiogate: {record.getMessage()}"
        if record.levelno >= logging.ERROR:
            self.orthanc.LogError(text)
        elif record.levelno >= logging.WARNING:
            self.orthanc.LogWarning(text)
        else:
            self.orthanc.LogInfo(text)


class _InProcessArchive:
    """Routes' questions to Orthanc, answered in-process (no HTTP, no filter, no audit)."""

    def __init__(self, orthanc: Any) -> None:
        self.orthanc = orthanc

    def study_uid_of(self, orthanc_id: str) -> str | None:
        try:
            doc = json.loads(self.orthanc.RestApiGet(f"/studies/{orthanc_id}"))
        except Exception:  # orthanc.OrthancException: unknown resource
            return None
        uid = doc.get("MainDicomTags", {}).get("StudyInstanceUID")
        return str(uid) if uid else None

    def instance_tags(self, sop_uid: str) -> dict[str, Any] | None:
        try:
            found = self.orthanc.LookupInstance(sop_uid)
            doc = json.loads(self.orthanc.RestApiGet(f"/instances/{found}/simplified-tags"))
        except Exception:  # not in the archive
            return None
        return doc if isinstance(doc, dict) else None

    def orthanc_id_of(self, study_uid: str) -> str | None:
        try:
            found = self.orthanc.LookupStudy(study_uid)
        except Exception:  # not in the archive
            return None
        return str(found) if found else None


class Plugin:
    """The plugin's state: settings, roles, journal, routes."""

    def __init__(
        self, orthanc: Any, settings: config.Settings, dsn: str, service_user: str | None
    ) -> None:
        self.orthanc = orthanc
        self.settings = settings
        self.dsn = dsn
        p = settings.pacs
        self.roles = Roles(((u.name, u.role) for u in p.user), service_user)
        self.journal = JournalWriter(
            Path(p.journal_dir), p.journal_sync_interval, p.journal_segment_bytes
        )
        self._local = threading.local()
        labels = bool(orthanc.CheckVersionAdvanced(1, 12, 0))
        self.routes = Routes(
            settings,
            self._connect,
            _InProcessArchive(orthanc),
            self._route_refused,
            {"labels": labels},
        )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.dsn, connect_timeout=2) as conn:
            yield conn

    # -- callbacks (thin) --------------------------------------------------------------------

    def http_filter(self, uri: str, **request: Any) -> bool:
        """Orthanc's incoming-HTTP-request filter: allow or refuse; journal reads/refusals."""
        method = _METHODS.get(request.get("method", 0), "OTHER")
        headers: Mapping[str, str] = request.get("headers", {})
        ip = request.get("ip")
        who = self.roles.identify(headers)
        self._local.ip = ip
        why = refusal(who, method, uri)
        read = classify_read(method, uri, request.get("get", {}))
        if why is not None:
            aimed = read or classify_read("GET", uri, request.get("get", {}))  # a write's study
            self._journal(
                {"k": "refused", "t": _now(), "u": who.user, "ip": ip, "why": why, **_target(aimed)}
            )
            return False
        if read is not None and not who.service:
            self._journal(
                {
                    "k": "read",
                    "t": _now(),
                    "u": who.user,
                    "ip": ip,
                    "api": read.api.value,
                    **_target(read),
                }
            )
        return True

    def rest(self, output: Any, uri: str, **request: Any) -> None:
        """``/radiogate/(.*)``: JSON answers from :class:`Routes`."""
        who = self.roles.identify(request.get("headers", {}))
        req = Request(
            method=str(request.get("method", "GET")),
            path=request.get("groups", ("",))[0],
            query=request.get("get", {}),
            who=who,
            address=getattr(self._local, "ip", None),
            body=request.get("body", b""),
        )
        response = self.routes.dispatch(req)
        if response.status == 200:
            output.AnswerBuffer(response.encoded(), "application/json")
        elif response.status == 405:  # Orthanc wants its dedicated call for 405 (no body)
            allow = response.body.get("allow") if isinstance(response.body, dict) else None
            output.SendMethodNotAllowed(str(allow or "GET"))
        else:
            body = response.encoded()
            output.SetHttpHeader("Content-Type", "application/json")
            # plugin 4.0: (status, str, length); the JSON is ASCII (json.dumps escapes the rest)
            output.SendHttpStatus(response.status, body.decode("ascii"), len(body))

    def on_change(self, change_type: int, level: int, resource: str) -> None:
        """A study became stable: a hint for the recorder (who defers the job)."""
        if change_type == self.orthanc.ChangeType.STABLE_STUDY:
            self._journal({"k": "stable-study", "t": _now(), "id": resource})

    # -- helpers -----------------------------------------------------------------------------

    def _route_refused(self, request: Request, why: str) -> None:
        self._journal(
            {"k": "refused", "t": _now(), "u": request.who.user, "ip": request.address, "why": why}
        )

    def _journal(self, record: dict[str, Any]) -> None:
        try:
            self.journal.append({k: v for k, v in record.items() if v is not None})
        except OSError as exc:  # the request is served; the loss is logged loudly
            LOGGER.error(
                "access journal not written (%s): an access event is lost", exc.strerror or exc
            )


def _target(read: Any) -> dict[str, Any]:
    if read is None:
        return {}
    return {"lvl": read.level, "id": read.orthanc_id, "study": read.study_uid}


def explorer_js() -> str:
    """The Orthanc Explorer extension (``explorer.js`` next to this module)."""
    return resources.files("pacs_plugin").joinpath("explorer.js").read_text(encoding="utf-8")


def register(orthanc: Any, section: Mapping[str, Any]) -> Plugin:
    """Build the plugin from Orthanc's ``Radiogate`` configuration section and register it.

    *section*: ``ConfigFile`` (Radiogate's TOML; empty: defaults and the environment),
    ``Dsn`` (PostgreSQL), ``ServiceUser`` (the archive's own account)."""
    logging.getLogger("pacs_plugin").addHandler(_OrthancLog(orthanc))
    logging.getLogger("pacs_plugin").setLevel(logging.INFO)
    settings = config.load(section.get("ConfigFile") or None)
    plugin = Plugin(orthanc, settings, str(section["Dsn"]), section.get("ServiceUser"))
    orthanc.RegisterIncomingHttpRequestFilter(plugin.http_filter)
    orthanc.RegisterRestCallback("/radiogate/(.*)", plugin.rest)
    orthanc.RegisterOnChangeCallback(plugin.on_change)
    orthanc.ExtendOrthancExplorer(explorer_js())
    LOGGER.info("Radiogate plugin loaded (journal %s)", settings.pacs.journal_dir)
    return plugin
