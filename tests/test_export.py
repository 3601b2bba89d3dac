"""Stage ``export``: ONNX graphs of the factorised sampler, checked by ONNX Runtime against torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipelines import cli, export
from pipelines.export_settings import ExportSettings
from pipelines.generate.gflash import generate_showers
from pipelines.geometry import THRESHOLD_MEV
from pipelines.io.clouds import Clouds
from pipelines.models.factorised import FactorisedFamily, FactorisedSettings
from pipelines.models.factorised_graph import PointGraph, ShowerGraph, ShowerLevelGraph, sampler_noise
from pipelines.models.family import TrainingData
from pipelines.models.store import load_model, save_model
from pipelines.pointcloud import voxels_to_points
from pipelines.report import html as report_html

SMALL = {"shower_hidden": 32, "shower_blocks": 2, "point_hidden": 16, "point_blocks": 1, "ode_steps": 1}
SETTINGS = ExportSettings(check_showers=8, timing_batch_sizes=(1, 4), timing_max_batch=2, timing_repeats=1)
GRID = (45, 16, 9)


@pytest.fixture(scope="module")
def exported(ds2, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(model.pt, export folder, export.json) of a small factorised model (a few training steps)."""
    energies, showers = generate_showers(60, ds2, seed=3, progress=False)
    points, lengths = voxels_to_points(showers, ds2)
    split = np.zeros(len(energies), dtype=np.int8)
    split[50:] = 1
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), energies[:, None],
                    ("energy", "layer", "alpha", "r"), ("incident_energy",), split)  # fmt: skip
    data = TrainingData("showers", clouds, None, np.arange(50), np.arange(50, 60),
                        float(lengths.mean()), 7, ds2)  # fmt: skip
    torch.manual_seed(0)
    family = FactorisedFamily(FactorisedSettings(**SMALL), data, torch.device("cpu"))
    tmp = tmp_path_factory.mktemp("export")
    model = tmp / "model.pt"
    weights = {name: m.state_dict() for name, m in family.modules().items()}
    save_model(model, "factorised", "showers", family.export_config(), weights)
    info = export.export(model, tmp / "export", 5, SETTINGS)
    return model, tmp / "export", info


