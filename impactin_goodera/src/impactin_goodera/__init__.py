"""impactin connector for Goodera: volunteer hours as event participation."""

from __future__ import annotations

from ._mapping import OPERATION, map_record
from ._options import GooderaOptions
from ._platform import PLATFORM_ID, PLATFORM_INFO

__all__ = [
    "OPERATION",
    "PLATFORM_ID",
    "PLATFORM_INFO",
    "GooderaOptions",
    "map_record",
]

__version__ = "0.1.0"
