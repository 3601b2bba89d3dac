"""Shower views of the report beyond the single-histogram plots: small multiples per incident-energy bin,
every layer of a per-layer observable in one grid, and individual showers next to reference ones.

Inputs (histograms.npz, written by evaluate-showers, :mod:`pipelines.metrics.shower_views`):
``per_einc__*`` (mean layer profiles and E_tot / E_inc and hit-count histograms per CaloChallenge
incident-energy bin), ``shower_images__*`` (a few generated showers and the reference showers nearest to
them in E_inc), and the per-layer histograms ``<group>_<layer>__{edges,reference,generated}``. A file
without the ``per_einc`` or ``shower_images`` arrays (written before they existed) gets no such views.
Same style as :mod:`pipelines.report.plots`: reference grey and filled, generated as a coloured line,
ratio panels generated / reference with arrows beyond their range, legends above the data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

from pipelines.metrics.separation import counted_separation_power
from pipelines.report.plots import (
    PlotStyle,
    _band,
    _figure,
    _log_floor,
    _ratio_panel,
    _styled,
    draw_reference_and_band,
    ratio_and_error,
)

log = logging.getLogger(__name__)

#: the per-layer histogram names of evaluate-showers: ``<group>_<layer>`` with the group as prefix
LAYER_NAME = re.compile(r"^(?P<group>.+)_(?P<layer>\d+)$")
#: columns of the all-layers grid
GRID_COLUMNS = 9
#: most bins of a histogram in the all-layers grid (adjacent bins are merged down to it)
GRID_MAX_BINS = 25
PARTS = ("reference", "generated")
#: the per-incident-energy arrays (bins first after the edges)
PER_EINC_KEYS = ("per_einc__edges", "per_einc__e_ratio_edges", "per_einc__n_hits_edges") + tuple(
    f"per_einc__{name}__{part}"
    for name in ("n", "layer_mean", "layer_error", "e_ratio", "n_hits")
    for part in PARTS
)
#: the individual-shower arrays (showers first)
IMAGE_KEYS = ("shower_images__bin",) + tuple(
    f"shower_images__{name}{part}" for name in ("", "e_inc__") for part in PARTS
)

DEFAULT_STYLE = PlotStyle()
Emit = Callable[[Figure, str, str, str, str], None]


# ---------------------------------------------------------------- numbers behind the views
def energy_range_text(low_mev: float, high_mev: float) -> str:
    """An incident-energy bin in GeV: "1-10 GeV", "100-1000 GeV"."""
    return f"{low_mev / 1e3:g}\u2013{high_mev / 1e3:g} GeV"


def separation_text(reference: np.ndarray, generated: np.ndarray) -> str:
    """A panel's separation power: "S = 0.0123", "S = 1 (no overlap)" or "no showers" (both empty)."""
    if np.sum(reference) <= 0 and np.sum(generated) <= 0:
        return "no showers"
    s, no_overlap = counted_separation_power(reference, generated)
    return f"S = {s:.3g}" + (" (no overlap)" if no_overlap else "")


