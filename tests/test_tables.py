"""The Parquet tables: per-shower / per-jet features written by the evaluate stages and the metrics
table of a run, read back with pandas against metrics.json, histograms.npz and the input files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.geometry import THRESHOLD_MEV
from pipelines.io.calochallenge import write_calochallenge
from pipelines.io.errors import DataError
from pipelines.io.jetnet import read_jetnet
from pipelines.io.tables import column_descriptions, read_table, table_info
from pipelines.metrics import evaluate_jets
from pipelines.metrics import evaluate_showers as ev
from pipelines.report import compare, metrics_table
from tests.test_calo_features import G, _random_showers
from tests.test_jet_metrics import FAST, _write_pair
from tests.test_report import _write_shower_run

SHOWER_SETTINGS = {"classifier_hidden": 8, "classifier_layers": 1, "classifier_epochs": 1,
                   "classifier_runs": 1, "fpd_n_sizes": 3, "fpd_n_draws": 2, "kpd_n_batches": 2,
                   "chunk_size": 16}  # fmt: skip


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(values, bins=edges)[0]


@pytest.fixture(scope="module")
def shower_run(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tmp = tmp_path_factory.mktemp("showers")
    e_ref, s_ref = _random_showers(40, 11)
    e_gen, s_gen = _random_showers(30, 12, scale=1.5)
    write_calochallenge(tmp / "ref.h5", e_ref, s_ref)
    write_calochallenge(tmp / "gen.h5", e_gen, s_gen)
    argv = ["--reference", str(tmp / "ref.h5"), "--generated", str(tmp / "gen.h5"), "--dataset", "2",
            "--settings", json.dumps(SHOWER_SETTINGS), "--cache-dir", str(tmp / "cache"),
            "--out-metrics", str(tmp / "metrics.json"), "--out-histograms", str(tmp / "histograms.npz"),
            "--out-features", str(tmp / "features.parquet")]  # fmt: skip
    assert ev.main(argv) == 0
    return tmp, e_ref, s_ref, e_gen, s_gen


def test_shower_features_table_holds_what_the_histograms_count(shower_run):
    tmp, e_ref, s_ref, e_gen, s_gen = shower_run
    frame = pd.read_parquet(tmp / "features.parquet")
    metrics = json.loads((tmp / "metrics.json").read_text())
    ref, gen = frame[frame["sample"] == "reference"], frame[frame["sample"] == "generated"]
    # the rows compared: half A = the even rows of the reference; 20 of the 30 generated (strided)
    assert list(ref["row"]) == list(range(0, 40, 2))
    assert len(gen) == metrics["settings"]["n_compared"] == 20
    np.testing.assert_allclose(ref["E_inc"], e_ref[::2])
    np.testing.assert_allclose(gen["E_inc"], e_gen[gen["row"]])
    above = np.where(s_ref >= THRESHOLD_MEV, s_ref, 0.0)[::2].astype(np.float64)
    np.testing.assert_allclose(ref["E_tot"], above.sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(ref["n_hits"], np.count_nonzero(above, axis=1))
    per_layer = G.n_voxels // 45
    np.testing.assert_allclose(
        ref["E_layer_07"], above[:, 7 * per_layer : 8 * per_layer].sum(axis=1), rtol=1e-6
    )
    np.testing.assert_allclose(frame["E_ratio"], frame["E_tot"] / frame["E_inc"], rtol=1e-12)
    with np.load(tmp / "histograms.npz") as h:
        compared = [e["name"] for e in metrics["histograms"] if e["group"] != "voxel_energy"]
        assert len(compared) == 1 + 8 * 45
        for name in compared:
            edges = h[f"{name}__edges"]
            np.testing.assert_array_equal(_histogram(ref[name], edges), h[f"{name}__reference"], err_msg=name)
            np.testing.assert_array_equal(_histogram(gen[name], edges), h[f"{name}__generated"], err_msg=name)
    described = column_descriptions(read_table(tmp / "features.parquet"))
    assert all(meta["description"] for meta in described.values())
    assert described["E_inc"]["unit"] == described["E_layer_44"]["unit"] == "MeV"
    assert described["width_r_03"]["unit"] == "mm" and "unit" not in described["sparsity_03"]
    assert table_info(read_table(tmp / "features.parquet"))["kind"] == "showers"


def test_jet_features_table_holds_what_the_histograms_count(tmp_path):
    ref_path, gen_path = _write_pair(tmp_path, n_ref=60, n_gen=50)
    argv = ["--reference", str(ref_path), "--generated", str(gen_path), "--cache-dir", str(tmp_path / "c"),
            "--out-metrics", str(tmp_path / "m.json"), "--out-histograms", str(tmp_path / "h.npz"),
            "--out-features", str(tmp_path / "f.parquet"), "--settings", json.dumps(FAST)]  # fmt: skip
    assert evaluate_jets.main(argv) == 0
    frame = pd.read_parquet(tmp_path / "f.parquet")
    ref, gen = frame[frame["sample"] == "reference"], frame[frame["sample"] == "generated"]
    assert len(ref) == 60 and len(gen) == 50 and list(gen["row"]) == list(range(50))
    particles, _ = read_jetnet(ref_path)
    real = particles[:, :, 3] > 0.5
    np.testing.assert_array_equal(ref["multiplicity"], real.sum(axis=1))
    np.testing.assert_allclose(
        ref["pt_rel_sum"], np.where(real, particles[:, :, 2], 0).sum(axis=1), rtol=1e-6
    )
    # jets along the axis: the vector sum of pT_rel is at most their scalar sum
    assert np.all(frame["jet_relative_pt"] <= frame["pt_rel_sum"] + 1e-12)
    with np.load(tmp_path / "h.npz") as h:
        names = [e["name"] for e in json.loads((tmp_path / "m.json").read_text())["histograms"]]
        per_jet = [name for name in names if not name.startswith("particle_")]
        assert set(per_jet) == {"jet_relative_mass", "jet_relative_pt", "multiplicity"} | {
            n for n in names if n.startswith("efp_")
        }
        for name in per_jet:
            edges = h[f"{name}__edges"]
            np.testing.assert_array_equal(_histogram(ref[name], edges), h[f"{name}__reference"], err_msg=name)
            np.testing.assert_array_equal(_histogram(gen[name], edges), h[f"{name}__generated"], err_msg=name)


def _metrics_table(tmp_path: Path, metrics_path: Path) -> tuple[pd.DataFrame, list[dict]]:
    argv = ["--metrics", str(metrics_path), "--out-parquet", str(tmp_path / "metrics.parquet"),
            "--out-tsv", str(tmp_path / "metrics.tsv")]  # fmt: skip
    assert metrics_table.main(argv) == 0
    with open(tmp_path / "metrics.tsv", newline="", encoding="utf-8") as handle:
        tsv = list(csv.DictReader(handle, delimiter="\t"))
    return pd.read_parquet(tmp_path / "metrics.parquet"), tsv


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and (b is None or math.isnan(b))) or (a is not None and a == b)


def test_metrics_table_round_trip_of_shower_metrics(shower_run, tmp_path):
    tmp = shower_run[0]
    metrics = json.loads((tmp / "metrics.json").read_text())
    frame, tsv = _metrics_table(tmp_path, tmp / "metrics.json")
    model, real = metrics["rows"]["model"], metrics["rows"]["real_vs_real"]
    assert set(frame["metric"]) == set(model) | set(real)
    for row in frame.to_dict("records"):
        name = row["metric"]
        assert _same(model[name]["value"], row["value"]) and _same(model[name]["error"], row["error"])
        assert _same(real[name]["value"], row["real_vs_real"])
        assert _same(real[name]["error"], row["real_vs_real_error"])
        if name.startswith("separation_"):
            assert row["n_histograms"] == model[name]["n_histograms"]
            assert row["n_no_overlap"] == model[name]["n_no_overlap"]
    fpd = frame.set_index("metric").loc["fpd"]
    assert fpd["display_factor"] == 1000.0 and fpd["headline"]
    assert fpd["ratio"] == pytest.approx(model["fpd"]["value"] / real["fpd"]["value"])
    shown = {row["metric"]: row for row in tsv}
    assert float(shown["fpd"]["model"]) == pytest.approx(1000.0 * model["fpd"]["value"], rel=1e-5)
    assert shown["fpd"]["unit"] == "× 10³" and shown["fpd"]["verdict"] == fpd["verdict"]
    info = table_info(read_table(tmp_path / "metrics.parquet"))
    assert info["kind"] == "showers" and json.loads(info["conventions"]) == metrics["conventions"]


def test_metrics_table_keeps_raw_and_scaled_jet_metrics_and_hand_verdicts(tmp_path):
    metrics = {
        "kind": "jets", "dataset": "jets", "settings": {}, "histograms": [],
        "rows": {
            "model": {"W1M": {"value": 0.004, "error": 0.001}, "W1M_x1e3": {"value": 4.0, "error": 1.0},
                      "cls_trees_jet_auc": {"value": 0.9, "error": None}},
            "real_vs_real": {"W1M": {"value": 0.002, "error": 0.001},
                             "W1M_x1e3": {"value": 2.0, "error": 1.0},
                             "cls_trees_jet_auc": {"value": 0.55, "error": None}},
        },
    }  # fmt: skip
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    frame, tsv = _metrics_table(tmp_path, path)
    rows = frame.set_index("metric")
    assert list(frame["metric"]) == ["W1M_x1e3", "cls_trees_jet_auc", "W1M"]  # report order, raw copy last
    # pull (4 - 2) / sqrt(2) = 1.41: within; AUC ratio (0.9 - 0.5) / (0.55 - 0.5) = 8 without errors: far
    assert rows.loc["W1M_x1e3", "pull"] == pytest.approx(2 / math.sqrt(2))
    assert rows.loc["W1M_x1e3", "verdict"] == "within"
    assert rows.loc["cls_trees_jet_auc", "ratio"] == pytest.approx(8.0)
    assert rows.loc["cls_trees_jet_auc", "verdict"] == "far" and math.isnan(
        rows.loc["cls_trees_jet_auc", "pull"]
    )
    assert rows.loc["W1M", "value"] == 0.004 and not rows.loc["W1M", "headline"]
    assert [row["metric"] for row in tsv] == ["W1M_x1e3", "cls_trees_jet_auc"]  # the report's rows only


def test_metrics_table_adds_each_jet_type_after_the_whole_data_set(tmp_path):
    def rows(model: float, real: float) -> dict:
        return {"model": {"W1M_x1e3": {"value": model, "error": 1.0}},
                "real_vs_real": {"W1M_x1e3": {"value": real, "error": 1.0}}}  # fmt: skip

    metrics = {"kind": "jets", "dataset": "jets", "settings": {}, "histograms": [], "rows": rows(4.0, 2.0),
               "per_type": {"g": {"rows": rows(12.0, 2.0)}, "z": {"rows": rows(3.0, 2.5)}}}  # fmt: skip
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    frame, tsv = _metrics_table(tmp_path, path)
    assert frame["jet_type"].isna().tolist() == [True, False, False]
    assert frame["jet_type"].tolist()[1:] == ["g", "z"]
    assert frame["value"].tolist() == [4.0, 12.0, 3.0]
    # by hand: g pull (12 - 2) / sqrt(2) = 7.1, ratio 6 (far); z pull (3 - 2.5) / sqrt(2) = 0.35 (within)
    assert frame["pull"].tolist() == pytest.approx([2 / math.sqrt(2), 10 / math.sqrt(2), 0.5 / math.sqrt(2)])
    assert frame["verdict"].tolist()[1:] == ["far", "within"]
    assert [(row["jet_type"], row["model"]) for row in tsv] == [("", "4"), ("g", "12"), ("z", "3")]
    table = read_table(tmp_path / "metrics.parquet")
    assert list(compare._rows(table)) == ["W1M_x1e3"] and compare._rows(table)["W1M_x1e3"]["value"] == 4.0


def test_bad_tables_name_the_file(tmp_path):
    broken = tmp_path / "metrics.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=f"{broken}: cannot read Parquet"):
        read_table(broken)
    directory = tmp_path / "m"
    _write_shower_run(directory)
    _metrics_table(tmp_path, directory / "metrics.json")
    with pytest.raises(DataError, match="lacks columns \\['nope'\\]"):
        read_table(tmp_path / "metrics.parquet", ("metric", "nope"))
    (directory / "metrics.json").write_text("{}")
    with pytest.raises(DataError, match="metrics lack keys"):
        metrics_table.main(["--metrics", str(directory / "metrics.json"),
                            "--out-parquet", str(tmp_path / "new.parquet"),
                            "--out-tsv", str(tmp_path / "new.tsv")])  # fmt: skip
    assert not (tmp_path / "new.parquet").exists() and not (tmp_path / "new.tsv").exists()
