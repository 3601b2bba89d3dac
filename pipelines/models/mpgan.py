"""The message-passing GAN of Kansal et al. (arXiv:2106.11535) as a model family (``mpgan``, jets).

Both networks run fully connected message passing over the particles of a jet: in each of
``iterations`` rounds every particle i receives a message m_ij = f_e([h_i, h_j, d_ij]) from every
valid particle j (itself included; d_ij: distance of the first two features, optional), the
messages are summed or averaged over the valid j, and the node update is
h_i <- h_i + f_n([h_i, sum_j m_ij, c]) (c: the condition n / mean_n). The first layer of f_e acts
on [h_i, h_j] as W_a h_i + W_b h_j, computed once per particle, so only the layers after it run on
all n^2 pairs; the cost still grows as n^2 (``benchmarks/bench_mpgan.py``).

Generator: per-particle Gaussian noise (B, N, noise_dim) -> node features -> message passing ->
linear head to the transformed (eta_rel, phi_rel, pt_rel), zero at padded slots. Discriminator:
the transformed particles (periodic columns seen as cos, sin) -> message passing (with dropout) ->
masked mean of the final node features and c -> MLP -> score. Masks: padded slots (mask True)
are excluded from every message and every pooled sum, so they never influence valid particles;
n comes from the real jets in training and from the multiplicity model at sampling.

Two CPU-budget additions, off in the published recipe (``config/full.yaml``): ``pt_share`` draws
pt_rel as softmax shares of a per-jet total (the ``mdma-gan`` share head, fed the masked mean of the
final node features), and ``critic_jet_features`` gives the discriminator's readout each jet's
standardised relative mass and sum of pt_rel (:class:`JetFeatures`, through the fitted transform),
with ``critic_leading`` k > 0 also the (eta_rel, phi_rel, pt_rel) of its k leading particles by
pt_rel (what the tree test of the evaluation sees). Validation: the exported model is the one with
the lowest W1M + W1P (mean W1 of the particle features) + W1PT on the validation jets.

Training: least squares GAN (published) or WGAN-GP, n_critic discriminator updates per generator
update on the same batch's conditions and masks. Batches are drawn with the shared length-bucketed
sampler (:mod:`pipelines.batching`), as in ``mdma-gan``. The published optimiser is RMSprop; the
loop's Adam(W) with beta1 = 0 is its bias-corrected form.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from pipelines.batching import BucketBatchSampler, CloudDataset, collate_clouds
from pipelines.io.errors import DataError
from pipelines.models.blocks import zero_padding
from pipelines.models.family import (
    Family,
    ParamGroup,
    PointSampler,
    StepContext,
    TrainingData,
    register_family,
)
from pipelines.models.mdma import (
    SHARE_COLUMNS,
    ShareHead,
    ShareParams,
    fit_share_params,
    make_condition,
    periodic_view,
    with_column,
)
from pipelines.models.mdma_gan import (
    SHARE_CAP_SIGMAS,
    generate_physical,
    gradient_penalty,
    periodic_columns,
)
from pipelines.models.settings import MPGANSettings

#: training jets drawn at random for the data-dependent initialisation of the generator's head
CALIBRATION_CLOUDS = 64
#: slope of the leaky ReLUs (published: 0.2)
LEAKY_SLOPE = 0.2
#: architecture keys of the exported config
ARCHITECTURE = (
    "hidden",
    "noise_dim",
    "iterations",
    "edge_layers",
    "node_layers",
    "aggregation",
    "edge_distance",
)


def mlp(n_in: int, widths: tuple[int, ...], n_out: int | None = None, dropout: float = 0.0) -> nn.Sequential:
    """Linear + leaky ReLU (+ dropout) per width; a final plain Linear to ``n_out`` when given."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(n_in, width), nn.LeakyReLU(LEAKY_SLOPE)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = width
    if n_out is not None:
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class MessagePassing(nn.Module):
    """One fully connected message-passing round over the valid particles (see the module docstring).

    Shapes: h (B, N, hidden), cond (B, c), mask (B, N) True = padding -> h (B, N, hidden), padded
    slots exactly zero. A jet without valid particles gets finite (zero) messages.
    """

    def __init__(
        self,
        hidden: int,
        cond_dim: int,
        edge_layers: tuple[int, ...],
        node_layers: tuple[int, ...],
        aggregation: str,
        edge_distance: bool,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.aggregation, self.edge_distance = aggregation, bool(edge_distance)
        first, rest = edge_layers[0], tuple(edge_layers[1:])
        self.edge_i = nn.Linear(hidden, first)
        self.edge_j = nn.Linear(hidden, first, bias=False)
        self.edge_d = nn.Linear(1, first, bias=False) if edge_distance else None
        self.edge_rest = mlp(first, rest, dropout=dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.node = mlp(hidden + edge_layers[-1] + cond_dim, node_layers, hidden, dropout)

    def messages(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Aggregated messages (B, N, edge_layers[-1]) from the valid particles j to every i."""
        pre = self.edge_i(h).unsqueeze(2) + self.edge_j(h).unsqueeze(1)  # (B, N_i, N_j, w)
        if self.edge_d is not None:
            dist = (h[:, :, None, :2] - h[:, None, :, :2]).pow(2).sum(-1).add(1e-12).sqrt()
            pre = pre + self.edge_d(dist.unsqueeze(-1))
        edges = self.edge_rest(self.dropout(nn.functional.leaky_relu(pre, LEAKY_SLOPE)))
        valid_j = (~mask).to(edges.dtype)[:, None, :, None]  # (B, 1, N_j, 1)
        summed = (edges * valid_j).sum(dim=2)
        if self.aggregation == "mean":
            summed = summed / valid_j.sum(dim=2).clamp_min(1.0)
        return summed

    def forward(self, h: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c = cond.to(h.dtype).unsqueeze(1).expand(-1, h.shape[1], -1)
        update = self.node(torch.cat([h, self.messages(h, mask), c], dim=-1))
        return zero_padding(h + update, mask)


def _rounds(config: dict[str, Any], cond_dim: int, dropout: float = 0.0) -> nn.ModuleList:
    return nn.ModuleList(
        MessagePassing(
            config["hidden"],
            cond_dim,
            tuple(config["edge_layers"]),
            tuple(config["node_layers"]),
            config["aggregation"],
            config["edge_distance"],
            dropout,
        )  # fmt: skip
        for _ in range(config["iterations"])
    )


class MPGenerator(PointSampler):
    """Noise (B, N, noise_dim) + condition (B, 1) + mask (B, N) -> transformed points (B, N, point_dim).

    With ``share`` the pt_rel column is drawn as softmax shares of a per-jet total
    (:class:`~pipelines.models.mdma.ShareHead`, fed the masked mean of the final node features).
    """

    def __init__(
        self,
        config: dict[str, Any],
        point_dim: int,
        cond_dim: int,
        mean_n: float,
        share: ShareParams | None = None,
    ) -> None:
        super().__init__()
        self.kind, self.point_dim, self.mean_n = "jets", int(point_dim), float(mean_n)
        self.noise_dim = int(config["noise_dim"])
        self.embed = nn.Linear(self.noise_dim + cond_dim, config["hidden"])
        self.rounds = _rounds(config, cond_dim)
        self.head = nn.Linear(config["hidden"], self.point_dim)
        self.share = ShareHead(config["hidden"], cond_dim, "jets", share) if share is not None else None
        self.share_column = SHARE_COLUMNS["jets"]

    def features(self, noise: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final node features (B, N, hidden), zero at padded slots."""
        c = cond.to(noise.dtype).unsqueeze(1).expand(-1, noise.shape[1], -1)
        h = zero_padding(self.embed(torch.cat([zero_padding(noise, mask), c], dim=-1)), mask)
        for layer in self.rounds:
            h = layer(h, cond, mask)
        return h

    def _token(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = (~mask).sum(dim=1).clamp_min(1).to(h.dtype).view(-1, 1, 1)
        return h.sum(dim=1, keepdim=True) / n

    def forward(self, noise: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.features(noise, cond, mask)
        out = zero_padding(self.head(h), mask)
        if self.share is None:
            return out
        k = self.share_column
        column, _ = self.share(out[..., k], self._token(h, mask), cond, mask)
        return with_column(out, k, column)

    @torch.no_grad()
    def calibrate(
        self,
        noise: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        """Rescale the head so that, on this batch, each raw output column over the valid particles
        has mean ``mean`` and standard deviation ``std`` (d,); with shares, the pt_rel logits get
        the within-jet spread ``std[k]`` (their level is free: a softmax) and the standardised log
        total mean 0 and standard deviation 1."""
        h = self.features(noise, cond, mask)
        raw = self.head(h)
        spread = raw[~mask].std(dim=0)
        if self.share is not None:
            k = self.share_column
            n = (~mask).sum(dim=1, keepdim=True).clamp_min(1)
            spread[k] = (raw[..., k] - zero_padding(raw, mask)[..., k].sum(1, keepdim=True) / n)[~mask].std()
        scale = std.to(raw.dtype) / spread.clamp_min(1e-6)
        self.head.weight.mul_(scale.unsqueeze(1))
        self.head.bias.copy_((self.head.bias - raw[~mask].mean(dim=0)) * scale + mean.to(raw.dtype))
        if self.share is not None:
            token = self._token(h, mask)
            total = self.share.total(torch.cat([token.squeeze(1), cond.to(token.dtype)], dim=-1))
            factor = 1.0 / total.std(dim=0).clamp_min(1e-6)
            self.share.total.weight.mul_(factor.unsqueeze(1))
            self.share.total.bias.copy_((self.share.total.bias - total.mean(dim=0)) * factor)


class JetFeatures(nn.Module):
    """Standardised (relative jet mass, sum of pt_rel) (B, 2) of transformed jets (B, N, 3), differentiable;
    with ``leading`` k > 0 also the (eta_rel, phi_rel, pt_rel) of the k leading particles by pt_rel
    (B, 2 + 3 k; zeros where a jet has fewer particles), as the tree test sees them.

    The particles are taken back to (eta_rel, phi_rel, pt_rel) through the fitted transform in torch;
    ``mean`` and ``std`` (buffers, 2 + 3 k) are those of the training jets.
    """

    def __init__(self, transform: Any, mean: torch.Tensor, std: torch.Tensor, leading: int = 0) -> None:
        super().__init__()
        self.transform, self.leading = transform, int(leading)
        if mean.shape != (2 + 3 * self.leading,) or std.shape != mean.shape:
            raise ValueError(f"JetFeatures: mean and std need {2 + 3 * self.leading} values")
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def raw(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(relative mass, sum pt_rel, leading particles) (B, 2 + 3 k) float64, padded slots ignored."""
        physical = torch.zeros(*x.shape[:2], 3, dtype=torch.float64, device=x.device)
        physical[~mask] = self.transform.inverse_transform_torch(x[~mask].to(torch.float64))
        eta, phi, pt = physical.unbind(-1)
        e, pz = (pt * torch.cosh(eta)).sum(1), (pt * torch.sinh(eta)).sum(1)
        px, py = (pt * torch.cos(phi)).sum(1), (pt * torch.sin(phi)).sum(1)
        mass = (e.square() - px.square() - py.square() - pz.square()).clamp_min(1e-12).sqrt()
        parts = [torch.stack([mass, pt.sum(1)], dim=-1)]
        if self.leading > 0:
            k = min(self.leading, x.shape[1])
            order = pt.masked_fill(mask, -torch.inf).argsort(dim=1, descending=True)[:, :k]
            top = physical.gather(1, order.unsqueeze(-1).expand(-1, -1, 3))
            top = top * (~mask).gather(1, order).unsqueeze(-1).to(top.dtype)
            parts.append(top.reshape(len(x), 3 * k))
            if k < self.leading:
                parts.append(top.new_zeros(len(x), 3 * (self.leading - k)))
        return torch.cat(parts, dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ((self.raw(x, mask) - self.mean.double()) / self.std.double()).to(x.dtype)


class _Identity:
    """A transform that leaves the points as they are (jet features of physical points)."""

    @staticmethod
    def inverse_transform_torch(z: torch.Tensor) -> torch.Tensor:
        return z


class MPDiscriminator(nn.Module):
    """Points (B, N, point_dim) + condition (B, 1) + mask (B, N) -> scores (B,)."""

    def __init__(
        self,
        config: dict[str, Any],
        point_dim: int,
        cond_dim: int,
        periodic: tuple[tuple[int, float, float], ...] = (),
        dropout: float = 0.0,
        jet_features: JetFeatures | None = None,
    ) -> None:
        super().__init__()
        self.periodic = tuple(periodic)
        hidden = config["hidden"]
        self.embed = nn.Linear(point_dim + len(self.periodic) + cond_dim, hidden)
        self.rounds = _rounds(config, cond_dim, dropout)
        self.jet_features = jet_features
        n_jet = 2 + 3 * jet_features.leading if jet_features is not None else 0
        self.readout = mlp(hidden + cond_dim + n_jet, (hidden,), 1, dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        view = zero_padding(periodic_view(x, self.periodic), mask)
        c = cond.to(view.dtype).unsqueeze(1).expand(-1, view.shape[1], -1)
        h = zero_padding(self.embed(torch.cat([view, c], dim=-1)), mask)
        for layer in self.rounds:
            h = layer(h, cond, mask)
        n = (~mask).sum(dim=1, keepdim=True).clamp_min(1).to(h.dtype)
        pooled = h.sum(dim=1) / n
        parts = [pooled, cond.to(h.dtype)]
        if self.jet_features is not None:
            parts.append(self.jet_features(x, mask).to(h.dtype))
        return self.readout(torch.cat(parts, dim=-1)).squeeze(-1)


@register_family
class MPGAN(Family):
    """Message-passing GAN for jets (see the module docstring)."""

    name = "mpgan"
    kinds = ("jets",)
    jet_type_condition = False  # the condition is n / mean_n alone
    Settings = MPGANSettings

    def __init__(self, settings: MPGANSettings, data: TrainingData, device: torch.device) -> None:
        super().__init__(settings, data, device)
        if len(data.train_idx) == 0:
            raise DataError("mpgan: the training split is empty")
        self.arch = {key: getattr(settings, key) for key in ARCHITECTURE}
        self.arch["edge_layers"], self.arch["node_layers"] = (
            list(settings.edge_layers),
            list(settings.node_layers),
        )
        self.point_dim = len(data.clouds.point_names)
        self.periodic = periodic_columns(data.transform)
        self.share = self._fit_share() if settings.pt_share else None
        self.generator = MPGenerator(self.arch, self.point_dim, 1, float(data.mean_n), self.share).to(device)
        features = self._jet_features() if settings.critic_jet_features else None
        self.critic = MPDiscriminator(
            self.arch, self.point_dim, 1, self.periodic, settings.critic_dropout, features
        ).to(device)
        self.dataset = CloudDataset(data.clouds, data.transform, indices=data.train_idx, seed=data.seed)
        self.batches = BucketBatchSampler(self.dataset.lengths, settings.max_tokens, seed=data.seed)
        self.epoch, self.position = 0, 0
        if settings.calibrate:
            self._calibrate()

    def _jet_features(self) -> JetFeatures:
        """The discriminator's jet features, standardised with the training jets' mean and spread."""
        train = self.data.clouds.select(np.asarray(self.data.train_idx))
        x, lengths = torch.as_tensor(np.asarray(train.points, np.float64)), torch.as_tensor(train.lengths)
        mask = torch.arange(int(lengths.max()))[None, :] >= lengths[:, None]
        padded = torch.zeros(*mask.shape, x.shape[1], dtype=torch.float64)
        padded[~mask] = x
        k = self.settings.critic_leading
        identity = JetFeatures(_Identity(), torch.zeros(2 + 3 * k), torch.ones(2 + 3 * k), k)
        values = identity.raw(padded, mask)
        return JetFeatures(self.data.transform, values.mean(0), values.std(0).clamp_min(1e-6), k)

    def _fit_share(self) -> ShareParams:
        """Share-head constants from the training jets' pt_rel (positive values, a Log/BoxCox chain)."""
        clouds, column = self.data.clouds, SHARE_COLUMNS["jets"]
        name = clouds.point_names[column]
        train = clouds.select(np.asarray(self.data.train_idx))
        try:
            params = fit_share_params(
                train.points[:, column],
                train.lengths,
                train.conditions,
                "jets",
                self.data.transform.columns[name],
            )
            self.data.transform.columns[name].transform_log_torch(torch.zeros(1))
        except (ValueError, NotImplementedError) as err:
            raise DataError(
                f"mpgan: pt_share needs positive {name!r} values and a transform of that column "
                f"starting with Log or BoxCox: {err}"
            ) from err
        return params

    def _calibrate(self) -> None:
        """Start the generator's output at the mean and spread of random training jets (transformed)."""
        rng = np.random.default_rng([self.data.seed, 19])
        picked = rng.choice(len(self.dataset), size=min(CALIBRATION_CLOUDS, len(self.dataset)), replace=False)
        picked = picked[self.dataset.lengths[picked] > 0]
        if len(picked) == 0:
            return
        x, mask, raw = collate_clouds([self.dataset[int(i)] for i in picked])
        valid = x[~mask].double()
        cond = make_condition(raw[:, :-1], raw[:, -1], "jets", self.data.mean_n).to(self.device)
        noise = torch.randn(*mask.shape, self.generator.noise_dim, device=self.device)
        mean, std = valid.mean(dim=0), valid.std(dim=0) if len(valid) > 1 else torch.ones(valid.shape[1])
        if self.share is not None:  # the pt_rel output is the logit of the share: within-jet spread of log pt
            k = SHARE_COLUMNS["jets"]
            jets = self.data.clouds.select(self.dataset.indices[picked])
            log_pt = np.log(np.asarray(jets.points[:, k], np.float64))
            jet = np.repeat(np.arange(len(jets)), jets.lengths)
            centred = log_pt - (np.bincount(jet, log_pt, len(jets)) / jets.lengths)[jet]
            std[k] = float(np.sqrt(np.mean(centred**2)))
            mean[k] = -SHARE_CAP_SIGMAS * std[k]
        mask = mask.to(self.device)
        self.generator.calibrate(noise, cond, mask, mean.float(), std.float().clamp_min(1e-3))

    # ------------------------------------------------------------------------------ training

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self.critic}

    def param_groups(self) -> list[ParamGroup]:
        s = self.settings
        betas = (s.beta1, s.beta2)
        return [
            ParamGroup("generator", ("generator",), s.lr_generator, betas, ema=True),
            ParamGroup("critic", ("critic",), s.lr_critic, betas, ema=False),
        ]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next padded training batch (x, mask True = padding, raw condition with n last)."""
        self.batches.set_epoch(self.epoch)
        if self.position >= len(self.batches.batches()):
            self.epoch, self.position = self.epoch + 1, 0
            self.batches.set_epoch(self.epoch)
        batch = self.batches.batches()[self.position]
        self.position += 1
        self.dataset.set_epoch(self.epoch)
        return collate_clouds([self.dataset[int(i)] for i in batch])

    def critic_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        """Least squares: (D(real) - 1)^2 + D(fake)^2; Wasserstein: D(fake) - D(real) (batch means)."""
        if self.settings.loss == "ls":
            return (d_real - 1.0).pow(2).mean() + d_fake.pow(2).mean()
        return d_fake.mean() - d_real.mean()

    def generator_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        """Least squares: (D(fake) - 1)^2; Wasserstein: -D(fake) (batch means)."""
        if self.settings.loss == "ls":
            return (d_fake - 1.0).pow(2).mean()
        return -d_fake.mean()

    def train_step(self, ctx: StepContext) -> dict[str, float]:
        s, device = self.settings, ctx.device
        x, mask, raw = self.next_batch()
        cond = make_condition(raw[:, :-1], raw[:, -1], "jets", self.data.mean_n).to(device)
        x, mask = x.to(device), mask.to(device)

        self.critic.requires_grad_(True)
        noise = torch.randn(*mask.shape, self.generator.noise_dim, device=device)
        with torch.no_grad(), ctx.autocast():
            fake = self.generator(noise, cond, mask)
        fake = fake.float()
        with ctx.autocast():
            d_real = self.critic(x, cond, mask).float()
            d_fake = self.critic(fake, cond, mask).float()
        loss_critic = self.critic_loss(d_real, d_fake)
        gp = torch.zeros((), device=device)
        if s.loss == "wgan-gp" and s.gp_lambda > 0:
            eps = torch.rand(x.shape[0], 1, 1, device=device)
            gp = gradient_penalty(self.critic, eps * x + (1.0 - eps) * fake, cond, mask, 0)
            loss_critic = loss_critic + s.gp_lambda * gp
        ctx.optimise("critic", loss_critic)
        figures = {
            "loss_critic": float(loss_critic.detach()),
            "gradient_penalty": float(gp.detach()),
            "d_real": float(d_real.detach().mean()),
            "d_fake": float(d_fake.detach().mean()),
        }
        if ctx.step % s.n_critic != s.n_critic - 1:
            return figures

        self.critic.requires_grad_(False)
        try:
            with ctx.autocast():
                noise = torch.randn(*mask.shape, self.generator.noise_dim, device=device)
                d_fake = self.critic(self.generator(noise, cond, mask), cond, mask).float()
            loss = self.generator_loss(d_fake)
            ctx.optimise("generator", loss)
        finally:
            self.critic.requires_grad_(True)
        figures["loss_generator"] = float(loss.detach())
        return figures

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # ---------------------------------------------------------------------------- validation

    def generate(self, lengths: np.ndarray, seed: int) -> np.ndarray:
        """Physical points (P, 3) float64 (jets in input order) with these particle counts."""
        raw = np.zeros((len(lengths), 1))  # the condition is n / mean_n alone
        return generate_physical(self.generator, self.data, raw, lengths, seed, 4 * self.settings.max_tokens)

    def validate(self, n_max: int, seed: int) -> dict[str, float]:
        """W1M, W1P (mean W1 of the particle features) and W1PT (W1 of the jets' sum of the last
        feature pt_rel) on up to ``n_max`` validation jets (their own n); the figure that picks the
        exported model is their sum (each 4-6e-3 real vs real on the top jets), so that the particle
        distributions count beside the jet mass."""
        from pipelines.training.validation import jet_figures

        idx = np.asarray(self.data.val_idx, dtype=np.int64)[:n_max]
        if len(idx) == 0:
            return {}
        real = self.data.clouds.select(idx)
        gen = self.generate(real.lengths, seed)
        ref = np.asarray(real.points, dtype=np.float64)
        figures = jet_figures(gen, real.lengths, ref, real.lengths)
        if not (np.isfinite(gen).all() and len(ref)):
            return {"figure": float("inf"), "w1m": figures["w1m"]}
        w1p = float(np.mean([wasserstein_distance(gen[:, k], ref[:, k]) for k in range(ref.shape[1])]))
        n, k = len(real.lengths), SHARE_COLUMNS["jets"]
        jet = np.repeat(np.arange(n), real.lengths)
        w1pt = float(wasserstein_distance(np.bincount(jet, gen[:, k], n), np.bincount(jet, ref[:, k], n)))
        return {"figure": figures["w1m"] + w1p + w1pt, "w1m": figures["w1m"], "w1p": w1p, "w1pt": w1pt}

    # ----------------------------------------------------------------------------- export

    def export_config(self) -> dict[str, Any]:
        return {
            "architecture": dict(self.arch),
            "point_dim": self.point_dim,
            "mean_n": float(self.data.mean_n),
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
    ) -> MPGenerator:
        expected = {"architecture", "point_dim", "mean_n", "share"}
        if set(config) != expected:
            raise ValueError(f"mpgan config keys {sorted(config)}, expected {sorted(expected)}")
        arch = config["architecture"]
        if set(arch) != set(ARCHITECTURE):
            raise ValueError(f"mpgan architecture keys {sorted(arch)}, expected {sorted(ARCHITECTURE)}")
        MPGANSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()})  # checks values
        share = ShareParams(**config["share"]) if config["share"] is not None else None
        generator = MPGenerator(arch, int(config["point_dim"]), 1, float(config["mean_n"]), share)
        generator.load_state_dict(state["generator"])
        return generator.to(device).eval()