def _noise(b: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_l, v = GRID[0], GRID[1] * GRID[2]
    return {
        "noise_shower": rng.standard_normal((b, 1 + 2 * n_l), dtype=np.float32),
        "u_voxel": rng.random((b, n_l, v), dtype=np.float32),
        "u_component": rng.random((b, n_l, v), dtype=np.float32),
        "z": rng.standard_normal((b, n_l, v), dtype=np.float32),
    }


def _close(onnx_out: np.ndarray, torch_out: torch.Tensor | np.ndarray, rtol: float = 1e-4) -> None:
    b = np.asarray(torch_out, dtype=np.float64)
    d = np.abs(np.asarray(onnx_out, dtype=np.float64) - b)
    assert np.all(d <= rtol * np.maximum(np.abs(b), THRESHOLD_MEV))


def test_onnx_runtime_reproduces_each_torch_graph_for_fixed_noise(exported):
    model, folder, _ = exported
    sampler, _ = load_model(model, None, None, "cpu")
    e = np.array([1.5e3, 2e4, 3e5, 9e5])
    feeds = {"e_inc": e, **_noise(4, 11)}
    t = {k: torch.as_tensor(v) for k, v in feeds.items()}
    with torch.no_grad():
        counts, layer_e = ShowerLevelGraph(sampler)(t["e_inc"], t["noise_shower"])
        showers = PointGraph(sampler)(t["e_inc"], counts, layer_e, t["u_voxel"], t["u_component"], t["z"])
        whole = ShowerGraph(sampler)(*(t[k] for k in ("e_inc", *export.NOISE_INPUTS)))
    level = ort.InferenceSession(str(folder / "shower_level.onnx"))
    o_counts, o_layer = level.run(None, {"e_inc": e, "noise_shower": feeds["noise_shower"]})
    assert o_counts.dtype == np.int64 and np.array_equal(o_counts, counts.numpy())
    _close(o_layer, layer_e)
    point_feeds = {"e_inc": e, "counts": o_counts, "layer_energy": o_layer}
    point_feeds |= {k: feeds[k] for k in export.NOISE_INPUTS[1:]}
    o_showers = ort.InferenceSession(str(folder / "points.onnx")).run(None, point_feeds)[0]
    assert o_showers.shape == (4, 6480) and o_showers.dtype == np.float32
    _close(o_showers, showers)
    o_whole = ort.InferenceSession(str(folder / "shower.onnx")).run(None, feeds)
    _close(o_whole[0], whole[0])
    assert np.array_equal(o_whole[1], whole[1].numpy())
    # physics of the decoded showers: n_l distinct hit voxels per layer, layer sums equal E_l
    per_layer = o_whole[0].reshape(4, 45, 144).astype(np.float64)
    hits = (per_layer > 0).sum(axis=2)
    low = ((per_layer > 0) & (per_layer < 2 * THRESHOLD_MEV)).sum()
    assert counts.sum() > 100 and np.all(hits <= o_counts) and (o_counts - hits).sum() <= low + 50
    assert np.all(per_layer.sum(axis=2) <= o_layer * (1 + 1e-5))
    full = hits == o_counts
    np.testing.assert_allclose(per_layer.sum(axis=2)[full], o_layer[full], rtol=1e-4)


def test_onnx_showers_equal_the_sample_stage_sampler_for_its_noise(exported):
    model, folder, _ = exported
    sampler, _ = load_model(model, None, None, "cpu")
    e = np.geomspace(1e3, 1e6, 6)
    reference, _ = sampler.sample_showers(e, torch.Generator().manual_seed(21))
    graph = ShowerGraph(sampler)
    noise = sampler_noise(graph, torch.as_tensor(e), torch.Generator().manual_seed(21))
    args = (noise.shower, noise.u_voxel, noise.u_component, noise.z)
    with torch.no_grad():
        dense = graph(torch.as_tensor(e), *args)[0].numpy()
    assert np.array_equal(dense, reference)  # the same arithmetic as the sampler, to the bit
    feeds = {"e_inc": e} | {k: a.numpy() for k, a in zip(export.NOISE_INPUTS, args, strict=True)}
    o_showers = ort.InferenceSession(str(folder / "shower.onnx")).run(None, feeds)[0]
    diff = export.compare_showers(o_showers, reference, 45)
    assert diff["layers"] == 270 and diff["layers_differing"] <= 1  # a near tie of keys may flip
    assert diff["max_rel_diff"] <= SETTINGS.rtol
    same = np.all((o_showers > 0) == (reference > 0), axis=1)
    _close(o_showers[same], reference[same], rtol=SETTINGS.rtol)
    assert same.sum() >= 5


def test_export_json_names_the_graphs_check_and_timing(exported):
    _, folder, info = exported
    assert json.loads((folder / "export.json").read_text()) == info
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "export.json", "points.onnx", "shower.onnx", "shower_level.onnx",
    ]  # fmt: skip
    for name, file in info["files"].items():
        session = ort.InferenceSession(str(folder / file))
        sig = info["graphs"][name]
        assert [i.name for i in session.get_inputs()] == [t["name"] for t in sig["inputs"]]
        assert [o.name for o in session.get_outputs()] == [t["name"] for t in sig["outputs"]]
        for declared, actual in zip(sig["inputs"], session.get_inputs(), strict=True):
            assert [d if isinstance(d, int) else "B" for d in actual.shape] == declared["shape"]
        assert onnx.load(str(folder / file)).opset_import[0].version == info["opset"] == 18
    assert info["graphs"]["shower"]["outputs"][0]["shape"] == ["B", 6480]
    assert info["grid"] == {"n_layers": 45, "n_alpha": 16, "n_r": 9} and info["ode_steps"] == 1
    check = info["check"]
    assert check["passed"] and check["showers"] == 8
    assert check["shower_level"]["counts_differing"] == 0
    assert check["torch_graphs_vs_sampler"] == {"layers": 360, "layers_differing": 0, "max_abs_diff": 0.0,
                                                "max_rel_diff": 0.0}  # fmt: skip
    assert 0 < check["shower_vs_sampler"]["max_rel_diff"] <= SETTINGS.rtol
    assert check["shower_vs_sampler"]["layers_differing"] <= 0.01 * 360
    assert [(r["requested_batch_size"], r["batch_size"]) for r in info["timing"]] == [(1, 1), (4, 2)]
    assert all(r["ms_per_shower_onnxruntime"] > 0 and r["ms_per_shower_torch"] > 0 for r in info["timing"])
    text = (folder / "README.md").read_text()
    assert "(layer * n_alpha + alpha) * n_r + r" in text and "`u_component`" in text


