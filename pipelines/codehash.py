"""Content hashes of the ``pipelines`` code a stage depends on, for Snakemake ``params``.

Snakemake reruns a rule when its params change, but not when a Python module it imports
changes. Each rule therefore carries the hash of its stage module and every ``pipelines``
module that it imports, directly or indirectly (found by reading the import statements), so
an edit reruns exactly the stages that can see it.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "pipelines"
ROOT = Path(__file__).resolve().parent


def module_path(module: str, root: Path | None = None) -> Path | None:
    """Source file of a ``pipelines`` module under ``root`` (default: this package), or None."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    root = ROOT if root is None else root
    parts = module.split(".")[1:]
    candidates = [root.joinpath(*parts[:-1], parts[-1] + ".py")] if parts else []
    for candidate in (*candidates, root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports(path: Path, module: str, root: Path, mtime_ns: int) -> frozenset[str]:
    """``pipelines`` modules imported anywhere in a source file (absolute and relative imports).

    Cached per file version (``mtime_ns``), since every stage's closure reads the shared modules.
    """
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if module_path(m, root) is not None)


def module_closure(module: str, root: Path | None = None) -> frozenset[str]:
    """``module`` and every ``pipelines`` module it depends on through imports."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name, root)
        if path is None:
            raise ValueError(f"{name} is not a module of the {PACKAGE} package")
        seen.add(name)
        todo.extend(_imports(path, name, root or ROOT, path.stat().st_mtime_ns) - seen)
    return frozenset(seen)


def code_hash(*modules: str, extra_files: tuple[str, ...] = (), root: str | Path | None = None) -> str:
    """SHA-256 (16 hex digits) over the sources of ``modules``, their dependencies and ``extra_files``.

    ``root`` is the ``pipelines`` package directory to read (default: the imported one); the
    workflow passes its own copy, so the hash follows the code the jobs will run.
    """
    root = ROOT if root is None else Path(root)
    names = sorted(set().union(*(module_closure(m, root) for m in modules)))
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update(module_path(name, root).read_bytes())
    for rel in sorted(extra_files):
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:16]
