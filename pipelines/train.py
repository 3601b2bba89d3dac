"""Stage ``train``: train (or resume) one model family with the shared loop and export the model.

``--family`` names the model family (``factorised``, ``flow-matching``, ``mdma-gan``; see
:mod:`pipelines.models.family`); ``--settings`` is one JSON object holding the loop's settings
(:class:`pipelines.training.settings.LoopSettings`) and the family's own (its ``Settings`` dataclass).
Outputs: the model file (family, config and exported weights: the best validated model or the last,
see ``select``), the training curve (CSV: losses, learning rates and validation figures) and a
summary JSON. Checkpoints in ``--checkpoint-dir`` make the run resumable after preemption; the
process holds an OS lock on that directory, so a second trainer on it stops at once.

Data-parallel training (setting ``gpus`` > 1): started as that many processes by torchrun or srun
(:mod:`pipelines.training.distributed`); each works on its share of every global batch. Rank 0 holds
the lock, chooses the checkpoint that every rank resumes from, validates and writes every file.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.device import resolve_device, set_threads
from pipelines.geometry import load_geometry
from pipelines.io.atomic import atomic_path
from pipelines.io.clouds import TRAIN, VALIDATION, Clouds, read_clouds
from pipelines.io.errors import DataError
from pipelines.io.hashing import file_sha256
from pipelines.models.family import TrainingData, count_parameters, get_family
from pipelines.models.store import save_model
from pipelines.settings import settings_dict
from pipelines.training import distributed
from pipelines.training.checkpoint import (
    checkpoint_lock,
    latest_checkpoint,
    read_checkpoint,
    resume_mismatch,
    set_aside_checkpoints,
    write_checkpoint,
)
from pipelines.training.distributed import World
from pipelines.training.loop import Run, run_steps, seed_everything
from pipelines.training.settings import RESUMABLE_CHANGES, LoopSettings, split_settings
from pipelines.transforms import load_transform

log = logging.getLogger(__name__)

KINDS = ("showers", "jets")


def load_training_data(
    clouds_path: str, transforms_path: str, kind: str, seed: int, dataset: str | None = None
) -> TrainingData:
    """Clouds, fitted transform and split indices, checked for what training needs."""
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {KINDS}, got {kind!r}")
    clouds: Clouds = read_clouds(clouds_path)
    transform = load_transform(transforms_path)
    names = tuple(getattr(transform, "point_names", clouds.point_names))
    if names != tuple(clouds.point_names):
        raise DataError(
            f"{transforms_path}: transform columns {names} do not match the point columns "
            f"{clouds.point_names} of {clouds_path}"
        )
    if kind == "showers" and (not clouds.condition_names or clouds.condition_names[0] != "incident_energy"):
        raise DataError(
            f"{clouds_path}: showers need 'incident_energy' (MeV) as first condition, "
            f"got {clouds.condition_names}"
        )
    train = clouds.split_indices(TRAIN)
    if len(train) == 0:
        raise DataError(f"{clouds_path}: the training split is empty")
    if kind == "showers" and not np.all(clouds.conditions[train, 0] > 0):
        raise DataError(f"{clouds_path}: non-positive incident energies in the training split")
    mean_n = float(clouds.lengths[train].mean())
    if mean_n <= 0:
        raise DataError(f"{clouds_path}: all training clouds are empty")
    geometry = None
    if kind == "showers":
        name = dataset or clouds.attrs.get("dataset")
        geometry = load_geometry(str(name)) if name is not None else None
    return TrainingData(
        kind, clouds, transform, train, clouds.split_indices(VALIDATION), mean_n, seed, geometry
    )


def _resume_point(
    ckpt_dir: Path, run_info: dict[str, Any], restart_on_mismatch: bool
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from (None: start afresh); stale ones are set aside or an error."""
    found = latest_checkpoint(ckpt_dir)
    if found is None:
        return None
    path, state = found
    what = resume_mismatch(state, run_info, RESUMABLE_CHANGES)
    if what and restart_on_mismatch:
        aside = set_aside_checkpoints(ckpt_dir, f"{path.name} was written with different {what}")
        log.warning(
            "checkpoints in %s were written with different %s: moved them to %s (delete that folder "
            "when they are no longer needed) and starting afresh", ckpt_dir, what, aside,
        )  # fmt: skip
        return None
    if what:
        raise ValueError(
            f"checkpoint {path} was written with different {what}; use a fresh --checkpoint-dir, "
            "restore the original settings or pass --restart-on-mismatch"
        )
    return found


