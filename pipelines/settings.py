"""Reading a stage's ``--settings`` JSON object into its settings dataclass."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

#: a number as YAML 1.2 and JSON read it but YAML 1.1 (PyYAML) keeps as a string: ``3e-4``, ``1E5``
YAML11_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def yaml11_number(value: Any) -> float | None:
    """The number a YAML 1.1 string such as ``"3e-4"`` stands for (a config's ``lr: 3e-4``), None for
    any other value."""
    if isinstance(value, str) and YAML11_NUMBER.match(value.strip()):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def settings_object(text: str | Mapping | None, cls: type, stage: str) -> dict[str, Any]:
    """The checked keys of a ``--settings`` JSON object (a string or a mapping) for dataclass ``cls``.

    ValueError, naming the stage, when the text is not valid JSON, not an object, has keys that
    are not fields of ``cls``, or has a value of the wrong type for its field (see
    :func:`checked_value`; values come back converted, e.g. JSON lists to tuples). Value ranges
    are checked by the dataclass itself.
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
        close = difflib.get_close_matches(str(unknown[0]), sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {stage} settings {unknown}{hint} (known: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    return {key: checked_value(f"{stage} setting {key}", value, hints[key]) for key, value in raw.items()}


def settings_dict(text: str | None, stage: str = "train") -> dict[str, Any]:
    """A ``--settings`` value as a dict: a JSON object, or ``@path`` of a file holding one."""
    if text is not None and text.startswith("@"):
        path = text[1:]
        try:
            with open(path) as f:
                text = f.read()
        except OSError as err:
            raise ValueError(f"{stage} --settings file {path}: {err}") from err
    if text is None or not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{stage} --settings is not valid JSON: {err}") from err
    if not isinstance(raw, Mapping):
        raise ValueError(f"{stage} --settings must be a JSON object, got {type(raw).__name__}")
    return dict(raw)


def check_settings_types(settings: Any) -> None:
    """Type-check every field of a settings dataclass by its type hint (shared ``checked_value``)."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        checked_value(f"setting {f.name}", getattr(settings, f.name), hints[f.name])


def checked_fields(cls: type, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``values`` for the fields of dataclass ``cls``, each checked and converted by its type hint."""
    hints = typing.get_type_hints(cls)
    return {key: checked_value(f"{what} setting {key}", value, hints[key]) for key, value in values.items()}


def checked_value(what: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` in JSON terms, converted; ValueError naming ``what``.

    Supported hints: bool, int, float, str, ``X | None`` and tuples (``tuple[X, ...]`` or fixed
    length). Booleans are not numbers, an int is accepted for a float (and becomes one), so is a
    YAML 1.1 number string such as ``"3e-4"`` (:func:`yaml11_number`), and a list is accepted for a
    tuple (and becomes one).
    """
    if isinstance(hint, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return checked_value(what, value, option)
                except ValueError:
                    pass
        raise ValueError(f"{what} must be {_describe(hint)}, got {value!r}{yaml11_hint(value)}")
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{what} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(value) != len(args):
            raise ValueError(f"{what} must have {len(args)} entries, got {value!r}")
        return tuple(checked_value(what, item, arg) for item, arg in zip(value, args, strict=True))
    if hint is float and type(value) in (int, float):
        return float(value)
    if hint is float and yaml11_number(value) is not None:
        return yaml11_number(value)
    if hint in (bool, int, str) and type(value) is hint:
        return value
    raise ValueError(f"{what} must be {_describe(hint)}, got {value!r}{yaml11_hint(value)}")


def yaml11_hint(value: Any) -> str:
    """For a YAML 1.1 number string where a number of another type is wanted: how to write it."""
    number = yaml11_number(value)
    if number is None:
        return ""
    exact = int(number) if number.is_integer() else number
    return f" (YAML 1.1 reads {value} as a string, not a number: write {exact})"


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)
