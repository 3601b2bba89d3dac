"""Model files: identical tensors give identical bytes, whatever the file is called."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from pipelines.io.atomic import atomic_torch_save
from pipelines.models.store import read_model, save_model


def weights() -> dict[str, dict[str, torch.Tensor]]:
    return {"net": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([0.5, -1.0])}}


def test_identical_models_are_byte_identical_under_any_name(tmp_path: Path) -> None:
    a, b = tmp_path / "run1" / "model.pt", tmp_path / "run2" / "other name.pt"
    for path in (a, b):
        save_model(path, "flow-matching", "jets", {"hidden": 8}, weights(), {"point_names": ["x"]})
    assert a.read_bytes() == b.read_bytes()
    names = zipfile.ZipFile(a).namelist()
    assert names and all(n.startswith("archive/") for n in names)  # no temporary file name inside
    payload = read_model(b)
    assert payload["family"] == "flow-matching" and payload["extra"] == {"point_names": ["x"]}
    assert torch.equal(payload["weights"]["net"]["w"], torch.arange(6.0).reshape(2, 3))
    changed = weights()
    changed["net"]["b"][0] = 0.25
    save_model(b, "flow-matching", "jets", {"hidden": 8}, changed, {"point_names": ["x"]})
    assert a.read_bytes() != b.read_bytes()
    assert sorted(p.name for p in b.parent.iterdir()) == ["other name.pt"]  # no temporary file left


def test_atomic_torch_save_keeps_the_old_file_when_saving_fails(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    atomic_torch_save({"x": torch.ones(2)}, path)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"x": Unpicklable()}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
