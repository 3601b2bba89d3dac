"""Audit of bad inputs and faults a user meets: every case is run through the stage entry point
(``pipelines.cli.main``, in-process) and must

1. fail with exit status 1 and one ``error:`` line naming the file or the key at fault,
2. leave no output, complete or partial (no file appears in the case's folder, no ``.part`` file),
3. lose nothing (every file that was there, inputs and checkpoints, is byte for byte unchanged),
4. succeed when the same call is repeated after the fault is fixed.

``CASES`` holds the cases, one per distinct fault; tests/AUDIT.md lists them together with the faults
other test modules cover, and counts them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import toy_family  # noqa: F401 (registers the "toy-gaussian" family of the train cases)

from pipelines import geometry
from pipelines.cli import main as cli
from pipelines.io.calochallenge import write_calochallenge
from pipelines.io.clouds import Clouds, write_clouds
from pipelines.io.jetnet import write_jetnet
from pipelines.transforms import jet_transform, save_transform
from tests.test_input_checks import good_jets, good_showers

#: fast settings of the stages that run in the fixed reruns
TRAIN = {"max_steps": 2, "warmup_steps": 1, "checkpoint_every": 1, "log_every": 1, "progress": False}
TRAIN.update(num_threads=1, schedule_steps=4)
SAMPLE = {"timing": False, "batch_size": 16, "progress": False}
REPORT = {"dpi": 20, "figure_width": 3.0}


# ------------------------------------------------------------------------------------ good inputs
def _write_h5(path: Path, **datasets: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)


def _jet_clouds(n: int = 40) -> Clouds:
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 12, n)
    p = int(lengths.sum())
    pts = np.stack([rng.normal(0, 0.1, p), rng.normal(0, 0.1, p), rng.lognormal(-3, 1, p)], axis=1)
    split = np.zeros(n, np.int8)
    split[-5:] = 1
    return Clouds(pts, np.concatenate([[0], np.cumsum(lengths)]), 1 + rng.random((n, 3)),
                  ("eta_rel", "phi_rel", "pt_rel"), ("jet_pt", "jet_eta", "jet_mass"), split)  # fmt: skip


def _jets_report_inputs(d: Path) -> None:
    edges = np.linspace(0.0, 0.3, 4)
    np.savez(d / "h.npz", mass__edges=edges, mass__reference=np.array([1.0, 5.0, 2.0]),
             mass__generated=np.array([2.0, 4.0, 2.0]))  # fmt: skip
    rows = {"W1M": {"value": 0.0007, "error": 0.00005}}
    metrics = {
        "kind": "jets",
        "dataset": "jets",
        "settings": {},
        "rows": {"model": rows, "real_vs_real": rows},
        "histograms": [
            {
                "name": "mass",
                "xlabel": "m/pT",
                "logx": False,
                "logy": False,
                "group": "jet",
                "separation_power": 0.01,
            }
        ],  # fmt: skip
    }
    (d / "m.json").write_text(json.dumps(metrics))
    (d / "curve.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    (d / "timing.json").write_text(json.dumps({"device": "cpu", "generation": {"n_samples": 10}}))
    (d / "training_summary.json").write_text(json.dumps({"family": "flow-matching", "steps": 2}))
    summary = {"file": "train.h5", "sha256": "0" * 64, "warnings": []}
    (d / "train.summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of good inputs of every stage; each case copies what it needs."""
    d = tmp_path_factory.mktemp("kit")
    write_calochallenge(d / "showers.h5", *good_showers())
    write_jetnet(d / "jets.h5", *good_jets())
    clouds = _jet_clouds()
    write_clouds(d / "clouds.h5", clouds)
    save_transform(d / "transforms.json", jet_transform().fit(clouds.points.astype(np.float64)))
    _jets_report_inputs(d)
    import torch

    torch.set_num_threads(1)
    train = ["train", "--clouds", str(d / "clouds.h5"), "--transforms", str(d / "transforms.json")]
    train += ["--kind", "jets", "--family", "flow-matching", "--device", "cpu", "--checkpoint-dir"]
    train += [str(d / "ckpt"), "--out-model", str(d / "model.pt"), "--out-curve", str(d / "c.csv")]
    flow = {"hidden": 8, "n_blocks": 1, "heads": 1, "time_dim": 8, "ode_steps": 2}
    train += ["--out-summary", str(d / "s.json"), "--settings", json.dumps({**TRAIN, **flow})]
    mult = ["train-multiplicity", "--clouds", str(d / "clouds.h5"), "--kind", "jets"]
    mult += ["--settings", json.dumps({"steps": 20}), "--out", str(d / "multiplicity.json")]
    assert cli(train) == 0 and cli(mult) == 0
    shutil.rmtree(d / "ckpt")
    for name in ("c.csv", "s.json"):
        (d / name).unlink()
    return d


