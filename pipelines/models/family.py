"""Model families: what one generative model supplies to the shared training loop and to sampling.

A family (e.g. ``factorised``, ``flow-matching``, ``mdma-gan``) is a subclass of :class:`Family`
registered with :func:`register_family`. It owns its modules, its data stream and its loss; the
loop (:mod:`pipelines.training.loop`) owns the device, mixed precision, optimisers, learning-rate
schedule, gradient clipping, EMA of weights, checkpoints, validation and the training curve.

Training contract:
- ``__init__(settings, data, device)`` builds the modules (seeded by the loop before the call).
- :meth:`Family.param_groups` names each optimiser: its modules, learning rate, betas, weight decay
  and whether the exported model uses an EMA of its weights.
- :meth:`Family.train_step` draws its own batch(es) and calls ``ctx.optimise(group, loss)`` once per
  update (a GAN calls it for the critic several times, then for the generator); it returns the
  scalar figures of the step for the training curve.
- :meth:`Family.state_dict` / :meth:`Family.load_state_dict` hold the data-stream position (the
  modules, optimisers and RNG states are checkpointed by the loop).
- :meth:`Family.validate` generates a small sample for the validation split and returns figures,
  lower is better for ``"figure"`` (the loop keeps the best model by it).
- Data-parallel training (``data_parallel = True``): every rank draws the same global batch, works on
  its rows (:func:`rows_of`) and scales its mean loss by its share (:func:`global_mean`), so that the
  gradients summed over the ranks are those of the global batch; the loop does the all-reduce. The
  figures it returns are its shares too: the loop sums them over the ranks.
- :meth:`Family.export_config` is a JSON-able dict from which :meth:`Family.build_sampler`
  rebuilds the modules for sampling (no pickled objects).

Sampling contract (:meth:`Family.build_sampler`) returns one of
- a :class:`PointSampler`: an ``nn.Module`` mapping (noise (B, N, noise_dim), model condition
  (B, c), mask (B, N)) to transformed points; the sample stage draws n from the multiplicity model,
  applies the inverse point transform and voxelises (GAN: one forward pass; flow matching: an ODE
  solve from the noise);
- a :class:`ShowerSampler`: ``sample_showers(energies, torch_gen)`` -> voxelised showers directly
  (the factorised family draws its own hit counts and places every point in a free voxel).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from pipelines.batching import shard_rows
from pipelines.jet_types import TYPE_PREFIX
from pipelines.models.settings import FAMILY_SPECS, FamilySpec, make_settings
from pipelines.training.distributed import shard_weight

FAMILIES: dict[str, type[Family]] = {}


@dataclass
class TrainingData:
    """What a family trains on: the ragged clouds, the fitted transform and the split indices.

    ``clouds.points`` are raw (physical) points: showers (E [MeV], layer, alpha, r) with integer bin
    coordinates, jets (eta_rel, phi_rel, pt_rel). ``clouds.conditions[:, 0]`` is E_inc [MeV] for
    showers. ``geometry`` is the shower geometry (None for jets).
    """

    kind: str
    clouds: Any  # pipelines.io.clouds.Clouds
    transform: Any  # fitted pipelines.transforms.PointTransform
    train_idx: np.ndarray
    val_idx: np.ndarray
    mean_n: float
    seed: int
    geometry: Any = None  # pipelines.geometry.Geometry for showers


@dataclass(frozen=True)
class ParamGroup:
    """One optimiser of a family: AdamW over ``modules`` with these hyperparameters."""

    name: str
    modules: tuple[str, ...]
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    ema: bool = True  # the exported model uses the EMA of these weights (when the loop keeps one)


class StepContext(Protocol):
    """What the loop gives :meth:`Family.train_step`."""

    device: torch.device
    step: int
    rank: int  # data-parallel rank (0 when training in one process)
    world_size: int  # data-parallel processes (1: one process)

    def autocast(self) -> Any:
        """Context manager for the forward pass (mixed precision on CUDA, no-op on CPU)."""

    def optimise(self, group: str, loss: torch.Tensor) -> None:
        """zero_grad, backward, gradient clipping, optimiser step (and EMA update) for ``group``."""


@runtime_checkable
class ShowerSampler(Protocol):
    """A model that writes voxelised showers itself."""

    def sample_showers(
        self, energies: np.ndarray, torch_gen: torch.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Showers (N, n_voxels) float32 MeV for incident energies (N,) MeV, and counts for timing.json."""


class PointSampler(nn.Module):
    """Base of point samplers: forward(noise, cond, mask) -> transformed points (B, N, point_dim)."""

    kind: str
    point_dim: int
    noise_dim: int
    mean_n: float


