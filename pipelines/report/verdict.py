"""The verdict at the top of the report: each headline metric of the model read against its
real-vs-real floor, classed as within the real-vs-real spread, close or far, and one plain sentence.

Every metric shown (separation powers, classifier AUC and JSD, FPD, KPD, Wasserstein distances, MMD)
grows as the compared sample departs from the reference, so the model's excess over the floor is
Δ = model − real_vs_real; the coverage COV shrinks instead (higher is better,
:func:`pipelines.report.metric_catalogue.higher_is_better`), so there Δ = real_vs_real − model. Two
numbers describe it:

- pull = Δ / √(σ_model² + σ_real²), where metrics.json records at least one error;
- ratio = (model − ideal) / (real_vs_real − ideal), where the floor lies above the ideal value
  (0.5 for an AUC, 0 otherwise); for COV real_vs_real / model (how many times less of the reference
  the model covers; infinite for COV 0), where the floor is above 0.

Classes (thresholds below):

- **within** the real-vs-real spread: Δ ≤ 0, or pull ≤ 2, or (no pull) ratio ≤ 1.5;
- **close**: not within, and pull ≤ 5 or ratio ≤ 3 (a small significance or a small multiple of the
  floor);
- **far**: pull > 5 (or no pull) and ratio > 3 (or no ratio);
- **unrated**: no pull and no ratio (no errors recorded and a floor at or below the ideal value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipelines.report import metric_catalogue

#: pull (in combined standard deviations) up to which a model is within the real-vs-real spread
WITHIN_PULL = 2.0
#: pull up to which a model counts as close
CLOSE_PULL = 5.0
#: ratio to the floor up to which a model is within the spread when no errors are recorded
WITHIN_RATIO = 1.5
#: ratio to the floor up to which a model counts as close
CLOSE_RATIO = 3.0

WITHIN, CLOSE, FAR, UNRATED = "within", "close", "far", "unrated"
CLASS_TEXT = {
    WITHIN: "within real-vs-real spread",
    CLOSE: "close",
    FAR: "far",
    UNRATED: "not rated",
}
_RANK = {WITHIN: 0, UNRATED: 1, CLOSE: 2, FAR: 3}


@dataclass(frozen=True)
class MetricVerdict:
    """One metric of one run: stored values, the ratio and pull against the floor and the class."""

    key: str
    label: str
    model: float
    real: float
    ratio: float | None
    pull: float | None
    verdict: str


def ideal_value(key: str) -> float:
    """Value of a perfect model: 0.5 for a classifier AUC, 0 for every distance and JSD (not used for
    COV, see :func:`ratio_to_floor`)."""
    return 0.5 if key.endswith("_auc") else 0.0


def ratio_to_floor(key: str, model: float, real: float) -> float | None:
    """How many times the floor the model's departure is (module docstring); None without a floor."""
    if metric_catalogue.higher_is_better(key):
        if real <= 0:
            return None
        return real / model if model > 0 else math.inf
    ideal = ideal_value(key)
    return (model - ideal) / (real - ideal) if real - ideal > 0 else None


def _error(entry: Mapping) -> float:
    error = entry.get("error")
    return float(error) if isinstance(error, int | float) and math.isfinite(error) and error > 0 else 0.0


def classify(ratio: float | None, pull: float | None, excess: float) -> str:
    """Class of a metric from its ratio and pull against the floor (module docstring)."""
    if excess <= 0 or (pull is not None and pull <= WITHIN_PULL):
        return WITHIN
    if pull is None and ratio is None:
        return UNRATED
    if pull is None and ratio is not None and ratio <= WITHIN_RATIO:
        return WITHIN
    if (pull is not None and pull <= CLOSE_PULL) or (ratio is not None and ratio <= CLOSE_RATIO):
        return CLOSE
    return FAR


def compare(key: str, label: str, model: Mapping, real: Mapping) -> MetricVerdict | None:
    """The verdict of one metric from its metrics.json entries (None when a value is missing)."""
    m, r = model.get("value"), real.get("value")
    if m is None or r is None or not (math.isfinite(m) and math.isfinite(r)):
        return None
    excess = r - m if metric_catalogue.higher_is_better(key) else m - r
    sigma = math.hypot(_error(model), _error(real))
    pull = excess / sigma if sigma > 0 else None
    ratio = ratio_to_floor(key, m, r)
    return MetricVerdict(key, label, float(m), float(r), ratio, pull, classify(ratio, pull, excess))


