"""Load the installed packages before pytest collects the test folders.

With ``--import-mode=importlib`` pytest would otherwise register the
distribution folders (``impactin_core/`` and the connector folders) as empty
namespace packages that hide the installed ones.
"""

import importlib

for _name in ("impactin_core", "impactin_benevity", "impactin_goodera", "impactin_workday"):
    try:
        importlib.import_module(_name)
    except ImportError:
        # A connector not installed in this environment (tox runs each alone).
        pass
