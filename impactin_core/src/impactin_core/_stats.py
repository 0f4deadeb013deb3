"""Counts and latencies of one run, per platform."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["LATENCY_SAMPLE_SIZE", "PlatformStats", "RunReport", "percentile"]

#: Latencies kept per platform for p50 and p95. Up to this many deliveries
#: the percentiles are exact. Past it a uniform random sample of this size
#: is kept (reservoir sampling), so memory stays flat in long runs and the
#: percentiles are estimates.
LATENCY_SAMPLE_SIZE = 10_000


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of ``values``, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@attrs.define
class PlatformStats:
    """Counts and latencies of one platform's deliveries in one run."""

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
    #: Records submitted again whose earlier delivery was dead-lettered or
    #: blocked. They are not sent again until that delivery is replayed.
    failed_earlier: int = 0
    #: A sample of at most LATENCY_SAMPLE_SIZE delivery latencies in seconds.
    latencies: list[float] = attrs.field(factory=list)
    #: Latencies added, including those the sample no longer contains.
    latency_count: int = 0
    _rng: random.Random = attrs.field(
        factory=random.Random, init=False, repr=False, eq=False
    )

    def add_latency(self, seconds: float) -> None:
        """Add one delivery latency to the sample (Vitter's algorithm R)."""
        self.latency_count += 1
        if len(self.latencies) < LATENCY_SAMPLE_SIZE:
            self.latencies.append(seconds)
            return
        slot = self._rng.randrange(self.latency_count)
        if slot < LATENCY_SAMPLE_SIZE:
            self.latencies[slot] = seconds

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
