"""The per-shower / per-jet high-level features an evaluation compared, as one Parquet table
(``evaluation/features.parquet``): one row per shower or jet, column ``sample`` = "reference" or
"generated", ``row`` = its row in the file it came from. The rows are exactly those that fill the
histograms of histograms.npz, and a column named like a histogram (``E_ratio``, ``E_layer_07``,
``jet_relative_mass``, ``efp_paw``, ...) holds the values that histogram counts.

Showers: the reference rows are half A of the reference file (its even rows), the generated rows
those compared (see :mod:`pipelines.metrics.evaluate_showers`). Jets: every reference and every
generated jet (see :mod:`pipelines.metrics.evaluate_jets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.io.tables import Column, build_table
from pipelines.metrics import efp
from pipelines.metrics.calo_features import _LAYER_HIST, ShowerFeatures
from pipelines.metrics.jet_metrics import PRIME_EFP_NAMES, JetSample

SAMPLES = ("reference", "generated")


def _sample_columns(n_reference: int, n_generated: int, rows: np.ndarray, what: str) -> list[Column]:
    sample = ["reference"] * n_reference + ["generated"] * n_generated
    return [
        Column("sample", sample, f"'reference' ({what[0]}) or 'generated' ({what[1]})"),
        Column("row", np.asarray(rows, dtype=np.int64), "row of the shower or jet in its file (0-based)"),
    ]


def shower_features_table(
    reference: ShowerFeatures,
    reference_rows: np.ndarray,
    generated: ShowerFeatures,
    generated_rows: np.ndarray,
    info: Mapping[str, Any] | None = None,
    layer_ids: np.ndarray | None = None,
) -> pa.Table:
    """The CaloChallenge high-level features of the compared showers (reference first), one row each:
    E_inc, E_tot, E_ratio, n_hits, then per layer l (two digits): E_layer_l, EC_eta_l, EC_phi_l,
    EC_r_l, width_eta_l, width_phi_l, width_r_l, sparsity_l; ``layer_ids`` names the columns of the
    per-layer arrays (dataset 1: its filled layers; default 0, 1, ...)."""
    both = ShowerFeatures.concatenate([reference, generated])
    rows = np.concatenate([reference_rows, generated_rows])
    what = ("half A of the reference file, its even rows", "the generated showers compared")
    columns = _sample_columns(len(reference), len(generated), rows, what)
    columns += [
        Column("E_inc", both.e_inc.astype(np.float64), "incident energy", "MeV"),
        Column(
            "E_tot", both.e_tot.astype(np.float64), "energy deposited in all voxels above threshold", "MeV"
        ),
        Column("E_ratio", both.e_ratio.astype(np.float64), "E_tot / E_inc"),
        Column("n_hits", both.n_hits.astype(np.int64), "voxels with energy above threshold"),
    ]
    layer_features = {"e_layer": ("E_layer", "energy deposited in layer {l}", "MeV")}
    for key, (group, label, _edges, _logx) in _LAYER_HIST.items():
        unit = "mm" if label.endswith(" [mm]") else ""
        layer_features[key] = (group, label.removesuffix(" [mm]") + ", layer {l}", unit)
    for key, (group, text, unit) in layer_features.items():
        values = getattr(both, key)
        ids = range(values.shape[1]) if layer_ids is None else [int(v) for v in layer_ids]
        for column, layer in enumerate(ids):
            columns.append(
                Column(
                    f"{group}_{layer:02d}", values[:, column].astype(np.float64), text.format(l=layer), unit
                )
            )
    return build_table(columns, "one shower per row: CaloChallenge high-level features", info)


def _jet_columns(sample: JetSample) -> dict[str, np.ndarray]:
    real = ~sample.mask
    pt = np.where(real, sample.particles[:, :, 2], 0.0)
    prime = efp.prime_n4_d4(sample.efps)
    out = {
        "jet_relative_mass": sample.mass,
        "jet_relative_pt": sample.pt,
        "pt_rel_sum": pt.sum(axis=1),
        "multiplicity": real.sum(axis=1).astype(np.int64),
    }
    return out | {f"efp_{name}": prime[:, c] for c, name in enumerate(PRIME_EFP_NAMES)}


JET_DESCRIPTIONS = {
    "jet_relative_mass": "jet mass over jet pT, m / pT_jet, from the massless particles",
    "jet_relative_pt": "pT of the sum of the massless particles' four-vectors over the jet pT",
    "pt_rel_sum": "scalar sum of the particles' pT_rel = pT / pT_jet",
    "multiplicity": "real particles in the jet (mask 1)",
}


def jet_features_table(
    reference: JetSample, generated: JetSample, info: Mapping[str, Any] | None = None
) -> pa.Table:
    """Per-jet features of every reference and generated jet (reference first): relative mass, relative
    pT, sum of pT_rel, multiplicity and the 5 prime EFPs (n = 4, d = 4) of the histograms."""
    rows = np.concatenate([np.arange(len(reference)), np.arange(len(generated))])
    what = ("every jet of the reference file", "every generated jet")
    columns = _sample_columns(len(reference), len(generated), rows, what)
    ref, gen = _jet_columns(reference), _jet_columns(generated)
    for name in ref:
        text = JET_DESCRIPTIONS.get(name, f"energy-flow polynomial n = 4, d = 4 of the graph '{name[4:]}'")
        columns.append(Column(name, np.concatenate([ref[name], gen[name]]), text))
    return build_table(columns, "one jet per row: per-jet features", info)
