"""Learned multiplicity models: p(n | E_inc) for showers (hits per shower), p(n) for jets.

Two families, both saved as plain JSON and sampled with a seeded numpy Generator:

* ``mixture`` (default for showers): a hurdle model. P(n = 0 | x) = sigmoid(z(x)); for n >= 1 a
  mixture of K Gaussians on y = log(n) is *discretised* exactly: P(n | n >= 1, x) is the mixture
  mass of [log n, log(n + 1)), renormalised to [0, log(n_max + 1)) so that n never exceeds
  ``n_max``. Weights, means and widths come from a small tanh MLP of x = standardised
  log(E_inc / MeV) (a constant input for unconditional use). Fitted by maximum likelihood (minibatch
  Adam, float64, seeded). Zero-hit showers get their own probability instead of being smeared.
* ``categorical`` (default for jets): p(n) over 0..n_max, closed-form maximum likelihood
  (frequencies plus an optional pseudo-count). Exact for the few-slot jet case, where n = n_max
  is a large spike. Jets of one type are unconditional.
* ``per-type`` (jets of several types, :class:`PerTypeMultiplicity`): p(n | type), one model of the
  configured family per jet type, fitted on that type's training jets; conditions are JetNet type codes.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.models.multiplicity_settings import MultiplicitySettings

log = logging.getLogger(__name__)

KINDS = ("showers", "jets")
FORMAT = "pipelines.multiplicity/1"


# ----------------------------------------------------------------------------------------------
# Categorical p(n)
# ----------------------------------------------------------------------------------------------


@dataclass
class CategoricalMultiplicity:
    """Unconditional p(n) over n = 0..n_max."""

    probs: np.ndarray  # (n_max + 1,) summing to 1

    family = "categorical"
    conditional = False

    def __post_init__(self) -> None:
        p = np.asarray(self.probs, dtype=np.float64)
        if p.ndim != 1 or len(p) < 2 or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
            raise ValueError("categorical probabilities must be a non-negative vector summing to 1")
        self.probs = p / p.sum()

    @property
    def n_max(self) -> int:
        return len(self.probs) - 1

    @classmethod
    def fit(cls, n: np.ndarray, n_max: int, smoothing: float = 0.0) -> CategoricalMultiplicity:
        n = _check_counts(n, n_max)
        counts = np.bincount(n, minlength=n_max + 1).astype(np.float64) + smoothing
        return cls(counts / counts.sum())

    def pmf(self, conditions: np.ndarray | None = None) -> np.ndarray:
        """(M, n_max + 1) probabilities (M = 1 without conditions)."""
        m = 1 if conditions is None else len(np.asarray(conditions).reshape(-1))
        return np.tile(self.probs, (m, 1))

    def sample(
        self, rng: np.random.Generator, conditions: np.ndarray | None = None, size: int | None = None
    ) -> np.ndarray:
        m = _sample_size(conditions, size)
        return rng.choice(self.n_max + 1, size=m, p=self.probs).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "family": self.family, "probs": self.probs.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalMultiplicity:
        return cls(np.asarray(d["probs"], dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# Hurdle + discretised log-normal mixture, conditioned by an MLP
# ----------------------------------------------------------------------------------------------


def _log_interval_np(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log(Phi(hi) - Phi(lo)) for standardised lo < hi, stable in both tails."""
    flip = lo > 0
    a = np.where(flip, -hi, lo)
    b = np.where(flip, -lo, hi)
    lb, la = special.log_ndtr(b), special.log_ndtr(a)
    return lb + np.log(-np.expm1(np.minimum(la - lb, -1e-300)))


