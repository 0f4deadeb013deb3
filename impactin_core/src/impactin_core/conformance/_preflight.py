"""Setup checks that ``impactin conformance`` runs once before pytest starts.

Without them, a missing connector or a rejected option fails every rule with
the same error.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .._errors import ConfigError
from ._harness import (
    HookReturnError,
    load_simulator,
    plugin_host,
    running_harness,
)
from ._target import ConformanceTarget

__all__ = ["check_target"]


def check_target(target: ConformanceTarget) -> None:
    """Check that the target's connector is installed and accepts its options.

    Maps one sample record per transport against the connector's simulator.
    Raises ``PluginError`` when no installed connector registers the
    platform, ``LookupError`` when the connector declares no simulator,
    ``ConfigError`` when ``impactin_map`` rejects the options of a transport,
    and ``HookReturnError`` when map, authenticate or send returns a value of
    the wrong type.
    """
    registered = plugin_host().platform(target.platform)
    load_simulator(registered.info)
    transports = target.transports or registered.info.transports
    with tempfile.TemporaryDirectory(prefix="impactin-conformance-") as folder:
        for transport in transports:
            with running_harness(target, transport, Path(folder)) as harness:
                record = harness.sample_record("conformance-preflight-1")
                try:
                    harness.map_records([record], ["ik_conformance_preflight_1"])
                except (ConfigError, HookReturnError):
                    raise
                except Exception:
                    # Any other mapping error is left to the suite, whose
                    # rules report it with the input and the fix.
                    continue
                harness.check_hook_returns(authenticate=True)
