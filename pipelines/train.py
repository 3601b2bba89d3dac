"""Stage ``train``: resumable WGAN-GP training of the MDMA generator and critic.

Every ``checkpoint_every`` generator steps the full training state (models, optimisers, schedulers,
grad scalers, step, epoch, position in the epoch's batch list, loss history and all RNG states) is
written atomically into ``--checkpoint-dir`` (keeping the last ``keep_checkpoints``). A run started
again with the same arguments resumes from the newest checkpoint; on CPU with a fixed seed a resumed
run ends with bit-identical weights to an uninterrupted one. The batch order is a function of
(seed, epoch) (:class:`pipelines.batching.BucketBatchSampler`), so resuming skips the batches the
epoch already consumed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import random
import re
import sys
import time
import typing
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipelines.batching import BucketBatchSampler, CloudDataset, collate_clouds
from pipelines.io.atomic import atomic_path
from pipelines.io.clouds import TRAIN, Clouds, read_clouds
from pipelines.io.errors import DataError
from pipelines.io.hashing import file_sha256
from pipelines.models.mdma import (
    KINDS,
    MDMACritic,
    MDMAGenerator,
    ModelConfig,
    build_critic,
    build_generator,
    condition_dim,
    count_parameters,
    make_condition,
    save_generator,
)
from pipelines.settings import checked_value, settings_object
from pipelines.transforms import load_transform

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CURVE_COLUMNS = (
    "step",
    "epoch",
    "lr_generator",
    "lr_critic",
    "loss_critic",
    "loss_generator",
    "wasserstein",
    "gradient_penalty",
    "mean_field",
    "elapsed_s",
)
# Settings that may change between a run and its resumption (budget and bookkeeping only).
RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "max_minutes",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "num_threads",
        "num_workers",
        "progress",
    }
)
_CKPT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of the ``train`` stage (``--settings`` JSON; unknown keys are a ValueError).

    Model: hidden/n_blocks/heads/noise_dim (generator), critic_hidden/critic_blocks/critic_norm.
    The defaults are a tiny CPU model; the dataset-2 MDMA size (~66k generator parameters) is
    hidden 44, n_blocks 3, heads 4, critic_hidden 44, critic_blocks 3.
    Optimisation: WGAN-GP (gp_lambda), n_critic critic steps per generator step, Adam(betas
    (beta1, beta2)), linear warm-up over warmup_steps then cosine decay to lr_final_factor x lr at
    schedule_steps (default: max_steps); mean-field matching of the critic's final token with
    weight mf_weight during the first mf_steps generator steps. max_tokens: padded points per batch.
    Budget: max_steps and/or max_minutes (wall time summed over resumed runs).
    amp: "auto" (bf16 on CUDA if supported, else fp16), "bf16", "fp16" or "off"; CPU always runs fp32.
    num_threads: torch CPU threads (None: env PIPELINES_NUM_THREADS, else torch's default).
    """

    seed: int = 0
    hidden: int = 16
    n_blocks: int = 2
    heads: int = 2
    noise_dim: int = 4
    critic_hidden: int = 16
    critic_blocks: int = 2
    critic_norm: str = "weight"
    max_tokens: int = 20_000
    n_critic: int = 3
    lr_generator: float = 1e-4
    lr_critic: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.9
    warmup_steps: int = 100
    schedule_steps: int | None = None
    lr_final_factor: float = 0.01
    gp_lambda: float = 10.0
    mf_weight: float = 1.0
    mf_steps: int = 50_000
    max_steps: int | None = 1000
    max_minutes: float | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    amp: str = "auto"
    num_threads: int | None = None
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            checked_value(f"train setting {f.name}", getattr(self, f.name), hints[f.name])
        positive = (
            "hidden",
            "n_blocks",
            "heads",
            "noise_dim",
            "critic_hidden",
            "critic_blocks",
            "max_tokens",
            "n_critic",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
            "schedule_steps",
            "max_steps",
            "num_threads",
        )
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"settings: {name} must be >= 1, got {value}")
        for name in ("lr_generator", "lr_critic", "max_minutes"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"settings: {name} must be a positive number, got {value}")
        for name in ("warmup_steps", "mf_steps", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"settings: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("gp_lambda", "mf_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"settings: {name} must be a non-negative number, got {value}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"settings: beta1, beta2 must lie in [0, 1), got {self.beta1}, {self.beta2}")
        if not (0 <= self.lr_final_factor <= 1):
            raise ValueError(f"settings: lr_final_factor must lie in [0, 1], got {self.lr_final_factor}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"settings: amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.max_steps is None and self.max_minutes is None:
            raise ValueError("settings: set max_steps and/or max_minutes (the training budget)")
        if self.max_steps is None and self.schedule_steps is None:
            raise ValueError("settings: schedule_steps is needed when max_steps is not set (cosine horizon)")
        # the architecture is checked by ModelConfig (divisibility by heads, norm names)
        self.model_config("showers", 4, 1.0)

    @classmethod
    def from_json(cls, text: str | None) -> TrainSettings:
        """Parse the ``--settings`` JSON object; unknown keys or wrong types are a ValueError."""
        return cls(**settings_object(text, cls, "train"))

    @property
    def total_schedule_steps(self) -> int:
        return int(self.schedule_steps if self.schedule_steps is not None else self.max_steps)

    def model_config(self, kind: str, point_dim: int, mean_n: float) -> ModelConfig:
        """The :class:`ModelConfig` these settings describe for data of ``kind``."""
        return ModelConfig(
            kind=kind,
            point_dim=point_dim,
            cond_dim=condition_dim(kind),
            hidden=self.hidden,
            n_blocks=self.n_blocks,
            heads=self.heads,
            noise_dim=self.noise_dim,
            critic_hidden=self.critic_hidden,
            critic_blocks=self.critic_blocks,
            critic_norm=self.critic_norm,
            mean_n=mean_n,
        )


# ------------------------------------------------------------------------------------------- device


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'auto' (CUDA only when a kernel really runs there, e.g. not under a fake GPU)."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    try:
        usable = torch.cuda.is_available() and torch.cuda.device_count() > 0
        if usable:
            torch.zeros(1, device="cuda").add_(1).item()
    except (RuntimeError, AssertionError) as err:
        log.warning("CUDA is not usable (%s)", err)
        usable = False
    if usable:
        return torch.device("cuda")
    if name == "cuda":
        raise ValueError("--device cuda requested, but CUDA is not available")
    log.info(
        "no usable CUDA device (CUDA_VISIBLE_DEVICES=%s): training on CPU",
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    return torch.device("cpu")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``amp`` on ``device`` (None = full fp32; always None on CPU)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def set_threads(settings: TrainSettings) -> None:
    """torch.set_num_threads from settings.num_threads or the PIPELINES_NUM_THREADS env var."""
    n = settings.num_threads
    if n is None and os.environ.get("PIPELINES_NUM_THREADS"):
        n = int(os.environ["PIPELINES_NUM_THREADS"])
    if n is not None:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- data


class BatchStream:
    """Endless stream of padded training batches; position (epoch, batch index) restorable exactly."""

    def __init__(
        self,
        dataset: CloudDataset,
        sampler: BucketBatchSampler,
        num_workers: int = 0,
        epoch: int = 0,
        position: int = 0,
    ) -> None:
        self.dataset, self.sampler, self.num_workers = dataset, sampler, num_workers
        self.epoch, self.position = epoch, position
        self._iter: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        remaining = [list(map(int, b)) for b in self.sampler.batches()[self.position :]]
        if self.num_workers > 0:
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=remaining, collate_fn=collate_clouds, num_workers=self.num_workers
            )
            self._iter = iter(loader)
        else:
            self._iter = (collate_clouds(self._items(b)) for b in remaining)

    def _items(self, batch: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        many = getattr(self.dataset, "__getitems__", None)  # vectorised path when the dataset has one
        return many(batch) if many is not None else [self.dataset[i] for i in batch]

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next batch (x (B, n, d), mask (B, n) True = padding, raw cond (B, c + 1) with n last)."""
        for _ in range(2):
            if self._iter is None:
                self._start_epoch()
            batch = next(self._iter, None)
            if batch is not None:
                self.position += 1
                return batch
            self._iter, self.epoch, self.position = None, self.epoch + 1, 0
        raise DataError("the training split yields no batches")


# ------------------------------------------------------------------------------------------ schedule


def lr_factor(step: int, warmup: int, total: int, final: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``final`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------- RNG snapshots


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain lists (loadable with torch.load(weights_only=True))."""
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002 (the legacy global state)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": [int(v) for v in py_internal],
            "gauss_next": py_gauss,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    key = npy["key"].numpy().astype(np.uint32)
    legacy = ("MT19937", key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


# ------------------------------------------------------------------------------------------ trainer


@dataclasses.dataclass
class Trainer:
    """Models, optimisers and the training-state counters of one run."""

    settings: TrainSettings
    config: ModelConfig
    device: torch.device
    generator: MDMAGenerator
    critic: MDMACritic
    opt_g: torch.optim.Adam
    opt_c: torch.optim.Adam
    sched_g: torch.optim.lr_scheduler.LambdaLR
    sched_c: torch.optim.lr_scheduler.LambdaLR
    scaler_g: torch.amp.GradScaler
    scaler_c: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    step: int = 0
    elapsed_s: float = 0.0
    history: list[list[float]] = dataclasses.field(default_factory=list)

    @classmethod
    def create(cls, settings: TrainSettings, config: ModelConfig, device: torch.device) -> Trainer:
        torch.manual_seed(settings.seed)
        np.random.seed(settings.seed)  # noqa: NPY002 (seeds third-party code using the global state)
        random.seed(settings.seed)
        generator = build_generator(config).to(device)
        critic = build_critic(config).to(device)
        betas = (settings.beta1, settings.beta2)
        opt_g = torch.optim.Adam(generator.parameters(), lr=settings.lr_generator, betas=betas)
        opt_c = torch.optim.Adam(critic.parameters(), lr=settings.lr_critic, betas=betas)

        def factor(step: int) -> float:
            return lr_factor(
                step, settings.warmup_steps, settings.total_schedule_steps, settings.lr_final_factor
            )

        amp_dtype = autocast_dtype(settings.amp, device)
        use_scaler = amp_dtype == torch.float16
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_g, opt_c)]
        scalers = [torch.amp.GradScaler("cuda", enabled=use_scaler) for _ in range(2)]
        return cls(
            settings, config, device, generator, critic, opt_g, opt_c, *schedulers, *scalers, amp_dtype
        )

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _inputs(
        self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, mask, raw = batch
        lengths = (~mask).sum(dim=1)
        cond = make_condition(raw[:, :-1], lengths, self.config.kind, self.config.mean_n)
        return (
            x.to(self.device, non_blocking=True),
            mask.to(self.device, non_blocking=True),
            cond.to(self.device, non_blocking=True),
        )

    def _noise(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.randn(*mask.shape, self.config.noise_dim, device=self.device)

    def critic_step(self, x: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor) -> dict[str, float]:
        """One WGAN-GP critic update; returns its losses."""
        s = self.settings
        self.critic.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fake = self.generator(self._noise(mask), cond, mask)
        fake = fake.float()
        eps = torch.rand(x.shape[0], 1, 1, device=self.device)
        mixed = (eps * x + (1.0 - eps) * fake).requires_grad_(True)
        with self._autocast():
            d_real = self.critic(x, cond, mask).float()
            d_fake = self.critic(fake, cond, mask).float()
            d_mixed = self.critic(mixed, cond, mask).float()
        (grad,) = torch.autograd.grad(self.scaler_c.scale(d_mixed.sum()), mixed, create_graph=True)
        grad = grad.float() / self.scaler_c.get_scale()
        gp = ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
        wasserstein = d_real.mean() - d_fake.mean()
        loss = -wasserstein + s.gp_lambda * gp
        self.opt_c.zero_grad(set_to_none=True)
        self.scaler_c.scale(loss).backward()
        self.scaler_c.step(self.opt_c)
        self.scaler_c.update()
        return {"loss_critic": loss.item(), "wasserstein": wasserstein.item(), "gradient_penalty": gp.item()}

    def generator_step(self, x: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor) -> dict[str, float]:
        """One generator update (adversarial loss + mean-field matching early on); returns its losses."""
        s = self.settings
        self.critic.requires_grad_(False)
        use_mf = s.mf_weight > 0 and self.step < s.mf_steps
        with self._autocast():
            fake = self.generator(self._noise(mask), cond, mask)
            d_fake, token_fake = self.critic.forward_with_features(fake, cond, mask)
            loss = -d_fake.float().mean()
            mean_field = torch.zeros((), device=self.device)
            if use_mf:
                with torch.no_grad():
                    token_real = self.critic.features(x, cond, mask).float()
                mean_field = ((token_fake.float().mean(0) - token_real.mean(0)) ** 2).mean()
                loss = loss + s.mf_weight * mean_field
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.critic.requires_grad_(True)
        return {"loss_generator": loss.item(), "mean_field": mean_field.item()}

    def train_step(self, stream: BatchStream) -> tuple[dict[str, float], int]:
        """n_critic critic steps then one generator step; returns (losses, real clouds used)."""
        critic_losses: list[dict[str, float]] = []
        n_clouds = 0
        for _ in range(self.settings.n_critic):
            x, mask, cond = self._inputs(stream.next())
            n_clouds += x.shape[0]
            critic_losses.append(self.critic_step(x, mask, cond))
        losses = {k: float(np.mean([c[k] for c in critic_losses])) for k in critic_losses[0]}
        losses.update(self.generator_step(x, mask, cond))
        self.sched_g.step()
        self.sched_c.step()
        self.step += 1
        return losses, n_clouds

    # -------------------------------------------------------------------------------- checkpoints

    def state(self, stream: BatchStream, data_fingerprint: dict[str, Any]) -> dict[str, Any]:
        return {
            "format_version": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": stream.epoch,
            "position": stream.position,
            "elapsed_s": self.elapsed_s,
            "settings": dataclasses.asdict(self.settings),
            "config": dataclasses.asdict(self.config),
            "data": data_fingerprint,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_c": self.opt_c.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_c": self.sched_c.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_c": self.scaler_c.state_dict(),
            "history": [list(row) for row in self.history],
            "rng": rng_state(),
        }

    def load_state(self, state: dict[str, Any], stream: BatchStream) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_c.load_state_dict(state["sched_c"])
        if state["scaler_g"]:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_c.load_state_dict(state["scaler_c"])
        self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])
        self.history = [list(row) for row in state["history"]]
        stream.epoch, stream.position, stream._iter = int(state["epoch"]), int(state["position"]), None
        set_rng_state(state["rng"])


def checkpoint_paths(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _CKPT_RE.match(p.name))


def write_checkpoint(directory: Path, state: dict[str, Any], keep: int) -> Path:
    """Atomically write ``state`` as ckpt-<step>.pt and delete all but the newest ``keep``."""
    path = directory / f"ckpt-{state['step']:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in checkpoint_paths(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint (older ones are tried if the newest is unreadable)."""
    for stale in directory.glob(".ckpt-*.part") if directory.is_dir() else []:
        stale.unlink(missing_ok=True)  # left by a job killed while writing
    for path in reversed(checkpoint_paths(directory)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged file can fail inside the unpickler in many ways
            log.warning("skipping unreadable checkpoint %s: %s", path, err)
            continue
        if isinstance(state, dict) and state.get("format_version") == CHECKPOINT_FORMAT:
            return path, state
        log.warning("skipping %s: not a checkpoint of format %d", path, CHECKPOINT_FORMAT)
    return None


def resume_mismatch(
    state: dict[str, Any],
    settings: TrainSettings,
    config: ModelConfig,
    fingerprint: dict[str, Any],
) -> str | None:
    """What differs between a checkpoint and this run (settings, model, data, code), or None."""
    old = {k: v for k, v in state["settings"].items() if k not in RESUMABLE_CHANGES}
    new = {k: v for k, v in dataclasses.asdict(settings).items() if k not in RESUMABLE_CHANGES}
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        return f"settings {diff}"
    if state["config"] != dataclasses.asdict(config):
        return "model config"
    old_data = state["data"]
    changed = sorted(k for k in set(old_data) | set(fingerprint) if old_data.get(k) != fingerprint.get(k))
    return f"inputs {changed}" if changed else None


def check_resumable(
    path: Path,
    state: dict[str, Any],
    settings: TrainSettings,
    config: ModelConfig,
    fingerprint: dict[str, Any],
) -> None:
    """ValueError if the checkpoint was made with other settings, model, data or code."""
    what = resume_mismatch(state, settings, config, fingerprint)
    if what:
        raise ValueError(
            f"checkpoint {path} was written with different {what}; "
            f"use a fresh --checkpoint-dir, restore the original settings or pass --restart-on-mismatch"
        )


# ---------------------------------------------------------------------------------------------- stage


def _load_data(clouds_path: str, transforms_path: str, kind: str) -> tuple[Clouds, Any, np.ndarray, float]:
    clouds = read_clouds(clouds_path)
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
    return clouds, transform, train, mean_n


def _write_curve(path: str, history: list[list[float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CURVE_COLUMNS)
        for row in history:
            writer.writerow([int(row[0]), int(row[1]), *(repr(float(v)) for v in row[2:])])


def _write_json(path: str, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")


def train(
    clouds_path: str,
    transforms_path: str,
    kind: str,
    settings: TrainSettings,
    checkpoint_dir: str,
    out_model: str,
    out_curve: str,
    out_summary: str,
    device_name: str = "auto",
    code_version: str = "",
    restart_on_mismatch: bool = False,
) -> dict[str, Any]:
    """Train (or resume) and write the generator, the loss curve and the summary; returns the summary.

    A checkpoint is resumed only if it was written for the same settings, model, input files
    (content hashes) and ``code_version``; otherwise a ValueError, or, with ``restart_on_mismatch``
    (what the workflow passes), the stale checkpoints are removed and training starts afresh.
    """
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {KINDS}, got {kind!r}")
    set_threads(settings)
    device = resolve_device(device_name)
    clouds, transform, train_idx, mean_n = _load_data(clouds_path, transforms_path, kind)
    config = settings.model_config(kind, len(clouds.point_names), mean_n)
    fingerprint = {
        "n_train": len(train_idx),
        "n_points": int(clouds.lengths[train_idx].sum()),
        "mean_n": mean_n,
        "clouds_sha256": file_sha256(clouds_path),
        "transforms_sha256": file_sha256(transforms_path),
        "code_version": code_version,
    }

    dataset = CloudDataset(clouds, transform, indices=train_idx, seed=settings.seed)
    sampler = BucketBatchSampler(
        dataset.lengths, max_tokens=settings.max_tokens, shuffle=True, seed=settings.seed
    )
    stream = BatchStream(dataset, sampler, settings.num_workers)
    trainer = Trainer.create(settings, config, device)

    ckpt_dir = Path(checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    found = latest_checkpoint(ckpt_dir)
    if found is not None and restart_on_mismatch:
        what = resume_mismatch(found[1], settings, config, fingerprint)
        if what:
            log.warning("checkpoints in %s were written with different %s: starting afresh", ckpt_dir, what)
            for stale in checkpoint_paths(ckpt_dir):
                stale.unlink()
            found = None
    resumed_from = 0
    if found is not None:
        path, state = found
        check_resumable(path, state, settings, config, fingerprint)
        trainer.load_state(state, stream)
        resumed_from = trainer.step
        log.info(
            "resuming from %s (step %d, epoch %d, batch %d)",
            path,
            trainer.step,
            stream.epoch,
            stream.position,
        )
    n_gen, n_critic = count_parameters(trainer.generator), count_parameters(trainer.critic)
    log.info(
        "training %s MDMA on %s (amp %s): generator %d, critic %d parameters, %d training clouds",
        kind,
        device,
        trainer.amp_dtype,
        n_gen,
        n_critic,
        len(train_idx),
    )

    def budget_left() -> bool:
        if settings.max_steps is not None and trainer.step >= settings.max_steps:
            return False
        spent = trainer.elapsed_s + (time.perf_counter() - start)
        return settings.max_minutes is None or spent < 60.0 * settings.max_minutes

    start = time.perf_counter()
    elapsed_before = trainer.elapsed_s
    clouds_seen, last_saved, losses = 0, trainer.step, {}
    bar = tqdm(
        total=settings.max_steps,
        initial=trainer.step,
        desc="train",
        unit="step",
        file=sys.stderr,
        disable=not settings.progress,
        dynamic_ncols=True,
    )
    while budget_left():
        losses, n_clouds = trainer.train_step(stream)
        clouds_seen += n_clouds
        bar.update(1)
        if trainer.step % settings.log_every == 0:
            trainer.elapsed_s = elapsed_before + time.perf_counter() - start
            lrs = [trainer.sched_g.get_last_lr()[0], trainer.sched_c.get_last_lr()[0]]
            values = [losses[c] for c in CURVE_COLUMNS[4:9]]
            trainer.history.append([trainer.step, stream.epoch, *lrs, *values, trainer.elapsed_s])
            bar.set_postfix(W=f"{losses['wasserstein']:.3g}", G=f"{losses['loss_generator']:.3g}")
        if trainer.step % settings.checkpoint_every == 0:
            trainer.elapsed_s = elapsed_before + time.perf_counter() - start
            write_checkpoint(ckpt_dir, trainer.state(stream, fingerprint), settings.keep_checkpoints)
            last_saved = trainer.step
    bar.close()
    run_s = time.perf_counter() - start
    trainer.elapsed_s = elapsed_before + run_s
    if trainer.step != last_saved or found is None:
        write_checkpoint(ckpt_dir, trainer.state(stream, fingerprint), settings.keep_checkpoints)

    extra = {
        "kind": kind,
        "step": trainer.step,
        "epoch": stream.epoch,
        "mean_n": mean_n,
        "point_names": list(clouds.point_names),
        "condition_names": list(clouds.condition_names),
        "settings": dataclasses.asdict(settings),
        "n_train": len(train_idx),
    }
    save_generator(out_model, trainer.generator.cpu(), config, extra)
    _write_curve(out_curve, trainer.history)
    final = dict(zip(CURVE_COLUMNS, trainer.history[-1], strict=True)) if trainer.history else losses
    summary = {
        "kind": kind,
        "steps": trainer.step,
        "epochs_started": stream.epoch + 1,
        "resumed_from_step": resumed_from,
        "steps_this_run": trainer.step - resumed_from,
        "wall_time_s": run_s,
        "total_train_time_s": trainer.elapsed_s,
        "showers_per_s": clouds_seen / run_s if run_s > 0 and clouds_seen else None,
        "generator_parameters": n_gen,
        "critic_parameters": n_critic,
        "device": str(device),
        "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off",
        "n_train_clouds": len(train_idx),
        "mean_n": mean_n,
        "final_losses": final,
        "settings": dataclasses.asdict(settings),
        "model_config": dataclasses.asdict(config),
    }
    _write_json(out_summary, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``train``: WGAN-GP training of MDMA, resumable from --checkpoint-dir."""
    p = argparse.ArgumentParser(prog="train", description=main.__doc__)
    p.add_argument("--clouds", required=True, help="point-cloud HDF5; trains on split 0 (train)")
    p.add_argument("--transforms", required=True, help="fitted point transform JSON (fit-transforms)")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--settings", default="{}", help="JSON object of TrainSettings")
    p.add_argument("--checkpoint-dir", required=True, help="resumable state (not a workflow output)")
    p.add_argument("--out-model", required=True, help="generator file (.pt, load_generator)")
    p.add_argument("--out-curve", required=True, help="loss curve CSV")
    p.add_argument("--out-summary", required=True, help="summary JSON")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--code-version", default="", help="version of the training code, kept in checkpoints")
    p.add_argument(
        "--restart-on-mismatch",
        action="store_true",
        help="discard checkpoints written for other settings, inputs or code instead of failing",
    )
    args = p.parse_args(argv)
    settings = TrainSettings.from_json(args.settings)
    summary = train(
        args.clouds,
        args.transforms,
        args.kind,
        settings,
        args.checkpoint_dir,
        args.out_model,
        args.out_curve,
        args.out_summary,
        args.device,
        args.code_version,
        args.restart_on_mismatch,
    )
    log.info(
        "trained %d steps (%.1f s this run, %s showers/s)",
        summary["steps"],
        summary["wall_time_s"],
        summary["showers_per_s"],
    )
    return 0