@dataclass
class MixtureMultiplicity:
    """Hurdle (n = 0) plus a discretised Gaussian mixture on log(n) for n in 1..n_max."""

    n_max: int
    conditional: bool
    x_mean: float  # standardisation of the condition log(E_inc / MeV)
    x_std: float
    y_mean: float  # scale of log(n) used by the output layer
    y_std: float
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W (in, out), b (out,)) per layer, tanh between

    family = "mixture"

    @property
    def n_components(self) -> int:
        return (self.layers[-1][1].shape[0] - 1) // 3

    def _features(self, conditions: np.ndarray | None, size: int | None) -> np.ndarray:
        if self.conditional:
            if conditions is None:
                raise ValueError("this multiplicity model is conditional: pass incident energies (MeV)")
            e = np.asarray(conditions, dtype=np.float64).reshape(-1)
            if np.any(~np.isfinite(e)) or np.any(e <= 0):
                raise ValueError("incident energies must be finite and > 0 MeV")
            return ((np.log(e) - self.x_mean) / self.x_std)[:, None]
        return np.zeros((_sample_size(conditions, size), 1))

    def params(self, conditions: np.ndarray | None = None, size: int | None = None) -> dict[str, np.ndarray]:
        """Hurdle logit (M,), log mixture weights, means and sigmas of log(n) (M, K)."""
        h = self._features(conditions, size)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.tanh(h)
        return _split_head(h, self.y_mean, self.y_std, np)

    def pmf(self, conditions: np.ndarray | None = None, size: int | None = None) -> np.ndarray:
        """(M, n_max + 1) exact probabilities of n = 0..n_max."""
        p = self.params(conditions, size)
        edges = np.log(np.arange(1, self.n_max + 2, dtype=np.float64))  # log 1 .. log(n_max + 1)
        mu, sig = p["mu"][:, :, None], p["sigma"][:, :, None]
        z = (edges[None, None, :] - mu) / sig
        cdf = special.ndtr(z)  # (M, K, n_max + 1)
        w = np.exp(p["log_w"])[:, :, None]
        mass = (w * np.diff(cdf, axis=2)).sum(axis=1)
        total = (w[:, :, 0] * np.exp(_log_interval_np(z[:, :, 0], z[:, :, -1]))).sum(axis=1)
        p0 = special.expit(p["zero_logit"])
        out = np.empty((len(p0), self.n_max + 1))
        out[:, 0] = p0
        out[:, 1:] = (1 - p0)[:, None] * mass / total[:, None]
        return out

    def sample(
        self, rng: np.random.Generator, conditions: np.ndarray | None = None, size: int | None = None
    ) -> np.ndarray:
        """Seeded draws of n in 0..n_max, one per condition (or ``size`` unconditional draws)."""
        p = self.params(conditions, size)
        m, k = p["mu"].shape
        y_max = np.log(self.n_max + 1.0)
        a = (0.0 - p["mu"]) / p["sigma"]
        b = (y_max - p["mu"]) / p["sigma"]
        log_comp = p["log_w"] + _log_interval_np(a, b)  # component weights inside [0, y_max)
        g = np.exp(log_comp - log_comp.max(axis=1, keepdims=True))
        g /= g.sum(axis=1, keepdims=True)
        u_zero, u_comp, u_y = rng.random(m), rng.random(m), rng.random(m)
        comp = np.minimum((np.cumsum(g, axis=1) < u_comp[:, None]).sum(axis=1), k - 1)
        rows = np.arange(m)
        mu, sig, ac, bc = p["mu"][rows, comp], p["sigma"][rows, comp], a[rows, comp], b[rows, comp]
        flip = ac > 0  # interval entirely in the upper tail: sample the mirrored lower tail
        lo = np.where(flip, special.ndtr(-bc), special.ndtr(ac))
        hi = np.where(flip, special.ndtr(-ac), special.ndtr(bc))
        q = special.ndtri(np.clip(lo + u_y * (hi - lo), 1e-300, 1 - 1e-16))
        y = np.where(flip, mu - sig * q, mu + sig * q)
        n = np.floor(np.exp(np.clip(y, 0.0, y_max))).astype(np.int64)
        n = np.clip(n, 1, self.n_max)
        n[u_zero < special.expit(p["zero_logit"])] = 0
        return n

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "family": self.family, "n_max": self.n_max, "conditional": self.conditional,
            "x_mean": self.x_mean, "x_std": self.x_std, "y_mean": self.y_mean, "y_std": self.y_std,
            "layers": [{"weight": w.tolist(), "bias": b.tolist()} for w, b in self.layers],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixtureMultiplicity:
        layers = [
            (np.asarray(lay["weight"], np.float64), np.asarray(lay["bias"], np.float64))
            for lay in d["layers"]
        ]
        for (w0, _), (w1, _) in zip(layers[:-1], layers[1:], strict=False):
            if w0.shape[1] != w1.shape[0]:
                raise ValueError("layer shapes do not chain")
        if layers[0][0].shape[0] != 1 or (layers[-1][1].shape[0] - 1) % 3 != 0:
            raise ValueError("first layer must take 1 input and the head 1 + 3K outputs")
        return cls(int(d["n_max"]), bool(d["conditional"]), float(d["x_mean"]), float(d["x_std"]),
                   float(d["y_mean"]), float(d["y_std"]), layers)  # fmt: skip

    @classmethod
    def fit(
        cls,
        n: np.ndarray,
        n_max: int,
        energies: np.ndarray | None = None,
        settings: MultiplicitySettings | None = None,
    ) -> MixtureMultiplicity:
        """Maximum-likelihood fit on counts ``n`` (and incident energies in MeV if conditional)."""
        import torch

        s = settings or MultiplicitySettings()
        n = _check_counts(n, n_max)
        conditional = energies is not None
        if conditional:
            e = np.asarray(energies, dtype=np.float64).reshape(-1)
            if len(e) != len(n) or np.any(~np.isfinite(e)) or np.any(e <= 0):
                raise ValueError("energies must be finite, > 0 MeV and one per count")
            x_raw = np.log(e)
            x_mean, x_std = float(x_raw.mean()), float(max(x_raw.std(), 1e-6))
        else:
            x_raw, x_mean, x_std = np.zeros(len(n)), 0.0, 1.0
        pos = n[n > 0]
        logs = np.log(pos) if len(pos) else np.zeros(1)
        y_mean, y_std = float(logs.mean()), float(max(logs.std(), 0.1))

        torch.manual_seed(s.seed)
        k = s.n_components
        net = torch.nn.Sequential(
            torch.nn.Linear(1, s.hidden), torch.nn.Tanh(),
            torch.nn.Linear(s.hidden, s.hidden), torch.nn.Tanh(),
            torch.nn.Linear(s.hidden, 1 + 3 * k),
        ).double()  # fmt: skip
        with torch.no_grad():  # start the components on quantiles of log(n), the hurdle at its frequency
            head = net[-1]
            head.weight.mul_(0.1)
            q = (np.quantile(logs, (np.arange(k) + 0.5) / k) - y_mean) / y_std
            frac0 = np.clip(np.mean(n == 0), 1e-4, 1 - 1e-4)
            head.bias.zero_()
            head.bias[0] = float(np.log(frac0 / (1 - frac0)))
            head.bias[1 + k : 1 + 2 * k] = torch.as_tensor(q)
        x = torch.as_tensor((x_raw - x_mean) / x_std)[:, None]
        nt = torch.as_tensor(n)
        is_zero = nt == 0
        lo = torch.log(nt.clamp(min=1).double())[:, None]
        hi = torch.log(nt.clamp(min=1).double() + 1)[:, None]
        y_max = float(np.log(n_max + 1.0))
        opt = torch.optim.Adam(net.parameters(), lr=s.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.steps)
        gen = torch.Generator().manual_seed(s.seed)
        for _ in range(s.steps):
            idx = torch.randint(len(n), (min(s.batch_size, len(n)),), generator=gen)
            if s.batch_size >= len(n):
                idx = torch.arange(len(n))
            p = _split_head(net(x[idx]), y_mean, y_std, torch)
            mu, sig = p["mu"], p["sigma"]
            log_mass = torch.logsumexp(
                p["log_w"] + _log_interval_torch((lo[idx] - mu) / sig, (hi[idx] - mu) / sig), dim=1
            )
            log_total = torch.logsumexp(
                p["log_w"] + _log_interval_torch(-mu / sig, (y_max - mu) / sig), dim=1
            )
            z = p["zero_logit"]
            ll = torch.where(is_zero[idx], torch.nn.functional.logsigmoid(z),
                             torch.nn.functional.logsigmoid(-z) + log_mass - log_total)  # fmt: skip
            loss = -ll.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log.info("multiplicity mixture fit: mean NLL %.4f nats after %d steps", float(loss.detach()), s.steps)
        layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
                  for m in net if isinstance(m, torch.nn.Linear)]  # fmt: skip
        return cls(n_max, conditional, x_mean, x_std, y_mean, y_std, layers)


