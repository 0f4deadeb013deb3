"""Load the installed packages before pytest collects the test folders.

With ``--import-mode=importlib`` pytest would otherwise register the
distribution folders (``impactin_core/`` and the connector folders) as empty
namespace packages that hide the installed ones.
"""

import contextlib
import importlib

for _name in (
    "impactin_core",
    "impactin_benevity",
    "impactin_goodera",
    "impactin_workday",
):
    # A connector may be missing from the environment: tox runs each alone.
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)