def mean_ratio_and_error(
    reference: np.ndarray, generated: np.ndarray, ref_error: np.ndarray, gen_error: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(generated / reference, its error from the generated mean's error, reference relative error)
    of two means with standard errors; NaN where the reference mean is not positive."""
    ref, gen = np.asarray(reference, np.float64), np.asarray(generated, np.float64)
    positive = np.isfinite(ref) & (ref > 0)
    safe = np.where(positive, ref, 1.0)
    ratio = np.where(positive, gen / safe, np.nan)
    return (
        ratio,
        np.where(positive, np.asarray(gen_error) / safe, np.nan),
        np.where(positive, np.asarray(ref_error) / safe, np.nan),
    )


def layer_groups(histograms_listed: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """Per-layer histogram entries by group, in layer order, for the groups listed for more than one
    layer (names ``<group>_<layer>``)."""
    groups: dict[str, list[tuple[int, Mapping]]] = {}
    for entry in histograms_listed:
        match = LAYER_NAME.match(entry["name"])
        if match and match.group("group") == entry["group"]:
            groups.setdefault(entry["group"], []).append((int(match.group("layer")), entry))
    return {g: [e for _, e in sorted(v, key=lambda t: t[0])] for g, v in groups.items() if len(v) > 1}


def coarsened(
    edges: np.ndarray, reference: np.ndarray, generated: np.ndarray, max_bins: int = GRID_MAX_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, reference, generated) with groups of ceil(k / max_bins) adjacent bins merged (the last
    group may be smaller): small panels read better with fewer, fuller bins."""
    edges = np.asarray(edges, dtype=np.float64)
    factor = -(-(len(edges) - 1) // max_bins)
    starts = np.arange(0, len(edges) - 1, factor)
    merged = [np.add.reduceat(np.asarray(c, dtype=np.float64), starts) for c in (reference, generated)]
    return np.append(edges[starts], edges[-1]), merged[0], merged[1]


def grid_shape(n_panels: int, columns: int = GRID_COLUMNS) -> tuple[int, int]:
    """(rows, columns) of a grid holding ``n_panels`` panels at most ``columns`` wide."""
    cols = max(1, min(columns, n_panels))
    return -(-n_panels // cols), cols


def image_norm(*images: np.ndarray, dynamic_range: float = 1e5) -> LogNorm:
    """Log colour scale from the largest positive value down by ``dynamic_range`` (or to the smallest
    positive value, when that is higher)."""
    values = np.concatenate([np.ravel(i) for i in images])
    positive = values[np.isfinite(values) & (values > 0)]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = max(float(positive.min()), vmax / dynamic_range) if positive.size else vmax / dynamic_range
    return LogNorm(vmin=vmin, vmax=max(vmax, vmin * 1.0001))


# ---------------------------------------------------------------- drawing helpers
def _panel_pair(fig: Figure, cell, share: bool = True) -> tuple:
    """A main axes over a ratio axes (heights 3:1) in the gridspec ``cell``; unshared x axes (``share``
    false) let the main axes go without x ticks (the caller keeps their x limits and scales equal)."""
    inner = cell.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.0)
    ax = fig.add_subplot(inner[0])
    ax_ratio = fig.add_subplot(inner[1], sharex=ax if share else None)
    ax.tick_params(labelbottom=False)
    return ax, ax_ratio


def _draw_histograms(
    ax, ax_ratio, edges, reference, generated, style: PlotStyle, logx=False, logy=False, gaps=False
):
    """Normalised reference (filled) and generated (line, statistical band) histograms with the ratio;
    with ``gaps`` empty generated bins leave a gap instead of a line along the floor of a log axis."""
    ref, gen = np.asarray(reference, np.float64), np.asarray(generated, np.float64)
    if logx and edges[0] > 0:
        ax.set_xscale("log")
        ax_ratio.set_xscale("log")
    if logy:
        ax.set_yscale("log", nonpositive="mask")
    gen_d, ref_rel = draw_reference_and_band(ax, edges, ref, gen, style, logy)
    shown = np.where(gen > 0, gen_d, np.nan) if gaps else gen_d
    ax.stairs(shown, edges, color=style.colour, linewidth=1.3, label="generated")
    ratio, error = ratio_and_error(ref, gen)
    _ratio_panel(ax_ratio, edges, ratio, error, ref_rel, style)
    ax.set_xlim(edges[0], edges[-1])
    ax_ratio.set_xlim(edges[0], edges[-1])


def _legend_on_top(fig: Figure, ax, label: str, style: PlotStyle) -> None:
    """One legend for the whole figure, above the panels (off the data)."""
    handles, _ = ax.get_legend_handles_labels()
    where = {"loc": "outside upper center"}
    if fig.get_layout_engine() is None:  # fixed margins: the top margin holds it
        where = {"loc": "upper center", "bbox_to_anchor": (0.5, 1.0)}
    fig.legend(handles, [style.reference_label, label], ncols=2, **where)


# ---------------------------------------------------------------- per incident-energy views
@_styled
def per_energy_profile_figure(
    arrays: Mapping[str, np.ndarray], *, label: str = "Generated", style: PlotStyle = DEFAULT_STYLE
) -> Figure:
    """Mean energy per layer in each incident-energy bin (one column per bin): reference filled with its
    standard-error band, generated as a line with its band; ratio panels generated / reference."""
    edges = arrays["per_einc__edges"]
    n_bins = len(edges) - 1
    fig = _figure(replace(style, width=style.width * max(1.0, 0.62 * n_bins)), style.width * 0.62)
    grid = fig.add_gridspec(1, n_bins, wspace=0.05)
    layer_edges = np.arange(arrays["per_einc__layer_mean__reference"].shape[1] + 1) - 0.5
    first = None
    for b in range(n_bins):
        ax, ax_ratio = _panel_pair(fig, grid[0, b])
        first = first or ax
        ref, gen = (arrays[f"per_einc__layer_mean__{p}"][b] for p in ("reference", "generated"))
        ref_e, gen_e = (
            np.nan_to_num(arrays[f"per_einc__layer_error__{p}"][b]) for p in ("reference", "generated")
        )
        ax.set_yscale("log", nonpositive="mask")
        floor = _log_floor(ref, gen)
        _band(ax, layer_edges, ref - ref_e, ref + ref_e, floor, color="#9a9a9a", alpha=0.5)
        ax.stairs(
            np.fmax(ref, floor),
            layer_edges,
            fill=True,
            baseline=floor,
            color=style.reference_colour,
            label=style.reference_label,
        )
        _band(ax, layer_edges, gen - gen_e, gen + gen_e, floor, color=style.colour, alpha=0.25)
        ax.stairs(np.fmax(gen, floor), layer_edges, color=style.colour, linewidth=1.3, label=label)
        ratio, error, ref_rel = mean_ratio_and_error(ref, gen, ref_e, gen_e)
        _ratio_panel(ax_ratio, layer_edges, ratio, error, ref_rel, style)
        ax_ratio.set_xlim(layer_edges[0], layer_edges[-1])
        ax_ratio.set_xlabel("layer")
        n_ref, n_gen = (int(arrays[f"per_einc__n__{p}"][b]) for p in ("reference", "generated"))
        ax.set_title(
            f"E_inc {energy_range_text(edges[b], edges[b + 1])}\n{n_ref} ref. / {n_gen} gen. showers"
        )
        if b == 0:
            ax.set_ylabel("mean energy per shower [MeV]")
        else:
            ax_ratio.set_ylabel("")
    _legend_on_top(fig, first, label, style)
    return fig


@_styled
def per_energy_histogram_figure(
    arrays: Mapping[str, np.ndarray],
    name: str,
    *,
    xlabel: str,
    label: str = "Generated",
    style: PlotStyle = DEFAULT_STYLE,
) -> Figure:
    """Normalised histograms of ``per_einc__<name>`` in each incident-energy bin (one column per bin) with
    ratio panels; each panel's title names its separation power S."""
    edges = arrays["per_einc__edges"]
    n_bins = len(edges) - 1
    fig = _figure(replace(style, width=style.width * max(1.0, 0.62 * n_bins)), style.width * 0.62)
    grid = fig.add_gridspec(1, n_bins, wspace=0.05)
    first = None
    for b in range(n_bins):
        ax, ax_ratio = _panel_pair(fig, grid[0, b])
        first = first or ax
        view_edges = arrays[f"per_einc__{name}_edges"][b]
        ref, gen = (arrays[f"per_einc__{name}__{p}"][b] for p in ("reference", "generated"))
        _draw_histograms(ax, ax_ratio, view_edges, ref, gen, style)
        ax.set_title(f"E_inc {energy_range_text(edges[b], edges[b + 1])}\n{separation_text(ref, gen)}")
        ax_ratio.set_xlabel(xlabel)
        if b == 0:
            ax.set_ylabel("1/N dN/dx")
        else:
            ax_ratio.set_ylabel("")
    _legend_on_top(fig, first, label, style)
    return fig


# ---------------------------------------------------------------- all layers
@_styled
def layer_grid_figure(
    entries: Sequence[Mapping],
    histograms: Mapping[str, np.ndarray],
    *,
    xlabel: str,
    label: str = "Generated",
    style: PlotStyle = DEFAULT_STYLE,
) -> Figure:
    """One small normalised histogram with a ratio strip per layer (``entries`` in layer order), titled
    with the layer and its separation power S."""
    rows, cols = grid_shape(len(entries))
    height = 1.55 * rows + 0.9
    fig = Figure(figsize=(style.width * 2.0, height), dpi=style.dpi)  # fixed margins: fast for many axes
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        rows,
        cols,
        left=0.03,
        right=0.99,
        bottom=0.55 / height,
        top=1 - 0.55 / height,
        wspace=0.06,
        hspace=0.3,
    )
    first = None
    for index, entry in enumerate(entries):
        ax, ax_ratio = _panel_pair(fig, grid[index // cols, index % cols], share=False)
        first = first or ax
        name = entry["name"]
        edges, ref, gen = coarsened(
            histograms[f"{name}__edges"], histograms[f"{name}__reference"], histograms[f"{name}__generated"]
        )
        logs = bool(entry["logx"]), bool(entry["logy"])
        _draw_histograms(ax, ax_ratio, edges, ref, gen, style, *logs, gaps=True)
        layer = int(LAYER_NAME.match(name).group("layer"))
        sp = entry.get("separation_power")
        ax.set_title(f"layer {layer}" + ("" if sp is None else f", S = {sp:.2g}"), fontsize=7, pad=2)
        for axis in (ax.xaxis, ax.yaxis, ax_ratio.yaxis):  # ticks take most of the drawing time of 90 axes
            axis.set_major_locator(NullLocator())
            axis.set_minor_locator(NullLocator())
        ax_ratio.xaxis.set_minor_locator(NullLocator())
        ax_ratio.xaxis.set_major_locator(LogLocator(numticks=4) if entry["logx"] else MaxNLocator(3))
        ax_ratio.tick_params(labelsize=6, length=2)
        ax_ratio.set_ylabel("")
        if np.sum(ref) <= 0 and np.sum(gen) <= 0:
            ax.text(0.5, 0.5, "no entries", transform=ax.transAxes, ha="center", va="center", fontsize=7)
    fig.supxlabel(xlabel, y=0.02)
    fig.supylabel("normalised entries (log), Gen./Ref. strips", x=0.005, fontsize=9)
    _legend_on_top(fig, first, label, style)
    return fig


# ---------------------------------------------------------------- individual showers
def _polar_image(ax, image: np.ndarray, r_edges: np.ndarray, norm: LogNorm):
    theta = np.linspace(-np.pi, np.pi, image.shape[0] + 1)
    mesh = ax.pcolormesh(theta, r_edges, np.ma.masked_less_equal(image.T, 0), norm=norm, cmap="viridis")
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.grid(False)
    return mesh


@_styled
def shower_images_figure(
    reference: np.ndarray,
    generated: np.ndarray,
    e_inc: tuple[np.ndarray, np.ndarray],
    *,
    r_edges: np.ndarray | None = None,
    label: str = "Generated",
    style: PlotStyle = DEFAULT_STYLE,
) -> Figure:
    """One row per pair of showers (reference (m, L, A, R), generated the same, MeV): energy per
    (layer, r) summed over alpha and energy per voxel (alpha, r) of the shower's layer with the most
    energy, reference next to generated, on a log colour scale shared within the row."""
    if reference.shape != generated.shape or reference.ndim != 4:
        raise ValueError(
            f"shower images must be equal (m, L, A, R) arrays: {reference.shape} {generated.shape}"
        )
    n, n_layers, _, n_r = reference.shape
    r = np.arange(n_r + 1, dtype=np.float64) if r_edges is None else np.asarray(r_edges, np.float64)
    layer_edges = np.arange(n_layers + 1) - 0.5
    fig = _figure(replace(style, width=style.width * 1.9), 2.3 * n + 0.5)
    grid = fig.add_gridspec(n, 5, width_ratios=(1.6, 1.6, 1.0, 1.0, 0.08))
    for row in range(n):
        pair = (
            (style.reference_label, reference[row], e_inc[0][row]),
            (label, generated[row], e_inc[1][row]),
        )
        profiles = [shower.sum(axis=1) for _, shower, _ in pair]
        max_layers = [int(np.argmax(shower.sum(axis=(1, 2)))) for _, shower, _ in pair]
        slices = [shower[layer] for (_, shower, _), layer in zip(pair, max_layers, strict=True)]
        norm = image_norm(*profiles, *slices)
        for col, ((who, _, energy), profile) in enumerate(zip(pair, profiles, strict=True)):
            ax = fig.add_subplot(grid[row, col])
            mesh = ax.pcolormesh(
                layer_edges, r, np.ma.masked_less_equal(profile.T, 0), norm=norm, cmap="viridis"
            )
            ax.set_title(f"{who}, E_inc = {energy / 1e3:.3g} GeV", fontsize=8)
            ax.set_ylabel("r [mm]" if r_edges is not None else "radial bin")
            if row == n - 1:
                ax.set_xlabel("layer")
        for col, ((who, _, _), layer, image) in enumerate(zip(pair, max_layers, slices, strict=True)):
            ax = fig.add_subplot(grid[row, 2 + col], projection="polar")
            _polar_image(ax, image, r, norm)
            ax.set_title(f"{who}, layer {layer} (most energy)", fontsize=8)
        fig.colorbar(mesh, cax=fig.add_subplot(grid[row, 4]), label="E [MeV]")
    return fig


# ---------------------------------------------------------------- the views of one run
def view_array_problem(histograms: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with the present ``per_einc`` / ``shower_images`` arrays (None: nothing)."""
    for keys in (PER_EINC_KEYS, IMAGE_KEYS):
        present = [key for key in keys if key in histograms]
        if present and len(present) < len(keys):
            return f"has {present[0]!r} but lacks {[k for k in keys if k not in histograms]}"
    if PER_EINC_KEYS[0] in histograms:
        edges = np.asarray(histograms["per_einc__edges"])
        n_bins = len(edges) - 1
        if edges.ndim != 1 or n_bins < 1 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            return "per_einc__edges must be >= 2 finite, strictly increasing values"
        for key in PER_EINC_KEYS[1:]:
            array = np.asarray(histograms[key])
            if array.shape[:1] != (n_bins,):
                return f"{key} has shape {array.shape}, expected {n_bins} energy bins first"
    if IMAGE_KEYS[0] in histograms:
        shapes = {key: np.shape(histograms[key]) for key in IMAGE_KEYS}
        m = shapes["shower_images__bin"][:1]
        if len(shapes["shower_images__reference"]) != 4 or any(s[:1] != m for s in shapes.values()):
            return f"shower_images arrays do not fit together: {shapes}"
        if shapes["shower_images__reference"] != shapes["shower_images__generated"]:
            return f"shower_images arrays do not fit together: {shapes}"
    return None


def plot_shower_views(
    metrics: Mapping,
    histograms: Mapping[str, np.ndarray],
    emit: Emit,
    *,
    label: str,
    style: PlotStyle,
    r_edges: np.ndarray | None,
) -> None:
    """Emit the per-incident-energy views, the all-layers grids (into each per-layer group's section)
    and the individual showers of a shower run."""
    if PER_EINC_KEYS[0] in histograms:
        edges = histograms["per_einc__edges"]
        bins = ", ".join(energy_range_text(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True))
        group = "per incident energy"
        where = f"in the CaloChallenge incident-energy bins ({bins})"
        emit(
            per_energy_profile_figure(histograms, label=label, style=style),
            group,
            "layer_profile_per_einc",
            "energy per layer per E_inc",
            f"Mean energy per layer (MeV, sum over alpha and r) {where}; bands: standard error of the mean; "
            "ratio panels: generated / reference mean",
        )
        for name, xlabel, what in (
            ("e_ratio", "E_tot / E_inc", "E_tot / E_inc"),
            ("n_hits", "number of hits", "number of hits (non-zero voxels) per shower"),
        ):
            fig = per_energy_histogram_figure(histograms, name, xlabel=xlabel, label=label, style=style)
            emit(
                fig,
                group,
                f"{name}_per_einc",
                f"{what} per E_inc",
                f"Normalised histograms of the {what} {where}, on edges spanning both samples in each bin; "
                "S: separation power of each panel's histograms",
            )
    else:
        log.warning("histograms have no per_einc arrays (older evaluation): no per-incident-energy views")
    for group, entries in layer_groups(metrics["histograms"]).items():
        xlabel = re.sub(r" layer \d+", " layer", re.sub(r", layer \d+", "", entries[0]["xlabel"]))
        fig = layer_grid_figure(entries, histograms, xlabel=xlabel, label=label, style=style)
        emit(
            fig,
            group,
            f"{group}_all_layers",
            f"{group}, all {len(entries)} layers",
            f"{xlabel}: normalised histograms of every layer (the large plots above show three of them), "
            f"adjacent bins merged to at most {GRID_MAX_BINS}; separation power S per layer (of the full "
            "binning); ratio strips generated / reference",
        )
    if IMAGE_KEYS[0] in histograms:
        bins, edges = histograms["shower_images__bin"], histograms.get("per_einc__edges")
        for b in np.unique(bins):
            rows = np.flatnonzero(bins == b)
            energies = (
                histograms["shower_images__e_inc__reference"][rows],
                histograms["shower_images__e_inc__generated"][rows],
            )
            fig = shower_images_figure(
                histograms["shower_images__reference"][rows],
                histograms["shower_images__generated"][rows],
                energies,
                r_edges=r_edges,
                label=label,
                style=style,
            )
            span = f"E_inc {energy_range_text(edges[b], edges[b + 1])}" if edges is not None else f"bin {b}"
            emit(
                fig,
                "individual showers",
                f"showers_einc_bin_{b}",
                f"individual showers, {span}",
                f"Generated showers with {span} (drawn at random, seeded) next to the reference shower "
                "nearest in E_inc: energy per (layer, r) summed over alpha, and energy per voxel (alpha, r) "
                "of each shower's layer with the most energy; MeV, log colour scale shared within a row",
            )
    else:
        log.warning("histograms have no shower_images arrays (older evaluation): no individual showers")
