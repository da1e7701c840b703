"""``radiogate reidentify PSEUDONYM``: the audited way back from a pseudonym.

Re-identification is a disclosure of patient identity, so every use is recorded, whatever its
result, as one audit event in the same transaction as the vault read (DICOM PS3.15 A.5.3.10
Patient Record; the Radiogate step ``re-identified``):

- EventID 110110 Patient Record, EventActionCode ``R`` (Read);
- active participants: the user (requestor, with this host's name) — the PostgreSQL role of the
  admin's own session, which must be a member of ``radiogate_privacy``
  (:mod:`dicom_nodes.admin_identity`; a refusal is itself audited) — and Radiogate's AE;
- participant objects: the pseudonymous patient (:class:`audit.Patient`) for a ``patient``
  pseudonym; the pseudonymous study (:class:`audit.Study`, new Study Instance UID) and its
  patient's pseudonym for a ``study`` pseudonym; never the original values. Input that is
  neither a pseudonym nor a UID (say, a name typed by mistake) is not copied into the event;
- EventOutcomeIndicator: 0 found, 4 no such pseudonym, 8 key missing/other key/kind not
  supported, 12 the row fails authentication (damage or tampering);
- reason: the ``--reason`` code (purpose of use), if given.

The identifiers are printed only after that transaction commits: no audit event, no output.
Exit status: 0 found, 1 not found, 2 key or integrity error (or invalid arguments),
3 database unavailable or failing, 4 vault key file missing (its path is named), 8 the
session's role is not a member of ``radiogate_privacy`` (refused and audited).

Rows of kind ``series``, ``instance`` or ``uid`` are not revealed: the audit trail has no
participant object for a bare UID, and a disclosure the trail cannot name is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

import audit
import config
from audit import (
    ActiveParticipant,
    AuditEvent,
    AuditEventError,
    AuditSource,
    EventAction,
    EventID,
    EventOutcome,
    Patient,
    Step,
    Study,
)
from audit.identifiers import check_code, check_network_address, check_pseudonym, check_uid
from dicom_nodes.admin_identity import (
    NotAuthorised,
    Privilege,
    admin_dsn,
    identify,
    record_refusal,
)
from dicom_nodes.deid.model import VaultEntry
from dicom_nodes.deid.secrets import (
    ENV_SITE_SECRET,
    ENV_VAULT_KEY,
    SecretError,
    SecretMissingError,
    load_vault_key,
)
from dicom_nodes.deid.vault import Vault, VaultError, VaultIntegrityError

__all__ = [
    "EXIT_DB",
    "EXIT_FOUND",
    "EXIT_KEY",
    "EXIT_NOT_AUTHORISED",
    "EXIT_NOT_FOUND",
    "add_parser",
    "main",
    "main_reidentify",
    "reidentify_event",
]

EXIT_FOUND = 0
EXIT_NOT_FOUND = 1
EXIT_KEY = 2
EXIT_DB = 3
EXIT_MISSING = 4
EXIT_NOT_AUTHORISED = 8

_REVEALABLE = {"patient", "study"}


def add_parser(sub: Any) -> None:
    """Add ``reidentify`` to the ``radiogate`` subcommands."""
    p = sub.add_parser(
        "reidentify",
        help="show the original identifiers behind a pseudonym (audited, PS3.15 A.5.3.10)",
    )
    p.add_argument("pseudonym", help="patient pseudonym or pseudonymous Study Instance UID")
    p.add_argument(
        "--reason",
        help="purpose of use as a lower-case code (e.g. incidental-finding), recorded",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _requestor(user: str) -> ActiveParticipant:
    address: str | None
    try:
        address = check_network_address(socket.gethostname())
    except AuditEventError:
        address = None
    return ActiveParticipant(user, True, None, address)


def _valid(check: Any, value: str) -> bool:
    try:
        check(value)
    except AuditEventError:
        return False
    return True


def _subject(
    pseudonym: str, kind: str | None, patient: str | None = None
) -> tuple[Patient | Study, ...]:
    """The participant objects: by the row's kind, else guessed from the syntax (not found).

    A study row names its patient's pseudonym (``original["patient_pseudonym"]``), which
    then appears as the Patient object beside the Study."""
    if kind == "patient":
        return (Patient(pseudonym),)
    if kind == "study":
        if patient is not None and _valid(check_pseudonym, patient):
            return (Patient(patient), Study(pseudonym))
        return (Study(pseudonym),)
    if kind is None:
        if "." in pseudonym and _valid(check_uid, pseudonym):
            return (Study(pseudonym),)
        if _valid(check_pseudonym, pseudonym):
            return (Patient(pseudonym),)
    return ()  # not a pseudonym: may be PHI typed by mistake, never copied into the trail


def reidentify_event(
    settings: config.Settings,
    *,
    user: str,
    pseudonym: str,
    kind: str | None,
    outcome: EventOutcome,
    reason: str | None = None,
    patient: str | None = None,
) -> AuditEvent:
    """110110 Patient Record, action Read, step ``re-identified`` (PS3.15 A.5.3.10)."""
    return AuditEvent(
        event_id=EventID.PATIENT_RECORD,
        action=EventAction.READ,
        step=Step.REIDENTIFIED,
        participants=(
            _requestor(user),
            ActiveParticipant.application(settings.scp.ae_title, requestor=False),
        ),
        source=AuditSource(settings.node.name, settings.audit.site_id or None),
        objects=_subject(pseudonym, kind, patient),
        outcome=outcome,
        reason=reason,
    )


def _print_entry(entry: VaultEntry, as_json: bool) -> None:
    if as_json:
        doc: dict[str, Any] = {"found": True, "kind": entry.kind, "pseudonym": entry.pseudonym}
        doc["original"] = dict(sorted(entry.original.items()))
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    rows = [("pseudonym", entry.pseudonym), ("kind", entry.kind)]
    rows += sorted(entry.original.items())
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")


def _dsn(settings: config.Settings) -> str:
    from dicom_nodes.services.stack import database_dsn

    return database_dsn(settings)


def main_reidentify(args: argparse.Namespace, settings: config.Settings) -> int:
    """Run ``radiogate reidentify``; return the exit status (see the module docstring)."""
    pseudonym: str = args.pseudonym
    try:
        if args.reason is not None:
            check_code(args.reason, "--reason")
    except AuditEventError as exc:
        print(f"radiogate reidentify: {exc}", file=sys.stderr)
        return EXIT_KEY
    key_error: SecretError | None = None
    vault: Vault | None = None
    try:
        vault = Vault(load_vault_key(settings))
    except SecretError as exc:
        key_error = exc
    entry: VaultEntry | None = None
    failure: str | None = None
    try:
        with psycopg.connect(admin_dsn(settings), connect_timeout=5) as conn:
            identity = identify(conn, Privilege.PRIVACY)
            if not identity.authorised:
                conn.rollback()
                refused = NotAuthorised(identity)
                seq = record_refusal(
                    _dsn(settings), settings, identity, Step.REIDENTIFIED,
                    _subject(pseudonym, None),
                )  # fmt: skip
                print(f"radiogate reidentify: {refused} (audit event {seq})", file=sys.stderr)
                return EXIT_NOT_AUTHORISED
        with psycopg.connect(admin_dsn(settings), connect_timeout=5) as conn, conn.transaction():
            kind: str | None = None
            if vault is None:
                outcome = EventOutcome.SERIOUS_FAILURE
                failure = f"vault key unavailable: {key_error}"
            else:
                try:
                    entry = vault.reveal(conn, pseudonym)
                except VaultIntegrityError as exc:
                    outcome, failure = EventOutcome.MAJOR_FAILURE, str(exc)
                except VaultError as exc:
                    outcome, failure = EventOutcome.SERIOUS_FAILURE, str(exc)
                else:
                    if entry is None:
                        outcome = EventOutcome.MINOR_FAILURE
                    elif entry.kind not in _REVEALABLE:
                        kind, entry = entry.kind, None
                        outcome = EventOutcome.SERIOUS_FAILURE
                        failure = (
                            f"pseudonyms of kind {kind!r} are not revealed: the audit trail "
                            "cannot name a bare UID (only patient and study pseudonyms)"
                        )
                    else:
                        kind, outcome = entry.kind, EventOutcome.SUCCESS
            event = reidentify_event(
                settings,
                user=identity.user,
                pseudonym=pseudonym,
                kind=kind,
                outcome=outcome,
                reason=args.reason,
                patient=entry.original.get("patient_pseudonym") if entry else None,
            )
            seq = audit.append(conn, event).seq
    except AuditEventError as exc:
        print(
            f"radiogate reidentify: cannot audit this use, nothing revealed: {exc}", file=sys.stderr
        )
        return EXIT_KEY
    except psycopg.Error as exc:
        print(f"radiogate reidentify: database error: {exc}", file=sys.stderr)
        return EXIT_DB
    if failure is not None:
        print(f"radiogate reidentify: {failure} (audit event {seq})", file=sys.stderr)
        return EXIT_MISSING if isinstance(key_error, SecretMissingError) else EXIT_KEY
    if entry is None:
        if args.json:
            print(json.dumps({"found": False}))
        print(
            f"radiogate reidentify: no vault entry for this pseudonym (audit event {seq})",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    _print_entry(entry, args.json)
    print(f"recorded as audit event {seq}", file=sys.stderr)
    return EXIT_FOUND


def _config_env() -> dict[str, str]:
    """The environment for :func:`config.load` without the two secret variables.

    ``config.load`` reads every ``RADIOGATE_*`` variable as a settings override and would
    refuse ``RADIOGATE_DEID_SECRET`` as an unknown key ``deid_secret``."""
    return {k: v for k, v in os.environ.items() if k not in (ENV_SITE_SECRET, ENV_VAULT_KEY)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dicom_nodes.deid.cli [-c FILE] reidentify ...`` (same parser as radiogate)."""
    parser = argparse.ArgumentParser(prog="radiogate")
    parser.add_argument("-c", "--config", help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config, env=_config_env())
    except config.ConfigError as exc:
        print(f"radiogate: configuration error: {exc}", file=sys.stderr)
        return 2
    return main_reidentify(args, settings)


if __name__ == "__main__":
    sys.exit(main())
