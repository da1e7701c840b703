"""The Orthanc Python plugin: planned."""

__all__: list[str] = []
