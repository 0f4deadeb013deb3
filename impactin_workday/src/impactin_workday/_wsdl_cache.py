"""A disk cache of WSDL documents for zeep: fetched ones and reduced copies.

Each fetched WSDL or XSD document is stored as its raw bytes in one file
named by the SHA-256 of its URL. Next to them, ``compiled-*.wsdl`` files
hold the reduced copy of a WSDL (see ``_wsdl_prune``) that a new process
builds its client from, keyed by the WSDL's URL, or by a local file's path,
size and modification time. Nothing is pickled, and a damaged file is only
a cache miss. Files are written to a temporary name and renamed into place,
so processes that share the folder never read a partial document.
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

__all__ = ["DEFAULT_WSDL_CACHE_TTL", "WsdlDocumentCache", "is_url"]

logger = logging.getLogger("impactin.workday")

#: Seconds a fetched WSDL or schema document is reused. Workday changes a
#: published version's WSDL rarely, and a new version has a new URL.
DEFAULT_WSDL_CACHE_TTL = 24 * 3600

# Part of every reduced copy's key, so a change to how copies are made
# never reuses copies made the old way.
_COMPILED_FORMAT = "impactin-wsdl-prune-1"


def is_url(source: str) -> bool:
    """Return whether ``source`` is fetched over HTTP(S) rather than read from disk."""
    return urlparse(source).scheme in ("http", "https")


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
        if not is_url(url):
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
        if path is None or self.ttl <= 0:
            # A TTL of 0 reads nothing back, so nothing is written either.
            return
        self._write(path, content)

    def discard(self, url: str) -> None:
        """Delete the stored document of ``url``, for one that proved unusable."""
        path = self._path(url)
        if path is not None:
            path.unlink(missing_ok=True)

    def _compiled_path(self, source: str, operation: str) -> Path | None:
        parts = [_COMPILED_FORMAT, operation, source]
        if not is_url(source):
            try:
                status = Path(source).stat()
            except OSError:
                return None
            parts += [str(Path(source).resolve()), str(status.st_size)]
            parts.append(str(status.st_mtime_ns))
        digest = hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()
        return self.folder / f"compiled-{digest}.wsdl"

    def compiled(self, source: str, operation: str) -> Path | None:
        """Return the fresh reduced copy of ``source`` for ``operation``, if any."""
        path = self._compiled_path(source, operation)
        if path is None:
            return None
        try:
            if self._clock() - path.stat().st_mtime >= self.ttl:
                return None
        except OSError:
            return None
        return path

    def add_compiled(self, source: str, operation: str, content: bytes) -> None:
        """Keep the reduced copy of ``source`` for ``operation``."""
        path = self._compiled_path(source, operation)
        if path is not None:
            self._write(path, content)

    def _write(self, path: Path, content: bytes) -> None:
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