def run_verdicts(rows: Mapping[str, Mapping], kind: str) -> list[MetricVerdict]:
    """Verdicts of a run's headline metrics (the non-component rows of known groups), in table order."""
    model, real = rows.get("model", {}), rows.get("real_vs_real", {})
    names = list(model) + [name for name in real if name not in model]
    out = []
    for info in metric_catalogue.select_metrics(names, kind):
        if info.sub or info.group == metric_catalogue.GROUP_OTHER:
            continue
        if info.key in model and info.key in real:
            found = compare(info.key, info.label, model[info.key], real[info.key])
            if found is not None:
                out.append(found)
    return out


def _severity(item: MetricVerdict) -> tuple[int, float, float]:
    return (_RANK[item.verdict], item.pull if item.pull is not None else -math.inf, item.ratio or -math.inf)


def worst(verdicts: Sequence[MetricVerdict]) -> MetricVerdict | None:
    """The metric furthest from its floor: highest class, then largest pull, then largest ratio."""
    return max(verdicts, key=_severity) if verdicts else None


def _count(n: int, noun: str = "metric") -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary_sentence(verdicts: Sequence[MetricVerdict], show: Mapping[str, str] | None = None) -> str:
    """One plain sentence on a run's verdicts; ``show`` maps a metric key to its displayed value pair
    (e.g. "0.97 vs 0.51") for the worst metric, default the stored values to 3 significant digits."""
    if not verdicts:
        return "No metric has both a model and a real-vs-real value, so no verdict can be given."
    counts = {name: sum(v.verdict == name for v in verdicts) for name in _RANK}
    n = len(verdicts)
    bad = worst(verdicts)
    assert bad is not None
    pair = (show or {}).get(bad.key, f"{bad.model:.3g} vs {bad.real:.3g}")
    unrated = f"; {counts[UNRATED]} not rated (no real-vs-real floor)" if counts[UNRATED] else ""
    if counts[FAR]:
        return (
            f"The model is clearly distinguishable from the reference: {counts[FAR]} of {_count(n)} "
            f"far from the real-vs-real floor (worst: {bad.label}, {pair} real vs real), "
            f"{counts[CLOSE]} close, {counts[WITHIN]} within the real-vs-real spread{unrated}."
        )
    if counts[CLOSE]:
        return (
            f"The model is close to the reference: {counts[WITHIN]} of {_count(n)} within the "
            f"real-vs-real spread, {counts[CLOSE]} close (largest difference: {bad.label}, {pair} real "
            f"vs real), none far{unrated}."
        )
    if counts[WITHIN] == n:
        return (
            f"The model is indistinguishable from the reference by these metrics: all {n} are within the "
            "real-vs-real spread."
        )
    return (
        f"No metric is far or close, but {counts[UNRATED]} of {_count(n)} could not be rated (no "
        "real-vs-real floor)."
    )


def overall_class(verdicts: Sequence[MetricVerdict]) -> str:
    """The class of the run: that of its worst metric ("unrated" when there is none)."""
    bad = worst(verdicts)
    return bad.verdict if bad is not None else UNRATED


THRESHOLDS_TEXT = (
    f"Each headline metric is read against its real-vs-real floor (two halves of the reference, same code, "
    f"same sizes). Δ = model − real vs real (every metric grows as the samples differ, except COV, which "
    f"shrinks: there Δ = real vs real − model); pull = Δ / √(σ_model² + σ_real²) where errors were "
    f"recorded; ratio = (model − ideal) / (real vs real − ideal), ideal 0.5 for an AUC and 0 otherwise, "
    f"and real vs real / model for COV. Within the real-vs-real spread: Δ ≤ 0 or pull ≤ {WITHIN_PULL:g} "
    f"(without errors: ratio ≤ {WITHIN_RATIO:g}); close: pull ≤ {CLOSE_PULL:g} or ratio ≤ {CLOSE_RATIO:g}; "
    f"far: beyond both."
)
