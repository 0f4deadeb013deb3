"""A disk cache of fetched WSDL and XSD documents for zeep's transport.

Each document is stored as its raw bytes in one file named by the SHA-256 of
its URL, so nothing is pickled and a damaged file is only a cache miss.
Files are written to a temporary name and renamed into place, so processes
that share the folder never read a partial document.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["DEFAULT_WSDL_CACHE_TTL", "WsdlDocumentCache"]

logger = logging.getLogger("impactin.workday")

#: Seconds a fetched WSDL or schema document is reused. Workday changes a
#: published version's WSDL rarely, and a new version has a new URL.
DEFAULT_WSDL_CACHE_TTL = 24 * 3600


class WsdlDocumentCache:
    """The ``add``/``get`` interface of ``zeep.cache.Base``, backed by files.

    Only ``http`` and ``https`` URLs are cached; local files are read as they are.
    """

    def __init__(
        self,
        folder: Path,
        ttl: float = DEFAULT_WSDL_CACHE_TTL,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.ttl = ttl
        self._clock = clock

    def _path(self, url: str) -> Path | None:
        if urlparse(url).scheme not in ("http", "https"):
            return None
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.folder / f"{digest}.xml"

    def get(self, url: str) -> bytes | None:
        path = self._path(url)
        if path is None:
            return None
        try:
            age = self._clock() - path.stat().st_mtime
            if age >= self.ttl:
                return None
            return path.read_bytes()
        except OSError:
            return None

    def add(self, url: str, content: bytes) -> None:
        path = self._path(url)
        if path is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".part")
            with os.fdopen(handle, "wb") as file:
                file.write(content)
            os.replace(temporary, path)
        except OSError as exc:
            # A read-only or full disk costs a download next time, nothing more.
            logger.warning(
                "Could not cache a WSDL document in %s: %s", self.folder, exc
            )
