import os
import shutil

import pytest

from pipelines import codehash
from pipelines.codehash import code_hash, module_closure


def test_closure_follows_imports():
    closure = module_closure("pipelines.convert")
    assert {
        "pipelines.convert",
        "pipelines.pointcloud",
        "pipelines.geometry",
        "pipelines.io.clouds",
        "pipelines.io.calochallenge",
        "pipelines.io.atomic",
    } <= closure
    assert "pipelines.metrics" not in closure


def test_hash_changes_with_dependency_edits_only(tmp_path):
    root = tmp_path / "pipelines"
    shutil.copytree(codehash.ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "data"))
    before = code_hash("pipelines.convert", root=root)
    assert before == code_hash("pipelines.convert")
    (root / "geometry.py").write_text((root / "geometry.py").read_text() + "\n# edit\n")
    assert code_hash("pipelines.convert", root=root) != before
    assert code_hash("pipelines.convert") == before  # the other copy is untouched
    cli_before = code_hash("pipelines.io.atomic", root=root)
    (root / "cli.py").write_text((root / "cli.py").read_text() + "\n# edit\n")
    assert code_hash("pipelines.io.atomic", root=root) == cli_before


def test_new_imports_are_followed(tmp_path):
    root = tmp_path / "pipelines"
    shutil.copytree(codehash.ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "data"))
    assert "pipelines.metrics.separation" not in module_closure("pipelines.io.atomic", root)
    path = root / "io" / "atomic.py"
    path.write_text(path.read_text() + "\nfrom pipelines.metrics import separation  # noqa\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert "pipelines.metrics.separation" in module_closure("pipelines.io.atomic", root)


def test_unknown_module_is_an_error():
    with pytest.raises(ValueError, match="not a module"):
        module_closure("pipelines.nope")


def test_imports_from_the_package_itself_are_followed(tmp_path):
    """``from pipelines import geometry`` names the package and its submodule."""
    root = tmp_path / "pipelines"
    shutil.copytree(codehash.ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "data"))
    path = root / "io" / "atomic.py"
    path.write_text(path.read_text() + "\nfrom pipelines import geometry  # noqa\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert {"pipelines", "pipelines.geometry"} <= module_closure("pipelines.io.atomic", root)
    assert codehash.module_path("pipelines", root) == root / "__init__.py"
