"""The MDMA GAN as a model family (``mdma-gan``): WGAN-GP with the published MDMA training recipe.

Modules (:mod:`pipelines.models.mdma`): a generator whose token starts from per-cloud noise and
which, with ``energy_share``, draws the share column (shower energy, jet pt_rel) as softmax shares
of a per-cloud total; a Lipschitz critic (unit-norm rows without a free gain, LayerNorm on the
token) that, with shares, also sees the cloud's standardised log(total / reference).

One training step draws one length-bucketed batch (real points get x (1 + N(0, real_noise))
noise in transformed space) and makes one critic update: WGAN loss plus gradient penalty, the
penalty computed in float32 outside autocast on random interpolates of (points, cloud feature).
The first ``critic_warmup`` steps train the critic alone; after that every ``n_critic``-th step
also updates the generator on the same batch's conditions and masks (each generated cloud has a
real partner with the same condition and n): -critic score, plus below ``mf_steps`` the mean-field
term (mean squared difference of the critic's LayerNorm'd final tokens of each generated cloud and
its partner), plus, with shares, ``etot_weight`` x the squared differences of the batch mean and
standard deviation of log(total / reference) between generated and real (moment matching on
paired batches: a per-cloud squared error against an independent partner would be minimised by
zero spread).

The generator starts from a data-dependent initialisation (``calibrate``): its output head is
rescaled on random training clouds so that every generated column starts with the data's mean and
spread (the share logits with the data's within-cloud spread of log values, their soft cap three
standard deviations above the bulk), and the log total with the data's spread.

Optimisers (the published recipe): Adam(W) with betas (0, 0.999), eps 1e-14, a critic-only warm-up,
then n_critic critic steps per generator step; the loop adds warm-up, cosine decay, gradient
clipping and an EMA of the generator. The defaults are scaled for minutes of CPU training: lr 1e-3
(published: 1e-4) and critic_warmup 100 (published: 1,000) with batches of about a dozen showers
(published: 64 and more). A GAN is a GPU-scale recipe: on a CPU in minutes it keeps E_tot / E_inc
and the within-shower spreads near the data's but learns the shower shapes only roughly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.batching import BucketBatchSampler, CloudDataset, collate_clouds
from pipelines.io.errors import DataError
from pipelines.jet_types import types_of_conditions
from pipelines.models.family import (
    Family,
    ParamGroup,
    StepContext,
    TrainingData,
    register_family,
)
from pipelines.models.mdma import (
    SHARE_COLUMNS,
    MDMACritic,
    MDMAGenerator,
    ModelConfig,
    ShareParams,
    build_critic,
    build_generator,
    cloud_log_ratio,
    condition_dim,
    fit_share_params,
    make_condition,
)
from pipelines.models.settings import GANSettings
from pipelines.transforms import Periodic, Standardize

#: training clouds drawn at random for the data-dependent initialisation of the generator
CALIBRATION_CLOUDS = 32
#: the initial share logits start this many within-cloud standard deviations below their soft cap
SHARE_CAP_SIGMAS = 3.0


def model_config(
    settings: GANSettings,
    kind: str,
    point_dim: int,
    mean_n: float,
    periodic: tuple[tuple[int, float, float], ...] = (),
    n_types: int = 0,
) -> ModelConfig:
    """The :class:`ModelConfig` that ``settings`` describe for data of ``kind`` (``n_types`` one-hot
    jet-type condition columns)."""
    return ModelConfig(
        kind=kind,
        point_dim=point_dim,
        cond_dim=condition_dim(kind, n_types),
        mean_n=mean_n,
        share=settings.energy_share,
        periodic=periodic,
        **settings.architecture(),
    )


def periodic_columns(transform: Any) -> tuple[tuple[int, float, float], ...]:
    """(column, scale, shift) of every column whose chain holds a :class:`Periodic` step followed
    only by :class:`Standardize` steps: its turn fraction is scale * z + shift in transformed space."""
    out = []
    for j, chain in enumerate(getattr(transform, "columns", {}).values()):
        steps = list(getattr(chain, "steps", []))
        k = next((i for i, step in enumerate(steps) if isinstance(step, Periodic)), None)
        if k is None or not all(isinstance(step, Standardize) for step in steps[k + 1 :]):
            continue
        scale, shift = 1.0, 0.0  # fraction = scale * z + shift, built from the last step back
        for step in reversed(steps[k + 1 :]):
            scale, shift = scale * step.std, shift * step.std + step.mean
        out.append((j, scale, shift))
    return tuple(out)


def gradient_penalty(
    critic: MDMACritic, x: torch.Tensor, critic_cond: torch.Tensor, mask: torch.Tensor, n_cloud: int
) -> torch.Tensor:
    """mean((||d critic / d (points, cloud features)|| - 1)^2) at ``x``, float32, differentiable.

    The last ``n_cloud`` columns of ``critic_cond`` are critic inputs (the cloud feature), the rest
    is the model condition; both ``x`` and those columns are differentiated.
    """
    x = x.detach().float().requires_grad_(True)
    cond, feats = (
        critic_cond[:, : critic_cond.shape[1] - n_cloud],
        critic_cond[:, critic_cond.shape[1] - n_cloud :],
    )
    feats = feats.detach().float().requires_grad_(True)
    scores = critic(x, torch.cat([cond.float(), feats], dim=1), mask)
    inputs = [x, feats] if n_cloud else [x]
    grads = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    sq = grads[0].pow(2).flatten(1).sum(dim=1)
    if n_cloud:
        sq = sq + grads[1].pow(2).sum(dim=1)
    return ((sq + 1e-12).sqrt() - 1.0).pow(2).mean()


def generate_physical(
    generator: nn.Module,
    data: TrainingData,
    raw_conditions: np.ndarray,
    lengths: np.ndarray,
    seed: int,
    max_tokens: int,
) -> np.ndarray:
    """Physical points (P, d) float64 (clouds in input order) of a GAN generator for raw conditions and
    hit counts, with the noise seeded by ``seed`` and ``data``'s point transform inverted."""
    lengths = np.asarray(lengths, dtype=np.int64)
    cond = make_condition(np.asarray(raw_conditions, np.float64), lengths, data.kind, data.mean_n)
    device = next(generator.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    x = generate_transformed(generator, cond.to(device), lengths, gen, max_tokens)
    return data.transform.inverse_transform_torch(x.to(torch.float64)).cpu().numpy()


@torch.no_grad()
def generate_transformed(
    generator: MDMAGenerator,
    cond: torch.Tensor,
    lengths: np.ndarray,
    torch_gen: torch.Generator,
    max_tokens: int,
) -> torch.Tensor:
    """Transformed points of all clouds concatenated in input order (P, d), noise from ``torch_gen``."""
    device = cond.device
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    parts: dict[int, torch.Tensor] = {}
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop - start + 1) * max(int(lengths[order[stop]]), 1) <= max_tokens:
            stop += 1
        batch = order[start:stop]
        n = torch.as_tensor(lengths[batch], device=device)
        m = max(int(n.max()), 1)
        mask = torch.arange(m, device=device)[None, :] >= n[:, None]
        noise = torch.randn(len(batch), m, generator.noise_dim, generator=torch_gen, device=device)
        x = generator(noise, cond[torch.as_tensor(batch, device=device)], mask).float()
        for k, i in enumerate(batch):
            parts[int(i)] = x[k, : int(lengths[i])]
        start = stop
    if not parts:
        return torch.zeros(0, generator.point_dim, device=device)
    return torch.cat([parts[i] for i in range(len(lengths))])


