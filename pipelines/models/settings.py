"""Hyperparameters of every model family, importable without torch.

The workflow checks each ``models:`` entry of the config when it starts (unknown family, a setting
the family does not take, a wrong type or value, a family paired with data it does not model). That
check needs the settings dataclasses, the kinds of data each family models and whether it samples n
from a separate multiplicity model, but not the models themselves; keeping them here (no torch, no
scipy) keeps every ``snakemake`` call fast. The family classes (:mod:`pipelines.models.family`) take
their ``Settings`` from here, and :func:`pipelines.models.family.register_family` checks that a
registered class agrees with its :class:`FamilySpec`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pipelines.settings import check_settings_types, checked_fields

#: point placements of the factorised family (:mod:`pipelines.models.point_model`)
PLACEMENTS = ("pareto", "independent")
#: critic weight normalisations of the MDMA GAN (:mod:`pipelines.models.blocks`)
NORMS = ("none", "weight", "spectral", "unit")
#: training objectives of the voxel-grid family (:mod:`pipelines.models.voxel_grid`)
VOXEL_OBJECTIVES = ("flow-matching", "vae")
VOXEL_NORMS = ("energy-count", "energy", "ring")


@dataclass(frozen=True)
class FactorisedSettings:
    """Hyperparameters of the factorised family (defaults: a CPU model, ~0.027 s per step on one thread).

    shower_hidden, shower_blocks: width and hidden layers of the shower-level velocity MLP;
    shower_lr, shower_batch: its AdamW learning rate and showers per minibatch; time_dim: sinusoidal
    time features; sigma_min: width of the OT path at t = 1; ode_steps: midpoint steps at sampling.
    point_hidden, point_blocks, point_lr: the point MLP and its learning rate; point_batch: (shower,
    layer) pairs per minibatch, each with all its points; n_components: Gaussians of the log energy
    share. weight_decay: AdamW, both groups. placement: "pareto" or "independent" (see
    :mod:`pipelines.models.point_model`).
    """

    shower_hidden: int = 256
    shower_blocks: int = 3
    time_dim: int = 16
    sigma_min: float = 1e-4
    ode_steps: int = 6
    shower_lr: float = 2e-3
    shower_batch: int = 256
    point_hidden: int = 128
    point_blocks: int = 3
    n_components: int = 4
    point_lr: float = 2e-3
    point_batch: int = 128
    weight_decay: float = 0.0
    placement: str = "pareto"

    def __post_init__(self) -> None:
        check_settings_types(self)
        for key in ("shower_hidden", "shower_blocks", "time_dim", "ode_steps", "shower_batch",
                    "point_hidden", "point_blocks", "n_components", "point_batch"):  # fmt: skip
            if getattr(self, key) < 1:
                raise ValueError(
                    f"factorised setting {key} must be a positive integer, got {getattr(self, key)}"
                )
        if self.time_dim % 2:
            raise ValueError(f"factorised setting time_dim must be even, got {self.time_dim}")
        for key in ("shower_lr", "point_lr"):
            value = getattr(self, key)
            if not (math.isfinite(value) and 0.0 < value < 1.0):
                raise ValueError(f"factorised setting {key} must lie in (0, 1), got {value}")
        if not (math.isfinite(self.sigma_min) and 0.0 <= self.sigma_min < 0.5):
            raise ValueError(f"factorised setting sigma_min must lie in [0, 0.5), got {self.sigma_min}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise ValueError(f"factorised setting weight_decay must be >= 0, got {self.weight_decay}")
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"factorised setting placement must be one of {PLACEMENTS}, got {self.placement!r}"
            )


@dataclass(frozen=True)
class FlowMatchingSettings:
    """Hyperparameters of the flow-matching family (the loop's settings are separate).

    Architecture: hidden width, n_blocks mean-field blocks with ``heads`` attention heads, per-point
    MLP width expansion x hidden, time_dim sinusoidal time features. Optimisation: AdamW lr and
    weight_decay; max_tokens padded points per batch (batch size x longest cloud). Flow: sigma_min of
    the OT path; ode_steps midpoint steps at sampling and validation (two velocity evaluations each).

    The defaults are a CPU model for jets (0.24 M parameters, about 0.1 s per step of 4096 points on one
    CPU thread; measured on the embedded top jets: 3 CPU-minutes reach tree AUC about 0.65 and W1P
    about real-vs-real; 20 ODE steps sample 2.5x faster than 50 at a small loss in W1M). Showers
    need a larger ``max_tokens`` (e.g. 16384 on a CPU, 200k on a GPU) and cost about 1 s per shower
    of ~1,600 points on a CPU at 25 ODE steps, validation included; a GPU run can take hidden 128,
    n_blocks 6 to 8 and ode_steps 100 to 200.
    """

    hidden: int = 64
    n_blocks: int = 3
    heads: int = 4
    expansion: int = 2
    time_dim: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-5
    max_tokens: int = 4096
    sigma_min: float = 1e-4
    ode_steps: int = 50

    def __post_init__(self) -> None:
        check_settings_types(self)
        for name in ("hidden", "n_blocks", "heads", "expansion", "time_dim", "max_tokens", "ode_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"flow-matching setting {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(
                f"flow-matching: hidden ({self.hidden}) must be divisible by heads ({self.heads})"
            )
        if self.time_dim % 2:
            raise ValueError(f"flow-matching: time_dim must be even, got {self.time_dim}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"flow-matching: lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"flow-matching: weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.sigma_min < 1:
            raise ValueError(f"flow-matching: sigma_min must lie in [0, 1), got {self.sigma_min}")


@dataclass(frozen=True)
class GANArchitecture:
    """Architecture of an MDMA generator / critic pair, one definition for the family's settings
    (:class:`GANSettings`) and the model's own config (``pipelines.models.mdma.ModelConfig``).

    hidden / n_blocks / heads: the generator's mean-field attention width, blocks and heads;
    noise_dim: noise per point (the per-cloud noise has the same length); critic_hidden /
    critic_blocks: the critic's width and blocks; critic_norm: "unit" (unit-norm rows, no gain),
    "weight", "spectral" or "none"; token_norm: LayerNorm on the critic's token; cloud_noise: the
    generator's token from per-cloud noise. The defaults are a tiny CPU model.
    """

    hidden: int = 16
    n_blocks: int = 2
    heads: int = 2
    noise_dim: int = 4
    critic_hidden: int = 16
    critic_blocks: int = 2
    critic_norm: str = "unit"
    token_norm: bool = True
    cloud_noise: bool = True

    def check_architecture(self, who: str) -> None:
        """ValueError naming ``who`` and the field for sizes below 1, widths not divisible by heads
        or an unknown critic_norm."""
        for name in ("hidden", "n_blocks", "heads", "noise_dim", "critic_hidden", "critic_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{who} {name} must be a positive integer, got {value!r}")
        if self.hidden % self.heads or self.critic_hidden % self.heads:
            raise ValueError(f"{who} hidden and critic_hidden must be divisible by heads ({self.heads})")
        if self.critic_norm not in NORMS:
            raise ValueError(f"{who} critic_norm must be one of {NORMS}, got {self.critic_norm!r}")

    def architecture(self) -> dict[str, Any]:
        """The architecture fields alone, as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(GANArchitecture)}


