"""The keys of a settings dataclass with their defaults and meanings, for a stage's ``--help``.

A key's meaning is read from the dataclass source, first found wins: a ``#:`` comment on the lines
above the field or a ``#`` comment after it; a clause of the class docstring that starts with the
key (``"validate_n: validation clouds used;"``, ``"e_min_mev, e_max_mev: range of ..."``); a
docstring clause that mentions the key. Base classes are searched as well.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import textwrap
import tokenize
from typing import Any

_NAMES = r"[A-Za-z_]\w*(?:(?:\s*,\s*|\s+and/or\s+|\s+and\s+|\s*/\s*)[A-Za-z_]\w*)*"
_CLAUSE = re.compile(rf"^(?:``)?(?P<names>{_NAMES})(?:``)?\s*:\s+(?P<text>.+)$", re.S)
_IGNORED_COMMENTS = re.compile(r"^(fmt|noqa|type):")


def _source_comments(cls: type) -> dict[str, str]:
    """Field name -> its ``#:`` or trailing ``#`` comment in the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whole-line comment)
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            text = token.string.lstrip("#").strip()
            whole = not lines[row - 1][:col].strip()
            if whole and not token.string.startswith("#:"):
                continue
            text = text.lstrip(":").strip()
            if text and not _IGNORED_COMMENTS.match(text):
                comments[row] = (text, whole)
    found: dict[str, str] = {}
    (node,) = ast.parse(source).body
    for item in getattr(node, "body", []):
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        above, row = [], item.lineno - 1
        while row in comments and comments[row][1]:
            above.insert(0, comments[row][0])
            row -= 1
        trailing = comments.get(item.end_lineno or item.lineno)
        parts = above + ([trailing[0]] if trailing and not trailing[1] else [])
        if parts:
            found[item.target.id] = " ".join(parts)
    return found


def _docstring_clauses(cls: type) -> list[str]:
    """The class docstring cut into clauses at '; ' and at sentence ends."""
    doc = cls.__dict__.get("__doc__") or ""
    text = " ".join(inspect.cleandoc(doc).split())
    return [clause.strip() for clause in re.split(r"(?<=[.;])\s+", text) if clause.strip()]


def field_meanings(cls: type) -> dict[str, str]:
    """Field name -> meaning for every field of dataclass ``cls`` that its source documents."""
    names = [f.name for f in dataclasses.fields(cls)]
    meanings: dict[str, str] = {}
    for klass in cls.__mro__:
        if not dataclasses.is_dataclass(klass):
            continue
        for name, text in _source_comments(klass).items():
            meanings.setdefault(name, text)
        clauses = _docstring_clauses(klass)
        for clause in clauses:
            match = _CLAUSE.match(clause)
            if match:
                for name in re.findall(r"[A-Za-z_]\w*", match.group("names")):
                    if name in names:
                        meanings.setdefault(name, match.group("text").rstrip(";."))
        for name in names:
            if name in meanings:
                continue
            pattern = re.compile(rf"(?<![\w`\"])`*{re.escape(name)}`*(?![\w\"])")
            mention = next((clause for clause in clauses if pattern.search(clause)), None)
            if mention is not None:
                meanings[name] = mention.rstrip(";.").replace("``", "")
    return {name: meanings[name] for name in names if name in meanings}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def settings_help(cls: type, title: str, width: int = 100) -> str:
    """A help section listing every key of dataclass ``cls``: ``key = default (JSON)`` and its meaning."""
    meanings = field_meanings(cls)
    lines = [f"{title} (keys of the --settings JSON object, with defaults):"]
    for field in dataclasses.fields(cls):
        default = _default(field)
        shown = "required" if default is dataclasses.MISSING else json.dumps(default)
        lines.append(f"  {field.name} = {shown}")
        if field.name in meanings:
            lines += textwrap.wrap(
                meanings[field.name], width, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
    return "\n".join(lines)
