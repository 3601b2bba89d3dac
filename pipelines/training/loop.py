"""The training loop shared by every model family.

The loop owns what is common to all families: device and mixed precision, one AdamW optimiser per
:class:`~pipelines.models.family.ParamGroup` with linear warm-up and cosine decay, gradient-norm
clipping, an exponential moving average (EMA) of the weights, periodic validation with selection of
the best model, resumable checkpoints, the progress bar and the training curve. The family supplies
its modules, its data stream and the losses of one step (:mod:`pipelines.models.family`).

Every ``checkpoint_every`` steps the whole state (modules, optimisers, schedulers, grad scalers, EMA,
best model so far, step, the family's data-stream position, curve and all RNG states) is written
atomically. A run started again with the same arguments resumes from the newest checkpoint; on CPU
with a fixed seed a resumed run ends with bit-identical weights to an uninterrupted one.

Data-parallel runs (world size > 1, :mod:`pipelines.training.distributed`) sum the gradients of every
update over the ranks before clipping, and the step's figures (each rank's share) over the ranks.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.device import autocast_dtype
from pipelines.models.family import Family, ParamGroup
from pipelines.progress import progress as progress_bar
from pipelines.training import distributed
from pipelines.training.checkpoint import CHECKPOINT_FORMAT, rng_state, set_rng_state
from pipelines.training.distributed import World
from pipelines.training.settings import LoopSettings

log = logging.getLogger(__name__)


def lr_factor(step: int, warmup: int, total: int, final: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``final`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a set of parameters (and a copy of their buffers)."""

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        self.modules, self.decay, self.updates = modules, decay, 0
        self.shadow = {name: copy.deepcopy(m.state_dict()) for name, m in modules.items()}

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- d shadow + (1 - d) weights, with d ramped up as min(decay, (1 + k) / (10 + k))."""
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for name, module in self.modules.items():
            shadow = self.shadow[name]
            for key, value in module.state_dict().items():
                if value.dtype.is_floating_point:
                    shadow[key].mul_(d).add_(value.detach(), alpha=1.0 - d)
                else:
                    shadow[key].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for name, module_state in state["shadow"].items():
            for key, value in module_state.items():
                self.shadow[name][key].copy_(value)


class Run:
    """A family with its optimisers, schedules, EMA and counters: the state of one training run."""

    def __init__(
        self, family: Family, loop: LoopSettings, device: torch.device, world: World | None = None
    ) -> None:
        self.family, self.loop, self.device = family, loop, device
        self.world = world or World()
        self.rank, self.world_size = self.world.rank, self.world.size
        self.modules = family.modules()
        self.groups: dict[str, ParamGroup] = {g.name: g for g in family.param_groups()}
        self._check_groups()
        self.optimisers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        for g in self.groups.values():
            params = [p for m in g.modules for p in self.modules[m].parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=g.lr, betas=g.betas, eps=g.eps, weight_decay=g.weight_decay)
            self.optimisers[g.name] = opt
            self.schedulers[g.name] = torch.optim.lr_scheduler.LambdaLR(opt, self._factor)
        self.amp_dtype = autocast_dtype(loop.amp, device)
        use_scaler = self.amp_dtype == torch.float16
        self.scalers = {name: torch.amp.GradScaler("cuda", enabled=use_scaler) for name in self.groups}
        ema_modules = {m: self.modules[m] for g in self.groups.values() if g.ema for m in g.modules}
        self.ema = EMA(ema_modules, loop.ema_decay) if loop.ema_decay > 0 and ema_modules else None
        self.step, self.elapsed_s = 0, 0.0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] | None = None  # {"step", "figure", "weights"}

    def _check_groups(self) -> None:
        named = [m for g in self.groups.values() for m in g.modules]
        if sorted(named) != sorted(self.modules) or len(set(named)) != len(named):
            raise ValueError(
                f"family {self.family.name!r}: every module must be in exactly one parameter group "
                f"(modules {sorted(self.modules)}, groups {named})"
            )

    def _factor(self, step: int) -> float:
        s = self.loop
        return lr_factor(step, s.warmup_steps, s.total_schedule_steps, s.lr_final_factor)

    # ------------------------------------------------------------------- what families call (ctx)

    def autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def optimise(self, group: str, loss: torch.Tensor) -> None:
        """zero_grad, (scaled) backward, gradient clipping and the optimiser step of ``group``."""
        opt, scaler = self.optimisers[group], self.scalers[group]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.world_size > 1:
            params = [p for pg in opt.param_groups for p in pg["params"]]
            distributed.all_reduce_grads(params, self.device)
        if self.loop.grad_clip is not None:
            scaler.unscale_(opt)
            params = [p for pg in opt.param_groups for p in pg["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.loop.grad_clip)
        scaler.step(opt)
        scaler.update()

    # ------------------------------------------------------------------------------- one step

    def train_step(self) -> dict[str, float]:
        for m in self.modules.values():
            m.train()
        figures = self.family.train_step(self)
        if self.world_size > 1:
            figures = distributed.sum_figures(figures, self.device)
        with warnings.catch_warnings():
            # the schedule follows the loop's step, also for a group that has not stepped yet (a GAN's
            # generator during the critic warm-up), which torch would warn about
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
            for sched in self.schedulers.values():
                sched.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update()
        return figures

    def lrs(self) -> dict[str, float]:
        return {f"lr_{name}": sched.get_last_lr()[0] for name, sched in self.schedulers.items()}

    # ------------------------------------------------------------------------ weights to export

    def export_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """Module weights for sampling: the EMA where kept, else the raw weights (on CPU)."""
        out = {}
        for name, module in self.modules.items():
            source = (
                self.ema.shadow[name]
                if self.ema is not None and name in self.ema.shadow
                else module.state_dict()
            )
            out[name] = {k: v.detach().cpu().clone() for k, v in source.items()}
        return out

    @contextmanager
    def exported_weights(self) -> Iterator[None]:
        """Temporarily load the exported weights into the modules, in eval mode."""
        saved = {name: copy.deepcopy(m.state_dict()) for name, m in self.modules.items()}
        for name, weights in self.export_weights().items():
            self.modules[name].load_state_dict(weights)
            self.modules[name].eval()
        try:
            yield
        finally:
            for name, m in self.modules.items():
                m.load_state_dict(saved[name])
                m.train()

    def validate(self) -> dict[str, float]:
        """Validation figures of the exported weights; keeps the best by ``figure``."""
        seed = self.loop.seed + 7919 * (self.step + 1)
        with self.exported_weights(), torch.no_grad():
            # validation draws its own randomness; training continues with the same RNG streams
            state = rng_state()
            try:
                figures = self.family.validate(self.loop.validate_n, seed)
            finally:
                set_rng_state(state)
        figure = figures.get("figure")
        if (
            figure is not None
            and math.isfinite(figure)
            and (self.best is None or figure < self.best["figure"])
        ):
            self.best = {"step": self.step, "figure": float(figure), "weights": self.export_weights()}
        return {f"val_{k}": float(v) for k, v in figures.items()}

    # ----------------------------------------------------------------------------- checkpoints

    def state(self, run_info: dict[str, Any]) -> dict[str, Any]:
        return {
            "format_version": CHECKPOINT_FORMAT,
            **run_info,
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "modules": {name: m.state_dict() for name, m in self.modules.items()},
            "optimisers": {name: o.state_dict() for name, o in self.optimisers.items()},
            "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
            "scalers": {name: s.state_dict() for name, s in self.scalers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "best": self.best or {},
            "family_state": self.family.state_dict(),
            "history": [dict(row) for row in self.history],
            "rng": rng_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for name, m in self.modules.items():
            m.load_state_dict(state["modules"][name])
        for name, o in self.optimisers.items():
            o.load_state_dict(state["optimisers"][name])
        for name, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][name])
        for name, s in self.scalers.items():
            if state["scalers"][name]:
                s.load_state_dict(state["scalers"][name])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.best = dict(state["best"]) or None
        self.family.load_state_dict(state["family_state"])
        self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])
        self.history = [dict(row) for row in state["history"]]
        set_rng_state(state["rng"])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global state and Python's random (third-party code may use them)."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)


def shown_figures(
    figures: dict[str, float], history: list[dict[str, Any]], n_losses: int = 3
) -> dict[str, str]:
    """What the progress shows: the step's first ``n_losses`` figures and the latest validation figures."""
    shown = {k: f"{v:.3g}" for k, v in list(figures.items())[:n_losses]}
    validated = next((row for row in reversed(history) if any(k.startswith("val_") for k in row)), {})
    if validated:
        shown["validated_at"] = str(validated["step"])
        shown |= {k: f"{v:.3g}" for k, v in validated.items() if k.startswith("val_")}
    return shown


def run_steps(
    run: Run, budget_left: Any, on_step: Any, progress: bool, total: int | None
) -> dict[str, float]:
    """Train while ``budget_left()``; after every step call ``on_step(figures)``; returns the last figures."""
    figures: dict[str, float] = {}
    bar = progress_bar(total=total, initial=run.step, desc="train", unit="step", disable=not progress,
                       dynamic_ncols=True)  # fmt: skip
    while budget_left():
        figures = run.train_step()
        on_step(figures)
        if run.step % run.loop.log_every == 0:
            bar.set_postfix(shown_figures(figures, run.history))
        bar.update(1)
    bar.close()
    return figures
