"""Loading ``pacs_plugin`` into the managed Orthanc: plugins, script, users, the plugin's section.

What the generated Orthanc configuration gains (:func:`plugin_config`):

- ``Plugins``: Orthanc's Python plugin (Debian ``orthanc-python``) and, when installed, its
  DICOMweb plugin (``orthanc-dicomweb``: DICOMweb reads are audited like REST reads);
- ``PythonScript``: ``pacs_plugin/entry.py`` (tiny: it finds the project and calls
  :func:`pacs_plugin.plugin.register`);
- ``Radiogate``: the plugin's section — ``PythonPath`` (this checkout and the virtual
  environment's site-packages, which Orthanc's embedded Python 3.11 does not know),
  ``ConfigFile``, ``Dsn`` and ``ServiceUser`` (the archive's own account);
- ``RegisteredUsers``: each ``[[pacs.user]]`` with a ``token_file``, the token created (0600,
  ``name:token``) on first start.
"""

from __future__ import annotations

import glob
import sysconfig
from pathlib import Path

import pacs_plugin
from config import Settings
from dicom_nodes.services.credentials import ensure_credentials

__all__ = ["PluginMissing", "find_plugin", "plugin_config", "user_tokens"]

_PLUGIN_DIRS = (
    "/usr/share/orthanc/plugins",
    "/usr/lib/orthanc",
    "/usr/local/share/orthanc/plugins",
)


class PluginMissing(RuntimeError):
    """Orthanc's Python plugin is not installed (``apt-get install orthanc-python``)."""


def find_plugin(stem: str) -> Path | None:
    """The shared library ``<stem>.so*`` of an installed Orthanc plugin, or None."""
    for directory in _PLUGIN_DIRS:
        found = sorted(glob.glob(f"{directory}/{stem}.so*"))
        if found:
            return Path(found[0])
    return None


def user_tokens(settings: Settings) -> dict[str, str]:
    """``RegisteredUsers`` entries of the configured users (tokens created when missing)."""
    users: dict[str, str] = {}
    for user in settings.pacs.user:
        if user.token_file:
            creds, _created = ensure_credentials(Path(user.token_file), user.name)
            users[creds.user] = creds.password
    return users


def plugin_config(settings: Settings, *, dsn: str, config_file: str | None,
                  service_user: str) -> dict[str, object]:  # fmt: skip
    """The Orthanc configuration keys that load ``pacs_plugin`` (see the module doc)."""
    python = find_plugin("libOrthancPython")
    if python is None:
        raise PluginMissing(
            "Orthanc's Python plugin is not installed (apt-get install orthanc-python), "
            "or set pacs.plugin = false"
        )
    plugins = [str(python)]
    dicomweb = find_plugin("libOrthancDicomWeb")
    if dicomweb is not None:
        plugins.append(str(dicomweb))
    package = Path(pacs_plugin.__file__).resolve().parent
    site = sysconfig.get_paths()
    paths = [str(package.parent), *sorted({site["purelib"], site["platlib"]})]
    return {
        "Plugins": plugins,
        "PythonScript": str(package / "entry.py"),
        "PythonVerbose": False,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
        },
        "Radiogate": {
            "PythonPath": paths,
            "ConfigFile": str(Path(config_file).absolute()) if config_file else "",
            "Dsn": dsn,
            "ServiceUser": service_user,
        },
    }
