"""What every metric name written by the evaluate stages means, how the report groups it, in which
units it is shown and which plot shows what it measures.

Showers (``evaluate-showers``): ``separation_<group>`` (mean separation power of the group's
histograms), ``fpd`` and ``kpd`` (raw; the report shows them × 10³ as the CaloChallenge tables do),
``cls_trees_high_{auc,jsd}`` (the tree classifier test, shown first among the classifier rows) and
``cls_{low,high}_{auc,jsd}`` (the CaloChallenge network classifier).  Jets (``evaluate-jets``): ``W1M``,
``W1PT``, ``W1P``, ``W1P_<feature>``, ``W1EFP``, ``W1EFP_<graph>``, ``FPD``, ``KPD``, each raw and in
published units under ``<name>_x1e3`` / ``<name>_x1e5`` (the report shows the scaled copy and skips the
raw duplicate), ``COV`` and ``MMD`` (raw; COV is the one metric where higher is better, see
:func:`higher_is_better`), and ``cls_trees_jet_{auc,jsd}``.  A name ending in
``_x1eK`` is taken as stored already × 10^K.  Unknown names land in an "other metrics" group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GROUP_SEPARATION = "Separation power S of the histograms (mean over the group)"
GROUP_CLASSIFIER = "Binary classifier test (reference vs compared sample)"
GROUP_FPD_SHOWERS = "Fréchet / kernel physics distance (high-level shower features)"
GROUP_W1 = "Wasserstein-1 distances (mean ± std over batches)"
GROUP_FPD_JETS = "Fréchet / kernel physics distance (36 energy-flow polynomials, d ≤ 4)"
GROUP_CLASSIFIER_JETS = "Binary classifier test on per-jet features (reference vs compared sample)"
GROUP_COV_MMD = "Coverage and minimum matching distance (energy mover's distance between jets)"
GROUP_OTHER = "Other metrics"

GROUP_NOTES = {
    GROUP_SEPARATION: "S = ½ Σ (h₁ − h₂)² / (h₁ + h₂) of unit-normalised histograms; 0 = identical, "
    "1 = disjoint. Per-histogram values in the section 'Separation powers'.",
    GROUP_CLASSIFIER: "AUC 0.5 / JSD 0 = indistinguishable, 1 = fully separable. With small samples "
    "statistical fluctuations can give AUC < 0.5 and JSD < 0. The tree test (first rows) is the sensitive "
    "one: read it against its real-vs-real column; it has no published counterpart. Only the network "
    "rows with the published setting (3 × 2048, 50 epochs, 10 trainings, plain inputs: config/full.yaml) "
    "on the real CaloChallenge files are comparable with the published tables.",
    GROUP_CLASSIFIER_JETS: "AUC 0.5 / JSD 0 = indistinguishable, 1 = fully separable; read the model "
    "column against the real-vs-real column (same code, same sizes). No published counterpart.",
    GROUP_FPD_SHOWERS: "Lower is better, 0 = identical. Shown × 10³ as in the CaloChallenge tables "
    "(metrics.json holds the raw values).",
    GROUP_W1: "Lower is better, 0 = identical. Shown in the published JetNet units (the _x1e3 / _x1e5 "
    "entries of metrics.json).",
    GROUP_FPD_JETS: "Lower is better, 0 = identical. Shown × 10³ (the _x1e3 entries of metrics.json).",
    GROUP_COV_MMD: "MPGAN's metrics (jetnet cov_mmd) per batch of real and generated jets (sizes in the "
    "run settings cov_mmd_batch_size_*), mean ± std over batches. COV: higher is better; MMD: lower is "
    "better. Even a perfect model reaches only the real-vs-real values (about COV 0.5-0.6), not COV 1 and "
    "MMD 0: read the model column against the real-vs-real column.",
    GROUP_OTHER: "Names without a known description; values as stored.",
}

SEPARATION_GROUPS = {
    "E_ratio": "total deposited over incident energy, E_tot / E_inc",
    "E_layer": "energy deposited per layer [MeV]",
    "EC_eta": "centre of energy in x (η direction) per layer [mm]",
    "EC_phi": "centre of energy in y (φ direction) per layer [mm]",
    "EC_r": "radial centre of energy per layer [mm]",
    "width_eta": "energy-weighted width in x (η direction) per layer [mm]",
    "width_phi": "energy-weighted width in y (φ direction) per layer [mm]",
    "width_r": "energy-weighted radial width per layer [mm]",
    "sparsity": "sparsity: fraction of voxels without energy above threshold, per layer",
    "voxel_energy": "energy of the individual voxels [MeV]",
}

_CLASSIFIER_INPUTS = {
    "low": "low-level inputs: log10 E_inc and every voxel energy / E_inc",
    "high": "high-level inputs: log10 E_inc, layer energies, centres of energy, widths, E_tot, sparsity",
}
_CLASSIFIER_SCORES = {
    "auc": "area under the ROC curve of the isotonic-calibrated classifier; 0.5 = ideal",
    "jsd": "Jensen-Shannon divergence (ln 2 − BCE) / ln 2 of the calibrated classifier; 0 = ideal",
}
_CLASSIFIER_ORDER = ("trees_high_auc", "trees_high_jsd", "low_auc", "high_auc", "low_jsd", "high_jsd")
_TREES_MEANING = (
    "gradient-boosted trees (k-fold cross-validated, isotonic-calibrated predictions): the sensitive test"
)
_NETWORK_MEANING = (
    "CaloChallenge network classifier; comparable with the published tables only with the published "
    "setting (see the run setting classifier_network)"
)

PARTICLE_FEATURES = {"eta_rel": "η_rel", "phi_rel": "φ_rel", "pt_rel": "pT_rel"}
_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_SCALED = re.compile(r"^(?P<base>.+)_x1e(?P<power>\d+)$")


@dataclass(frozen=True)
class MetricInfo:
    """How one metric of metrics.json is shown: ``key`` (its name there), the row ``label``, ``group``,
    ``meaning``, ``factor`` applied by the report to the stored value and ``unit`` (the displayed scale,
    e.g. "× 10³"); ``sub`` marks a component row of the metric above (indented)."""

    key: str
    label: str
    group: str
    meaning: str
    factor: float = 1.0
    unit: str = ""
    sub: bool = False
    order: int = 0


def power_text(power: int) -> str:
    """``× 10³`` style text of a power of ten (empty for 10⁰)."""
    return "" if power == 0 else "× 10" + str(power).translate(_SUPERSCRIPTS)


def _stored_power(name: str) -> tuple[str, int]:
    """(base name, K) of a name stored × 10^K (``W1M_x1e3`` -> ("W1M", 3)); K = 0 for raw names."""
    match = _SCALED.match(name)
    return (match.group("base"), int(match.group("power"))) if match else (name, 0)


def _shower_info(base: str) -> tuple[str, str, str, int, bool, int] | None:
    """(label, group, meaning, display power applied to a raw value, sub, order) or None if unknown."""
    if base.startswith("separation_") and base[len("separation_") :] in SEPARATION_GROUPS:
        group = base[len("separation_") :]
        order = list(SEPARATION_GROUPS).index(group)
        return f"S {group}", GROUP_SEPARATION, SEPARATION_GROUPS[group], 0, False, order
    match = re.fullmatch(r"cls_trees_high_(auc|jsd)", base)
    if match:
        score = match.group(1)
        inputs = f"{_CLASSIFIER_INPUTS['high']}, plus E_layer / E_inc and E_tot / E_inc"
        meaning = f"{_CLASSIFIER_SCORES[score]}; {_TREES_MEANING}; {inputs}"
        order = _CLASSIFIER_ORDER.index(f"trees_high_{score}")
        return f"{score.upper()} trees, high-level", GROUP_CLASSIFIER, meaning, 0, False, order
    match = re.fullmatch(r"cls_(low|high)_(auc|jsd)", base)
    if match:
        level, score = match.groups()
        meaning = f"{_CLASSIFIER_SCORES[score]}; {_NETWORK_MEANING}; {_CLASSIFIER_INPUTS[level]}"
        order = _CLASSIFIER_ORDER.index(f"{level}_{score}")
        return f"{score.upper()} network, {level}-level", GROUP_CLASSIFIER, meaning, 0, False, order
    if base == "fpd":
        meaning = (
            "Fréchet physics distance: Fréchet distance of Gaussians fitted to the high-level features, "
            "extrapolated to infinite sample size"
        )
        return "FPD", GROUP_FPD_SHOWERS, meaning, 3, False, 0
    if base == "kpd":
        meaning = (
            "kernel physics distance: unbiased MMD² with the polynomial kernel (x·y/d + 1)⁴ on the "
            "high-level features; can be negative when compatible with 0"
        )
        return "KPD", GROUP_FPD_SHOWERS, meaning, 3, False, 1
    return None


def _jet_info(base: str) -> tuple[str, str, str, int, bool, int] | None:
    """As :func:`_shower_info` for the jet metric names (display power for a raw value)."""
    if base == "W1M":
        return "W1M", GROUP_W1, "W1 of the relative jet mass m / pT_jet", 3, False, 0
    if base == "W1PT":
        meaning = "W1 of the relative jet pT from the particles, |Σ pT_rel (cos φ_rel, sin φ_rel)|"
        return "W1PT (jet pT)", GROUP_W1, meaning, 3, False, 1
    if base == "COV":
        meaning = (
            "coverage: fraction of the real jets that are the nearest real jet (by EMD) of some generated "
            "jet; higher is better"
        )
        return "COV", GROUP_COV_MMD, meaning, 0, False, 0
    if base == "MMD":
        meaning = "minimum matching distance: mean EMD of each real jet to its nearest generated jet"
        return "MMD", GROUP_COV_MMD, meaning, 0, False, 1
    if base == "W1P":
        meaning = "W1 of the particle features η_rel, φ_rel, pT_rel (real particles only), mean of the 3"
        return "W1P", GROUP_W1, meaning, 3, False, 10
    if base.startswith("W1P_") and base[4:] in PARTICLE_FEATURES:
        feature = base[4:]
        order = 11 + list(PARTICLE_FEATURES).index(feature)
        return f"W1P {PARTICLE_FEATURES[feature]}", GROUP_W1, f"W1 of the particle {feature}", 3, True, order
    if base == "W1EFP":
        meaning = "W1 of the 5 prime energy-flow polynomials with n = 4, d = 4, mean of the 5"
        return "W1EFP", GROUP_W1, meaning, 5, False, 20
    if base.startswith("W1EFP_"):
        graph = base[len("W1EFP_") :]
        meaning = f"W1 of the energy-flow polynomial of the graph '{graph}' (n = 4, d = 4)"
        return f"W1EFP {graph}", GROUP_W1, meaning, 5, True, 21
    if base == "FPD":
        meaning = (
            "Fréchet physics distance: Fréchet distance of Gaussians fitted to the 36 EFPs, extrapolated "
            "to infinite sample size"
        )
        return "FPD", GROUP_FPD_JETS, meaning, 3, False, 0
    if base == "KPD":
        meaning = (
            "kernel physics distance: unbiased MMD² with the polynomial kernel (x·y/d + 1)⁴ on the "
            "36 EFPs; can be negative when compatible with 0"
        )
        return "KPD", GROUP_FPD_JETS, meaning, 3, False, 1
    match = re.fullmatch(r"cls_trees_jet_(auc|jsd)", base)
    if match:
        score = match.group(1)
        inputs = (
            "per-jet inputs: relative mass, sum of pT_rel, multiplicity, (η_rel, φ_rel, pT_rel) of the "
            "leading particles"
        )
        meaning = f"{_CLASSIFIER_SCORES[score]}; {_TREES_MEANING}; {inputs}"
        return (
            f"{score.upper()} trees, per-jet",
            GROUP_CLASSIFIER_JETS,
            meaning,
            0,
            False,
            ("auc", "jsd").index(score),
        )
    return None


GROUP_ORDER = {
    "showers": (GROUP_SEPARATION, GROUP_CLASSIFIER, GROUP_FPD_SHOWERS, GROUP_OTHER),
    "jets": (GROUP_W1, GROUP_FPD_JETS, GROUP_COV_MMD, GROUP_CLASSIFIER_JETS, GROUP_OTHER),
}

#: metric base names whose value grows as the compared sample improves; every other metric shrinks
HIGHER_IS_BETTER = frozenset({"COV"})


def higher_is_better(key: str) -> bool:
    """Whether a larger value of metric ``key`` (raw or ``_x1eK``) means a better model (COV)."""
    return _stored_power(key)[0] in HIGHER_IS_BETTER


def metric_info(name: str, kind: str) -> MetricInfo:
    """Display information of metric ``name`` of a ``kind`` ("showers" | "jets") evaluation.  A raw
    value is shown in the published units (factor 10^K); a name stored as ``_x1eK`` is shown as is."""
    base, stored = _stored_power(name)
    known = (_shower_info if kind == "showers" else _jet_info)(base)
    if known is None:
        unit = power_text(stored)
        return MetricInfo(name, name, GROUP_OTHER, "(no description known for this metric name)", 1.0, unit)
    label, group, meaning, power, sub, order = known
    factor = 10.0 ** (power - stored) if power > stored else 1.0
    return MetricInfo(name, label, group, meaning, factor, power_text(max(power, stored)), sub, order)


def select_metrics(names: Iterable[str], kind: str) -> list[MetricInfo]:
    """The metrics to show, grouped and ordered: a raw name whose ``_x1eK`` copy is present is
    skipped (the copy is shown); unknown names keep their first-seen order at the end."""
    names = list(dict.fromkeys(names))
    scaled_bases = {_stored_power(name)[0] for name in names if _stored_power(name)[1] > 0}
    infos = [metric_info(name, kind) for name in names if name not in scaled_bases]
    groups = GROUP_ORDER.get(kind, (GROUP_OTHER,))
    first_seen = {info.key: index for index, info in enumerate(infos)}

    def sort_key(info: MetricInfo) -> tuple:
        group = groups.index(info.group) if info.group in groups else len(groups)
        return (group, info.order, first_seen[info.key])

    return sorted(infos, key=sort_key)


#: jet metrics (base names) and the histogram (name, or group as "group:<g>") that shows what they measure
_JET_PLOTS = {"W1M": "jet_relative_mass", "W1PT": "jet_relative_pt", "W1P": "group:particle",
              "W1EFP": "group:efp", "FPD": "group:efp", "KPD": "group:efp"}  # fmt: skip


def illustrating_histogram(key: str, kind: str, drawn: Sequence[tuple[str, str]]) -> str | None:
    """The drawn histogram that shows what metric ``key`` measures, from ``drawn`` (name, group) pairs
    in display order: a shower separation power's first histogram of its group, a jet W1 of a feature
    that feature's histogram, FPD/KPD of jets the first EFP; None for metrics without one (classifiers,
    shower FPD/KPD) or when it was not drawn."""
    base, _ = _stored_power(key)
    if kind == "showers":
        target = f"group:{base[len('separation_') :]}" if base.startswith("separation_") else None
    elif base.startswith("W1P_") and base[4:] in PARTICLE_FEATURES:
        target = f"particle_{base[4:]}"
    elif base.startswith("W1EFP_"):
        target = f"efp_{base[len('W1EFP_') :]}"
    else:
        target = _JET_PLOTS.get(base)
    if target is None:
        return None
    if target.startswith("group:"):
        return next((name for name, group in drawn if group == target[len("group:") :]), None)
    return target if any(name == target for name, _ in drawn) else None
