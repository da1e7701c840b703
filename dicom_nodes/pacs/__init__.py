"""The archive side of Radiogate outside Orthanc's process: the access recorder and the jobs of
studies stored into the archive directly (``pacs_plugin`` is what runs inside Orthanc)."""
