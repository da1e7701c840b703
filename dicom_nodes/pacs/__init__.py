"""The archive side of Radiogate outside Orthanc's process: ``recorder`` (the access journal
into the audit chain), ``arrivals`` (jobs of studies stored into the archive directly), ``cli``
(``radiogate pacs record``). ``pacs_plugin`` is what runs inside Orthanc."""

__all__ = ["arrivals", "cli", "recorder"]
