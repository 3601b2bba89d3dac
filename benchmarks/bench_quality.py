"""Quality against training budget: each family trained for 1, 2, 4 and 8 minutes on the embedded data.

For every (family, minutes) the script runs the real workflow (generation of the embedded data once,
conversion, transforms, training, sampling, evaluation; the default config's evaluation settings) in
a scratch folder, with the training budget set by steps: the family's steps per minute on this
machine are measured first (a short timed run, see bench_train.py) and the cosine schedule ends at
minutes x steps per minute. It prints, against the real-vs-real row of the same evaluation, the
learning curve a user needs to choose a family and a budget: showers: classifier AUCs, the mean of
the separation-power groups, E_ratio separation, FPD, collided fraction, ms per shower; jets: W1M,
W1P, FPD, classifier AUCs. Without a GPU, flow matching is run on the jets only (CPU_SKIPPED).

    python benchmarks/bench_quality.py                                  # every family, 1 2 4 8 min
    python benchmarks/bench_quality.py --families factorised --minutes 1 2 --workdir /tmp/quality
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from bench_train import seconds_per_step
from embedded_data import jet_data, shower_data

from pipelines.models.family import get_family

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("factorised", "flow-matching", "mdma-gan", "mpgan")
DEFAULT_MODEL = {"factorised": "factorised", "flow-matching": "flow"}  # config.yaml entries to start from


#: (family, kind) pairs left out on a CPU: point-cloud flow matching on ~1,500-point showers samples at
#: seconds per shower there (a GPU model, see bench_sample.py)
CPU_SKIPPED = {("flow-matching", "showers")}


def quality_config(
    base: dict, runs: list[tuple[str, str, int]], skipped: set[tuple[str, str]] = frozenset()
) -> dict:
    """config.yaml with one model per (family, minutes, steps) and the runs of each on its data set
    (except the (family, kind) pairs in ``skipped``)."""
    config = dict(base)
    models, run_list = {}, []
    kinds = {"showers": "calo-ds2", "jets": "jets-top30"}
    for family, minutes, steps in runs:
        start = base["models"].get(DEFAULT_MODEL.get(family, ""), {"training": {}})
        training = {
            **start.get("training", {}),
            "max_steps": steps,
            "schedule_steps": None,
            "checkpoint_every": max(1, steps // 4),
        }
        training["validate_every"] = max(1, steps // 6)
        for kind, dataset in kinds.items():
            if kind in get_family(family).kinds and (family, kind) not in skipped:
                name = f"{family}-{minutes:g}min-{kind}".replace(".", "p")
                architecture = start.get("architecture", {})
                models[name] = {"family": family, "training": training, "architecture": architecture}
                run_list.append({"dataset": dataset, "model": name})
    config["models"], config["runs"] = models, run_list
    return config


def row(metrics: dict, timing: dict) -> dict:
    """The figures printed for one run (model and real-vs-real)."""
    out = {}
    for which in ("model", "real_vs_real"):
        r = metrics["rows"][which]
        sep = [v["value"] for k, v in r.items() if k.startswith("separation_") and v["value"] is not None]
        out[which] = {k: v["value"] for k, v in r.items() if isinstance(v, dict) and "value" in v}
        if sep:
            out[which]["separation_mean"] = float(np.mean(sep))
    gen = timing.get("generation", {})
    out["collided_fraction"] = gen.get("collided_fraction")
    out["ms_per_sample"] = {
        t["batch_size"]: t["ms_per_sample_with_conversion"] for t in timing.get("timing", [])
    }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    showers, jets = shower_data(400), jet_data(600)
    runs = []
    for family in args.families:
        data = showers if "showers" in get_family(family).kinds else jets
        sec, _ = seconds_per_step(family, data, torch.device("cpu"), steps=10)
        print(f"{family}: {sec:.3f} s per step on this machine (1 thread)", flush=True)
        runs += [(family, m, max(1, int(60 * m / sec))) for m in args.minutes]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="quality-"))
    work.mkdir(parents=True, exist_ok=True)
    skipped = set() if torch.cuda.is_available() else CPU_SKIPPED
    (work / "config.yaml").write_text(yaml.safe_dump(quality_config(base, runs, skipped)))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
           "--cores", str(args.cores), "--set-threads", "train=1"]  # fmt: skip
    subprocess.run(cmd, check=True)
    print(f"\n{'run':<36} {'cls_high':>8} {'trees':>6} {'sep mean':>8} {'E_ratio':>8} {'FPD':>9} "
          f"{'W1M e3':>8} {'W1P e3':>8} {'coll.':>6} {'ms@100':>7}")  # fmt: skip
    for r in yaml.safe_load((work / "config.yaml").read_text())["runs"]:
        out = work / "results" / r["dataset"] / r["model"]
        figures = row(json.loads((out / "evaluation" / "metrics.json").read_text()),
                      json.loads((out / "timing.json").read_text()))  # fmt: skip
        for which in ("model", "real_vs_real"):
            f = figures[which]
            label = r["model"] if which == "model" else "  real vs real"
            ms_100 = figures["ms_per_sample"].get(100)
            tree = next((v for k, v in f.items() if "tree" in k and k.endswith("auc")), None)

            def fmt(value, spec=".3f"):
                return format(value, spec) if isinstance(value, int | float) else "-"

            print(f"{label:<36} {fmt(f.get('cls_high_auc')):>8} {fmt(tree):>6} "
                  f"{fmt(f.get('separation_mean')):>8} "
                  f"{fmt(f.get('separation_E_ratio')):>8} {fmt(f.get('fpd', f.get('FPD')), '.3g'):>9} "
                  f"{fmt(f.get('W1M_x1e3'), '.2f'):>8} {fmt(f.get('W1P_x1e3'), '.2f'):>8} "
                  f"{fmt(figures['collided_fraction'] if which == 'model' else None):>6} "
                  f"{fmt(ms_100 if which == 'model' else None, '.2f'):>7}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
