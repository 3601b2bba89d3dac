"""Invertible preprocessing of point-cloud columns, fitted on the training split, stored as JSON.

Every transform works on one 1-d column (computed in float64, returned as float64), follows the
scikit-learn estimator protocol (``fit`` returns ``self``, ``transform``, ``inverse_transform``,
``fit_transform``) and serialises to plain data (``to_dict`` / ``from_dict``, registry keyed by
``"type"``); ``save_transform`` / ``load_transform`` write and read JSON, never pickle.

Showers (point columns energy [MeV], layer, alpha, r), following MDMA (arXiv:2408.04997):
    energy            -> BoxCox (maximum-likelihood lambda, then standardised)
    layer, r          -> Dequantize(n_bins) -> MinMaxLogit(range [0, n_bins]) -> Standardize
    alpha             -> Dequantize(n_alpha) -> Periodic(n_alpha) -> Standardize   (periodic: no
                         logit; the inverse wraps modulo n_alpha before flooring)
Jets (eta_rel, phi_rel, pt_rel):
    pt_rel            -> Log -> Standardize   (pt_rel > 0 spans decades; log makes it near Gaussian)
    eta_rel, phi_rel  -> Standardize          (already continuous, bounded and centred near 0; a
                                                logit would need a hard range that R = 0.8 jets
                                                can exceed after recentring)

Every column is a :class:`Chain` that records the range of the raw column seen in ``fit``
(``low``, ``high`` in the JSON); its inverse clamps into that range, so a sampled value never leaves
what training saw (energies above the largest training deposit, say). A chain read from an older
JSON file without the range loads and inverts as before, unclamped.

Dequantisation noise is drawn from the ``rng`` passed to ``transform`` (the data loader redraws it
every epoch), so ``transform(X, rng)`` of the same data with equally seeded generators is identical.

Every inverse is written once, against a tiny namespace of array functions (:data:`_NUMPY_OPS` or
:func:`_torch_ops`), and so exists for numpy (``inverse_transform``) and for torch tensors on any
device (``inverse_transform_torch``, float64, used when sampling on a GPU) with the same guards and
the same fitted constants. The smooth forward transforms (Standardize, Log, BoxCox, Periodic and
chains of them) also exist in torch (``transform_torch``, differentiable), for models that produce
physical values and train in transformed space.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from scipy import optimize, special

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.transforms_settings import FitSettings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_TINY = np.finfo(np.float64).tiny
_LOG_TINY = math.log(_TINY)
_LOG_MAX = math.log(np.finfo(np.float64).max)
_MAX = float(np.finfo(np.float64).max)

#: The array functions the inverse formulas use; numpy and torch share these names except expit.
_OP_NAMES = ("floor", "clip", "nan_to_num", "exp", "log", "where", "isfinite", "column_stack", "remainder")
_NUMPY_OPS = SimpleNamespace(
    **{n: getattr(np, n) for n in _OP_NAMES}, expit=special.expit, maximum=np.maximum
)


@functools.cache
def _torch_ops() -> SimpleNamespace:
    """The torch counterparts of :data:`_NUMPY_OPS` (torch is imported only when needed)."""
    import torch

    return SimpleNamespace(
        **{n: getattr(torch, n) for n in _OP_NAMES}, expit=torch.sigmoid, maximum=torch.clamp_min
    )


_REGISTRY: dict[str, type[Transform]] = {}


class NotFittedError(ValueError):
    """A transform was used before ``fit``."""


def register(cls: type[Transform]) -> type[Transform]:
    """Class decorator: make ``cls`` loadable by ``from_dict`` under its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _column(x: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d column, got shape {x.shape}")
    return x


def _finite_float(v: float, what: str) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v}")
    return v


def _torch_float64(z: torch.Tensor, name: str) -> torch.Tensor:
    import torch

    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{name}: expected a torch tensor, got {type(z).__name__}")
    return z.to(torch.float64)


def _safe_exp(x: Any, xp: SimpleNamespace = _NUMPY_OPS) -> Any:
    """exp(x) clipped so that the result is always finite and >= 0 (never inf)."""
    return xp.exp(xp.clip(x, _LOG_TINY, _LOG_MAX))