def write_curve(path: str, history: list[dict[str, float]]) -> None:
    """Training curve CSV: one row per logged step, columns in first-seen order, wall time last (empty = not
    measured at that step)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns and k != "elapsed_s"]
    columns.append("elapsed_s")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in history:
            writer.writerow([_cell(row.get(c)) for c in columns])


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def _write_json(path: str, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")


def train(
    clouds_path: str,
    transforms_path: str,
    kind: str,
    family_name: str,
    settings: dict[str, Any],
    checkpoint_dir: str,
    out_model: str,
    out_curve: str,
    out_summary: str,
    device_name: str = "auto",
    code_version: str = "",
    restart_on_mismatch: bool = False,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) and write the model, the curve and the summary; returns the summary.

    A checkpoint is resumed only if it was written for the same family, settings, model config,
    input files (content hashes) and ``code_version``; otherwise a ValueError, or, with
    ``restart_on_mismatch`` (what the workflow passes), the stale checkpoints are moved aside into
    a dated folder in ``checkpoint_dir`` and training starts afresh. The process holds an OS lock on
    ``checkpoint_dir`` throughout: a second trainer on it fails at once (BusyError naming the PID).
    """
    loop, family_settings = split_settings(family_name, settings)
    world = distributed.detect_world()
    check_world(loop, world)
    device = distributed.local_device(resolve_device(device_name), world)
    distributed.init(world, device)
    try:
        with checkpoint_lock(Path(checkpoint_dir)) if world.is_main else nullcontext():
            return _train_locked(
                clouds_path, transforms_path, kind, family_name, loop, family_settings, Path(checkpoint_dir),
                out_model, out_curve, out_summary, device, code_version, restart_on_mismatch, dataset, world,
            )  # fmt: skip
    finally:
        distributed.teardown(world)


def check_world(loop: LoopSettings, world: World) -> None:
    """ValueError unless the launch matches the setting ``gpus`` (split_settings checks the family)."""
    if world.size != loop.gpus:
        raise ValueError(
            f"train setting gpus={loop.gpus}, but {world.size} training process(es) were started: launch "
            f"`torchrun --standalone --nproc-per-node {loop.gpus} -m pipelines train ...` (the workflow does)"
        )