@register_family
class MDMAGAN(Family):
    """MDMA mean-field attention WGAN-GP (see the module docstring)."""

    name = "mdma-gan"
    kinds = ("showers", "jets")
    Settings = GANSettings

    def __init__(self, settings: GANSettings, data: TrainingData, device: torch.device) -> None:
        super().__init__(settings, data, device)
        if len(data.train_idx) == 0:
            raise DataError("mdma-gan: the training split is empty")
        clouds, kind = data.clouds, data.kind
        periodic = periodic_columns(data.transform)
        n_types = len(types_of_conditions(clouds.condition_names))
        self.config = model_config(
            settings, kind, len(clouds.point_names), float(data.mean_n), periodic, n_types
        )
        self.share: ShareParams | None = None
        self.u_all: np.ndarray | None = None
        if settings.energy_share:
            column = SHARE_COLUMNS[kind]
            name = clouds.point_names[column]
            train = clouds.select(np.asarray(data.train_idx))
            try:
                self.share = fit_share_params(
                    train.points[:, column],
                    train.lengths,
                    train.conditions,
                    kind,
                    data.transform.columns[name],
                )
                data.transform.columns[name].transform_log_torch(torch.zeros(1))
            except (ValueError, NotImplementedError) as err:
                raise DataError(
                    f"mdma-gan: energy_share needs positive {name!r} values and a transform of that column "
                    f"starting with Log or BoxCox: {err}"
                ) from err
            u = cloud_log_ratio(clouds.points[:, column], clouds.lengths, clouds.conditions, kind)
            self.u_all = np.nan_to_num((u - self.share.u_mean) / self.share.u_std, nan=0.0).astype(np.float32)
        self.generator = build_generator(self.config, self.share).to(device)
        self.critic = build_critic(self.config).to(device)
        self.dataset = CloudDataset(clouds, data.transform, indices=data.train_idx, seed=data.seed)
        self.batches = BucketBatchSampler(self.dataset.lengths, settings.max_tokens, seed=data.seed)
        self.epoch, self.position = 0, 0
        if settings.calibrate:
            self._calibrate()

    def _calibrate(self) -> None:
        """Data-dependent initialisation of the generator's output scale on random training clouds."""
        rng = np.random.default_rng([self.data.seed, 17])
        picked = rng.choice(len(self.dataset), size=min(CALIBRATION_CLOUDS, len(self.dataset)), replace=False)
        picked = picked[self.dataset.lengths[picked] > 0]
        x, mask, raw = collate_clouds([self.dataset[int(i)] for i in picked])
        valid = x[~mask].double()  # (P, d) transformed real points
        mean, std = valid.mean(dim=0), valid.std(dim=0)
        if self.share is not None:  # the share column's raw output is the logit of the share
            k = SHARE_COLUMNS[self.data.kind]
            clouds = self.data.clouds.select(self.dataset.indices[picked])
            values = np.asarray(clouds.points[:, k], np.float64)
            cloud = np.repeat(np.arange(len(clouds)), clouds.lengths)
            log_e = np.log(values)
            centred = log_e - (np.bincount(cloud, log_e, len(clouds)) / clouds.lengths)[cloud]
            std[k] = float(np.sqrt(np.mean(centred**2)))  # within-cloud spread
            mean[k] = -SHARE_CAP_SIGMAS * std[k]  # the largest shares reach the cap
        cond = make_condition(raw[:, :-1], raw[:, -1], self.data.kind, self.data.mean_n).to(self.device)
        noise = torch.randn(*mask.shape, self.config.noise_dim, device=self.device)
        self.generator.calibrate(noise, cond, mask.to(self.device), mean.float(), std.float().clamp_min(1e-3))

    # ------------------------------------------------------------------------------ training

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self.critic}

    def param_groups(self) -> list[ParamGroup]:
        s = self.settings
        betas = (s.beta1, s.beta2)
        return [
            ParamGroup("generator", ("generator",), s.lr_generator, betas, eps=s.adam_eps, ema=True),
            ParamGroup("critic", ("critic",), s.lr_critic, betas, eps=s.adam_eps, ema=False),
        ]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        """The next padded training batch (x, mask True = padding, raw condition with n last, cloud ids)."""
        self.batches.set_epoch(self.epoch)
        if self.position >= len(self.batches.batches()):
            self.epoch, self.position = self.epoch + 1, 0
            self.batches.set_epoch(self.epoch)
        batch = self.batches.batches()[self.position]
        self.position += 1
        self.dataset.set_epoch(self.epoch)
        x, mask, raw = collate_clouds([self.dataset[int(i)] for i in batch])
        return x, mask, raw, self.dataset.indices[batch]

    def _critic_cond(self, cond: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        return cond if u is None else torch.cat([cond, u.float().unsqueeze(1)], dim=1)

    def generator_updates(self, step: int) -> bool:
        """Whether training step ``step`` also updates the generator."""
        s = self.settings
        return step >= s.critic_warmup and (step - s.critic_warmup) % s.n_critic == s.n_critic - 1

    def train_step(self, ctx: StepContext) -> dict[str, float]:
        s, device = self.settings, ctx.device
        x, mask, raw, ids = self.next_batch()
        cond = make_condition(raw[:, :-1], raw[:, -1], self.data.kind, self.data.mean_n).to(device)
        x, mask = x.to(device), mask.to(device)
        if s.real_noise > 0:
            x = x * (1.0 + s.real_noise * torch.randn_like(x))
        u_real = torch.as_tensor(self.u_all[ids], device=device) if self.u_all is not None else None
        real_cond = self._critic_cond(cond, u_real)
        n_cloud = int(u_real is not None)

        # critic update
        self.critic.requires_grad_(True)
        noise = torch.randn(*mask.shape, self.config.noise_dim, device=device)
        with torch.no_grad(), ctx.autocast():
            fake, u_fake = self.generator.generate(noise, cond, mask)
        fake = fake.float()
        fake_cond = self._critic_cond(cond, u_fake)
        with ctx.autocast():
            d_real = self.critic(x, real_cond, mask).float()
            d_fake = self.critic(fake, fake_cond, mask).float()
        eps = torch.rand(x.shape[0], 1, device=device)
        mixed = eps.unsqueeze(-1) * x + (1.0 - eps.unsqueeze(-1)) * fake
        mixed_cond = eps * real_cond + (1.0 - eps) * fake_cond  # the condition part is equal in both
        gp = gradient_penalty(self.critic, mixed, mixed_cond, mask, n_cloud)
        wasserstein = d_real.mean() - d_fake.mean()
        loss_critic = -wasserstein + s.gp_lambda * gp
        ctx.optimise("critic", loss_critic)
        figures = {"loss_critic": float(loss_critic.detach()), "wasserstein": float(wasserstein.detach()),
                   "gradient_penalty": float(gp.detach())}  # fmt: skip
        if not self.generator_updates(ctx.step):
            return figures

        # generator update on the same conditions and masks: each fake cloud has a real partner
        self.critic.requires_grad_(False)
        try:
            with ctx.autocast():
                noise = torch.randn(*mask.shape, self.config.noise_dim, device=device)
                fake, u_fake = self.generator.generate(noise, cond, mask)
                d_fake, tok_fake = self.critic.forward_with_features(
                    fake, self._critic_cond(cond, u_fake), mask
                )
            loss = -d_fake.float().mean()
            mean_field = torch.zeros((), device=device)
            if s.mf_weight > 0 and ctx.step < s.mf_steps:
                with torch.no_grad(), ctx.autocast():
                    tok_real = self.critic.features(x, real_cond, mask)
                mean_field = (_standardised(tok_fake.float()) - _standardised(tok_real.float())).pow(2).mean()
                loss = loss + s.mf_weight * mean_field
            etot = torch.zeros((), device=device)
            if u_fake is not None and s.etot_weight > 0:
                valid = (~mask).any(dim=1)
                uf, ur = u_fake.float()[valid], u_real[valid]
                etot = (uf.mean() - ur.mean()).pow(2) + (_std(uf) - _std(ur)).pow(2)
                loss = loss + s.etot_weight * etot
            ctx.optimise("generator", loss)
        finally:
            self.critic.requires_grad_(True)
        figures.update(loss_generator=float(loss.detach()), mean_field=float(mean_field.detach()),
                       etot=float(etot.detach()))  # fmt: skip
        return figures

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # ---------------------------------------------------------------------------- validation

    def generate(self, raw_conditions: np.ndarray, lengths: np.ndarray, seed: int) -> np.ndarray:
        """Physical points (P, d) float64 (clouds in input order) for raw conditions and hit counts."""
        return generate_physical(
            self.generator, self.data, raw_conditions, lengths, seed, 4 * self.settings.max_tokens
        )

    def validate(self, n_max: int, seed: int) -> dict[str, float]:
        """Generated vs real figures on up to ``n_max`` validation clouds (their own n and conditions)."""
        from pipelines.training.validation import jet_figures, layer_energies, shower_figures

        idx = np.asarray(self.data.val_idx, dtype=np.int64)[:n_max]
        if len(idx) == 0:
            return {}
        real = self.data.clouds.select(idx)
        lengths = real.lengths
        gen = self.generate(real.conditions, lengths, seed)
        if self.data.kind == "jets":
            return jet_figures(gen, lengths, np.asarray(real.points, dtype=np.float64), lengths)
        n_layers = (
            self.data.geometry.n_layers
            if self.data.geometry is not None
            else int(real.points[:, 1].max()) + 1
        )
        energy = np.clip(np.nan_to_num(gen[:, 0], nan=0.0, posinf=0.0), 0.0, None)
        layer = np.clip(np.floor(np.nan_to_num(gen[:, 1], nan=0.0)), 0, n_layers - 1)
        gen_layers = layer_energies(energy, layer, lengths, n_layers)
        ref_layers = layer_energies(real.points[:, 0], real.points[:, 1], lengths, n_layers)
        e_inc = real.conditions[:, 0]
        return shower_figures(e_inc, gen_layers, e_inc, ref_layers)

    # ----------------------------------------------------------------------------- export

    def export_config(self) -> dict[str, Any]:
        return {
            "model": dataclasses.asdict(self.config),
            "share": self.share.to_dict() if self.share is not None else None,
        }

    @classmethod
    def build_sampler(
        cls,
        config: dict[str, Any],
        state: dict[str, dict[str, torch.Tensor]],
        transform: Any,
        geometry: Any,
        device: torch.device,
    ) -> MDMAGenerator:
        if set(config) != {"model", "share"}:
            raise ValueError(f"mdma-gan config keys {sorted(config)}, expected ['model', 'share']")
        model = ModelConfig.from_dict(config["model"])
        share = ShareParams(**config["share"]) if config["share"] is not None else None
        generator = build_generator(model, share)
        generator.load_state_dict(state["generator"])
        return generator.to(device).eval()


def _standardised(tokens: torch.Tensor) -> torch.Tensor:
    """Each row of ``tokens`` (B, h) shifted and scaled to mean 0, variance 1 (LayerNorm, no affine)."""
    return nn.functional.layer_norm(tokens, tokens.shape[-1:])


def _std(u: torch.Tensor) -> torch.Tensor:
    return u.var(unbiased=False).add(1e-12).sqrt() if u.numel() > 1 else torch.zeros((), device=u.device)