def _split_head(h: Any, y_mean: float, y_std: float, xp: Any) -> dict[str, Any]:
    """Network output (M, 1 + 3K) -> hurdle logit, log weights, means and sigmas of log(n)."""
    k = (h.shape[1] - 1) // 3
    logits = h[:, 1 : 1 + k]
    if xp is np:
        log_w = logits - special.logsumexp(logits, axis=1, keepdims=True)
        sigma = y_std * (np.logaddexp(0.0, h[:, 1 + 2 * k :]) + 1e-3)
    else:
        log_w = logits - xp.logsumexp(logits, dim=1, keepdim=True)
        sigma = y_std * (xp.nn.functional.softplus(h[:, 1 + 2 * k :]) + 1e-3)
    return {
        "zero_logit": h[:, 0],
        "log_w": log_w,
        "mu": y_mean + y_std * h[:, 1 + k : 1 + 2 * k],
        "sigma": sigma,
    }


def _log_interval_torch(lo: Any, hi: Any) -> Any:
    """Torch version of :func:`_log_interval_np` (differentiable, no NaN gradients)."""
    import torch

    flip = lo > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    lb, la = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return lb + torch.log(-torch.expm1(torch.clamp(la - lb, max=-1e-15)))


# ----------------------------------------------------------------------------------------------
# p(n | jet type): one unconditional model per type
# ----------------------------------------------------------------------------------------------


