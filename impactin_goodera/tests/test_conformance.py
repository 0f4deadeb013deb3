"""The impactin connector conformance suite, run against the Goodera simulator."""

from impactin_core.conformance import ConformanceSuite, ConformanceTarget


class TestGooderaConformance(ConformanceSuite):
    target = ConformanceTarget(
        platform="goodera", options={"opportunity_id": "64b7f0c2a1d3e4f5a6b7c8d9"}
    )
