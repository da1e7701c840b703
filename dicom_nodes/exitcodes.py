"""Exit statuses of every ``radiogate`` command (documented in ``docs/cli.md``).

Expected failures end in one line on standard error and one of these statuses, never in a
traceback; a traceback means a bug.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "database_unavailable"]


class ExitCode(IntEnum):
    """What a ``radiogate`` exit status means (the same for every command)."""

    OK = 0
    """Success."""
    FAILED = 1
    """The command ran and the answer is negative: ``audit verify`` found damage, a job or
    route command refused, ``radiogate run`` could not keep a service running at start."""
    USAGE = 2
    """Bad arguments or configuration (the line names the option or key and what it expects)."""
    DATABASE_UNAVAILABLE = 3
    """PostgreSQL could not be reached (is ``radiogate run`` / ``radiogate db start`` up?)."""
    MISSING_FILE = 4
    """A file the command needs does not exist (keyring, checkpoint file, signing key, secret,
    vault key, archive credentials); the line names its path."""
    ALREADY_RUNNING = 5
    """Another ``radiogate run`` holds this data directory (its pid and ports are named)."""
    PORT_IN_USE = 6
    """A port needed at start is taken (the line names the setting that moves it)."""
    START_FAILED = 7
    """PostgreSQL or Orthanc could not be started (the line names its log file)."""
    NOT_AUTHORISED = 8
    """The admin's PostgreSQL role lacks the membership the command needs (``radiogate_privacy``
    to re-identify, ``radiogate_admin`` to release, cancel, retry, re-route, complete, analyse);
    the refusal is audited."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT) before finishing (``radiogate run`` exits 0 on a signal)."""
    BROKEN_PIPE = 141
    """Standard output was closed early (e.g. ``| head``); 128 + SIGPIPE as a shell reports."""


def database_unavailable(exc: BaseException) -> str:
    """One line for a database that cannot be reached: the driver's first line and a hint."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return (
        f"database unavailable: {first} (is 'radiogate run' or 'radiogate db start' running, "
        "or database.dsn right?)"
    )
