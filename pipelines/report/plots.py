"""Validation plots in a plain HEP style: reference filled grey, generated as a coloured step line,
ratio panel generated/reference with statistical bands.

Everything draws on ``matplotlib.figure.Figure`` objects with the Agg canvas (no pyplot state), so
plotting is safe in batch jobs. Inputs follow the evaluation contract: per histogram ``<name>__edges``
(k+1,), ``<name>__reference`` and ``<name>__generated`` (k,) raw counts; for showers
``mean_shower__{reference,generated}`` (n_layers, n_alpha, n_r) mean energy per voxel in MeV and
``nhits_vs_einc__{edges,reference,generated}`` (mean hit count per incident-energy bin, edges in
log10(E_inc / MeV), drawn as E_inc in MeV on a log axis).

Conventions: legends sit above the axes, never on the data; ratio-panel points beyond the panel's
range are marked by arrows at its edge; the EFP histograms (group ``efp``) use a log y axis; a jet
multiplicity histogram whose generated jets all have one n says "fixed n" instead of drawing a
near-empty figure; with ``PlotStyle.pdf`` every plot is also written as PDF beside its PNG.
"""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from pipelines.io.atomic import atomic_path
from pipelines.metrics.separation import counted_separation_power

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: histogram groups drawn on a log y axis whatever metrics.json says (long-tailed EFPs)
LOG_Y_GROUPS = frozenset({"efp"})
#: the jet multiplicity histogram of evaluate-jets (says "fixed n" when the generated n is fixed)
FIXED_N_HISTOGRAM = "multiplicity"

_RC = {
    "font.size": 10,
    "axes.labelsize": 10,
    "axes.titlesize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
    "xtick.minor.visible": True,
    "ytick.minor.visible": True,
    "axes.linewidth": 0.8,
}


@dataclass(frozen=True)
class PlotStyle:
    """Appearance shared by all plots (sizes in inches, resolution in dots per inch)."""

    dpi: int = 110
    width: float = 6.0
    reference_colour: str = "#c8c8c8"
    reference_label: str = "Reference"
    colour: str = "#d62728"
    ratio_range: tuple[float, float] = (0.5, 1.5)
    pdf: bool = False  # also write every plot as PDF


@dataclass(frozen=True)
class PlotRecord:
    """One written plot: its section ("group"), title, caption, PNG path and bytes."""

    group: str
    title: str
    caption: str
    path: Path
    png: bytes = field(repr=False)
    wide: bool = False  # shown across the page width (small multiples)


# ---------------------------------------------------------------- numbers behind the plots
def normalised(counts: np.ndarray) -> np.ndarray:
    """Counts scaled to unit sum (all zeros stay zeros)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def density(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """1/N dN/dx: counts divided by total and bin width (matches ``numpy.histogram(density=True)``)."""
    return normalised(counts) / np.diff(np.asarray(edges, dtype=np.float64))


def ratio_and_error(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ratio of unit-normalised generated to reference counts per bin and its Poisson error.

    ratio = (g / sum g) / (r / sum r); error = ratio * sqrt(1/g + 1/r) for g > 0 (0 for g = 0; the
    normalisation's own uncertainty is neglected). Bins with r = 0 give NaN (not drawn).
    """
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    if ref.shape != gen.shape:
        raise ValueError(f"reference {ref.shape} and generated {gen.shape} histograms differ in shape")
    ref_n, gen_n = normalised(ref), normalised(gen)
    safe_ref, safe_gen = np.where(ref > 0, ref, 1.0), np.where(gen > 0, gen, 1.0)
    ratio = np.where(ref > 0, gen_n / np.where(ref > 0, ref_n, 1.0), np.nan)
    relative = np.sqrt(np.where(gen > 0, 1.0 / safe_gen, 0.0) + 1.0 / safe_ref)
    error = np.where(ref > 0, np.where(gen > 0, ratio * relative, 0.0), np.nan)
    return ratio, error


