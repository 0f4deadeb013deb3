"""The impactin connector conformance suite, run against the Workday simulator.

Every rule runs once over SOAP and once over REST, the two transports the
connector declares.
"""

from impactin_core.conformance import ConformanceSuite, ConformanceTarget
from impactin_workday.simulator import SANDBOX_TENANT


class TestWorkdayConformance(ConformanceSuite):
    target = ConformanceTarget(
        platform="workday",
        options={"tenant_name": SANDBOX_TENANT},
        transport_options={"rest": {"rest_path": "volunteerActivities"}},
    )