class Transform:
    """Base class of the column transforms."""

    #: names of the fitted attributes (None until fitted) and of the constructor settings.
    _fitted_attrs: ClassVar[tuple[str, ...]] = ()
    _settings: ClassVar[tuple[str, ...]] = ()
    #: fitted attributes that must be strictly positive when loaded (a scale such as ``std``).
    _positive_attrs: ClassVar[tuple[str, ...]] = ()

    def fit(self, x: np.ndarray, y: Any = None, *, rng: np.random.Generator | None = None) -> Transform:
        return self

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        raise NotImplementedError

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Physical values (float64) of the column ``z``; see the class for the guards."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._inverse(_column(z, type(self).__name__), _NUMPY_OPS)

    def inverse_transform_torch(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`inverse_transform` for a torch tensor on any device, computed and returned in float64."""
        z = _torch_float64(z, type(self).__name__)
        if z.ndim != 1:
            raise ValueError(f"{type(self).__name__}: expected a 1-d column, got shape {tuple(z.shape)}")
        return self._inverse(z, _torch_ops())

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        """The inverse formula on a float64 column, written with the array functions in ``xp``."""
        raise NotImplementedError

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable forward transform of a torch tensor (any shape, its dtype kept).

        Only the smooth transforms have one (no dequantisation noise, no range checks).
        """
        raise NotImplementedError(f"{type(self).__name__} has no torch forward transform")

    def fit_transform(
        self, x: np.ndarray, y: Any = None, *, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """``fit`` then ``transform``; the same ``rng`` serves both (dequantisation noise)."""
        return self.fit(x, rng=rng).transform(x, rng=rng)

    @property
    def is_fitted(self) -> bool:
        return all(getattr(self, a) is not None for a in self._fitted_attrs)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe description (settings and fitted values) with a ``"type"`` key."""
        d: dict[str, Any] = {"type": type(self).__name__}
        for a in self._settings + self._fitted_attrs:
            v = getattr(self, a)
            d[a] = None if v is None else (int(v) if isinstance(v, int | np.integer) else float(v))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transform:
        """Rebuild a transform (of the class named by ``d["type"]``) from :meth:`to_dict` output."""
        d = dict(d)
        name = d.pop("type", None)
        target = _REGISTRY.get(name) if isinstance(name, str) else None
        if target is None:
            raise ValueError(f"unknown transform type {name!r}; known: {sorted(_REGISTRY)}")
        if cls is not Transform and not issubclass(target, cls):
            raise ValueError(f"transform type {name!r} is not a {cls.__name__}")
        return target._from_fields(d)

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> Transform:
        unknown = set(d) - set(cls._settings) - set(cls._fitted_attrs)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        t = cls(**{k: d[k] for k in cls._settings if k in d})
        for a in cls._fitted_attrs:
            v = d.get(a)
            v = None if v is None else _finite_float(v, f"{cls.__name__}.{a}")
            if v is not None and a in cls._positive_attrs and v <= 0:
                raise ValueError(f"{cls.__name__}.{a} must be positive, got {v}")
            setattr(t, a, v)
        return t

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({fields})"


@register
class Dequantize(Transform):
    """Integer bin index b in [0, n_bins - 1] -> b + u with u ~ U[margin, 1 - margin).

    ``margin`` (default 1e-6 of a bin) keeps the continuous value away from the bin edges so that
    ``floor`` recovers b exactly after float64 round trips through the later transforms; it changes
    the U[0, 1) dequantisation density by a negligible amount. The inverse floors and clamps into
    [0, n_bins - 1] and returns integers as float64. Noise comes from ``rng``, or, when none is given,
    from an internal generator seeded with ``seed`` that advances with every call.
    """

    _settings = ("n_bins", "seed", "margin")

    def __init__(self, n_bins: int, seed: int = 0, margin: float = 1e-6):
        if int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"Dequantize: n_bins must be a positive integer, got {n_bins}")
        if not 0.0 <= margin < 0.5:
            raise ValueError(f"Dequantize: margin must be in [0, 0.5), got {margin}")
        self.n_bins = int(n_bins)
        self.seed = int(seed)
        self.margin = float(margin)
        self._default_rng = np.random.default_rng(self.seed)

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = _column(x, "Dequantize")
        if x.size and (np.any(x != np.floor(x)) or x.min() < 0 or x.max() > self.n_bins - 1):
            bad = x[(x != np.floor(x)) | (x < 0) | (x > self.n_bins - 1)][:3]
            raise ValueError(
                f"Dequantize: expected integer bin indices in [0, {self.n_bins - 1}], got e.g. {bad.tolist()}"
            )
        u = (rng if rng is not None else self._default_rng).random(x.shape[0])
        return x + (self.margin + (1.0 - 2.0 * self.margin) * u)

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        z = xp.nan_to_num(z, nan=0.0, posinf=self.n_bins - 1.0, neginf=0.0)
        return xp.clip(xp.floor(z), 0.0, self.n_bins - 1.0)


@register
class MinMaxLogit(Transform):
    """x -> p = eps + (1 - 2 eps) (x - low) / (high - low), clipped to [eps, 1 - eps] -> logit(p).

    ``low`` / ``high`` fixed at construction (e.g. ``low=0, high=n_bins`` for dequantised bin
    indices) are kept by ``fit``; otherwise ``fit`` takes the data minimum and maximum (a constant
    column gets ``high = low + 1``). The inverse is sigmoid, clipped to [eps, 1 - eps], then unscaled,
    so it always lands in [low, high].
    """

    _settings = ("eps", "low", "high")

    def __init__(self, eps: float = 1e-5, low: float | None = None, high: float | None = None):
        if not 0.0 < eps < 0.5:
            raise ValueError(f"MinMaxLogit: eps must be in (0, 0.5), got {eps}")
        if (low is None) != (high is None):
            raise ValueError("MinMaxLogit: give both low and high, or neither")
        if low is not None and not _finite_float(low, "low") < _finite_float(high, "high"):
            raise ValueError(f"MinMaxLogit: need low < high, got low={low}, high={high}")
        self.eps = float(eps)
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)
        self._fixed = low is not None

    def fit(self, x: np.ndarray, y: Any = None, *, rng: np.random.Generator | None = None) -> MinMaxLogit:
        if self._fixed:
            return self
        x = _column(x, "MinMaxLogit")
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError("MinMaxLogit.fit: need a non-empty column of finite values")
        self.low, self.high = float(x.min()), float(x.max())
        if self.high <= self.low:
            self.high = self.low + 1.0
        return self

    @property
    def is_fitted(self) -> bool:
        return self.low is not None

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        self._check_fitted()
        x = _column(x, "MinMaxLogit")
        p = self.eps + (1.0 - 2.0 * self.eps) * (x - self.low) / (self.high - self.low)
        p = np.clip(p, self.eps, 1.0 - self.eps)
        return special.logit(p)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "fixed_range": self._fixed}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> MinMaxLogit:
        fixed = bool(d.pop("fixed_range", d.get("low") is not None))
        t = super()._from_fields(d)
        t._fixed = fixed and t.low is not None
        return t

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        self._check_fitted()
        p = xp.nan_to_num(xp.clip(xp.expit(z), self.eps, 1.0 - self.eps), nan=self.eps)
        x = self.low + (p - self.eps) / (1.0 - 2.0 * self.eps) * (self.high - self.low)
        return xp.clip(x, self.low, self.high)


@register
class Periodic(Transform):
    """A periodic coordinate x (period ``period``, e.g. dequantised alpha in [0, n_alpha)) -> x / period.

    The forward map wraps x modulo the period first, so it lands in [0, 1) with no logit (a logit
    would push the seam, which is no boundary of the data, to infinity). The inverse wraps
    ``z * period`` modulo the period into [0, period) (NaN and infinities go to 0), so a model
    output anywhere on the real line decodes to a valid angle; a following :class:`Dequantize`
    floors it to the bin.
    """

    _settings = ("period",)

    def __init__(self, period: float):
        if not (math.isfinite(float(period)) and float(period) > 0):
            raise ValueError(f"Periodic: period must be a positive number, got {period}")
        self.period = float(period)

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = _column(x, "Periodic")
        if x.size and not np.all(np.isfinite(x)):
            raise ValueError("Periodic: values must be finite")
        w = np.remainder(x, self.period)
        return np.where(w >= self.period, 0.0, w) / self.period

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        y = xp.nan_to_num(z * self.period, nan=0.0, posinf=0.0, neginf=0.0)
        w = xp.remainder(y, self.period)
        # remainder(-1e-20, p) rounds to p itself: that angle is 0
        return xp.where((w >= self.period) | (w < 0.0), 0.0, w)

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        return x.remainder(self.period) / self.period


@register
class Standardize(Transform):
    """x -> (x - mean) / std (population std; a zero std is replaced by 1)."""

    _fitted_attrs = ("mean", "std")
    _positive_attrs = ("std",)

    def __init__(self) -> None:
        self.mean: float | None = None
        self.std: float | None = None

    def fit(self, x: np.ndarray, y: Any = None, *, rng: np.random.Generator | None = None) -> Standardize:
        x = _column(x, "Standardize")
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError("Standardize.fit: need a non-empty column of finite values")
        self.mean = float(x.mean())
        std = float(x.std())
        self.std = std if std > 0 else 1.0
        return self

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        self._check_fitted()
        return (_column(x, "Standardize") - self.mean) / self.std

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        self._check_fitted()
        return z * self.std + self.mean

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return (x - self.mean) / self.std


def _require_positive(x: np.ndarray, who: str) -> None:
    if x.size and not np.all(x > 0):
        bad = x[~(x > 0)][:3]
        raise ValueError(f"{who}: requires strictly positive values, got e.g. {bad.tolist()}")


@register
class Log(Transform):
    """x -> log(x) for positive x (e.g. jet pt_rel); the inverse exp is kept finite."""

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = _column(x, "Log")
        _require_positive(x, "Log")
        return np.log(x)

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        return _safe_exp(z, xp)

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        return x.log()

    def transform_log_torch(self, log_x: torch.Tensor) -> torch.Tensor:
        """The forward transform of x given log(x) (exact for x below the float range)."""
        return log_x


def boxcox_llf(lmbda: float, log_x: np.ndarray) -> float:
    """Box-Cox profile log-likelihood (up to a constant) of positive data given as ``log_x``.

    llf = (lambda - 1) sum(log x) - N/2 log(var(y)), y = (x^lambda - 1) / lambda (log x at 0).
    """
    y = log_x if abs(lmbda) < np.spacing(1.0) else np.expm1(lmbda * log_x) / lmbda
    var = float(np.var(y))
    if not var > 0 or not math.isfinite(var):
        return -math.inf
    return (lmbda - 1.0) * float(log_x.sum()) - 0.5 * log_x.size * math.log(var)


def _boxcox_forward(x: np.ndarray, lmbda: float) -> np.ndarray:
    log_x = np.log(x)
    return log_x if abs(lmbda) < np.spacing(1.0) else np.expm1(lmbda * log_x) / lmbda


@register
class BoxCox(Transform):
    """Box-Cox power transform with maximum-likelihood lambda, followed by standardisation.

    Like scikit-learn's ``PowerTransformer(method="box-cox", standardize=True)``: lambda maximises
    :func:`boxcox_llf` (Brent's method, started on the bracket (-2, 2) like scipy.stats.boxcox), then
    y is standardised. Positive data only (ValueError otherwise). The inverse clamps
    lambda * y + 1 to the smallest positive float64 and keeps the result finite: never NaN.
    """

    _fitted_attrs = ("lmbda", "mean", "std")
    _positive_attrs = ("std",)

    def __init__(self) -> None:
        self.lmbda: float | None = None
        self.mean: float | None = None
        self.std: float | None = None

    def fit(self, x: np.ndarray, y: Any = None, *, rng: np.random.Generator | None = None) -> BoxCox:
        x = _column(x, "BoxCox")
        if x.size < 2 or not np.all(np.isfinite(x)):
            raise ValueError("BoxCox.fit: need at least two finite values")
        _require_positive(x, "BoxCox")
        log_x = np.log(x)
        res = optimize.minimize_scalar(
            lambda lm: -boxcox_llf(lm, log_x), bracket=(-2.0, 2.0), method="brent", options={"xtol": 1e-10}
        )
        if not math.isfinite(res.x):
            raise ValueError("BoxCox.fit: the likelihood maximisation did not converge")
        self.lmbda = float(res.x)
        yt = _boxcox_forward(x, self.lmbda)
        self.mean = float(yt.mean())
        std = float(yt.std())
        self.std = std if std > 0 else 1.0
        return self

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        self._check_fitted()
        x = _column(x, "BoxCox")
        _require_positive(x, "BoxCox")
        return (_boxcox_forward(x, self.lmbda) - self.mean) / self.std

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        self._check_fitted()
        y = xp.nan_to_num(z * self.std + self.mean, nan=0.0, posinf=_MAX, neginf=-_MAX)
        if abs(self.lmbda) < np.spacing(1.0):
            return _safe_exp(y, xp)
        t = y * self.lmbda + 1.0
        t = xp.maximum(xp.where(xp.isfinite(t), t, _MAX), _TINY)
        return _safe_exp(xp.log(t) / self.lmbda, xp)

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform_log_torch(x.log())

    def transform_log_torch(self, log_x: torch.Tensor) -> torch.Tensor:
        """The forward transform of x given log(x): a share times a total stays exact in log space."""
        self._check_fitted()
        y = log_x if abs(self.lmbda) < np.spacing(1.0) else (self.lmbda * log_x).expm1() / self.lmbda
        return (y - self.mean) / self.std


@register
class Chain(Transform):
    """Transforms applied one after another to the same column; the inverse runs them backwards.

    ``fit`` records the range [low, high] of the raw column; the inverse clamps its result into it
    (NaN stays NaN). ``low`` / ``high`` are None for a chain read from a file written before the
    range was recorded: such a chain inverts unclamped, exactly as it did.
    """

    def __init__(self, steps: Sequence[Transform], low: float | None = None, high: float | None = None):
        self.steps = list(steps)
        for s in self.steps:
            if not isinstance(s, Transform):
                raise ValueError(f"Chain: {s!r} is not a Transform")
        if (low is None) != (high is None):
            raise ValueError("Chain: give both low and high of the fitted range, or neither")
        if low is not None and not _finite_float(low, "Chain low") <= _finite_float(high, "Chain high"):
            raise ValueError(f"Chain: need low <= high, got low={low}, high={high}")
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    @property
    def is_fitted(self) -> bool:
        return all(s.is_fitted for s in self.steps)

    def fit(self, x: np.ndarray, y: Any = None, *, rng: np.random.Generator | None = None) -> Chain:
        x = _column(x, "Chain")
        finite = x[np.isfinite(x)]
        self.low, self.high = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
        for s in self.steps:
            x = s.fit(x, rng=rng).transform(x, rng=rng)
        return self

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = _column(x, "Chain")
        for s in self.steps:
            x = s.transform(x, rng=rng)
        return x

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        for s in self.steps:
            x = s.transform_torch(x)
        return x

    def transform_log_torch(self, log_x: torch.Tensor) -> torch.Tensor:
        """The forward transform of x given log(x); the first step must take log input (Log, BoxCox)."""
        first = getattr(self.steps[0], "transform_log_torch", None) if self.steps else None
        if first is None:
            raise NotImplementedError("Chain: the first step does not take log input (needs Log or BoxCox)")
        x = first(log_x)
        for s in self.steps[1:]:
            x = s.transform_torch(x)
        return x

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        for s in reversed(self.steps):
            z = s._inverse(z, xp)
        if self.low is not None:
            z = xp.clip(z, self.low, self.high)
        return z

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "Chain", "steps": [s.to_dict() for s in self.steps]}
        if self.low is not None:
            d["low"], d["high"] = self.low, self.high
        return d

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> Chain:
        if "steps" not in d or not set(d) <= {"steps", "low", "high"}:
            raise ValueError(f"Chain: expected the fields 'steps' (and 'low', 'high'), got {sorted(d)}")
        return cls([Transform.from_dict(s) for s in d["steps"]], d.get("low"), d.get("high"))


@register
class PointTransform(Transform):
    """Maps each named point column of a (P, d) array through its own :class:`Chain`.

    Columns are processed in ``point_names`` order; the one ``rng`` is passed to every column in that
    order (so the noise for a given rng state is reproducible).
    """

    def __init__(self, point_names: Sequence[str], columns: Mapping[str, Transform]):
        self.point_names = tuple(point_names)
        if set(self.point_names) != set(columns) or len(self.point_names) != len(columns):
            raise ValueError(
                f"PointTransform: columns {sorted(columns)} do not match names {self.point_names}"
            )
        self.columns = {n: columns[n] for n in self.point_names}

    @property
    def is_fitted(self) -> bool:
        return all(c.is_fitted for c in self.columns.values())

    def _check_shape(self, x: Any) -> Any:
        """``x`` (an array or tensor) checked to be (P, d)."""
        if x.ndim != 2 or x.shape[1] != len(self.point_names):
            raise ValueError(
                f"PointTransform: expected (P, {len(self.point_names)}) points "
                f"{self.point_names}, got shape {tuple(x.shape)}"
            )
        return x

    def fit(self, x: np.ndarray, y: Any = None, *, rng: np.random.Generator | None = None) -> PointTransform:
        x = self._check_shape(np.asarray(x, dtype=np.float64))
        for j, name in enumerate(self.point_names):
            self.columns[name].fit(x[:, j], rng=rng)
        return self

    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = self._check_shape(np.asarray(x, dtype=np.float64))
        out = np.empty_like(x)
        for j, name in enumerate(self.point_names):
            out[:, j] = self.columns[name].transform(x[:, j], rng=rng)
        return out

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return self._inverse(self._check_shape(np.asarray(z, dtype=np.float64)), _NUMPY_OPS)

    def inverse_transform_torch(self, z: torch.Tensor) -> torch.Tensor:
        """(P, d) points -> physical values, float64 on ``z``'s device (used when sampling on a GPU)."""
        return self._inverse(self._check_shape(_torch_float64(z, "PointTransform")), _torch_ops())

    def _inverse(self, z: Any, xp: SimpleNamespace) -> Any:
        return xp.column_stack([c._inverse(z[:, j], xp) for j, c in enumerate(self.columns.values())])

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "PointTransform",
            "point_names": list(self.point_names),
            "columns": {n: c.to_dict() for n, c in self.columns.items()},
        }

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> PointTransform:
        if set(d) != {"point_names", "columns"}:
            raise ValueError(f"PointTransform: expected fields point_names, columns; got {sorted(d)}")
        columns = {}
        for n, c in d["columns"].items():
            try:
                columns[n] = Transform.from_dict(c)
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                raise ValueError(f"column {n!r}: {err}") from err
        return cls(d["point_names"], columns)


def _coordinate_chain(n_bins: int) -> Chain:
    return Chain([Dequantize(n_bins), MinMaxLogit(eps=1e-5, low=0.0, high=float(n_bins)), Standardize()])


def _periodic_chain(n_bins: int) -> Chain:
    return Chain([Dequantize(n_bins), Periodic(float(n_bins)), Standardize()])


def shower_transform(geometry: Any) -> PointTransform:
    """Unfitted transform of shower points (energy [MeV], layer, alpha, r); the coordinate ranges are the
    geometry's :attr:`~pipelines.geometry.Geometry.bin_ranges` (per-layer binnings: the largest), or
    ``n_layers``, ``n_alpha``, ``n_r`` of a regular grid described by these three attributes alone."""
    ranges = getattr(geometry, "bin_ranges", None)
    n_layers, n_alpha, n_r = ranges or (geometry.n_layers, geometry.n_alpha, geometry.n_r)
    return PointTransform(
        ("energy", "layer", "alpha", "r"),
        {
            "energy": Chain([BoxCox()]),
            "layer": _coordinate_chain(n_layers),
            "alpha": _periodic_chain(n_alpha),
            "r": _coordinate_chain(n_r),
        },
    )


def jet_transform() -> PointTransform:
    """Unfitted transform of jet constituents (eta_rel, phi_rel, pt_rel); see the module docstring."""
    return PointTransform(
        ("eta_rel", "phi_rel", "pt_rel"),
        {
            "eta_rel": Chain([Standardize()]),
            "phi_rel": Chain([Standardize()]),
            "pt_rel": Chain([Log(), Standardize()]),
        },
    )


def save_transform(path: str | Path, t: Transform) -> None:
    """Write ``t`` as JSON, atomically (floats round-trip exactly; NaN/inf are refused)."""
    text = json.dumps(
        {"format": "pipelines-transform", "version": 1, "transform": t.to_dict()}, indent=1, allow_nan=False
    )
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n")


def load_transform(path: str | Path) -> Transform:
    """Read a transform written by :func:`save_transform`; DataError naming the file if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read a transform JSON file: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != "pipelines-transform" or "transform" not in doc:
        raise DataError(f"{path}: not a transform file (missing format 'pipelines-transform')")
    try:
        return Transform.from_dict(doc["transform"])
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise DataError(f"{path}: invalid transform description: {err}") from err


# ----------------------------------------------------------------------------------------------- CLI


def fit_point_transform(
    clouds: Any,
    kind: str,
    geometry: Any = None,
    seed: int = 0,
    max_fit_points: int = 0,
    source: str = "clouds",
) -> PointTransform:
    """Fit the shower or jet transform on the training split (split == 0) of ``clouds``."""
    factories: dict[str, Callable[[], PointTransform]] = {
        "showers": lambda: shower_transform(geometry),
        "jets": jet_transform,
    }
    if kind not in factories:
        raise ValueError(f"kind must be 'showers' or 'jets', got {kind!r}")
    t = factories[kind]()
    if tuple(clouds.point_names) != t.point_names:
        raise DataError(
            f"{source}: point columns {tuple(clouds.point_names)} do not match the {kind} "
            f"transform's {t.point_names}"
        )
    train = np.flatnonzero(np.asarray(clouds.split) == 0)
    lengths = np.asarray(clouds.lengths)
    if lengths[train].sum() < 2:
        raise DataError(f"{source}: the training split has fewer than two points to fit transforms on")
    rng = np.random.default_rng(seed)
    if max_fit_points and lengths[train].sum() > max_fit_points:
        order = rng.permutation(train)
        keep = np.cumsum(lengths[order]) <= max_fit_points
        keep[0] = True
        train = np.sort(order[keep])
    points = np.asarray(clouds.select(train).points, dtype=np.float64)
    log.info("fitting %s transform on %d points of %d training clouds", kind, len(points), len(train))
    try:
        return t.fit(points, rng=rng)
    except ValueError as err:
        raise DataError(f"{source}: cannot fit the {kind} transform: {err}") from err


def main(argv: list[str] | None = None) -> int:
    """``fit-transforms``: fit the point transform on the training split and write it as JSON."""
    p = argparse.ArgumentParser(prog="fit-transforms", description=main.__doc__)
    p.add_argument("--clouds", required=True, help="point-cloud HDF5 file (pipelines.io.clouds)")
    p.add_argument("--kind", required=True, choices=("showers", "jets"))
    p.add_argument("--dataset", default=None, help="CaloChallenge dataset of the geometry (showers): 2 or 3")
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantisation noise and subsampling")
    p.add_argument("--out", required=True, help="output transform JSON")
    p.add_argument("--settings", default="{}", help='JSON object, e.g. {"max_fit_points": 5000000}')
    args = p.parse_args(argv)
    settings = FitSettings.from_json(args.settings)
    geometry = None
    if args.kind == "showers":
        if args.dataset is None:
            raise ValueError("fit-transforms --kind showers needs --dataset (e.g. 2)")
        from pipelines.geometry import load_geometry

        geometry = load_geometry(args.dataset)
    from pipelines.io.clouds import read_clouds

    clouds = read_clouds(args.clouds)
    t = fit_point_transform(clouds, args.kind, geometry, args.seed, settings.max_fit_points, str(args.clouds))
    save_transform(args.out, t)
    log.info("wrote %s", args.out)
    return 0
