"""impactin connector for Workday: worker custom objects over SOAP or REST."""

from __future__ import annotations

from typing import Any

from ._options import DEFAULT_FIELD_NAMES, WorkdayOptions
from ._plugin import PLATFORM

# SameDateConflict, ValidationMessage and WorkdayFaultError are defined in
# the modules that send, which import httpx. They load on first use, so
# loading the plugin, which every 'impactin' command does, stays fast.

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


def __getattr__(name: str) -> Any:
    if name == "SameDateConflict":
        from ._soap import SameDateConflict

        return SameDateConflict
    if name in ("ValidationMessage", "WorkdayFaultError"):
        from . import _faults

        return getattr(_faults, name)
    raise AttributeError(f"module 'impactin_workday' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The module's own attributes, and the public names not loaded yet.
    return sorted({*globals(), *__all__})