def value_ratio(reference: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """Plain element-wise generated / reference (NaN where the reference is 0 or NaN)."""
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ref != 0, gen / np.where(ref != 0, ref, 1.0), np.nan)


def default_layers(mean_reference: np.ndarray, n: int = 3) -> list[int]:
    """Layers where the reference's cumulative mean energy first reaches 20/50/80 % (n = 3) of its total."""
    profile = np.asarray(mean_reference, dtype=np.float64).reshape(mean_reference.shape[0], -1).sum(axis=1)
    total = profile.sum()
    if total <= 0:
        return sorted({0, len(profile) // 2, len(profile) - 1})[:n]
    cumulative = np.cumsum(profile) / total
    fractions = np.linspace(0.2, 0.8, n) if n > 1 else np.array([0.5])
    return sorted({int(np.searchsorted(cumulative, f)) for f in fractions})


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` entries, NaN-aware (window 1 returns the input)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values.copy()
    valid = np.isfinite(values)
    sums = np.cumsum(np.where(valid, values, 0.0))
    counts = np.cumsum(valid)
    sums[window:] = sums[window:] - sums[:-window]
    counts[window:] = counts[window:] - counts[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# ---------------------------------------------------------------- figure helpers
def _styled(function):
    """Run a figure-building function under the report's matplotlib rc settings."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(_RC):
            return function(*args, **kwargs)

    return wrapper


def _figure(style: PlotStyle, height: float) -> Figure:
    fig = Figure(figsize=(style.width, height), dpi=style.dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _ratio_axes(fig: Figure):
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.0)
    ax = fig.add_subplot(grid[0])
    ax_ratio = fig.add_subplot(grid[1], sharex=ax)
    ax.tick_params(labelbottom=False)
    return ax, ax_ratio


def _log_floor(*arrays: np.ndarray) -> float:
    """Half the smallest positive finite entry: the lower end of fills on a log axis."""
    values = np.concatenate([np.ravel(a) for a in arrays])
    positive = values[np.isfinite(values) & (values > 0)]
    return 0.5 * float(positive.min()) if positive.size else 1e-12


def draw_reference_and_band(
    ax, edges: np.ndarray, ref: np.ndarray, gen: np.ndarray, style: PlotStyle, logy: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the normalised reference (filled) and the generated sample's statistical band; return the
    generated densities (on the log floor where ``logy``) and the reference's relative errors."""
    ref_d, gen_d = density(ref, edges), density(gen, edges)
    with np.errstate(divide="ignore", invalid="ignore"):
        gen_err = np.where(gen > 0, gen_d / np.sqrt(np.where(gen > 0, gen, 1.0)), 0.0)
        ref_rel = np.where(ref > 0, 1.0 / np.sqrt(np.where(ref > 0, ref, 1.0)), np.nan)
    floor = _log_floor(ref_d, gen_d) if logy else None
    if floor is not None:  # empty bins sit on the floor of a log axis instead of at log(0)
        ref_d, gen_d = np.maximum(ref_d, floor), np.maximum(gen_d, floor)
    ax.stairs(
        ref_d,
        edges,
        fill=True,
        baseline=floor or 0.0,
        color=style.reference_colour,
        label=style.reference_label,
    )
    _band(ax, edges, gen_d - gen_err, gen_d + gen_err, floor, color=style.colour, alpha=0.25)
    return gen_d, ref_rel


def _band(
    ax, edges: np.ndarray, low: np.ndarray, high: np.ndarray, floor: float | None = None, **kwargs
) -> None:
    """Step-shaped filled band between ``low`` and ``high`` over bins with ``edges``; on a log axis the
    band's lower end is clipped at ``floor`` (non-positive values cannot be drawn)."""
    x = np.repeat(edges, 2)[1:-1]
    if floor is not None:
        low = np.maximum(low, floor)
        high = np.maximum(high, floor)
    ax.fill_between(x, np.repeat(low, 2), np.repeat(high, 2), linewidth=0, **kwargs)


def bin_centres(edges: np.ndarray, log: bool = False) -> np.ndarray:
    """Bin centres: arithmetic, or geometric on a log axis."""
    edges = np.asarray(edges, dtype=np.float64)
    return np.sqrt(edges[:-1] * edges[1:]) if log else 0.5 * (edges[:-1] + edges[1:])


def out_of_range(ratio: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the finite ratios above ``high`` and below ``low``."""
    ratio = np.asarray(ratio, dtype=np.float64)
    finite = np.isfinite(ratio)
    return finite & (ratio > high), finite & (ratio < low)


def _ratio_panel(
    ax_ratio,
    edges: np.ndarray,
    ratio: np.ndarray,
    error: np.ndarray | None,
    ref_rel: np.ndarray | None,
    style: PlotStyle,
) -> None:
    """Ratio generated/reference with bands; points beyond ``style.ratio_range`` are marked by
    arrows (up above, down below) at the panel's edge, gids ``ratio-above`` / ``ratio-below``."""
    if ref_rel is not None:
        _band(ax_ratio, edges, 1 - ref_rel, 1 + ref_rel, color=style.reference_colour, alpha=0.8)
    if error is not None:
        _band(ax_ratio, edges, ratio - error, ratio + error, color=style.colour, alpha=0.25)
    ax_ratio.stairs(ratio, edges, color=style.colour, linewidth=1.3, gid="ratio")
    ax_ratio.axhline(1.0, color="black", linewidth=0.7, linestyle="--")
    low, high = style.ratio_range
    ax_ratio.set_ylim(low, high)
    centres = bin_centres(edges, ax_ratio.get_xscale() == "log")
    above, below = out_of_range(ratio, low, high)
    inset = 0.1 * (high - low)
    for mask, y, marker, gid in (
        (above, high - inset, "^", "ratio-above"),
        (below, low + inset, "v", "ratio-below"),
    ):
        if mask.any():
            ax_ratio.plot(centres[mask], np.full(int(mask.sum()), y), linestyle="none", marker=marker,
                          markersize=5, color=style.colour, gid=gid)  # fmt: skip
    ax_ratio.set_ylabel("Gen./Ref.")


def _legend_above(ax, ncols: int = 2) -> None:
    """The axes' legend above its top edge (off the data); constrained layout makes room for it."""
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02, 1.0, 0.1), ncols=ncols, borderaxespad=0.0)


def _axes_scales(ax, ax_ratio, edges: np.ndarray, logx: bool, logy: bool) -> None:
    if logx and edges[0] > 0:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log", nonpositive="mask")
    ax_ratio.set_xlim(edges[0], edges[-1])


def _generated_label(label: str, separation_power: float | None) -> str:
    if separation_power is None or not math.isfinite(separation_power):
        return label
    return f"{label} (S = {separation_power:.3g})"


@_styled
def histogram_figure(
    edges: np.ndarray,
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    xlabel: str,
    logx: bool = False,
    logy: bool = False,
    separation_power: float | None = None,
    label: str = "Generated",
    style: PlotStyle = PlotStyle(),
) -> Figure:
    """Normalised step histograms of reference (grey, filled) and generated (line + stat. band) with a
    ratio panel; the legend names the separation power S (0 = identical)."""
    edges = np.asarray(edges, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    if edges.shape != (ref.size + 1,) or ref.shape != gen.shape:
        raise ValueError(f"edges {edges.shape} do not fit histograms {ref.shape} / {gen.shape}")
    fig = _figure(style, style.width * 0.85)
    ax, ax_ratio = _ratio_axes(fig)
    _axes_scales(ax, ax_ratio, edges, logx, logy)
    gen_d, ref_rel = draw_reference_and_band(ax, edges, ref, gen, style, logy)
    ax.stairs(
        gen_d, edges, color=style.colour, linewidth=1.5, label=_generated_label(label, separation_power)
    )
    ax.set_ylabel("Normalised entries (1/N dN/dx)")
    _legend_above(ax)
    empty = [name for name, counts in ((style.reference_label, ref), (label, gen)) if counts.sum() <= 0]
    if empty:
        text = " and ".join(empty) + ": no entries within the histogram range"
        box = {"facecolor": "white", "alpha": 0.85, "edgecolor": "none"}
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", bbox=box, gid="empty")
    ratio, error = ratio_and_error(ref, gen)
    _ratio_panel(ax_ratio, edges, ratio, error, ref_rel, style)
    ax_ratio.set_xlabel(xlabel)
    return fig


@_styled
def profile_figure(
    edges: np.ndarray,
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    label: str = "Generated",
    style: PlotStyle = PlotStyle(),
) -> Figure:
    """Per-bin mean values (not distributions; no statistical band) of reference and generated, with the
    plain ratio generated/reference."""
    edges = np.asarray(edges, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    if edges.shape != (ref.size + 1,) or ref.shape != gen.shape:
        raise ValueError(f"edges {edges.shape} do not fit profiles {ref.shape} / {gen.shape}")
    fig = _figure(style, style.width * 0.8)
    ax, ax_ratio = _ratio_axes(fig)
    _axes_scales(ax, ax_ratio, edges, logx, logy)
    floor = _log_floor(ref, gen) if logy else None
    ref_shown, gen_shown = (ref, gen) if floor is None else (np.fmax(ref, floor), np.fmax(gen, floor))
    ax.stairs(
        ref_shown,
        edges,
        fill=True,
        baseline=floor or 0.0,
        color=style.reference_colour,
        label=style.reference_label,
    )
    ax.stairs(gen_shown, edges, color=style.colour, linewidth=1.5, label=label)
    ax.set_ylabel(ylabel)
    _legend_above(ax)
    _ratio_panel(ax_ratio, edges, value_ratio(ref, gen), None, None, style)
    ax_ratio.set_xlabel(xlabel)
    return fig


@_styled
def layer_images_figure(
    mean_reference: np.ndarray,
    mean_generated: np.ndarray,
    layers: Sequence[int],
    *,
    r_edges: np.ndarray | None = None,
    label: str = "Generated",
    style: PlotStyle = PlotStyle(),
    layer_names: Sequence[str] | None = None,
) -> Figure:
    """Polar images of the mean energy per voxel (MeV) for selected layers: reference, generated (shared
    log colour scale) and their ratio; ``layer_names`` titles them (default: the row indices)."""
    ref = np.asarray(mean_reference, dtype=np.float64)
    gen = np.asarray(mean_generated, dtype=np.float64)
    if ref.ndim != 3 or ref.shape != gen.shape:
        raise ValueError(
            f"mean showers must be equal (n_layers, n_alpha, n_r) arrays: {ref.shape} {gen.shape}"
        )
    n_layers, n_alpha, n_r = ref.shape
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad or not layers:
        raise ValueError(f"layers {list(layers)} not within 0..{n_layers - 1}")
    theta = np.linspace(-np.pi, np.pi, n_alpha + 1)
    radius = np.arange(n_r + 1, dtype=np.float64) if r_edges is None else np.asarray(r_edges, np.float64)
    if radius.shape != (n_r + 1,):
        raise ValueError(f"r_edges {radius.shape} do not fit n_r = {n_r}")
    fig = _figure(style, 0.36 * style.width * len(layers) + 0.3)
    axes = fig.subplots(len(layers), 3, subplot_kw={"projection": "polar"}, squeeze=False)
    for row, layer in enumerate(layers):
        name = layer if layer_names is None else layer_names[row]
        both = np.concatenate([ref[layer].ravel(), gen[layer].ravel()])
        positive = both[both > 0]
        vmax = positive.max() if positive.size else 1.0
        vmin = max(positive.min(), vmax * 1e-4) if positive.size else 1e-4
        norm = LogNorm(vmin=vmin, vmax=vmax)
        for col, (values, title) in enumerate(((ref, style.reference_label), (gen, label))):
            mesh = axes[row, col].pcolormesh(
                theta, radius, np.ma.masked_less_equal(values[layer].T, 0), norm=norm, cmap="viridis"
            )
            axes[row, col].set_title(f"{title}, layer {name}", fontsize=8)
        fig.colorbar(mesh, ax=axes[row, :2], label="mean E [MeV]", shrink=0.8)
        rmesh = axes[row, 2].pcolormesh(
            theta,
            radius,
            value_ratio(ref[layer], gen[layer]).T,
            norm=Normalize(*style.ratio_range),
            cmap="RdBu_r",
        )
        axes[row, 2].set_title(f"Gen./Ref., layer {name}", fontsize=8)
        fig.colorbar(rmesh, ax=axes[row, 2], shrink=0.8)
        for ax in axes[row]:
            ax.set_xticklabels([])
            ax.set_yticklabels([])
            ax.grid(False)
    return fig


def single_bin(counts: np.ndarray) -> int | None:
    """Index of the only bin holding entries, or None (no entries, or more than one bin)."""
    (filled,) = np.nonzero(np.asarray(counts) > 0)
    return int(filled[0]) if filled.size == 1 else None


def fixed_n_text(edges: np.ndarray, reference: np.ndarray, generated: np.ndarray, unit: str = "jets") -> str:
    """What a multiplicity histogram with a single filled generated bin says instead of a figure:
    "fixed n = 30: all 750 generated jets; reference: 1,499 of 1,500 jets (99.93 %) at n = 30"."""
    index = single_bin(generated)
    if index is None:
        raise ValueError("the generated multiplicity fills more than one bin")
    n = round(float(bin_centres(edges)[index]))
    n_gen, n_ref = int(np.sum(generated)), int(np.sum(reference))
    at_n = int(reference[index])
    if at_n == n_ref:
        reference_text = f"all {n_ref:,} reference {unit} too"
    else:
        share = 100.0 * at_n / n_ref if n_ref else 0.0
        reference_text = f"reference: {at_n:,} of {n_ref:,} {unit} ({share:.2f} %) at n = {n}"
    return f"fixed n = {n}: all {n_gen:,} generated {unit}; {reference_text}"


@_styled
def message_figure(message: str, *, style: PlotStyle = PlotStyle()) -> Figure:
    """A small figure carrying only ``message`` (gid ``message``), for a plot with nothing to draw."""
    fig = _figure(style, style.width * 0.25)
    fig.text(0.5, 0.5, message, ha="center", va="center", wrap=True, gid="message")
    return fig


def training_panels(columns: Mapping[str, np.ndarray]) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Panels (y label, {curve name: values}) of a training log: one per column, except that all
    learning-rate columns (names starting with ``lr``) share one panel, placed last."""
    rates = {name: values for name, values in columns.items() if name.startswith("lr")}
    panels = [(name, {name: values}) for name, values in columns.items() if name not in rates]
    if rates:
        panels.append(("learning rate", rates))
    return panels


@_styled
def training_curve_figure(
    steps: np.ndarray,
    columns: Mapping[str, np.ndarray],
    *,
    step_label: str = "step",
    window: int = 0,
    style: PlotStyle = PlotStyle(),
) -> Figure:
    """Panels (two per row) of the numeric columns against the training step, learning rates together
    (:func:`training_panels`): raw values (faint) and a trailing moving average over ``window`` entries
    (0: about 1/50 of the curve; 1: no smoothing)."""
    if not columns:
        raise ValueError("no numeric columns to plot")
    panels = training_panels(columns)
    n_cols = 1 if len(panels) == 1 else 2
    n_rows = math.ceil(len(panels) / n_cols)
    fig = _figure(replace(style, width=style.width * (1.0 if n_cols == 1 else 1.7)), 2.0 * n_rows + 0.4)
    grid = fig.subplots(n_rows, n_cols, sharex=True, squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[len(panels) :]:
        ax.remove()
    steps = np.asarray(steps, dtype=np.float64)
    for ax, (ylabel, curves) in zip(axes, panels, strict=False):
        size = 1
        for index, (name, all_values) in enumerate(curves.items()):
            colour = style.colour if index == 0 else "#333333"
            measured = np.isfinite(all_values)  # e.g. validation figures exist every K steps only
            values, steps_k = all_values[measured], steps[measured]
            size = max(1, len(values) // 50) if window == 0 else window
            raw_label = None if size > 1 else name
            alpha = 0.3 if size > 1 else 1.0
            ax.plot(steps_k, values, color=colour, alpha=alpha, linewidth=0.8, label=raw_label,
                    marker="." if len(values) < 60 else None)  # fmt: skip
            if size > 1:
                mean_label = f"{name}, mean of {size}"
                ax.plot(steps_k, smooth(values, size), color=colour, linewidth=1.4, label=mean_label)
        if len(curves) > 1 or (size > 1 and ax is axes[0]):
            _legend_above(ax)
        if ylabel == "learning rate" and all(np.nanmin(v) > 0 for v in curves.values()):
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
    for column in range(n_cols):
        lowest = [grid[row, column] for row in range(n_rows) if grid[row, column] in axes[: len(panels)]]
        if lowest:
            lowest[-1].tick_params(labelbottom=True)
            lowest[-1].set_xlabel(step_label)
    return fig


# ---------------------------------------------------------------- output
def png_bytes(fig: Figure, dpi: int) -> bytes:
    """The figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def write_png(fig: Figure, path: str | Path, dpi: int, pdf: bool = False) -> bytes:
    """Render ``fig`` to PNG, write it atomically to ``path`` and return the bytes; with ``pdf`` also
    write it as vector PDF beside it (same name, suffix ``.pdf``)."""
    data = png_bytes(fig, dpi)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        tmp.chmod(0o644)
    if pdf:
        with atomic_path(Path(path).with_suffix(".pdf")) as tmp:
            fig.savefig(tmp, format="pdf")
            tmp.chmod(0o644)
    return data


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return cleaned or "x"


def shower_r_edges(dataset: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Radial bin edges (mm) of a regular CaloChallenge geometry matching ``dataset`` and the mean-shower
    ``shape``; None when the dataset is not recognised (plots then use bin indices)."""
    from pipelines.geometry import load_geometry
    from pipelines.report.published import dataset_key

    key = dataset_key(dataset)
    if key not in ("2", "3"):
        return None
    geometry = load_geometry(key)
    if tuple(geometry.grid_shape) != tuple(shape):
        return None
    return np.asarray(geometry.r_edges, dtype=np.float64)


def filled_layer_ids(dataset: str, n_layers: int) -> np.ndarray | None:
    """Layer ids of the rows of a compact mean-shower grid of a per-layer CaloChallenge geometry (dataset 1:
    its filled layers), None for a regular or unrecognised one (rows are then the layers themselves)."""
    from pipelines.geometry import load_geometry
    from pipelines.report.published import dataset_key

    key = dataset_key(dataset)
    if key not in ("1-photons", "1-pions"):
        return None
    ids = load_geometry(key).filled_layers
    return ids if len(ids) == n_layers else None


def plot_run(
    metrics: Mapping,
    histograms: Mapping[str, np.ndarray],
    out_dir: str | Path,
    *,
    label: str = "Generated",
    style: PlotStyle = PlotStyle(),
    shower_layers: Sequence[int] | None = None,
) -> list[PlotRecord]:
    """Write one PNG per histogram listed in ``metrics["histograms"]`` (in list order) and, for showers,
    the mean-shower layer and radial profiles, selected layers' polar images and the hit multiplicity
    versus incident energy. Per-layer shower histograms (names ending in ``_<layer>``) are drawn for
    the selected layers only (``shower_layers``, default :func:`default_layers`); the metrics table
    lists the separation powers of all of them, and :mod:`pipelines.report.shower_views` adds a grid of
    every layer per group, the per-incident-energy views and individual showers. Returns the records in
    display order."""
    out_dir = Path(out_dir)
    records = []
    if metrics["kind"] == "showers":
        shower_layers = (
            list(shower_layers) if shower_layers else default_layers(histograms["mean_shower__reference"])
        )

    def emit(fig: Figure, group: str, name: str, title: str, caption: str) -> None:
        path = out_dir / f"{slug(label)}-{slug(group)}-{slug(name)}.png"
        wide = fig.get_figwidth() > 1.2 * style.width
        records.append(
            PlotRecord(group, title, caption, path, write_png(fig, path, style.dpi, style.pdf), wide)
        )

    for entry in metrics["histograms"]:
        name = entry["name"]
        layer = re.search(r"_(\d+)$", name)
        if metrics["kind"] == "showers" and layer and int(layer.group(1)) not in shower_layers:
            continue
        sp = entry.get("separation_power")
        caption = f"{entry['xlabel']}; separation power S = {sp:.4g}" if sp is not None else entry["xlabel"]
        edges, reference, generated = (
            histograms[f"{name}__{part}"] for part in ("edges", "reference", "generated")
        )
        if metrics["kind"] == "jets" and name == FIXED_N_HISTOGRAM and single_bin(generated) is not None:
            text = fixed_n_text(edges, reference, generated)
            emit(
                message_figure(text.replace(": ", ":\n", 1), style=style),
                entry["group"],
                name,
                name,
                f"{entry['xlabel']}: {text}",
            )
            continue
        fig = histogram_figure(
            edges,
            reference,
            generated,
            xlabel=entry["xlabel"],
            logx=bool(entry["logx"]),
            logy=bool(entry["logy"]) or entry["group"] in LOG_Y_GROUPS,
            separation_power=sp,
            label=label,
            style=style,
        )
        empty = [
            who
            for who, part in ((style.reference_label, "reference"), (label, "generated"))
            if float(np.sum(histograms[f"{name}__{part}"])) <= 0
        ]
        if empty:
            verdict = "S undefined" if len(empty) == 2 else "S = 1.00, no overlap"
            caption += f"; {' and '.join(empty)}: no entries within the histogram range ({verdict})"
        emit(fig, entry["group"], name, name, caption)
    for t in metrics.get("per_type", {}):  # jets of several types: each type's relative mass
        name = f"type_{t}_jet_relative_mass"
        edges, reference, generated = (
            histograms[f"{name}__{part}"] for part in ("edges", "reference", "generated")
        )
        sp, _ = counted_separation_power(reference, generated)
        xlabel = f"jet m / pT, {t} jets"
        fig = histogram_figure(
            edges, reference, generated, xlabel=xlabel, separation_power=sp, label=label, style=style
        )
        caption = f"{xlabel}; separation power S = {sp:.4g}" if sp is not None else xlabel
        emit(fig, "jet types", name, name, caption)
    if metrics["kind"] == "showers":
        from pipelines.report.shower_views import plot_shower_views

        _plot_shower_extras(metrics, histograms, emit, label, style, shower_layers)
        r_edges = shower_r_edges(str(metrics["dataset"]), histograms["mean_shower__reference"].shape)
        plot_shower_views(metrics, histograms, emit, label=label, style=style, r_edges=r_edges)
    return records


def _plot_shower_extras(metrics, histograms, emit, label, style, shower_layers) -> None:
    ref, gen = histograms["mean_shower__reference"], histograms["mean_shower__generated"]
    n_layers = ref.shape[0]
    group = "average shower"
    layer_edges = np.arange(n_layers + 1, dtype=np.float64) - 0.5
    fig = profile_figure(
        layer_edges,
        ref.sum(axis=(1, 2)),
        gen.sum(axis=(1, 2)),
        xlabel="layer",
        ylabel="mean energy per shower [MeV]",
        logy=True,
        label=label,
        style=style,
    )
    ids = filled_layer_ids(str(metrics["dataset"]), n_layers)
    if ids is not None:  # dataset 1: the grid's rows are its filled layers
        fig.axes[1].set_xticks(np.arange(n_layers), [str(i) for i in ids])
    emit(fig, group, "layer_profile", "energy per layer", "Mean energy per layer (sum over alpha and r), MeV")
    r_edges = shower_r_edges(str(metrics["dataset"]), ref.shape)
    if r_edges is None:
        r_plot, r_label = np.arange(ref.shape[2] + 1, dtype=np.float64), "radial bin"
    else:
        r_plot, r_label = r_edges, "r [mm]"
    fig = profile_figure(
        r_plot,
        ref.sum(axis=(0, 1)),
        gen.sum(axis=(0, 1)),
        xlabel=r_label,
        ylabel="mean energy per shower [MeV]",
        logy=True,
        label=label,
        style=style,
    )
    emit(
        fig,
        group,
        "radial_profile",
        "energy per radial bin",
        "Mean energy per radial bin (sum over layers and alpha), MeV",
    )
    layers = list(shower_layers) if shower_layers else default_layers(ref)
    names = None if ids is None else [str(ids[layer]) for layer in layers]
    fig = layer_images_figure(ref, gen, layers, r_edges=r_edges, label=label, style=style, layer_names=names)
    emit(
        fig,
        group,
        "layer_images",
        "mean shower images",
        f"Mean energy per voxel (MeV) in layers {', '.join(names or map(str, layers))}, polar (alpha, r)",
    )
    fig = profile_figure(
        10.0 ** np.asarray(histograms["nhits_vs_einc__edges"], dtype=np.float64),  # stored as log10(E / MeV)
        histograms["nhits_vs_einc__reference"],
        histograms["nhits_vs_einc__generated"],
        xlabel="incident energy E_inc [MeV]",
        ylabel="mean number of hits",
        logx=True,
        label=label,
        style=style,
    )
    emit(
        fig,
        "hit multiplicity",
        "nhits_vs_einc",
        "hits vs incident energy",
        "Mean number of non-zero voxels per shower in bins of incident energy (log-spaced, MeV)",
    )


@_styled
def overlay_figure(
    edges: np.ndarray,
    reference: np.ndarray,
    runs: Sequence[tuple[str, np.ndarray]],
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    colours: Sequence[str] = ("#d62728",),
    style: PlotStyle = PlotStyle(),
) -> Figure:
    """Several runs over one reference (the comparison page): the reference's per-bin values filled
    grey, each run's values (``runs``: (label, values)) a step line in its colour (cycled), and the
    plain ratio run / reference of every run below."""
    edges = np.asarray(edges, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if edges.shape != (ref.size + 1,) or any(np.shape(values) != ref.shape for _, values in runs):
        raise ValueError(f"edges {edges.shape} do not fit the reference {ref.shape} and every run's values")
    fig = _figure(style, style.width * 0.85)
    ax, ax_ratio = _ratio_axes(fig)
    _axes_scales(ax, ax_ratio, edges, logx, logy)
    floor = _log_floor(ref, *[values for _, values in runs]) if logy else None
    shown = ref if floor is None else np.fmax(ref, floor)
    ax.stairs(shown, edges, fill=True, baseline=floor or 0.0, color=style.reference_colour,
              label=style.reference_label)  # fmt: skip
    low, high = style.ratio_range
    for index, (label, values) in enumerate(runs):
        colour = colours[index % len(colours)]
        values = np.asarray(values, dtype=np.float64)
        ax.stairs(values if floor is None else np.fmax(values, floor), edges, color=colour, linewidth=1.4,
                  label=label, gid=f"run-{index}")  # fmt: skip
        ax_ratio.stairs(np.clip(value_ratio(ref, values), low, high), edges, color=colour, linewidth=1.2)
    ax_ratio.axhline(1.0, color="black", linewidth=0.7, linestyle="--")
    ax_ratio.set_ylim(low, high)
    ax_ratio.set_ylabel("Run/Ref.")
    ax_ratio.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend_above(ax, ncols=min(3, len(runs) + 1))
    return fig
