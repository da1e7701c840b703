"""The Orthanc Python plugin: Radiogate's routes, access audit and Explorer extension inside the
archive (docs/pacs.md). Imports only :mod:`config`, :mod:`audit` and psycopg.

``entry`` (the script Orthanc runs), ``plugin`` (``register(orthanc, section)``), ``access``,
``roles``, ``journal``, ``routes``, ``queries``, ``http``, ``events``, ``sr``.
"""

__all__ = ["access", "events", "http", "journal", "plugin", "queries", "roles", "routes", "sr"]
