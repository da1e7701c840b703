"""De-identification: DICOM PS3.15 Annex E profiles, keyed pseudonyms and the vault.

Modules: ``table`` (Table E.1-1 as data), ``engine`` (the walk over every attribute),
``pseudonyms``, ``clean`` (action C on text), ``pixels`` (burned-in text), ``secrets``, ``vault``,
``step`` (the route step: spooled original → spooled copy or quarantine), ``cli``.
"""

__all__ = ["clean", "cli", "engine", "model", "pixels", "pseudonyms", "secrets", "step", "table",
           "vault"]  # fmt: skip