# ------------------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class Case:
    """A stage call with one fault. ``argv(d)``: the call in the case folder ``d`` (inputs copied from the
    kit); ``outputs``: the files it writes; ``named``: text the error line must hold (``{d}`` -> folder);
    ``breaks(d)``/``fixes(d)``: make and undo the fault in the files (without ``fixes``, the inputs are
    copied from the kit again); ``bad``: argv replacements ``{flag: value}`` that make the fault;
    ``patch``: a monkeypatch, undone after the failed call, that makes it instead."""

    stage: str
    inputs: tuple[str, ...]
    argv: Callable[[Path], list[str]]
    outputs: tuple[str, ...]
    named: str
    breaks: Callable[[Path], None] | None = None
    fixes: Callable[[Path], None] | None = None
    bad: dict[str, str] = field(default_factory=dict)
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None


def _validate(kind: str, name: str, dataset: str) -> Callable[[Path], list[str]]:
    return lambda d: [
        "--kind",
        kind,
        "--dataset",
        dataset,
        "--input",
        str(d / name),
        "--out",
        str(d / "s.json"),
    ]


def _file_case(stage, inputs, argv, outputs, named, target: str, breaks: Callable[[Path], None]) -> Case:
    """A fault in the input file ``target``; the fix copies the good inputs back from the kit."""
    assert any(spec.endswith(target) for spec in inputs)
    return Case(stage, inputs, argv, outputs, named, breaks=breaks)


def showers_case(breaks: Callable[[Path], None], named: str = "{d}/in.h5", dataset: str = "2") -> Case:
    return _file_case("validate", ("showers.h5>in.h5",), _validate("showers", "in.h5", dataset), ("s.json",),
                      named, "in.h5", breaks)  # fmt: skip


def jets_case(breaks: Callable[[Path], None], named: str = "{d}/in.h5", dataset: str = "30") -> Case:
    return _file_case("validate", ("jets.h5>in.h5",), _validate("jets", "in.h5", dataset), ("s.json",),
                      named, "in.h5", breaks)  # fmt: skip


def _showers_raw(d: Path, mutate: Callable[[np.ndarray, np.ndarray], tuple]) -> None:
    e, s = good_showers()
    e, s = mutate(e.reshape(-1, 1), s)
    (d / "in.h5").unlink()
    _write_h5(
        d / "in.h5", **{k: v for k, v in {"incident_energies": e, "showers": s}.items() if v is not None}
    )


def shower_data(mutate: Callable[[np.ndarray, np.ndarray], tuple], named: str = "{d}/in.h5") -> Case:
    return showers_case(lambda d: _showers_raw(d, mutate), named)


def _set(array: np.ndarray, index: tuple, value) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


def _jets_raw(d: Path, mutate: Callable[[np.ndarray, np.ndarray], tuple]) -> None:
    pf, jf = good_jets()
    pf, jf = mutate(pf, jf)
    (d / "in.h5").unlink()
    _write_h5(d / "in.h5", **{k: v for k, v in {"particle_features": pf, "jet_features": jf}.items()
                              if v is not None})  # fmt: skip


def jet_data(mutate: Callable[[np.ndarray, np.ndarray], tuple], named: str = "{d}/in.h5") -> Case:
    return jets_case(lambda d: _jets_raw(d, mutate), named)


def _truncate(name: str) -> Callable[[Path], None]:
    def cut(d: Path) -> None:
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])

    return cut


