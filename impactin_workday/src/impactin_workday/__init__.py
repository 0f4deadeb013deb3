"""impactin connector for Workday: worker custom objects over SOAP or REST."""

from __future__ import annotations

from ._faults import ValidationMessage, WorkdayFaultError
from ._options import DEFAULT_FIELD_NAMES, WorkdayOptions
from ._plugin import PLATFORM
from ._soap import SameDateConflict

__all__ = [
    "DEFAULT_FIELD_NAMES",
    "PLATFORM",
    "SameDateConflict",
    "ValidationMessage",
    "WorkdayFaultError",
    "WorkdayOptions",
    "__version__",
]

__version__ = "0.1.0"
