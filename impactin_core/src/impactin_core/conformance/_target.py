"""What the conformance suite tests: a platform id and how to talk to its simulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ConformanceTarget", "parse_option_pairs"]


def _frozen_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class ConformanceTarget:
    """A connector's platform and the settings its simulator needs.

    ``options`` are the connector options of every run, for example an
    account id the simulator expects. ``transport_options`` adds options per
    transport (``{"rest": {"rest_path": "..."}}``). ``transports`` limits the
    transports tested; empty tests every transport the platform declares.
    ``record_fields`` overrides fields of the sample records, for platforms
    that need a particular value such as an organization id format.
    ``rule_timeout`` is the deadline of each rule in seconds.
    """

    platform: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    transport_options: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_frozen_mapping
    )
    transports: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    record_fields: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping
    )
    #: Seconds each rule may take before it fails naming the hook that did
    #: not finish.
    rule_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0.0))

    def options_for(self, transport: str) -> dict[str, Any]:
        """Return the connector options for one transport."""
        return {**self.options, **self.transport_options.get(transport, {})}


def parse_option_pairs(pairs: list[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; ``true``, ``false`` and integers are converted."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.strip():
            message = f"Option {pair!r} is not KEY=VALUE; write it as name=value."
            raise ValueError(message)
        value: Any = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        elif text.isdigit():
            value = int(text)
        options[key.strip()] = value
    return options
