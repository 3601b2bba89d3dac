"""Stage ``export``: a trained model's sampler as ONNX graphs for fast-simulation plug-ins (Geant4).

For the ``factorised`` family (:mod:`pipelines.models.factorised_graph`) it writes into ``--out-dir``:

- ``shower.onnx``: one graph from (E_inc, all noise) to voxelised showers (plus the hit counts and layer
  energies it drew): the shower-level ODE solve unrolled, the point model, Pareto placement, energy
  shares, layer rescaling and the readout threshold;
- ``shower_level.onnx`` and ``points.onnx``: the same graph cut in two at (counts, layer energies);
- ``README.md``: inputs, outputs, units, voxel order and how to call the graphs;
- ``export.json``: graph inputs and outputs (names, shapes, types, units), opset and versions, the check
  and the timings.

Check: ``check_showers`` showers with log-uniform E_inc are generated from the same noise by each ONNX
Runtime graph and by its torch module, and by ``shower.onnx`` against the project's sampler
(:class:`~pipelines.models.factorised.FactorisedSampler`, the ``sample`` stage) given the noise it
draws from a seeded generator. Sampling is discrete (hit counts, which voxels are hit), so float
rounding can flip a near tie: layers whose hit voxels differ are counted (at most
:data:`MAX_DIFFERING` of them), and every voxel of the other layers must agree within
``rtol * max(|torch|, 15.15 keV)``; otherwise the stage fails with nothing written.
Timing: median ms per shower of ONNX Runtime (noise drawn with numpy included) and of the torch sampler,
both on CPU with the same number of threads, at each batch size (capped at ``timing_max_batch``).

Other families are an error: their samplers (point clouds with a separate multiplicity model and
voxelisation) are not exported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.export_settings import EXPORTABLE, ExportSettings
from pipelines.geometry import THRESHOLD_MEV
from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.io.hashing import file_sha256

log = logging.getLogger(__name__)

COMBINED, SHOWER_LEVEL, POINTS = "shower.onnx", "shower_level.onnx", "points.onnx"
NOISE_INPUTS = ("noise_shower", "u_voxel", "u_component", "z")
#: check: at most this fraction of the layers may have other hit voxels in ONNX Runtime than in torch
MAX_DIFFERING = 0.01


def graph_signature(grid: tuple[int, int, int]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Inputs and outputs of the three graphs: name, shape, element type, unit and meaning."""
    n_l, n_alpha, n_r = grid
    v = n_alpha * n_r

    def t(name: str, shape: list, dtype: str, unit: str, meaning: str) -> dict[str, Any]:
        return {"name": name, "shape": shape, "dtype": dtype, "unit": unit, "meaning": meaning}

    e_inc = t("e_inc", ["B"], "float64", "MeV", "incident energy of each shower")
    noise = [
        t("noise_shower", ["B", 1 + 2 * n_l], "float32", "", "N(0, 1): start of the shower-level ODE"),
        t("u_voxel", ["B", n_l, v], "float32", "", "U[0, 1): Pareto key of voxel r * n_alpha + alpha"),
        t(
            "u_component",
            ["B", n_l, v],
            "float32",
            "",
            "U[0, 1): mixture component of that voxel's point",
        ),
        t("z", ["B", n_l, v], "float32", "", "N(0, 1): log energy share of that voxel's point"),
    ]
    counts = t("counts", ["B", n_l], "int64", "", "hits per layer")
    layer_e = t("layer_energy", ["B", n_l], "float64", "MeV", "energy per layer (sums to E_tot)")
    showers = t(
        "showers",
        ["B", n_l * v],
        "float32",
        "MeV",
        "voxel energies, CaloChallenge order: index (layer * n_alpha + alpha) * n_r + r",
    )
    return {
        "shower": {"inputs": [e_inc, *noise], "outputs": [showers, counts, layer_e]},
        "shower_level": {"inputs": [e_inc, noise[0]], "outputs": [counts, layer_e]},
        "points": {"inputs": [e_inc, counts, layer_e, *noise[1:]], "outputs": [showers]},
    }