class Family(abc.ABC):
    """Base class of model families (see the module docstring for the contract)."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    Settings: ClassVar[type]  # frozen dataclass of the family's hyperparameters
    #: whether the family models the per-layer binnings of dataset 1 (False: regular grids only)
    per_layer_geometries: ClassVar[bool] = True
    data_parallel: ClassVar[bool] = False  # trains with world size > 1 (uses rows_of / global_mean)
    #: takes the one-hot jet type of a data set of several jet types as a condition
    jet_type_condition: ClassVar[bool] = True

    def __init__(self, settings: Any, data: TrainingData, device: torch.device) -> None:
        if data.kind not in self.kinds:
            raise ValueError(f"family {self.name!r} does not model {data.kind!r} (only {self.kinds})")
        geometry = data.geometry
        if geometry is not None and not self.per_layer_geometries and not geometry.is_regular:
            raise ValueError(
                f"family {self.name!r} models the regular grids of datasets 2 and 3, not the per-layer "
                f"binning of dataset {geometry.name}"
            )
        if not self.jet_type_condition and any(
            name.startswith(TYPE_PREFIX) for name in getattr(data.clouds, "condition_names", ())
        ):
            raise ValueError(
                f"family {self.name!r} models one jet type at a time, not a data set of several types; "
                "train one model per type or use flow-matching"
            )
        self.settings, self.data, self.device = settings, data, device

    @abc.abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The trained modules by name (checkpointed and exported)."""

    @abc.abstractmethod
    def param_groups(self) -> list[ParamGroup]:
        """The optimisers; every trained module belongs to exactly one group."""

    @abc.abstractmethod
    def train_step(self, ctx: StepContext) -> dict[str, float]:
        """One training step (one or more optimiser updates); returns its figures."""

    def state_dict(self) -> dict[str, Any]:
        """Data-stream state (weights_only-loadable values); empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional: no state by default)
        """Inverse of :meth:`state_dict`."""

    def validate(self, n_max: int, seed: int) -> dict[str, float]:
        """Figures on a sample for at most ``n_max`` validation clouds; ``figure``: lower is better."""
        return {}

    @abc.abstractmethod
    def export_config(self) -> dict[str, Any]:
        """JSON-able config that :meth:`build_sampler` needs besides the module weights."""

    @classmethod
    @abc.abstractmethod
    def build_sampler(
        cls,
        config: dict[str, Any],
        state: dict[str, dict[str, torch.Tensor]],
        transform: Any,
        geometry: Any,
        device: torch.device,
    ) -> PointSampler | ShowerSampler:
        """The sampling object from an exported config and module weights (on ``device``, eval mode)."""

    @classmethod
    def needs_multiplicity(cls) -> bool:
        """Whether sampling draws n from the separately trained multiplicity model."""
        return True


def rows_of(ctx: Any, n: int) -> slice | None:
    """The rows of a global batch of ``n`` that this rank works on (None: all, one process)."""
    size = int(getattr(ctx, "world_size", 1))
    return None if size == 1 else shard_rows(n, int(ctx.rank), size)


def global_mean(ctx: Any, loss: torch.Tensor, local: float, total: float) -> torch.Tensor:
    """A rank's mean loss over ``local`` of the global batch's ``total`` items, scaled so that the sum over
    the ranks is the global mean (unchanged in one process)."""
    weight = shard_weight(local, total, int(getattr(ctx, "world_size", 1)))
    return loss if weight is None else loss * weight


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: make ``cls`` available under ``cls.name``.

    A built-in family must agree with its :class:`~pipelines.models.settings.FamilySpec`; any other
    (a user's or a test's family) gets a spec from the class.
    """
    spec = FamilySpec(
        cls.name,
        tuple(cls.kinds),
        cls.Settings,
        cls.needs_multiplicity(),
        per_layer_geometries=cls.per_layer_geometries,
        data_parallel=cls.data_parallel,
        jet_type_condition=cls.jet_type_condition,
    )
    known = FAMILY_SPECS.setdefault(cls.name, spec)
    if known != spec:
        raise TypeError(f"family class {cls.__qualname__} disagrees with its spec: {spec} != {known}")
    FAMILIES[cls.name] = cls
    return cls


def get_family(name: str) -> type[Family]:
    """The family class called ``name`` (ValueError naming the known ones otherwise)."""
    import pipelines.models.families  # noqa: F401 (registers every family)

    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_settings(cls: type[Family], values: dict[str, Any]) -> Any:
    """The family's Settings from ``values``; unknown keys or wrong types are a ValueError."""
    return make_settings(cls.name, values)


def count_parameters(modules: dict[str, nn.Module]) -> int:
    """Trainable parameters of all ``modules``."""
    return sum(p.numel() for m in modules.values() for p in m.parameters() if p.requires_grad)
