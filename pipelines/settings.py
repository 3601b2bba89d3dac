"""Reading a stage's ``--settings`` JSON object into its settings dataclass."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any


def settings_object(text: str | Mapping | None, cls: type, stage: str) -> dict[str, Any]:
    """The checked keys of a ``--settings`` JSON object (a string or a mapping) for dataclass ``cls``.

    ValueError, naming the stage, when the text is not valid JSON, not an object, or has keys
    that are not fields of ``cls``. Value types are checked by the dataclass itself.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, str):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{stage} --settings is not valid JSON: {err}") from err
    else:
        raw = text
    if not isinstance(raw, Mapping):
        raise ValueError(f"{stage} --settings must be a JSON object, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown {stage} settings {unknown}; known: {sorted(known)}")
    return dict(raw)
