"""The impactin connector conformance suite, run against the Benevity simulator."""

from impactin_core.conformance import ConformanceSuite, ConformanceTarget


class TestBenevityConformance(ConformanceSuite):
    target = ConformanceTarget(
        platform="benevity", options={"foundation_id": "demo-foundation"}
    )