@dataclass
class PerTypeMultiplicity:
    """p(n | jet type): an unconditional model per type; conditions are JetNet type codes (N,)."""

    models: dict[str, CategoricalMultiplicity | MixtureMultiplicity]  # type letter -> p(n)

    family = "per-type"
    conditional = True

    def __post_init__(self) -> None:
        from pipelines.jet_types import JET_TYPES

        if not self.models or any(t not in JET_TYPES for t in self.models):
            raise ValueError(f"per-type multiplicity needs models for types of {JET_TYPES}")
        if any(m.conditional for m in self.models.values()):
            raise ValueError("per-type multiplicity models must be unconditional")
        self.models = {t: self.models[t] for t in JET_TYPES if t in self.models}

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self.models)

    @property
    def n_max(self) -> int:
        return max(m.n_max for m in self.models.values())

    def _letters(self, conditions: np.ndarray | None) -> np.ndarray:
        from pipelines.jet_types import type_letters

        if conditions is None:
            raise ValueError("this multiplicity model is conditional: pass the jet type codes")
        letters = np.asarray(type_letters(np.asarray(conditions).reshape(-1)), dtype=object)
        unknown = sorted(set(letters) - set(self.types))
        if unknown:
            raise ValueError(f"jet types {unknown} have no multiplicity model (types {list(self.types)})")
        return letters

    def pmf(self, conditions: np.ndarray | None = None) -> np.ndarray:
        """(M, n_max + 1) probabilities of the M jets' types."""
        letters = self._letters(conditions)
        out = np.zeros((len(letters), self.n_max + 1))
        for t, model in self.models.items():
            rows = letters == t
            out[rows, : model.n_max + 1] = model.pmf(size=1)[0] if model.family == "mixture" else model.probs
        return out

    def sample(
        self, rng: np.random.Generator, conditions: np.ndarray | None = None, size: int | None = None
    ) -> np.ndarray:
        """Seeded draws of n, one per type code in ``conditions`` (types in JetNet order)."""
        letters = self._letters(conditions)
        n = np.zeros(len(letters), dtype=np.int64)
        for t, model in self.models.items():
            rows = np.flatnonzero(letters == t)
            if len(rows):
                n[rows] = model.sample(rng, size=len(rows))
        return n

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "family": self.family,
            "models": {t: m.to_dict() for t, m in self.models.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PerTypeMultiplicity:
        models = {}
        for t, sub in dict(d["models"]).items():
            family = sub.get("family")
            if family == "categorical":
                models[t] = CategoricalMultiplicity.from_dict(sub)
            elif family == "mixture":
                models[t] = MixtureMultiplicity.from_dict(sub)
            else:
                raise ValueError(f"type {t!r}: unknown family {family!r}")
        return cls(models)

    @classmethod
    def fit(
        cls, n: np.ndarray, codes: np.ndarray, n_max: int, settings: MultiplicitySettings | None = None
    ) -> PerTypeMultiplicity:
        """One unconditional jet model (``settings.family``) per type code present in ``codes``."""
        from pipelines.jet_types import type_letters

        n, codes = np.asarray(n), np.asarray(codes).reshape(-1)
        if len(n) != len(codes):
            raise ValueError(f"{len(n)} counts but {len(codes)} type codes")
        return cls({
            type_letters([c])[0]: fit_multiplicity(n[codes == c], "jets", n_max, None, settings)
            for c in np.unique(codes)
        })  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Common helpers, persistence and the CLI stage
# ----------------------------------------------------------------------------------------------

Multiplicity = CategoricalMultiplicity | MixtureMultiplicity | PerTypeMultiplicity


def _sample_size(conditions: np.ndarray | None, size: int | None) -> int:
    if conditions is not None:
        return len(np.asarray(conditions).reshape(-1))
    if size is None or size < 0:
        raise ValueError("pass conditions or a non-negative size")
    return int(size)


def _check_counts(n: np.ndarray, n_max: int) -> np.ndarray:
    n = np.asarray(n)
    if n.ndim != 1 or len(n) == 0:
        raise ValueError("counts must be a non-empty 1-d array")
    if np.any(n < 0) or np.any(n > n_max) or np.any(n != np.round(n)):
        raise ValueError(f"counts must be integers in 0..{n_max}")
    return n.astype(np.int64)


def fit_multiplicity(
    n: np.ndarray,
    kind: str,
    n_max: int,
    energies: np.ndarray | None = None,
    settings: MultiplicitySettings | None = None,
) -> Multiplicity:
    """Fit ``settings.family`` ("auto": mixture for showers, categorical for jets)."""
    s = settings or MultiplicitySettings()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    family = s.family if s.family != "auto" else ("mixture" if kind == "showers" else "categorical")
    if kind == "showers" and energies is None:
        raise ValueError("shower multiplicity needs the incident energies")
    if family == "categorical":
        if kind == "showers":
            raise ValueError("the categorical family is unconditional: use 'mixture' for showers")
        return CategoricalMultiplicity.fit(n, n_max, s.smoothing)
    return MixtureMultiplicity.fit(n, n_max, energies if kind == "showers" else None, s)


def save_multiplicity(path: str | Path, model: Multiplicity) -> None:
    """Write the model as JSON (atomically)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(model.to_dict()))


def load_multiplicity(path: str | Path) -> Multiplicity:
    """Read a model written by :func:`save_multiplicity`; DataError names the file on failure."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read multiplicity model: {err}") from err
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise DataError(f"{path}: not a multiplicity model (format {FORMAT!r} expected)")
    try:
        if d.get("family") == "categorical":
            return CategoricalMultiplicity.from_dict(d)
        if d.get("family") == "mixture":
            return MixtureMultiplicity.from_dict(d)
        if d.get("family") == "per-type":
            return PerTypeMultiplicity.from_dict(d)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed multiplicity model: {err}") from err
    raise DataError(f"{path}: unknown multiplicity family {d.get('family')!r}")