def _text(name: str, text: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(text)


def _gone(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


def _json_edit(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(d: Path) -> None:
        doc = json.loads((d / name).read_text())
        edit(doc)
        (d / name).write_text(json.dumps(doc))

    return change


def _h5_edit(name: str, edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    def change(d: Path) -> None:
        with h5py.File(d / name, "a") as f:
            edit(f)

    return change


# ---- stage calls
def _convert(kind: str, name: str, extra: tuple[str, ...] = ()) -> Callable[[Path], list[str]]:
    return lambda d: ["--kind", kind, "--input", str(d / name), "--out", str(d / "clouds_out.h5"), *extra]


def _fit(d: Path) -> list[str]:
    return [
        "--clouds",
        str(d / "clouds.h5"),
        "--kind",
        "jets",
        "--out",
        str(d / "t.json"),
        "--settings",
        "{}",
    ]


def _train(d: Path) -> list[str]:
    return [
        "--clouds", str(d / "clouds.h5"), "--transforms", str(d / "transforms.json"), "--kind", "jets",
        "--family", "toy-gaussian", "--settings", json.dumps({**TRAIN, "lr": 0.05}),
        "--checkpoint-dir", str(d / "ckpt"), "--out-model", str(d / "model_out.pt"),
        "--out-curve", str(d / "curve_out.csv"), "--out-summary", str(d / "summary_out.json"),
        "--device", "cpu",
    ]  # fmt: skip


TRAIN_OUT = ("model_out.pt", "curve_out.csv", "summary_out.json")


def _multiplicity(d: Path) -> list[str]:
    return ["--clouds", str(d / "clouds.h5"), "--kind", "jets", "--settings", '{"steps": 5}',
            "--out", str(d / "m_out.json")]  # fmt: skip


def _sample(d: Path) -> list[str]:
    return [
        "--model", str(d / "model.pt"), "--multiplicity", str(d / "multiplicity.json"),
        "--transforms", str(d / "transforms.json"), "--reference", str(d / "jets.h5"), "--kind", "jets",
        "--dataset", "30", "--n-samples", "8", "--seed", "1", "--settings", json.dumps(SAMPLE),
        "--out", str(d / "gen.h5"), "--out-timing", str(d / "timing_out.json"), "--device", "cpu",
    ]  # fmt: skip


SAMPLE_IN = ("model.pt", "multiplicity.json", "transforms.json", "jets.h5")
SAMPLE_OUT = ("gen.h5", "timing_out.json")


def _report(d: Path) -> list[str]:
    return [
        "--metrics", str(d / "m.json"), "--histograms", str(d / "h.npz"), "--labels", "jets",
        "--training-curve", str(d / "curve.csv"), "--timing", str(d / "timing.json"),
        "--training-summary", str(d / "training_summary.json"), "--data-summaries",
        str(d / "train.summary.json"), "--settings", json.dumps(REPORT), "--out", str(d / "r.html"),
        "--plots-dir", str(d / "plots"),
    ]  # fmt: skip


REPORT_IN = ("m.json", "h.npz", "curve.csv", "timing.json", "training_summary.json", "train.summary.json")
REPORT_OUT = ("r.html",)


def _generate(d: Path) -> list[str]:
    return ["--n-showers", "2", "--seed", "1", "--no-progress", "--settings", "{}", "--out", str(d / "g.h5")]


def settings_case(stage: str, inputs: tuple[str, ...], argv, outputs, settings: dict, key: str) -> Case:
    """A settings value out of range (or of the wrong type): the error names the key."""
    return Case(stage, inputs, argv, outputs, key, bad={"--settings": json.dumps(settings)})


def _train_settings(settings: dict, key: str) -> Case:
    return settings_case(
        "train", ("clouds.h5", "transforms.json"), _train, TRAIN_OUT, {**TRAIN, **settings}, key
    )


def _sample_settings(settings: dict, key: str) -> Case:
    return settings_case("sample", SAMPLE_IN, _sample, SAMPLE_OUT, {**SAMPLE, **settings}, key)


def _report_settings(settings: dict, key: str) -> Case:
    return settings_case("report", REPORT_IN, _report, REPORT_OUT, {**REPORT, **settings}, key)


def _os_error(number: int, where: str = "write_text") -> Callable[[pytest.MonkeyPatch, Path], None]:
    """Writing the output fails with ``number`` (a full disk, a quota, a read-only or forbidden folder)."""

    def patch(mp: pytest.MonkeyPatch, d: Path) -> None:
        def fail(self, *args, **kwargs):
            raise OSError(number, os.strerror(number), str(self))

        mp.setattr(Path, where, fail)

    return patch


_OPEN_FDS: list[int] = []


def _hold_lock(mp: pytest.MonkeyPatch, d: Path) -> None:
    """Another trainer holds the checkpoint directory (its lock taken on another open file)."""
    import fcntl

    (d / "ckpt").mkdir(exist_ok=True)
    fd = os.open(d / "ckpt" / "trainer.lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"424242 otherhost\n")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _OPEN_FDS.append(fd)  # closed (the lock released: the other trainer ended) after the failed call


def _other_settings_checkpoint(d: Path) -> None:
    """A checkpoint written with other settings (batch 8) sits in the checkpoint directory."""
    other = [*_train(d)]
    other[other.index("--settings") + 1] = json.dumps({**TRAIN, "lr": 0.05, "batch": 8})
    other[other.index("--out-model") + 1] = str(d / "ckpt_model.pt")
    assert cli(["train", *other]) == 0


def _gen_settings(settings: dict, key: str) -> Case:
    return settings_case("generate-showers", (), _generate, ("g.h5",), settings, key)


CASES: dict[str, Case] = {
    # -- CaloChallenge shower files (validate): layout
    "showers: text file, not HDF5": showers_case(_text("in.h5", "not hdf5")),
    "showers: empty file": showers_case(_text("in.h5", "")),
    "showers: truncated HDF5": showers_case(_truncate("in.h5")),
    "showers: file missing": showers_case(_gone("in.h5")),
    "showers: a folder given as the file": showers_case(
        lambda d: ((d / "in.h5").unlink(), (d / "in.h5").mkdir())
    ),
    "showers: no 'incident_energies'": shower_data(lambda e, s: (None, s)),
    "showers: no 'showers'": shower_data(lambda e, s: (e, None)),
    "showers: 100 voxels, not 6480": shower_data(lambda e, s: (e, s[:, :100])),
    "showers: fewer energies than showers": shower_data(lambda e, s: (e[:3], s)),
    "showers: 3-d showers array": shower_data(lambda e, s: (e, s.reshape(len(s), 45, 144))),
    "showers: NaN voxel": shower_data(lambda e, s: (e, _set(s, (2, 5), np.nan))),
    "showers: inf incident energy": shower_data(lambda e, s: (_set(e, (1, 0), np.inf), s)),
    "showers: negative voxel energy": shower_data(lambda e, s: (e, _set(s, (2, 5), -1.0))),
    "showers: negative incident energy": shower_data(lambda e, s: (_set(e, (1, 0), -5.0), s)),
    "showers: no showers": shower_data(lambda e, s: (e[:0], s[:0])),
    "showers: integer voxel dtype": shower_data(lambda e, s: (e, s.astype(np.int32))),
    "showers: string voxel dtype": shower_data(lambda e, s: (e, s.astype("S8"))),
    "showers: integer incident energies": shower_data(lambda e, s: (np.round(e).astype(np.int64), s)),
    "showers: dataset-3 geometry given for a dataset-2 file": Case(
        "validate",
        ("showers.h5>in.h5",),
        _validate("showers", "in.h5", "2"),
        ("s.json",),
        "{d}/in.h5",
        bad={"--dataset": "3"},
    ),
    "showers: unknown CaloChallenge dataset '4'": Case(
        "validate",
        ("showers.h5>in.h5",),
        _validate("showers", "in.h5", "2"),
        ("s.json",),
        "'4'",
        bad={"--dataset": "4"},
    ),
    "showers: the geometry's binning file missing": Case(
        "validate",
        ("showers.h5>in.h5",),
        _validate("showers", "in.h5", "2"),
        ("s.json",),
        "binning_dataset_2_missing.xml",
        patch=lambda mp, d: mp.setitem(geometry.KNOWN_DATASETS, "2", "binning_dataset_2_missing.xml"),
    ),
    # -- shower physics and units
    "showers: energies in GeV": shower_data(lambda e, s: (e / 1e3, s / 1e3)),
    "showers: voxels in GeV, incident in MeV": shower_data(lambda e, s: (e, s / 1e3)),
    "showers: every shower empty": shower_data(lambda e, s: (e, np.zeros_like(s))),
    "showers: incident energy 1e12 MeV": shower_data(lambda e, s: (np.full_like(e, 1e12), s)),
    # -- JetNet files (validate): layout
    "jets: text file, not HDF5": jets_case(_text("in.h5", "eta,phi,pt\n")),
    "jets: truncated HDF5": jets_case(_truncate("in.h5")),
    "jets: file missing": jets_case(_gone("in.h5")),
    "jets: no 'particle_features'": jet_data(lambda pf, jf: (None, jf)),
    "jets: no 'jet_features'": jet_data(lambda pf, jf: (pf, None)),
    "jets: 3 particle features, not 4": jet_data(lambda pf, jf: (pf[..., :3], jf)),
    "jets: 3 jet features, not 4": jet_data(lambda pf, jf: (pf, jf[:, :3])),
    "jets: row counts differ": jet_data(lambda pf, jf: (pf, jf[:5])),
    "jets: no jets": jet_data(lambda pf, jf: (pf[:0], jf[:0])),
    "jets: string jet features": jet_data(lambda pf, jf: (pf, jf.astype("S8"))),
    "jets: integer jet features": jet_data(lambda pf, jf: (pf, np.round(jf).astype(np.int32))),
    "jets: NaN particle feature": jet_data(lambda pf, jf: (_set(pf, (0, 0, 0), np.nan), jf)),
    "jets: inf jet pt": jet_data(lambda pf, jf: (pf, _set(jf, (1, 0), np.inf))),
    "jets: negative pt_rel": jet_data(lambda pf, jf: (_set(pf, (0, 1, 2), -0.1), jf)),
    "jets: negative jet mass": jet_data(lambda pf, jf: (pf, _set(jf, (2, 2), -1.0))),
    "jets: mask value 0.5": jet_data(lambda pf, jf: (_set(pf, (0, 1, 3), 0.5), jf)),
    "jets: padded slot before a real one": jet_data(lambda pf, jf: (_set(pf, (1, 1, 3), 0.0), jf)),
    "jets: padding slot not zero": jet_data(lambda pf, jf: (_set(pf, (0, 20, 0), 0.2), jf)),
    "jets: phi_rel above pi": jet_data(lambda pf, jf: (_set(pf, (0, 0, 1), 3.2), jf)),
    "jets: n disagrees with the mask": jet_data(lambda pf, jf: (pf, _set(jf, (0, 3), 5))),
    "jets: n not an integer": jet_data(lambda pf, jf: (pf, _set(jf, (2, 3), 4.5))),
    # -- jet physics and units
    "jets: 150 slots for geometry 30": jet_data(lambda pf, jf: (np.pad(pf, ((0, 0), (0, 120), (0, 0))), jf)),
    "jets: pt in GeV in the pt_rel column": jet_data(
        lambda pf, jf: (_set(pf, (..., 2), pf[..., 2] * 1e3), jf)
    ),
    "jets: jet pt in MeV": jet_data(lambda pf, jf: (pf, _set(jf, (..., 0), jf[:, 0] * 1e3))),
    "jets: a real particle with pt_rel 0": jet_data(lambda pf, jf: (_set(pf, (0, 1, 2), 0.0), jf)),
    "jets: a jet without particles": jet_data(
        lambda pf, jf: (_set(pf, (0, ...), 0.0), _set(jf, (0, 3), 0)), named="{d}/in.h5"
    ),
    # -- convert
    "convert: 11 showers give 9 training showers": _file_case(
        "convert",
        ("showers.h5>in.h5",),
        _convert("showers", "in.h5"),
        ("clouds_out.h5",),
        "{d}/in.h5",
        "in.h5",
        lambda d: write_calochallenge(d / "in.h5", *good_showers(11)),
    ),
    "convert: 12 jets give 9 training jets": _file_case(
        "convert",
        ("jets.h5>in.h5",),
        _convert("jets", "in.h5"),
        ("clouds_out.h5",),
        "{d}/in.h5",
        "in.h5",
        lambda d: write_jetnet(d / "in.h5", *good_jets(11)),
    ),
    "convert: broken input file": _file_case(
        "convert",
        ("showers.h5>in.h5",),
        _convert("showers", "in.h5"),
        ("clouds_out.h5",),
        "{d}/in.h5",
        "in.h5",
        _truncate("in.h5"),
    ),
    # -- fit-transforms
    "fit-transforms: clouds file not HDF5": _file_case(
        "fit-transforms",
        ("clouds.h5",),
        _fit,
        ("t.json",),
        "{d}/clouds.h5",
        "clouds.h5",
        _text("clouds.h5", "x"),
    ),
    "fit-transforms: clouds file without 'offsets'": _file_case(
        "fit-transforms",
        ("clouds.h5",),
        _fit,
        ("t.json",),
        "{d}/clouds.h5",
        "clouds.h5",
        _h5_edit("clouds.h5", lambda f: f.__delitem__("offsets")),
    ),
    "fit-transforms: unknown settings key": settings_case(
        "fit-transforms", ("clouds.h5",), _fit, ("t.json",), {"max_fit_pointz": 5}, "max_fit_pointz"
    ),
    # -- transforms.json and clouds read by train
    "train: transforms.json with std 0": _file_case(
        "train",
        ("clouds.h5", "transforms.json"),
        _train,
        TRAIN_OUT,
        "{d}/transforms.json",
        "transforms.json",
        _json_edit(
            "transforms.json", lambda t: t["transform"]["columns"]["phi_rel"]["steps"][0].update(std=0.0)
        ),
    ),
    "train: transforms.json not JSON": _file_case(
        "train",
        ("clouds.h5", "transforms.json"),
        _train,
        TRAIN_OUT,
        "{d}/transforms.json",
        "transforms.json",
        _text("transforms.json", "{not json"),
    ),
    "train: transforms.json of an unknown transform type": _file_case(
        "train",
        ("clouds.h5", "transforms.json"),
        _train,
        TRAIN_OUT,
        "{d}/transforms.json",
        "transforms.json",
        _text(
            "transforms.json", json.dumps({"format": "pipelines-transform", "transform": {"type": "Pickle"}})
        ),
    ),
    "train: clouds without a training split": _file_case(
        "train",
        ("clouds.h5", "transforms.json"),
        _train,
        TRAIN_OUT,
        "{d}/clouds.h5",
        "clouds.h5",
        _h5_edit("clouds.h5", lambda f: f["split"].__setitem__(slice(None), 2)),
    ),
    "train: shower kind given for jet clouds": Case(
        "train",
        ("clouds.h5", "transforms.json"),
        _train,
        TRAIN_OUT,
        "{d}/clouds.h5",
        bad={"--kind": "showers"},
    ),
    "train: checkpoint directory held by another trainer": Case(
        "train",
        ("clouds.h5", "transforms.json"),
        _train,
        TRAIN_OUT,
        "PID 424242 on host otherhost",
        patch=_hold_lock,
    ),
    "train: checkpoint of other settings in the directory": Case(
        "train",
        ("clouds.h5", "transforms.json"),
        _train,
        TRAIN_OUT,
        "batch",
        breaks=_other_settings_checkpoint,
        fixes=lambda d: shutil.rmtree(d / "ckpt"),
    ),
    # -- train settings out of range, per key
    "train setting ema_decay 1.5": _train_settings({"ema_decay": 1.5}, "ema_decay"),
    "train setting lr_final_factor 2": _train_settings({"lr_final_factor": 2.0}, "lr_final_factor"),
    "train setting max_steps 0": _train_settings({"max_steps": 0}, "max_steps"),
    "train setting warmup_steps -1": _train_settings({"warmup_steps": -1}, "warmup_steps"),
    "train setting grad_clip -1": _train_settings({"grad_clip": -1.0}, "grad_clip"),
    "train setting amp 'fp8'": _train_settings({"amp": "fp8"}, "amp"),
    "train setting select 'worst'": _train_settings({"select": "worst"}, "select"),
    "train setting keep_checkpoints 0": _train_settings({"keep_checkpoints": 0}, "keep_checkpoints"),
    "train setting max_minutes -5": _train_settings({"max_minutes": -5.0}, "max_minutes"),
    "train setting log_every 'often'": _train_settings({"log_every": "often"}, "log_every"),
    "train setting unknown key": _train_settings({"learning_rate": 0.1}, "learning_rate"),
    # -- train-multiplicity
    "train-multiplicity setting steps 0": settings_case(
        "train-multiplicity", ("clouds.h5",), _multiplicity, ("m_out.json",), {"steps": 0}, "steps"
    ),
    "train-multiplicity setting n_max 0": settings_case(
        "train-multiplicity", ("clouds.h5",), _multiplicity, ("m_out.json",), {"n_max": 0}, "n_max"
    ),
    "train-multiplicity: truncated clouds file": _file_case(
        "train-multiplicity",
        ("clouds.h5",),
        _multiplicity,
        ("m_out.json",),
        "{d}/clouds.h5",
        "clouds.h5",
        _truncate("clouds.h5"),
    ),
    # -- sample
    "sample: model.pt not a model file": _file_case(
        "sample", SAMPLE_IN, _sample, SAMPLE_OUT, "{d}/model.pt", "model.pt", _text("model.pt", "weights")
    ),
    "sample: model.pt truncated": _file_case(
        "sample", SAMPLE_IN, _sample, SAMPLE_OUT, "{d}/model.pt", "model.pt", _truncate("model.pt")
    ),
    "sample: multiplicity.json broken": _file_case(
        "sample",
        SAMPLE_IN,
        _sample,
        SAMPLE_OUT,
        "{d}/multiplicity.json",
        "multiplicity.json",
        _text("multiplicity.json", "{"),
    ),
    "sample: reference file broken": _file_case(
        "sample", SAMPLE_IN, _sample, SAMPLE_OUT, "{d}/jets.h5", "jets.h5", _truncate("jets.h5")
    ),
    "sample setting collisions 'average'": _sample_settings({"collisions": "average"}, "collisions"),
    "sample setting batch_size 0": _sample_settings({"batch_size": 0}, "batch_size"),
    "sample setting energy_source 'flat'": _sample_settings({"energy_source": "flat"}, "energy_source"),
    # -- report
    "report: metrics.json not JSON": _file_case(
        "report", REPORT_IN, _report, REPORT_OUT, "{d}/m.json", "m.json", _text("m.json", "{")
    ),
    "report: a metric value that is not a number": _file_case(
        "report",
        REPORT_IN,
        _report,
        REPORT_OUT,
        "{d}/m.json",
        "m.json",
        _json_edit("m.json", lambda m: m["rows"]["model"]["W1M"].update(value="small")),
    ),
    "report: histogram array missing": _file_case(
        "report",
        REPORT_IN,
        _report,
        REPORT_OUT,
        "{d}/h.npz",
        "h.npz",
        lambda d: np.savez(d / "h.npz", mass__edges=np.linspace(0, 0.3, 4), mass__reference=np.ones(3)),
    ),
    "report: data summary without sha256": _file_case(
        "report",
        REPORT_IN,
        _report,
        REPORT_OUT,
        "{d}/train.summary.json",
        "train.summary.json",
        _json_edit("train.summary.json", lambda s: s.pop("sha256")),
    ),
    "report setting dpi 5": _report_settings({"dpi": 5}, "dpi"),
    "report setting figure_width 100": _report_settings({"figure_width": 100.0}, "figure_width"),
    "report setting ratio_range [2, 1]": _report_settings({"ratio_range": [2.0, 1.0]}, "ratio_range"),
    "report setting smoothing -1": _report_settings({"smoothing": -1}, "smoothing"),
    # -- generate-showers settings
    "generate-showers setting kappa 0": _gen_settings({"kappa": 0.0}, "kappa"),
    "generate-showers setting e_min_mev 10": _gen_settings({"e_min_mev": 10.0}, "e_min_mev"),
    "generate-showers setting substeps_per_layer 0": _gen_settings(
        {"substeps_per_layer": 0}, "substeps_per_layer"
    ),
    "generate-showers settings not JSON": Case(
        "generate-showers",
        (),
        _generate,
        ("g.h5",),
        "generate-showers --settings",
        bad={"--settings": "{kappa"},
    ),
    # -- the file system
    "disk full writing the summary (ENOSPC)": Case(
        "validate",
        ("showers.h5>in.h5",),
        _validate("showers", "in.h5", "2"),
        ("s.json",),
        "{d}/s.json",
        patch=_os_error(errno.ENOSPC),
    ),
    "quota exceeded writing the summary (EDQUOT)": Case(
        "validate",
        ("showers.h5>in.h5",),
        _validate("showers", "in.h5", "2"),
        ("s.json",),
        "{d}/s.json",
        patch=_os_error(errno.EDQUOT),
    ),
    "read-only file system (EROFS)": Case(
        "validate",
        ("showers.h5>in.h5",),
        _validate("showers", "in.h5", "2"),
        ("s.json",),
        "{d}/s.json",
        patch=_os_error(errno.EROFS),
    ),
    "output folder not writable (EACCES)": Case(
        "validate",
        ("showers.h5>in.h5",),
        _validate("showers", "in.h5", "2"),
        ("s.json",),
        "{d}/s.json",
        patch=_os_error(errno.EACCES),
    ),
    "disk full writing an HDF5 output": Case(
        "convert",
        ("showers.h5>in.h5",),
        _convert("showers", "in.h5"),
        ("clouds_out.h5",),
        "{d}/clouds_out.h5",
        patch=lambda mp, d: _h5_full(mp),
    ),
    "disk full writing model.pt": Case(
        "train",
        ("clouds.h5", "transforms.json"),
        _train,
        TRAIN_OUT,
        "{d}/model_out.pt",
        patch=_os_error(errno.ENOSPC, "write_bytes"),
    ),
    "output path is a folder": Case(
        "validate",
        ("showers.h5>in.h5",),
        _validate("showers", "in.h5", "2"),
        ("s.json",),
        "{d}/s.json",
        breaks=lambda d: (d / "s.json").mkdir(),
        fixes=lambda d: (d / "s.json").rmdir(),
    ),
    "output folder's parent is a file": Case(
        "validate",
        ("showers.h5>in.h5",),
        lambda d: [*_validate("showers", "in.h5", "2")(d)[:-1], str(d / "sub" / "s.json")],
        ("sub/s.json",),
        "{d}/sub",
        breaks=lambda d: (d / "sub").write_text("a file"),
        fixes=lambda d: (d / "sub").unlink(),
    ),
}


def _h5_full(mp: pytest.MonkeyPatch) -> None:
    """HDF5 writes fail as h5py reports a full disk (errno only inside the message)."""
    original = h5py.Group.create_dataset

    def full(self, name, *args, **kwargs):
        if name == "offsets":
            raise OSError(
                f"Unable to synchronously create dataset (file write failed: filename = "
                f"'{self.file.filename}', errno = 28, error message = 'No space left on device')"
            )
        return original(self, name, *args, **kwargs)

    mp.setattr(h5py.Group, "create_dataset", full)


# ------------------------------------------------------------------------------------------- test
def _copy_inputs(case: Case, kit: Path, d: Path) -> None:
    for spec in case.inputs:
        source, _, target = spec.partition(">")
        path = d / (target or source)
        if path.is_dir():
            path.rmdir()
        elif path.exists():
            path.unlink()
        shutil.copy2(kit / source, path)


def _snapshot(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(d.rglob("*"))
    }


def _replace(argv: list[str], bad: dict[str, str]) -> list[str]:
    argv = list(argv)
    for flag, value in bad.items():
        argv[argv.index(flag) + 1] = value
    return argv


@contextlib.contextmanager
def _patched(case: Case, d: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        if case.patch is not None:
            case.patch(mp, d)
        yield
    while _OPEN_FDS:
        os.close(_OPEN_FDS.pop())


@pytest.mark.parametrize("name", list(CASES))
def test_fault_is_named_writes_nothing_loses_nothing_and_the_fixed_rerun_works(
    name: str, kit: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    case = CASES[name]
    d = tmp_path / "case"
    d.mkdir()
    _copy_inputs(case, kit, d)
    argv = [case.stage, *case.argv(d)]
    if case.breaks is not None:
        case.breaks(d)
    before = _snapshot(d)
    capsys.readouterr()
    with _patched(case, d):
        code = cli(_replace(argv, case.bad))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(lines) == 1, err
    assert case.named.format(d=d) in lines[0], lines[0]
    after = _snapshot(d)
    state = {k: v for k, v in after.items() if k.startswith("ckpt") and k not in before}  # resumable state
    assert {k: v for k, v in after.items() if k not in state} == before, (
        "an output appeared or a file changed"
    )
    if case.fixes is not None:
        case.fixes(d)
    elif case.breaks is not None:
        _copy_inputs(case, kit, d)
    assert cli(argv) == 0, capsys.readouterr().err
    assert all((d / out).is_file() for out in case.outputs)


def test_audit_md_lists_every_case_once() -> None:
    """tests/AUDIT.md's table of this module is in step with ``CASES`` (name, stage, number)."""
    text = (Path(__file__).parent / "AUDIT.md").read_text()
    for number, (name, case) in enumerate(CASES.items(), 1):
        assert f"| {number} | {name} | `{case.stage}` |" in text, name
    assert f"**{len(CASES)} cases**" in text