def _error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_unsupported_family_and_corrupt_model_are_clear_errors_writing_nothing(tmp_path, capsys):
    other = tmp_path / "flow.pt"
    save_model(other, "flow-matching", "jets", {}, {"generator": {"w": torch.zeros(2)}})
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a model file" * 10)
    for model, message in ((other, "'flow-matching' cannot be exported"), (corrupt, "cannot read the model")):
        out = tmp_path / f"out-{model.stem}"
        assert cli.main(["export", "--model", str(model), "--out-dir", str(out)]) == 1
        line = _error_line(capsys)
        assert str(model) in line and message in line
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt", "flow.pt"]


def test_a_failed_check_writes_nothing_and_keeps_the_old_export(exported, tmp_path, monkeypatch):
    model, folder, _ = exported
    out = tmp_path / "export"
    out.mkdir()
    (out / "export.json").write_text("{}")

    def copy_graphs(sampler, work, opset):  # the exported graphs, without exporting again
        for name in (export.COMBINED, export.SHOWER_LEVEL, export.POINTS):
            shutil.copy(folder / name, work / name)

    monkeypatch.setattr(export, "export_graphs", copy_graphs)
    strict = ExportSettings(check_showers=4, rtol=1e-12, timing=False)
    with pytest.raises(ValueError, match="does not reproduce torch"):
        export.export(model, out, 5, strict)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert [p.name for p in out.iterdir()] == ["export.json"] and (out / "export.json").read_text() == "{}"


def test_independent_placement_cannot_be_exported(exported):
    model, _, _ = exported
    sampler, _ = load_model(model, None, None, "cpu")
    sampler.placement = "independent"
    with pytest.raises(ValueError, match="placement 'independent' cannot be exported"):
        PointGraph(sampler)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"opset": 12}, "opset must be within"),
        ({"rtol": 0}, "rtol must lie in"),
        ({"timing_batch_sizes": []}, "timing_batch_sizes"),
        ({"check_shower": 3}, "did you mean 'check_showers'"),
    ],
)
def test_bad_settings_are_clear_errors(values, message):
    with pytest.raises(ValueError, match=message):
        ExportSettings.from_json(json.dumps(values))


def test_report_reads_the_export_timing_rows(exported, tmp_path):
    _, folder, info = exported
    group = report_html.load_export_timing(folder / "export.json")
    assert group.name == "exported (ONNX Runtime)" and len(group.rows) == 2
    first = info["timing"][0]
    keys = ("ms_per_shower_torch", "ms_per_shower_onnxruntime")
    cells = [report_html.format_scalar(first[k]) for k in keys]
    assert group.rows[0] == ["1", *cells]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"timing": [{"batch_size": 1}]}))
    with pytest.raises(report_html.DataError, match="bad.json: not an export.json with timings"):
        report_html.load_export_timing(bad)


def test_export_config_passes_the_workflow_checks_and_a_bad_key_is_one_line():
    import yaml

    from pipelines.config_check import check_config, settings_errors

    root = Path(__file__).resolve().parents[1]
    schema = root / "workflow" / "schemas" / "config.schema.yaml"
    config = yaml.safe_load((root / "config.yaml").read_text())
    layer = yaml.safe_load((root / "config" / "export.yaml").read_text())
    assert layer == {"export": {"enabled": True, "settings": {}}}
    config |= layer
    check_config(config, schema)
    assert settings_errors(config) == []
    config["export"]["settings"] = {"check_shower": 3}
    (error,) = settings_errors(config)
    assert error.startswith("export.settings: unknown export settings ['check_shower']; did you mean")
