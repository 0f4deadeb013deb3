"""The Benevity connector of impactin: employee donations through the Giving API.

Installing this distribution registers the ``benevity`` platform through the
``impactin`` entry point. ``create_simulator`` builds the sandbox simulator
that tests and the demo serve on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from ._mapping import (
    EMPLOYEE_REF_KEY,
    IDEMPOTENCY_KEY,
    MAX_METADATA_PAIRS,
    PERSONAL_PATHS,
    PLATFORM_ID,
    donation_payload,
)
from ._options import (
    AUTH_KIND,
    DEFAULT_PAYMENT_TYPE,
    DEFAULT_WEBHOOK_SCHEME,
    TOKEN_LIFETIME,
    BenevityOptions,
)
from ._plugin import PLATFORM

# The simulator pulls in Starlette; load it on first use so that loading the
# plugin (every 'impactin' command does) stays fast.
_SIMULATOR_NAMES = ("DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET", "create_simulator")

__all__ = [
    "AUTH_KIND",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_PAYMENT_TYPE",
    "DEFAULT_WEBHOOK_SCHEME",
    "EMPLOYEE_REF_KEY",
    "IDEMPOTENCY_KEY",
    "MAX_METADATA_PAIRS",
    "PERSONAL_PATHS",
    "PLATFORM",
    "PLATFORM_ID",
    "TOKEN_LIFETIME",
    "BenevityOptions",
    "create_simulator",
    "donation_payload",
]


def __getattr__(name: str) -> Any:
    if name in _SIMULATOR_NAMES:
        from . import _simulator

        return getattr(_simulator, name)
    raise AttributeError(f"module 'impactin_benevity' has no attribute {name!r}")
