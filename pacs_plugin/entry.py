"""The script Orthanc's Python plugin runs (``PythonScript``): find Radiogate, register it.

Orthanc's embedded interpreter does not know the project's virtual environment; the managed
Orthanc's configuration names it (``Radiogate.PythonPath``, :mod:`dicom_nodes.services.pacs`).
"""

import json
import sys

import orthanc  # provided by Orthanc's Python plugin

_section = json.loads(orthanc.GetConfiguration()).get("Radiogate", {})
sys.path[:0] = [p for p in _section.get("PythonPath", []) if p not in sys.path]

from pacs_plugin.plugin import register  # noqa: E402

register(orthanc, _section)
