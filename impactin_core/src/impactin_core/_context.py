"""Objects the runtime hands to connector hooks."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ._models import PlatformSettings

if TYPE_CHECKING:
    import httpx

    from ._tokens import TokenCache

__all__ = ["AuthContext", "SendContext"]


@attrs.frozen(kw_only=True)
class AuthContext:
    """The objects ``impactin_authenticate`` may use."""

    client: httpx.AsyncClient
    tokens: TokenCache
    clock: Callable[[], float] = time.time
    #: Set when the platform rejected the previous credentials.
    force_refresh: bool = False


@attrs.frozen(kw_only=True)
class SendContext:
    """The objects ``impactin_send`` may use."""

    client: httpx.AsyncClient
    settings: PlatformSettings
    #: Seconds allowed for one call.
    timeout: float = 30.0
    #: Folder where a connector may cache parsed artifacts such as WSDLs.
    cache_dir: Path | None = None
    #: The runtime's clock in epoch seconds; pass it as ``now`` to
    #: ``raise_for_response`` so a Retry-After date is read against it.
    clock: Callable[[], float] = time.time
