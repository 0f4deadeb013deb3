"""Counts and latencies of one run, per platform."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["PlatformStats", "RunReport", "percentile"]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of ``values``, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@attrs.define
class PlatformStats:
    """What happened to one platform's deliveries in one run."""

    queued: int = 0
    resumed: int = 0
    delivered: int = 0
    duplicates: int = 0
    quarantined: int = 0
    retried: int = 0
    dead_lettered: int = 0
    blocked: int = 0
    deferred: int = 0
    redacted: int = 0
    latencies: list[float] = attrs.field(factory=list)

    @property
    def p50(self) -> float | None:
        return percentile(self.latencies, 0.50)

    @property
    def p95(self) -> float | None:
        return percentile(self.latencies, 0.95)


@attrs.define
class RunReport:
    """Per-platform statistics of a run, keyed by platform id."""

    run_id: str
    platforms: dict[str, PlatformStats] = attrs.field(factory=dict)
    #: Rejected rows whose kind or tenant routes them to no platform.
    unrouted_quarantined: int = 0

    def platform(self, platform: str) -> PlatformStats:
        stats = self.platforms.get(platform)
        if stats is None:
            stats = self.platforms[platform] = PlatformStats()
        return stats

    def quarantined(self, platforms: Iterable[str]) -> None:
        platforms = list(platforms)
        if not platforms:
            self.unrouted_quarantined += 1
        for platform in platforms:
            self.platform(platform).quarantined += 1

    @property
    def total_quarantined_rows(self) -> int:
        return self.unrouted_quarantined + sum(
            stats.quarantined for stats in self.platforms.values()
        )
