"""Conformance rules for the platform named by ``--impactin-platform``.

``impactin conformance PLATFORM`` and ``pytest --impactin-platform=NAME``
collect this module.
"""

from __future__ import annotations

from impactin_core.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    """Every rule, for the platform given on the command line."""
