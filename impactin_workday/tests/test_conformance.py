"""The impactin connector conformance suite, run against the Workday simulator.

Every rule runs once over SOAP and once over REST, the two transports the
connector declares. Workday publishes no webhook signature scheme, so the
webhook rules run with the ``webhook_scheme`` option set to Standard Webhooks.
"""

from impactin_core.conformance import ConformanceSuite, ConformanceTarget
from impactin_workday.simulator import SANDBOX_TENANT


class TestWorkdayConformance(ConformanceSuite):
    target = ConformanceTarget(
        platform="workday",
        options={"tenant_name": SANDBOX_TENANT, "webhook_scheme": "standard_webhooks"},
        transport_options={"rest": {"rest_path": "volunteerActivities"}},
    )