def load_factorised(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(FactorisedSampler on CPU, model payload); a DataError naming the file for any other family."""
    from pipelines.models.store import load_model, read_model

    payload = read_model(path)
    if payload["family"] not in EXPORTABLE:
        raise DataError(
            f"{path}: family {payload['family']!r} cannot be exported to ONNX (supported: "
            f"{', '.join(EXPORTABLE)}); its point sampler needs the multiplicity model and voxelisation"
        )
    sampler, payload = load_model(path, None, None, "cpu")
    if not sampler.layout.regular:
        raise DataError(
            f"{path}: the ONNX export takes the regular grids of datasets 2 and 3; this model has the "
            "per-layer binning of dataset 1 (sample it with the sample stage instead)"
        )
    return sampler, payload


def export_graphs(sampler: Any, out_dir: Path, opset: int) -> None:
    """Write shower.onnx (torch.onnx.export, dynamo exporter) and its two halves into ``out_dir``."""
    import onnx.utils

    from pipelines.models.factorised_graph import ShowerGraph, sampler_noise

    graph = ShowerGraph(sampler).eval()
    e_inc = torch.tensor([1e4, 1e5], dtype=torch.float64)
    noise = sampler_noise(graph, e_inc, torch.Generator().manual_seed(0))
    args = (e_inc, noise.shower, noise.u_voxel, noise.u_component, noise.z)
    batch = torch.export.Dim("batch")
    chatter = io.StringIO()  # the exporter prints its progress and warns about its own internals
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            args,
            str(out_dir / COMBINED),
            dynamo=True,
            opset_version=opset,
            verbose=False,
            input_names=["e_inc", *NOISE_INPUTS],
            output_names=["showers", "counts", "layer_energy"],
            dynamic_shapes=tuple({0: batch} for _ in args),
            external_data=False,
        )
    combined = str(out_dir / COMBINED)
    onnx.utils.extract_model(
        combined, str(out_dir / SHOWER_LEVEL), ["e_inc", "noise_shower"], ["counts", "layer_energy"]
    )
    onnx.utils.extract_model(
        combined,
        str(out_dir / POINTS),
        ["e_inc", "counts", "layer_energy", "u_voxel", "u_component", "z"],
        ["showers"],
    )


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def log_uniform_energies(transform: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """E_inc (n,) MeV log-uniform over mean +- sqrt(3) std of the training log E_inc."""
    half = np.sqrt(3.0) * transform.cond_std
    return np.exp(rng.uniform(transform.cond_mean - half, transform.cond_mean + half, n))


def difference(onnx_out: np.ndarray, torch_out: np.ndarray, keep: np.ndarray | None = None) -> dict:
    """Max |a - b| and max |a - b| / max(|b|, 15.15 keV) over the rows ``keep`` (all by default)."""
    a, b = np.asarray(onnx_out, np.float64), np.asarray(torch_out, np.float64)
    if keep is not None:
        a, b = a[keep], b[keep]
    d = np.abs(a - b)
    rel = d / np.maximum(np.abs(b), THRESHOLD_MEV)
    return {"max_abs_diff": float(d.max(initial=0.0)), "max_rel_diff": float(rel.max(initial=0.0))}


def compare_showers(onnx_out: np.ndarray, torch_out: np.ndarray, n_layers: int) -> dict[str, Any]:
    """Layers whose hit voxels differ (a near tie of keys or a hit count rounded the other way) and
    the differences of the voxel energies in all other layers."""
    a = np.asarray(onnx_out).reshape(len(onnx_out) * n_layers, -1)
    b = np.asarray(torch_out).reshape(len(torch_out) * n_layers, -1)
    same = np.all((a > 0) == (b > 0), axis=1)
    return {"layers": int(len(same)), "layers_differing": int((~same).sum()), **difference(a, b, same)}


def check_graphs(sampler: Any, out_dir: Path, n: int, seed: int, rtol: float, threads: int) -> dict[str, Any]:
    """ONNX Runtime against torch for the same noise (module docstring); ValueError if out of tolerance."""
    from pipelines.models.factorised_graph import ShowerGraph, sampler_noise

    n_l = sampler.n_layers
    e = log_uniform_energies(sampler.transform, n, np.random.default_rng(seed))
    e_t = torch.as_tensor(e)
    graph = ShowerGraph(sampler).eval()
    noise = sampler_noise(graph, e_t, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        counts, layer_e = graph.shower_level(e_t, noise.shower)
        showers = graph.point_level(e_t, counts, layer_e, noise.u_voxel, noise.u_component, noise.z).numpy()
    reference, _ = sampler.sample_showers(e, torch.Generator().manual_seed(seed))
    feeds = {
        "e_inc": e,
        "noise_shower": noise.shower.numpy(),
        "u_voxel": noise.u_voxel.numpy(),
        "u_component": noise.u_component.numpy(),
        "z": noise.z.numpy(),
    }
    level_feeds = {k: feeds[k] for k in ("e_inc", "noise_shower")}
    o_counts, o_layer = session(out_dir / SHOWER_LEVEL, threads).run(None, level_feeds)
    point_feeds = {"e_inc": e, "counts": counts.numpy(), "layer_energy": layer_e.numpy()}
    point_feeds |= {k: feeds[k] for k in NOISE_INPUTS[1:]}
    o_points = session(out_dir / POINTS, threads).run(None, point_feeds)[0]
    o_showers, o_all_counts, _ = session(out_dir / COMBINED, threads).run(None, feeds)
    same_counts = np.all(o_counts == counts.numpy(), axis=1)
    result = {
        "showers": n,
        "seed": seed,
        "rtol": rtol,
        "max_layers_differing_fraction": MAX_DIFFERING,
        "incident_energies_mev": [float(e.min()), float(e.max())],
        "shower_level": {
            "counts_differing": int((o_counts != counts.numpy()).sum()),
            **difference(o_layer, layer_e.numpy(), same_counts),
        },
        "points": compare_showers(o_points, showers, n_l),
        "shower": compare_showers(o_showers, showers, n_l),
        "shower_vs_sampler": compare_showers(o_showers, reference, n_l),
        "torch_graphs_vs_sampler": compare_showers(showers, reference, n_l),
    }
    parts = ("shower_level", "points", "shower", "shower_vs_sampler")
    worst = max(result[k]["max_rel_diff"] for k in parts)
    differing = max(result[k]["layers_differing"] for k in parts[1:]) / (n * n_l)
    result["passed"] = bool(worst <= rtol and differing <= MAX_DIFFERING)
    if not result["passed"]:
        raise ValueError(
            f"ONNX Runtime does not reproduce torch: max relative difference {worst:.3g} (rtol {rtol:g}), "
            f"hit voxels differ in {100 * differing:.2g} % of the layers "
            f"(at most {100 * MAX_DIFFERING:g} %); nothing was written"
        )
    return result


def _median_seconds(fn: Any, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return float(np.median(runs))


def time_paths(sampler: Any, out_dir: Path, settings: ExportSettings, seed: int, threads: int) -> list[dict]:
    """ms per shower of ONNX Runtime (shower.onnx, noise drawn with numpy) and of the torch sampler."""
    grid = (sampler.n_layers, sampler.n_alpha, sampler.n_r)
    n_l, v = grid[0], grid[1] * grid[2]
    sess = session(out_dir / COMBINED, threads)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)

    def run_onnx(e: np.ndarray) -> None:
        b = len(e)
        sess.run(
            None,
            {
                "e_inc": e,
                "noise_shower": rng.standard_normal((b, 1 + 2 * n_l), dtype=np.float32),
                "u_voxel": rng.random((b, n_l, v), dtype=np.float32),
                "u_component": rng.random((b, n_l, v), dtype=np.float32),
                "z": rng.standard_normal((b, n_l, v), dtype=np.float32),
            },
        )

    out = []
    warm = log_uniform_energies(sampler.transform, 1, rng)
    run_onnx(warm)  # warm-up of both paths
    sampler.sample_showers(warm, gen)
    for requested in settings.timing_batch_sizes:
        b = min(requested, settings.timing_max_batch)
        e = log_uniform_energies(sampler.transform, b, rng)
        t_onnx = _median_seconds(lambda e=e: run_onnx(e), settings.timing_repeats)
        t_torch = _median_seconds(lambda e=e: sampler.sample_showers(e, gen), settings.timing_repeats)
        out.append(
            {
                "requested_batch_size": int(requested),
                "batch_size": int(b),
                "repeats": settings.timing_repeats,
                "ms_per_shower_torch": 1e3 * t_torch / b,
                "ms_per_shower_onnxruntime": 1e3 * t_onnx / b,
            }
        )
        log.info(
            "timing batch %d: torch %.3f, ONNX Runtime %.3f ms/shower", b, 1e3 * t_torch / b, 1e3 * t_onnx / b
        )
    return out


def readme(grid: tuple[int, int, int], ode_steps: int, opset: int) -> str:
    """The README.md written next to the graphs."""
    n_l, n_alpha, n_r = grid
    v = n_alpha * n_r
    sig = graph_signature(grid)
    lines = [
        "# Exported factorised shower sampler (ONNX)",
        "",
        f"Grid: {n_l} layers x {n_alpha} alpha bins x {n_r} radial bins = {n_l * v} voxels; opset {opset};",
        f"{ode_steps} midpoint ODE steps unrolled. B (the batch) is free. Load with any ONNX runtime,",
        'e.g. `onnxruntime.InferenceSession("shower.onnx").run(None, feeds)` or C++ `Ort::Session`.',
        "",
        "Draw the noise i.i.d. (uniforms in [0, 1), normals N(0, 1)), one set per shower; the same noise",
        "gives the same shower. `showers` is in MeV, voxel index (layer * n_alpha + alpha) * n_r + r",
        "(the CaloChallenge order of the binning XML), voxels below 15.15 keV set to 0.",
        "",
    ]
    for name, file in (("shower", COMBINED), ("shower_level", SHOWER_LEVEL), ("points", POINTS)):
        lines += [f"## `{file}`", "", "| | name | shape | type | unit | meaning |", "|---" * 6 + "|"]
        for role in ("inputs", "outputs"):
            for t in sig[name][role]:
                shape = "(" + ", ".join(str(s) for s in t["shape"]) + ")"
                cells = [role[:-1], f"`{t['name']}`", shape, t["dtype"], t["unit"], t["meaning"]]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## What the graphs compute",
        "",
        "1. Shower level: c = (log E_inc - mean) / std; the flow's ODE from `noise_shower` (t = 0 to 1),",
        "   then un-whitening and clamping to the training ranges: hit counts n_l (at most one per voxel)",
        "   and layer energies E_l summing to the sampled E_tot (layers without hits: 0).",
        "2. Point level, per layer: the point model gives p(r), p(alpha | r) and a Gaussian mixture of",
        "   y = log(E_point / (E_l / n_l)) per ring. The n_l voxels with the largest",
        "   logit(min(n_l p(r) p(alpha | r), 1 - 1e-6)) + logit(`u_voxel`) are hit (distinct voxels: no",
        "   collisions); the point in voxel v draws its ring's mixture component by `u_component[.., v]`",
        "   and y = mu + sigma `z[.., v]` clamped to its range (noise index v = r * n_alpha + alpha).",
        "3. Decoding: shares exp(y) are rescaled so that each layer sums to E_l exactly; voxels below the",
        "   15.15 keV readout threshold are set to 0. `points.onnx` does steps 2 and 3.",
        "",
        "`export.json` records the check against the project's torch sampler and the timings.",
    ]
    return "\n".join(lines) + "\n"


def export(model: str | Path, out_dir: str | Path, seed: int, settings: ExportSettings) -> dict[str, Any]:
    """Export, check and time a model; everything is written into ``out_dir`` only once it all passed."""
    import onnx
    import onnxruntime

    sampler, payload = load_factorised(model)
    threads = torch.get_num_threads()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    grid = (sampler.n_layers, sampler.n_alpha, sampler.n_r)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        t0 = time.perf_counter()
        export_graphs(sampler, work, settings.opset)
        seconds = time.perf_counter() - t0
        log.info("exported %s to ONNX in %.1f s", model, seconds)
        check = check_graphs(sampler, work, settings.check_showers, seed, settings.rtol, threads)
        timing = time_paths(sampler, work, settings, seed + 1, threads) if settings.timing else []
        info = {
            "family": payload["family"],
            "model": str(model),
            "model_sha256": file_sha256(model),
            "grid": {"n_layers": grid[0], "n_alpha": grid[1], "n_r": grid[2]},
            "ode_steps": sampler.ode_steps,
            "opset": settings.opset,
            "exporter": "torch.onnx.export(dynamo=True)",
            "seconds_export": seconds,
            "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
            "onnxruntime_version": onnxruntime.__version__,
            "threads": threads,
            "files": {"shower": COMBINED, "shower_level": SHOWER_LEVEL, "points": POINTS},
            "graphs": graph_signature(grid),
            "check": check,
            "timing": timing,
        }
        (work / "README.md").write_text(readme(grid, sampler.ode_steps, settings.opset))
        out_dir.mkdir(exist_ok=True)
        for name in (COMBINED, SHOWER_LEVEL, POINTS, "README.md"):
            os.replace(work / name, out_dir / name)
        with atomic_path(out_dir / "export.json") as tmp:
            tmp.write_text(json.dumps(info, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info


def main(argv: list[str] | None = None) -> int:
    """Stage ``export``: a trained model's sampler as ONNX graphs, checked against torch and timed."""
    p = argparse.ArgumentParser(prog="export", description=main.__doc__)
    p.add_argument("--model", required=True, help="model file written by the train stage (.pt)")
    p.add_argument("--out-dir", required=True, help="folder for the .onnx files, README.md and export.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the check's and the timing's noise")
    p.add_argument("--settings", default="{}", help="JSON object of ExportSettings")
    args = p.parse_args(argv)
    settings = ExportSettings.from_json(args.settings)
    info = export(args.model, args.out_dir, args.seed, settings)
    log.info(
        "wrote %s: check passed, max relative difference %.2g",
        Path(args.out_dir) / "export.json",
        info["check"]["shower_vs_sampler"]["max_rel_diff"],
    )
    return 0
