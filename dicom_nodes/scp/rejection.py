"""Why the receiver rejected an association, from the A-ASSOCIATE-RJ it sent (PS3.8 9.3.4).

The audit event and the log line of a rejected association name the called AE title the peer
*asked for* (from its A-ASSOCIATE-RQ, PS3.8 Table 9-11) and a reason code derived from the
reject's (result, source, diagnostic), PS3.8 Table 9-21:

========  ==========  =========================================================
source    diagnostic  reason code
========  ==========  =========================================================
1 user    1           ``no-reason-given``
1 user    2           ``application-context-not-supported``
1 user    3           ``calling-ae-not-recognised``
1 user    7           ``called-ae-not-recognised``
2 ACSE    1           ``user-identity-not-accepted`` (pynetdicom's only use of it)
2 ACSE    2           ``protocol-version-not-supported``
3 pres.   1           ``temporary-congestion``
3 pres.   2           ``local-limit-exceeded``
========  ==========  =========================================================

Anything else is ``rejected-<result>-<source>-<diagnostic>``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REASONS", "rejection"]

REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-not-supported",
    (1, 3): "calling-ae-not-recognised",
    (1, 7): "called-ae-not-recognised",
    (2, 1): "user-identity-not-accepted",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}
"""(result source, diagnostic) → reason code."""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip()


def rejection(assoc: Any) -> tuple[str, str]:
    """(called AE title requested, reason code) of a rejected pynetdicom association."""
    request = getattr(assoc.requestor, "primitive", None)
    called = _text(getattr(request, "called_ae_title", "")) or _text(assoc.acceptor.ae_title)
    reply = getattr(assoc.acceptor, "primitive", None)
    result = getattr(reply, "result", None)
    source = getattr(reply, "result_source", None)
    diagnostic = getattr(reply, "diagnostic", None)
    if source is None or diagnostic is None:
        return called, "association-rejected"
    return called, REASONS.get(
        (int(source), int(diagnostic)), f"rejected-{result}-{source}-{diagnostic}"
    )
