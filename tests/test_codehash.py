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


def test_hash_changes_with_dependency_edits_only(tmp_path, monkeypatch):
    root = tmp_path / "pipelines"
    shutil.copytree(codehash.ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "data"))
    monkeypatch.setattr(codehash, "ROOT", root)
    module_closure.cache_clear()
    before = code_hash("pipelines.convert")
    (root / "geometry.py").write_text((root / "geometry.py").read_text() + "\n# edit\n")
    module_closure.cache_clear()
    assert code_hash("pipelines.convert") != before
    cli_before = code_hash("pipelines.io.atomic")
    (root / "cli.py").write_text((root / "cli.py").read_text() + "\n# edit\n")
    assert code_hash("pipelines.io.atomic") == cli_before
    module_closure.cache_clear()


def test_unknown_module_is_an_error():
    with pytest.raises(ValueError, match="not a module"):
        module_closure("pipelines.nope")
