"""Several jet types: the type column, merging, conversion, p(n | type), the type condition of the
flow-matching family through sampling, per-type evaluation rows and the config checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from pipelines.config_check import check_config
from pipelines.convert import JET_CONDITION_NAMES, convert_jets
from pipelines.io.clouds import Clouds, assign_split, read_clouds
from pipelines.io.errors import DataError
from pipelines.io.jetnet import read_jet_types, read_jetnet, write_jetnet
from pipelines.jet_types import codes_of_one_hot, one_hot, parse_jet_types
from pipelines.merge_jets import merge_jets
from pipelines.metrics import evaluate_jets
from pipelines.models.family import TrainingData
from pipelines.models.mdma_flow import FlowMatchingFamily, FlowMatchingSettings
from pipelines.models.multiplicity import PerTypeMultiplicity, load_multiplicity, save_multiplicity
from pipelines.models.store import save_model
from pipelines.sample import main as sample_main
from pipelines.transforms import Chain, PointTransform, Standardize, save_transform

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def toy_jets(n_jets: int, n_slots: int, seed: int, eta_shift: float = 0.0, n_fixed: int | None = None):
    """JetNet-layout toy jets: particles (eta_rel ~ N(shift, 0.1), phi_rel ~ N(0, 0.1), Dirichlet pt_rel)."""
    rng = np.random.default_rng(seed)
    n = np.full(n_jets, n_fixed) if n_fixed else rng.integers(2, n_slots + 1, n_jets)
    pf = np.zeros((n_jets, n_slots, 4), dtype=np.float32)
    for i, k in enumerate(n):
        pt = np.sort(rng.dirichlet(np.ones(k)))[::-1]
        pf[i, :k] = np.stack([rng.normal(eta_shift, 0.1, k), rng.normal(0, 0.1, k), pt, np.ones(k)], axis=1)
    jf = np.stack(
        [rng.uniform(900, 1100, n_jets), rng.normal(0, 1, n_jets), rng.uniform(50, 150, n_jets), n], 1
    )
    return pf, jf.astype(np.float32)


# ------------------------------------------------------------------------------ types and files


def test_parse_jet_types_and_one_hot_round_trip() -> None:
    assert parse_jet_types("w") == ("w",)
    assert parse_jet_types(["z", "g", "t"]) == ("g", "t", "z")  # JetNet order
    for bad, message in (
        ("x", "unknown jet type 'x'"),
        (["g", "g"], "twice"),
        ([], "at least one"),
        (3, "give"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_jet_types(bad, "datasets.j.jet_type")
    codes = np.array([4, 0, 3, 0])
    rows = one_hot(codes, ("g", "w", "z"))
    np.testing.assert_array_equal(rows, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(codes_of_one_hot(rows, ("g", "w", "z")), codes)
    with pytest.raises(ValueError, match=r"\['q'\] are not among"):
        one_hot(np.array([1]), ("g", "w"))


def test_type_column_round_trip_and_checks(tmp_path) -> None:
    pf, jf = toy_jets(6, 5, seed=0)
    codes = np.array([0, 1, 2, 3, 4, 2])
    write_jetnet(tmp_path / "typed.h5", pf, jf, types=codes)
    with h5py.File(tmp_path / "typed.h5") as f:  # JetNet's loader layout: type first
        stored = f["jet_features"][()]
        assert stored.shape == (6, 5) and f.attrs["jet_features"] == "type,pt,eta,mass,n_particles"
    np.testing.assert_array_equal(stored[:, 0], codes)
    got_pf, got_jf = read_jetnet(tmp_path / "typed.h5")
    np.testing.assert_array_equal(got_pf, pf)
    np.testing.assert_array_equal(got_jf, jf)  # the four features, as from a file of one type
    np.testing.assert_array_equal(read_jet_types(tmp_path / "typed.h5"), codes)
    write_jetnet(tmp_path / "plain.h5", pf, jf)
    assert read_jet_types(tmp_path / "plain.h5") is None
    for bad in (5.0, 1.5, -1.0):
        typed = np.concatenate([codes[:, None], jf], axis=1).astype(np.float32)
        typed[3, 0] = bad
        with pytest.raises(DataError, match=r"type column .* \(first at jet 3\)"):
            write_jetnet(tmp_path / "bad.h5", pf, typed)
    assert not (tmp_path / "bad.h5").exists()


def test_merge_keeps_each_files_type_and_the_split_takes_every_type(tmp_path) -> None:
    parts = {t: toy_jets(40, 5, seed=k) for k, t in enumerate(("g", "z"))}
    for t, (pf, jf) in parts.items():
        write_jetnet(tmp_path / f"{t}.h5", pf, jf)
    pf, jf, codes = merge_jets([tmp_path / "g.h5", tmp_path / "z.h5"], ["g", "z"], seed=5)
    assert np.bincount(codes).tolist() == [40, 0, 0, 0, 40]
    for t, code in (("g", 0), ("z", 4)):  # same jets, shuffled
        rows = np.lexsort(jf[codes == code].T)
        np.testing.assert_array_equal(jf[codes == code][rows], parts[t][1][np.lexsort(parts[t][1].T)])
    # the convert stage's split with the same seed must not pair with the shuffle (whole types aside)
    train = assign_split(len(codes), (0.8, 0.1, 0.1), seed=5) == 0
    assert 25 <= (codes[train] == 0).sum() <= 39 and 25 <= (codes[train] == 4).sum() <= 39
    typed = tmp_path / "typed.h5"
    write_jetnet(typed, pf, jf, types=codes)
    with pytest.raises(DataError, match=r"holds \['g', 'z'\] jets, but it is given as the 'q' file"):
        merge_jets([typed], ["q"], seed=0)


def test_convert_adds_one_hot_type_conditions_only_for_several_types(tmp_path) -> None:
    pf, jf = toy_jets(30, 5, seed=1)
    codes = np.repeat([2, 3], 15)
    write_jetnet(tmp_path / "typed.h5", pf, jf, types=codes)
    convert_jets(tmp_path / "typed.h5", tmp_path / "typed_clouds.h5", (0.8, 0.1, 0.1), 0, 7)
    clouds = read_clouds(tmp_path / "typed_clouds.h5")
    assert clouds.condition_names == (*JET_CONDITION_NAMES, "type_t", "type_w")
    np.testing.assert_array_equal(codes_of_one_hot(clouds.conditions[:, 3:], ("t", "w")), codes)
    np.testing.assert_array_equal(clouds.conditions[:, :3], jf[:, :3].astype(np.float64))
    assert clouds.attrs["jet_types"] == ["t", "w"]
    write_jetnet(tmp_path / "plain.h5", pf, jf)
    convert_jets(tmp_path / "plain.h5", tmp_path / "plain_clouds.h5", (0.8, 0.1, 0.1), 0, 7)
    plain = read_clouds(tmp_path / "plain_clouds.h5")
    assert plain.condition_names == JET_CONDITION_NAMES and "jet_types" not in plain.attrs


def test_per_type_multiplicity_is_the_frequency_of_each_type(tmp_path) -> None:
    n = np.array([3, 3, 5, 2, 2, 2, 2])
    codes = np.array([0, 0, 0, 4, 4, 4, 4])
    model = PerTypeMultiplicity.fit(n, codes, n_max=6)
    save_multiplicity(tmp_path / "m.json", model)
    loaded = load_multiplicity(tmp_path / "m.json")
    assert loaded.types == ("g", "z")
    np.testing.assert_allclose(
        loaded.pmf(np.array([0, 4])), [[0, 0, 0, 2 / 3, 0, 1 / 3, 0], [0, 0, 1, 0, 0, 0, 0]]
    )
    draws = loaded.sample(np.random.default_rng(0), conditions=np.repeat([0, 4], 3000))
    assert np.mean(draws[:3000] == 3) == pytest.approx(2 / 3, abs=0.03) and set(draws[3000:]) == {2}
    with pytest.raises(ValueError, match=r"\['t'\] have no multiplicity model"):
        loaded.sample(np.random.default_rng(0), conditions=np.array([2]))


# ---------------------------------------------------------------- the condition reaches the model


def _two_type_clouds(n_per_type: int) -> Clouds:
    """Jet-like clouds of types g (eta_rel around +0.3) and z (around -0.3), each half with 5 and half
    with 12 particles, so that only the type condition tells where the particles lie."""
    rng = np.random.default_rng(0)
    codes = np.repeat([0, 4], n_per_type)
    lengths = np.tile(np.repeat([5, 12], n_per_type // 2), 2)
    shift = np.where(codes == 0, 0.3, -0.3)
    eta = np.repeat(shift, lengths) + 0.05 * rng.standard_normal(lengths.sum())
    points = np.column_stack([eta, 0.05 * rng.standard_normal(len(eta)), rng.uniform(0.05, 0.15, len(eta))])
    conditions = np.column_stack([np.ones((len(codes), 3)), one_hot(codes, ("g", "z"))])
    return Clouds(
        points, np.concatenate([[0], np.cumsum(lengths)]), conditions, ("eta_rel", "phi_rel", "pt_rel"),
        (*JET_CONDITION_NAMES, "type_g", "type_z"), np.zeros(len(codes)),
    )  # fmt: skip


def test_flow_matching_learns_each_type_and_sampling_writes_the_types(tmp_path) -> None:
    clouds = _two_type_clouds(100)
    transform = PointTransform(clouds.point_names, {c: Chain([Standardize()]) for c in clouds.point_names})
    transform.fit(clouds.points.astype(np.float64))
    idx = np.arange(len(clouds))
    data = TrainingData("jets", clouds, transform, idx, idx[:0], float(clouds.lengths.mean()), 0)
    torch.manual_seed(0)
    settings = FlowMatchingSettings(hidden=16, n_blocks=1, heads=1, time_dim=8, max_tokens=600, ode_steps=8)
    family = FlowMatchingFamily(settings, data, torch.device("cpu"))
    assert family.cond_dim == 3  # n / mean_n and two one-hot columns
    opt = torch.optim.AdamW(family.velocity.parameters(), lr=3e-3)
    for _ in range(150):
        x, mask, cond = family.next_batch()
        loss = family.loss(x, mask, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
    family.velocity.eval()

    # the stage: reference of both types (1 g : 3 z), p(n | type) = 5 particles for g, 12 for z
    pf_g, jf_g = toy_jets(20, 12, seed=3, n_fixed=5)
    pf_z, jf_z = toy_jets(60, 12, seed=4, n_fixed=12)
    ref_codes = np.repeat([0, 4], [20, 60])
    write_jetnet(
        tmp_path / "ref.h5", np.concatenate([pf_g, pf_z]), np.concatenate([jf_g, jf_z]), types=ref_codes
    )
    save_multiplicity(
        tmp_path / "m.json", PerTypeMultiplicity.fit(np.repeat([5, 12], 10), np.repeat([0, 4], 10), 12)
    )
    save_transform(tmp_path / "t.json", transform)
    weights = {name: m.state_dict() for name, m in family.modules().items()}
    save_model(tmp_path / "g.pt", "flow-matching", "jets", family.export_config(), weights,
               {"point_names": list(clouds.point_names)})  # fmt: skip
    fast = {"timing_batch_sizes": [2], "timing_repeats": 1, "progress": False}
    args = ["--model", str(tmp_path / "g.pt"), "--multiplicity", str(tmp_path / "m.json"),
            "--transforms", str(tmp_path / "t.json"), "--reference", str(tmp_path / "ref.h5"),
            "--kind", "jets", "--n-samples", "200", "--seed", "1", "--settings", json.dumps(fast),
            "--out", str(tmp_path / "s.h5"), "--out-timing", str(tmp_path / "s.json"),
            "--device", "cpu"]  # fmt: skip
    assert sample_main(args) == 0
    pf, jf = read_jetnet(tmp_path / "s.h5")
    codes = read_jet_types(tmp_path / "s.h5")
    assert set(codes.tolist()) == {0, 4}
    assert np.mean(codes == 0) == pytest.approx(0.25, abs=0.09)  # the reference's proportions
    n = (pf[..., 3] == 1).sum(axis=1)
    np.testing.assert_array_equal(n, np.where(codes == 0, 5, 12))  # p(n | type)
    real = pf[..., 3] == 1
    eta_mean = np.array([pf[i, real[i], 0].mean() for i in range(len(pf))])
    assert np.mean(eta_mean[codes == 0]) == pytest.approx(0.3, abs=0.1)
    assert np.mean(eta_mean[codes == 4]) == pytest.approx(-0.3, abs=0.1)
    assert (
        json.loads((tmp_path / "s.json").read_text())["generation"]["jets_per_type"]["g"]
        == (codes == 0).sum()
    )


# ------------------------------------------------------------------------------- evaluation


def test_per_type_rows_equal_the_evaluation_of_each_type_alone(tmp_path) -> None:
    settings = evaluate_jets.EvaluateJetsSettings(
        num_batches=2, fpd_n_sizes=3, fpd_n_draws=3, kpd_n_batches=3, cov_mmd_num_eval_samples=8,
        cov_mmd_num_batches=2, tree_classifier=False, seed=3,
    )  # fmt: skip
    files = {}
    for name, seed in (("ref", 10), ("gen", 20)):
        pf_t, jf_t = toy_jets(40, 8, seed=seed)
        pf_w, jf_w = toy_jets(30, 8, seed=seed + 1, eta_shift=0.2)
        files[name] = (
            np.concatenate([pf_t, pf_w]),
            np.concatenate([jf_t, jf_w]),
            np.repeat([2, 3], [40, 30]),
        )
        write_jetnet(tmp_path / f"{name}.h5", *files[name][:2], types=files[name][2])
    metrics, arrays = evaluate_jets.evaluate(
        tmp_path / "ref.h5", tmp_path / "gen.h5", settings, tmp_path / "c"
    )
    assert set(metrics["per_type"]) == {"t", "w"}
    for t, code in (("t", 2), ("w", 3)):
        for name in ("ref", "gen"):
            pf, jf, codes = files[name]
            write_jetnet(tmp_path / f"{name}_{t}.h5", pf[codes == code], jf[codes == code])
        alone, alone_arrays = evaluate_jets.evaluate(
            tmp_path / f"ref_{t}.h5", tmp_path / f"gen_{t}.h5", settings, tmp_path / "c"
        )
        assert "per_type" not in alone
        rows = metrics["per_type"][t]["rows"]
        for row in ("model", "real_vs_real"):
            assert rows[row].keys() == alone["rows"][row].keys()
            for key, entry in alone["rows"][row].items():
                for part in ("value", "error"):
                    assert rows[row][key][part] == pytest.approx(entry[part], rel=1e-9, abs=1e-15), (
                        t,
                        row,
                        key,
                    )
        for part in ("edges", "reference", "generated"):
            np.testing.assert_array_equal(
                arrays[f"type_{t}_jet_relative_mass__{part}"], alone_arrays[f"jet_relative_mass__{part}"]
            )


# ----------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("jet_type", "files", "error"),
    [
        (["g", "q", "t", "w", "z"], None, None),
        ("w", None, None),
        (["g", "z"], {"train": ["g.h5", "z.h5"], "reference": ["g2.h5", "z2.h5"]}, None),
        (["g", "z"], {"train": "typed.h5", "reference": "typed2.h5"}, None),
        ("x", None, "jet_type: unknown jet type 'x'; allowed: g, q, t, w, z"),
        (["g", "g"], None, "jet_type: jet types ['g', 'g'] name a type twice"),
        ([], None, "jet_type: name at least one jet type"),
        (
            ["g", "z"],
            {"train": ["g.h5"] * 3, "reference": ["g2.h5", "z2.h5"]},
            "files.train: a list of files",
        ),
        ("g", {"train": ["g.h5", "z.h5"], "reference": ["g2.h5", "z2.h5"]}, "files.train: a list of files"),
        (
            ["g", "z"],
            {"train": ["g.h5", "z.h5"], "reference": "typed.h5"},
            "both as one file or both per type",
        ),
    ],
)
def test_config_accepts_and_rejects_jet_types(jet_type, files, error) -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    jets = copy.deepcopy(config["datasets"]["jets-top30"])
    jets["jet_type"] = jet_type
    if files is not None:
        jets["source"] = {"files": files}
    config["datasets"]["jets-top30"] = jets
    schema = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    if error is None:
        check_config(config, schema)
    else:
        with pytest.raises(ValueError, match=f"datasets.jets-top30.*{__import__('re').escape(error)}"):
            check_config(config, schema)


def test_documented_config_is_valid() -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    override = yaml.safe_load((ROOT / "config" / "jet-types.yaml").read_text())
    for key, value in override.items():
        if isinstance(value, dict) and key != "runs":
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    check_config(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    assert parse_jet_types(config["datasets"]["jets-types30"]["jet_type"]) == ("g", "q", "t", "w", "z")