def default_n_max(kind: str, attrs: dict[str, Any], lengths: np.ndarray, dataset: str | None) -> int:
    """Largest allowed n: the geometry's voxel count (showers) or the particle slot count (jets)."""
    if kind == "showers":
        from pipelines.geometry import load_geometry

        name = dataset or attrs.get("dataset")
        if name is None:
            raise ValueError("showers: pass --dataset (the clouds file does not name its dataset)")
        return load_geometry(str(name)).n_voxels
    for key in ("n_particles", "n_slots", "num_particles"):
        if key in attrs:
            return int(attrs[key])
    return int(max(1, lengths.max()))


def plot_multiplicity(
    path: str | Path, model: Multiplicity, n: np.ndarray, energies: np.ndarray | None, seed: int = 0
) -> None:
    """Training n against model samples; for showers also the mean n per log-E bin, for jets of several
    types (``energies``: their type codes) the mean n per type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    gen = model.sample(rng, conditions=energies, size=len(n))
    ncols = 2 if energies is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4), squeeze=False)
    edges = np.histogram_bin_edges(np.concatenate([n, gen]), bins=min(60, model.n_max + 1))
    axes[0, 0].hist(n, bins=edges, histtype="step", label="train", density=True)
    axes[0, 0].hist(gen, bins=edges, histtype="step", label="model", density=True)
    axes[0, 0].set_xlabel("n (points per cloud)")
    axes[0, 0].legend()
    if isinstance(model, PerTypeMultiplicity):  # ``energies`` holds the jets' type codes
        from pipelines.jet_types import type_code

        x = np.arange(len(model.types))
        for shift, values, label in ((-0.2, n, "train"), (0.2, gen, "model")):
            means = [values[energies == type_code(t)].mean() for t in model.types]
            axes[0, 1].bar(x + shift, means, width=0.4, label=label)
        axes[0, 1].set_xticks(x, list(model.types))
        axes[0, 1].set_xlabel("jet type")
        axes[0, 1].set_ylabel("mean n")
        axes[0, 1].legend()
    elif energies is not None:
        e_edges = np.geomspace(energies.min(), energies.max() * (1 + 1e-9), 16)
        idx = np.clip(np.digitize(energies, e_edges) - 1, 0, len(e_edges) - 2)
        centres = np.sqrt(e_edges[1:] * e_edges[:-1])
        for values, label in ((n, "train"), (gen, "model")):
            means = [values[idx == i].mean() if np.any(idx == i) else np.nan for i in range(len(centres))]
            axes[0, 1].plot(centres, means, marker="o", label=label)
        axes[0, 1].set_xscale("log")
        axes[0, 1].set_xlabel("incident energy [MeV]")
        axes[0, 1].set_ylabel("mean n")
        axes[0, 1].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Stage ``train-multiplicity``: fit p(n | E) (showers) or p(n) (jets) on the train split."""
    from pipelines.io.clouds import TRAIN, read_clouds
    from pipelines.jet_types import codes_of_one_hot, types_of_conditions

    parser = argparse.ArgumentParser(prog="train-multiplicity", description=main.__doc__)
    parser.add_argument("--clouds", required=True, help="point-cloud HDF5 (pipelines.io.clouds)")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--settings", default="{}", help="JSON object of MultiplicitySettings")
    parser.add_argument("--out", required=True, help="multiplicity model (.json)")
    parser.add_argument("--out-plot", default=None, help="optional PNG of data vs model")
    parser.add_argument(
        "--dataset", default=None, help="CaloChallenge dataset (showers; default: clouds attrs)"
    )
    args = parser.parse_args(argv)
    settings = MultiplicitySettings.from_json(args.settings)
    if Path(args.out).suffix != ".json":
        raise ValueError(f"--out must end in .json, got {args.out}")

    clouds = read_clouds(args.clouds)
    train = clouds.split_indices(TRAIN)
    if len(train) == 0:
        raise DataError(f"{args.clouds}: no clouds in the train split")
    n_max = settings.n_max or default_n_max(args.kind, clouds.attrs, clouds.lengths, args.dataset)
    rng = np.random.default_rng(settings.seed)
    if len(train) > settings.max_train:
        train = np.sort(rng.choice(train, settings.max_train, replace=False))
    n = clouds.lengths[train]
    if np.any(n > n_max):
        raise DataError(f"{args.clouds}: a train cloud has {n.max()} points, more than n_max = {n_max}")
    energies = None
    if args.kind == "showers":
        if not clouds.condition_names or clouds.condition_names[0] != "incident_energy":
            raise DataError(
                f"{args.clouds}: first condition must be 'incident_energy', got {clouds.condition_names}"
            )
        energies = clouds.conditions[train, 0]
        if np.any(~np.isfinite(energies)) or np.any(energies <= 0):
            raise DataError(f"{args.clouds}: incident energies must be finite and > 0 MeV")
    types = types_of_conditions(clouds.condition_names)
    if args.kind == "jets" and types:
        codes = codes_of_one_hot(clouds.conditions[train, -len(types) :], types)
        model = PerTypeMultiplicity.fit(n, codes, n_max, settings)
        energies = codes  # the plot draws the model for the training jets' types
    else:
        model = fit_multiplicity(n, args.kind, n_max, energies, settings)
    save_multiplicity(args.out, model)
    log.info("wrote %s (%s, n_max %d, %d train clouds)", args.out, model.family, n_max, len(n))
    if args.out_plot:
        plot_multiplicity(args.out_plot, model, n, energies, seed=settings.seed)
    return 0