@dataclass(frozen=True)
class GANSettings(GANArchitecture):
    """Hyperparameters of the ``mdma-gan`` family (the loop's settings are separate).

    Architecture: the fields of :class:`GANArchitecture`, and energy_share (share column as softmax
    shares of a per-cloud total).
    Optimisation: lr_generator, lr_critic, Adam betas (beta1, beta2) and adam_eps; critic_warmup
    critic-only steps, then one generator update every n_critic steps; gp_lambda; mean-field weight
    mf_weight below step mf_steps; etot_weight (moment matching of log(total / reference));
    real_noise (relative noise on real points); max_tokens padded points per batch (batch size x
    longest cloud); calibrate: data-dependent initialisation of the generator's output scale
    (``MDMAGenerator.calibrate``) on random training clouds. The defaults are a CPU model (6.6k
    generator parameters, lr and critic_warmup scaled for minutes of training); the published
    dataset-2 recipe is hidden 44, n_blocks 3, heads 4, critic_hidden 44, critic_blocks 3 (67k
    generator parameters), lr 1e-4 for both, critic_warmup 1000 and batches of 64 showers or more.
    """

    energy_share: bool = True
    lr_generator: float = 1e-3
    lr_critic: float = 1e-3
    beta1: float = 0.0
    beta2: float = 0.999
    adam_eps: float = 1e-14
    n_critic: int = 3
    critic_warmup: int = 100
    gp_lambda: float = 10.0
    mf_weight: float = 1.0
    mf_steps: int = 50_000
    etot_weight: float = 0.1
    real_noise: float = 1e-3
    max_tokens: int = 20_000
    calibrate: bool = True

    def __post_init__(self) -> None:
        check_settings_types(self)
        self.check_architecture("mdma-gan setting")
        for name in ("n_critic", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"mdma-gan setting {name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_generator", "lr_critic", "adam_eps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"mdma-gan: {name} must be a positive number, got {value}")
        for name in ("gp_lambda", "mf_weight", "etot_weight", "real_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"mdma-gan: {name} must be a non-negative number, got {value}")
        for name in ("critic_warmup", "mf_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"mdma-gan: {name} must be >= 0, got {getattr(self, name)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"mdma-gan: beta1, beta2 must lie in [0, 1), got {self.beta1}, {self.beta2}")


#: message aggregations of the MPGAN family (:mod:`pipelines.models.mpgan`)
AGGREGATIONS = ("mean", "sum")
#: adversarial losses of the MPGAN family: least squares (published) or Wasserstein with gradient penalty
MPGAN_LOSSES = ("ls", "wgan-gp")


@dataclass(frozen=True)
class MPGANSettings:
    """Hyperparameters of the ``mpgan`` family (message-passing GAN, arXiv:2106.11535; jets only).

    Architecture (generator and discriminator alike): hidden node width; noise_dim per-particle
    noise; iterations of fully connected message passing; edge_layers / node_layers: hidden widths
    of the edge MLP (output: the last width) and of the node MLP; aggregation of the messages
    ("sum" as published, or "mean" over the valid particles); edge_distance: the edge MLP also sees
    the distance of the two particles' first two features; critic_dropout in the discriminator's
    MLPs; pt_share: the generator draws pt_rel as softmax shares of a per-jet total (the ``mdma-gan``
    share head; not in the published model, which outputs pt_rel directly); critic_jet_features: the
    discriminator's readout also sees each jet's standardised relative mass and sum of pt_rel
    (computed from its particles through the fitted transform; not in the published model);
    critic_leading: it also sees the (eta_rel, phi_rel, pt_rel) of the k leading particles by pt_rel,
    standardised per rank (needs critic_jet_features; 0: none; not in the published model).
    Optimisation: loss "ls"
    (least squares, published) or "wgan-gp" (gp_lambda); Adam(W)
    lr_generator, lr_critic, beta1, beta2; n_critic discriminator updates per generator update;
    max_tokens padded particles per batch (batch size x longest jet); calibrate: start the
    generator's output head at the data's mean and spread.

    The defaults are a small CPU model; the published recipe (top jets, 30 particles) is hidden 32,
    noise_dim 32, iterations 2, edge_layers (96, 160, 192), node_layers (256, 256), sum, dropout
    0.5, no pt_share or critic_jet_features, least squares, RMSprop with lr 2e-5 (generator) and
    6e-5 (discriminator), batches of 256 jets (32 at 150 particles): ``config/full.yaml``.
    """

    hidden: int = 16
    noise_dim: int = 8
    iterations: int = 2
    edge_layers: tuple[int, ...] = (32,)
    node_layers: tuple[int, ...] = (32,)
    aggregation: str = "mean"
    edge_distance: bool = True
    critic_dropout: float = 0.0
    pt_share: bool = True
    critic_jet_features: bool = True
    critic_leading: int = 0
    loss: str = "ls"
    gp_lambda: float = 10.0
    lr_generator: float = 3e-4
    lr_critic: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 1
    max_tokens: int = 1920
    calibrate: bool = True

    def __post_init__(self) -> None:
        check_settings_types(self)
        for name in ("hidden", "noise_dim", "iterations", "n_critic", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"mpgan setting {name} must be >= 1, got {getattr(self, name)}")
        for name in ("edge_layers", "node_layers"):
            widths = getattr(self, name)
            if not widths or any(w < 1 for w in widths):
                raise ValueError(
                    f"mpgan setting {name} must be a non-empty list of positive widths, got {list(widths)}"
                )
        if self.hidden < 2 and self.edge_distance:
            raise ValueError(
                "mpgan setting edge_distance needs hidden >= 2 (distance of the first two features)"
            )
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"mpgan setting aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}"
            )
        if self.loss not in MPGAN_LOSSES:
            raise ValueError(f"mpgan setting loss must be one of {MPGAN_LOSSES}, got {self.loss!r}")
        for name in ("lr_generator", "lr_critic"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"mpgan setting {name} must be a positive number, got {value}")
        if not (math.isfinite(self.gp_lambda) and self.gp_lambda >= 0):
            raise ValueError(f"mpgan setting gp_lambda must be >= 0, got {self.gp_lambda}")
        if self.critic_leading < 0 or (self.critic_leading > 0 and not self.critic_jet_features):
            raise ValueError(
                "mpgan setting critic_leading must be >= 0 and needs critic_jet_features, "
                f"got {self.critic_leading}"
            )
        if not 0 <= self.critic_dropout < 1:
            raise ValueError(f"mpgan setting critic_dropout must lie in [0, 1), got {self.critic_dropout}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"mpgan setting beta1, beta2 must lie in [0, 1), got {self.beta1}, {self.beta2}")


@dataclass(frozen=True)
class VoxelGridSettings:
    """Hyperparameters of the voxel-grid family (defaults: a CPU model, ~0.2 s per step on one thread).

    Shower level (as the factorised family's): shower_hidden, shower_blocks: width and hidden layers of
    the velocity MLP of E_tot / E_inc, layer energies and hit counts; shower_lr, shower_batch: its AdamW
    learning rate and showers per minibatch. Grid level: a 3-D U-Net on the (layer, alpha, r) grid of
    normalised shapes (shares of the layer energies), periodic in alpha: base_channels at full resolution,
    doubled at each of ``levels`` resolutions; emb_dim: width of the (time, E_inc) embedding that scales
    and shifts every block; time_dim: sinusoidal time features (both levels).
    objective: "flow-matching" (conditional flow matching on the transformed grid, ode_steps midpoint
    steps at sampling for both levels, sigma_min the width of the OT path at t = 1) or "vae" (a
    conditional VAE with latent_channels at the coarsest resolution, kl_weight on the KL term).
    empty_gap: empty voxels sit empty_gap standard deviations of the hits' transformed shares below the
    smallest. voxel_norm: the shapes are standardised per (layer, r) ring, about a mean that is a linear
    function (least squares on the training split) of "energy-count": log E_inc and the layer's
    log(1 + n_l), "energy": log E_inc only, "ring": a constant; the network models the residual.
    hit_channel: a second grid channel holds the hits' y alone (standardised per ring the same way; empty
    voxels 0): the first channel decides which voxels are hit, the second their energies.
    lr, weight_decay: AdamW of the grid model; batch: showers per grid step; max_voxels: voxels per
    network call at sampling (batch x grid size).
    """

    base_channels: int = 8
    levels: int = 3
    emb_dim: int = 64
    time_dim: int = 32
    objective: str = "flow-matching"
    ode_steps: int = 8
    sigma_min: float = 1e-4
    latent_channels: int = 4
    kl_weight: float = 1e-3
    empty_gap: float = 3.0
    voxel_norm: str = "energy-count"
    hit_channel: bool = True
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch: int = 32
    max_voxels: int = 2_000_000
    shower_hidden: int = 256
    shower_blocks: int = 3
    shower_lr: float = 2e-3
    shower_batch: int = 256

    def __post_init__(self) -> None:
        check_settings_types(self)
        for key in ("base_channels", "levels", "emb_dim", "time_dim", "ode_steps", "latent_channels",
                    "batch", "max_voxels", "shower_hidden", "shower_blocks", "shower_batch"):  # fmt: skip
            if getattr(self, key) < 1:
                raise ValueError(
                    f"voxel-grid setting {key} must be a positive integer, got {getattr(self, key)}"
                )
        if self.time_dim % 2:
            raise ValueError(f"voxel-grid setting time_dim must be even, got {self.time_dim}")
        if self.objective not in VOXEL_OBJECTIVES:
            raise ValueError(
                f"voxel-grid setting objective must be one of {VOXEL_OBJECTIVES}, got {self.objective!r}"
            )
        if self.voxel_norm not in VOXEL_NORMS:
            raise ValueError(
                f"voxel-grid setting voxel_norm must be one of {VOXEL_NORMS}, got {self.voxel_norm!r}"
            )
        for key in ("lr", "shower_lr"):
            if not (math.isfinite(getattr(self, key)) and 0.0 < getattr(self, key) < 1.0):
                raise ValueError(f"voxel-grid setting {key} must lie in (0, 1), got {getattr(self, key)}")
        if not (math.isfinite(self.sigma_min) and 0.0 <= self.sigma_min < 0.5):
            raise ValueError(f"voxel-grid setting sigma_min must lie in [0, 0.5), got {self.sigma_min}")
        for key in ("weight_decay", "kl_weight", "empty_gap"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"voxel-grid setting {key} must be >= 0, got {value}")


@dataclass(frozen=True)
class FamilySpec:
    """What the workflow needs to know of a family before training: name, data kinds, settings."""

    name: str
    kinds: tuple[str, ...]
    settings: type
    needs_multiplicity: bool
    #: models the per-layer binnings of dataset 1 (False: the regular grids of datasets 2 and 3 only)
    per_layer_geometries: bool = True
    data_parallel: bool = False  # trains in several processes (training setting gpus > 1)
    #: takes the jet type as a condition (a data set of several jet types); False: one type only
    jet_type_condition: bool = True


FAMILY_SPECS: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(
            "factorised",
            ("showers",),
            FactorisedSettings,
            needs_multiplicity=False,
            data_parallel=True,
        ),
        FamilySpec(
            "flow-matching",
            ("showers", "jets"),
            FlowMatchingSettings,
            needs_multiplicity=True,
            data_parallel=True,
        ),
        FamilySpec("mdma-gan", ("showers", "jets"), GANSettings, needs_multiplicity=True),
        FamilySpec("mpgan", ("jets",), MPGANSettings, needs_multiplicity=True, jet_type_condition=False),
        FamilySpec(
            "voxel-grid",
            ("showers",),
            VoxelGridSettings,
            needs_multiplicity=False,
            per_layer_geometries=False,
        ),
    )
}


def family_spec(name: str) -> FamilySpec:
    """The spec of family ``name`` (ValueError naming the known families otherwise)."""
    if name not in FAMILY_SPECS:
        raise ValueError(f"unknown model family {name!r}; known families: {sorted(FAMILY_SPECS)}")
    return FAMILY_SPECS[name]


def make_settings(family: str, values: dict[str, Any]) -> Any:
    """The family's Settings from ``values``; unknown keys or wrong types are a ValueError."""
    cls = family_spec(family).settings
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"family {family!r} takes no settings {unknown}; it takes {sorted(known)}")
    return cls(**checked_fields(cls, values, f"family {family!r}"))
