"""Settings of the training loop and the split of one flat settings dict into loop and family parts.

Importable without torch, so that the workflow checks every model's settings when it starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any

from pipelines.models.settings import FAMILY_SPECS, family_spec, make_settings
from pipelines.settings import checked_fields, checked_value

#: mixed-precision modes (:func:`pipelines.device.autocast_dtype`)
AMP_MODES = ("auto", "bf16", "fp16", "off")

SELECTIONS = ("best", "last")


@dataclass(frozen=True)
class LoopSettings:
    """Settings of the training loop (the family's own hyperparameters are in its ``Settings``).

    Budget: max_steps and/or max_minutes (wall time summed over resumed runs).
    Schedule: linear warm-up over warmup_steps, then cosine decay to lr_final_factor x lr at
    schedule_steps (default: max_steps). grad_clip: max gradient norm per update (None: off).
    ema_decay: EMA of the weights that the exported model uses (0: the raw weights).
    validate_every: steps between validation figures on the validation split (0: never);
    validate_n: validation clouds used; select: export the "best" validated model or the "last".
    amp: "auto" (bf16 on CUDA if supported, else fp16), "bf16", "fp16" or "off"; CPU runs fp32.
    num_threads: torch CPU threads (None: env PIPELINES_NUM_THREADS, else torch's default).
    seed: seed of the initialisation, minibatches and validation draws. checkpoint_every,
    keep_checkpoints: steps between resumable checkpoints and how many are kept. log_every: steps
    between rows of the training curve. progress: a progress bar on stderr.
    gpus: data-parallel training processes (one per GPU; gloo processes on CPU): the workflow launches
    that many with torchrun and asks the job for that many GPUs; each works on 1/gpus of every batch.
    """

    seed: int = 0
    max_steps: int | None = 1000
    max_minutes: float | None = None
    warmup_steps: int = 100
    schedule_steps: int | None = None
    lr_final_factor: float = 0.01
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    validate_every: int = 0
    validate_n: int = 500
    select: str = "best"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    amp: str = "auto"
    num_threads: int | None = None
    progress: bool = True
    gpus: int = 1

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            checked_value(f"train setting {f.name}", getattr(self, f.name), hints[f.name])
        for name in ("max_steps", "schedule_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                     "num_threads", "validate_n", "gpus"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"settings: {name} must be >= 1, got {value}")
        for name in ("seed", "warmup_steps", "validate_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"settings: {name} must be >= 0, got {getattr(self, name)}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ValueError(f"settings: max_minutes must be a positive number, got {self.max_minutes}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"settings: grad_clip must be a positive number or null, got {self.grad_clip}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"settings: ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= self.lr_final_factor <= 1:
            raise ValueError(f"settings: lr_final_factor must lie in [0, 1], got {self.lr_final_factor}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"settings: amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.select not in SELECTIONS:
            raise ValueError(f"settings: select must be one of {SELECTIONS}, got {self.select!r}")
        if self.max_steps is None and self.max_minutes is None:
            raise ValueError("settings: set max_steps and/or max_minutes (the training budget)")
        if self.max_steps is None and self.schedule_steps is None:
            raise ValueError("settings: schedule_steps is needed when max_steps is not set (cosine horizon)")

    @property
    def total_schedule_steps(self) -> int:
        return int(self.schedule_steps if self.schedule_steps is not None else self.max_steps)


#: Loop settings that may change between a run and its resumption (budget and bookkeeping only).
RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "max_minutes",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "num_threads",
        "progress",
        "gpus",  # the global batch does not depend on it
    }
)
LOOP_KEYS = frozenset(f.name for f in dataclasses.fields(LoopSettings))


def split_settings(family: str, values: dict[str, Any]) -> tuple[LoopSettings, Any]:
    """(LoopSettings, the family's Settings) from one flat dict; unknown keys are a ValueError (naming
    the closest known key of the loop or the family: "did you mean ...")."""
    known = LOOP_KEYS | {f.name for f in dataclasses.fields(family_spec(family).settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        loop_keys, own_keys = ", ".join(sorted(LOOP_KEYS)), ", ".join(sorted(known - LOOP_KEYS))
        raise ValueError(
            f"family {family!r} takes no settings {unknown}{hint} "
            f"(loop settings: {loop_keys}; {family} settings: {own_keys})"
        )
    loop = LoopSettings(
        **checked_fields(LoopSettings, {k: v for k, v in values.items() if k in LOOP_KEYS}, "train")
    )
    own = make_settings(family, {k: v for k, v in values.items() if k not in LOOP_KEYS})
    if loop.gpus > 1 and not family_spec(family).data_parallel:
        able = sorted(name for name, spec in FAMILY_SPECS.items() if spec.data_parallel)
        raise ValueError(
            f"family {family!r} does not train data-parallel (gpus {loop.gpus}); families that do: {able}"
        )
    return loop, own