def _train_locked(
    clouds_path: str,
    transforms_path: str,
    kind: str,
    family_name: str,
    loop: LoopSettings,
    family_settings: Any,
    ckpt_dir: Path,
    out_model: str,
    out_curve: str,
    out_summary: str,
    device: torch.device,
    code_version: str,
    restart_on_mismatch: bool,
    dataset: str | None,
    world: World,
) -> dict[str, Any]:
    """:func:`train` once the checkpoint directory is locked (by rank 0)."""
    set_threads(loop.num_threads)
    data = load_training_data(clouds_path, transforms_path, kind, loop.seed, dataset)
    seed_everything(loop.seed)
    family = get_family(family_name)(family_settings, data, device)
    run = Run(family, loop, device, world)
    all_settings = {**dataclasses.asdict(loop), **dataclasses.asdict(family_settings)}
    run_info = {
        "family": family_name,
        "settings": all_settings,
        "config": family.export_config(),
        "data": {
            "kind": kind,
            "n_train": len(data.train_idx),
            "n_validation": len(data.val_idx),
            "mean_n": data.mean_n,
            "clouds_sha256": file_sha256(clouds_path),
            "transforms_sha256": file_sha256(transforms_path),
            "code_version": code_version,
        },
    }

    found = _resume_point(ckpt_dir, run_info, restart_on_mismatch) if world.is_main else None
    if world.size > 1:  # every rank resumes from rank 0's choice
        step = distributed.broadcast_int(-1 if found is None else int(found[1]["step"]), device)
        if not world.is_main and step >= 0:
            path = ckpt_dir / f"ckpt-{step:09d}.pt"
            found = (path, read_checkpoint(path))
    if found is not None:
        run.load_state(found[1])
        log.info("resuming from %s (step %d)", found[0], run.step)
    if world.size > 1:
        distributed.broadcast_modules(run.modules)
    resumed_from = run.step
    n_params = count_parameters(run.modules)
    log.info("training %s %s on %s (amp %s): %d parameters, %d training clouds",
             family_name, kind, device, run.amp_dtype, n_params, len(data.train_idx))  # fmt: skip

    start = time.perf_counter()
    elapsed_before = run.elapsed_s
    last_saved = run.step

    def budget_left() -> bool:
        if loop.max_steps is not None and run.step >= loop.max_steps:
            return False
        spent = elapsed_before + (time.perf_counter() - start)
        left = loop.max_minutes is None or spent < 60.0 * loop.max_minutes
        # wall time differs between ranks: rank 0 decides for all
        return distributed.all_agree(left, device) if world.size > 1 and loop.max_minutes else left

    def on_step(figures: dict[str, float]) -> None:
        nonlocal last_saved
        run.elapsed_s = elapsed_before + time.perf_counter() - start
        validate = loop.validate_every > 0 and run.step % loop.validate_every == 0
        if run.step % loop.log_every == 0 or validate:
            row = {"step": run.step, **run.lrs(), **figures}
            if validate and world.is_main:
                row.update(run.validate())
            row["elapsed_s"] = run.elapsed_s
            run.history.append(row)
        if run.step % loop.checkpoint_every == 0 and world.is_main:
            write_checkpoint(ckpt_dir, run.state(run_info), loop.keep_checkpoints)
            last_saved = run.step

    figures = run_steps(run, budget_left, on_step, loop.progress, loop.max_steps)
    run_s = time.perf_counter() - start
    run.elapsed_s = elapsed_before + run_s
    if not world.is_main:
        return {"family": family_name, "rank": world.rank, "steps": run.step, "world_size": world.size}
    if run.step != last_saved or found is None:
        write_checkpoint(ckpt_dir, run.state(run_info), loop.keep_checkpoints)
    if loop.validate_every > 0 and run.step % loop.validate_every != 0:
        # the final weights compete for "best" too; after the checkpoint, so a resumed run is unchanged;
        # one curve row per step (the step's log row, when there is one, gets the figures)
        final = {"step": run.step, **run.lrs(), **figures, **run.validate(), "elapsed_s": run.elapsed_s}
        if run.history and run.history[-1]["step"] == run.step:
            run.history[-1].update(final)
        else:
            run.history.append(final)

    use_best = loop.select == "best" and run.best is not None
    weights = run.best["weights"] if use_best else run.export_weights()
    exported_step = run.best["step"] if use_best else run.step
    extra = {
        "step": run.step,
        "exported_step": exported_step,
        "mean_n": data.mean_n,
        "point_names": list(data.clouds.point_names),
        "condition_names": list(data.clouds.condition_names),
        "settings": all_settings,
        "n_train": len(data.train_idx),
    }
    save_model(out_model, family_name, kind, family.export_config(), weights, extra)
    write_curve(out_curve, run.history)
    final = {k: v for k, v in run.history[-1].items()} if run.history else figures
    summary = {
        "family": family_name,
        "kind": kind,
        "steps": run.step,
        "resumed_from_step": resumed_from,
        "steps_this_run": run.step - resumed_from,
        "exported_step": exported_step,
        "best_validation_figure": run.best["figure"] if run.best is not None else None,
        "wall_time_s": run_s,
        "total_train_time_s": run.elapsed_s,
        "steps_per_s": (run.step - resumed_from) / run_s if run_s > 0 else None,
        "parameters": n_params,
        "device": str(device),
        "world_size": world.size,
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
        "threads": torch.get_num_threads(),
        "n_train_clouds": len(data.train_idx),
        "mean_n": data.mean_n,
        "final": final,
        "settings": all_settings,
        "model_config": family.export_config(),
    }
    _write_json(out_summary, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``train``: train one model family with the shared loop, resumable from --checkpoint-dir."""
    p = argparse.ArgumentParser(prog="train", description=main.__doc__)
    p.add_argument("--clouds", required=True, help="point-cloud HDF5; trains on split 0 (train)")
    p.add_argument("--transforms", required=True, help="fitted point transform JSON (fit-transforms)")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--family", required=True, help="model family, e.g. factorised, flow-matching, mdma-gan")
    p.add_argument("--dataset", default=None, help="CaloChallenge dataset (showers; default: clouds attrs)")
    p.add_argument("--settings", default="{}", help="JSON object of loop and family settings, or @file")
    p.add_argument("--checkpoint-dir", required=True, help="resumable state (not a workflow output)")
    p.add_argument("--out-model", required=True, help="model file (.pt, pipelines.models.store.load_model)")
    p.add_argument("--out-curve", required=True, help="training curve CSV")
    p.add_argument("--out-summary", required=True, help="summary JSON")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--code-version", default="", help="version of the training code, kept in checkpoints")
    p.add_argument(
        "--restart-on-mismatch",
        action="store_true",
        help="move checkpoints written for other settings, inputs or code aside (a dated folder in "
        "--checkpoint-dir) and train afresh, instead of failing",
    )
    args = p.parse_args(argv)
    settings = settings_dict(args.settings)
    summary = train(args.clouds, args.transforms, args.kind, args.family, settings, args.checkpoint_dir,
                    args.out_model, args.out_curve, args.out_summary, args.device, args.code_version,
                    args.restart_on_mismatch, args.dataset)  # fmt: skip
    if "exported_step" in summary:  # rank 0 (the other ranks of a data-parallel run write nothing)
        log.info("trained %d steps (%.1f s this run, exported step %d)",
                 summary["steps"], summary["wall_time_s"], summary["exported_step"])  # fmt: skip
    return 0
