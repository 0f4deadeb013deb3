"""The one cattrs converter for (un)structuring impactin models."""

from __future__ import annotations

import datetime as dt

import cattrs

from ._models import RecordKind

__all__ = ["converter"]

converter = cattrs.Converter(forbid_extra_keys=True)
converter.register_unstructure_hook(dt.date, lambda value: value.isoformat())
converter.register_structure_hook(
    dt.date,
    lambda value, _: (
        value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
    ),
)
converter.register_unstructure_hook(RecordKind, lambda value: value.value)
