"""The script Orthanc's Python plugin runs (``PythonScript``): find Radiogate, register it.

Orthanc's embedded interpreter does not know the project's virtual environment; the managed
Orthanc's configuration names it (``Radiogate.PythonPath``, :mod:`dicom_nodes.services.pacs`).
If registration fails the archive fails closed: every HTTP request is refused (an archive
whose reads are not audited must not serve them), and Orthanc's log says why.
"""

import json
import sys
import traceback

import orthanc  # provided by Orthanc's Python plugin

_section = json.loads(orthanc.GetConfiguration()).get("Radiogate", {})
sys.path[:0] = [p for p in _section.get("PythonPath", []) if p not in sys.path]

try:
    from pacs_plugin.plugin import register

    register(orthanc, _section)
except Exception:
    orthanc.LogError("radiogate: the plugin did not load; refusing every HTTP request:\n"
                     + traceback.format_exc(limit=3))  # fmt: skip
    orthanc.RegisterIncomingHttpRequestFilter(lambda uri, **request: False)
