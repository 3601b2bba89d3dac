"""Sensitive binary classifier test: gradient-boosted trees with k-fold cross-validated predictions.

Can boosted trees tell the reference (label 1) from a compared sample (label 0) by per-object features
(showers: the high-level features, jets: per-jet features)? Recipe:

* classes are balanced first: the larger sample is subsampled (seeded) to the size of the smaller, so
  that a classifier that has learnt nothing gives AUC 0.5 and JSD 0;
* ``folds``-fold stratified cross-validation (shuffled, seeded): every object is predicted once, by a
  model that never saw it (``sklearn.model_selection.cross_val_predict``);
* within each training part, a stratified ``calibration_fraction`` (seeded) is held back: the
  ``HistGradientBoostingClassifier`` is fitted on the rest and an isotonic regression on the held-back
  part calibrates its probabilities (with the defaults 60 / 20 / 20 fit / calibration / prediction, the
  split of the published network recipe, see :mod:`pipelines.metrics.classifier`);
* AUC (``roc_auc_score``) and JSD = (ln 2 - BCE) / ln 2 (the definition of
  :func:`pipelines.metrics.classifier.binary_cross_entropy`, as the network classifier reports it) of
  the pooled held-out calibrated probabilities; the error is the standard deviation of the per-fold
  values over sqrt(folds) (approximate: the folds' training parts overlap).

It is a sensitivity test, not the published CaloChallenge metric (that is the network classifier with
the published 3 x 2048 setting): read it against its real-vs-real row.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split

from pipelines.metrics.classifier import binary_cross_entropy
from pipelines.metrics.settings import TreeClassifierConfig

log = logging.getLogger(__name__)

#: isotonic outputs are kept inside (EPS, 1 - EPS), as in the network classifier
EPS = 1e-6


@dataclass(frozen=True)
class TreeClassifierResult:
    """AUC and JSD of the pooled held-out predictions with their errors, per-fold values and sizes."""

    auc: float
    auc_error: float
    jsd: float
    jsd_error: float
    fold_aucs: tuple[float, ...]
    fold_jsds: tuple[float, ...]
    n_per_class: int
    n_features: int
    config: TreeClassifierConfig

    def to_dict(self) -> dict:
        return {**asdict(self), "fold_aucs": list(self.fold_aucs), "fold_jsds": list(self.fold_jsds)}


class CalibratedTrees(ClassifierMixin, BaseEstimator):
    """Boosted trees fitted on part of the training data, isotonic-calibrated on the held-back rest."""

    def __init__(
        self,
        max_iter: int = 100,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        max_bins: int = 63,
        calibration_fraction: float = 0.25,
        random_state: int = 0,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.max_bins = max_bins
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray) -> CalibratedTrees:
        x_fit, x_cal, y_fit, y_cal = train_test_split(
            x, y, test_size=self.calibration_fraction, stratify=y, random_state=self.random_state
        )
        self.trees_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            max_bins=self.max_bins,
            early_stopping=False,
            random_state=self.random_state,
        ).fit(x_fit, y_fit)
        self.classes_ = self.trees_.classes_
        self.isotonic_ = IsotonicRegression(out_of_bounds="clip", y_min=EPS, y_max=1.0 - EPS)
        self.isotonic_.fit(self.trees_.predict_proba(x_cal)[:, 1], y_cal)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.isotonic_.predict(self.trees_.predict_proba(x)[:, 1])
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[(self.predict_proba(x)[:, 1] > 0.5).astype(int)]


def balanced_rows(n_reference: int, n_compared: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices (reference, compared) of equal size min(n_reference, n_compared); the larger
    sample is subsampled without replacement (seeded), the smaller kept whole."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    n = min(n_reference, n_compared)
    pick = [
        np.sort(rng.choice(m, n, replace=False)) if m > n else np.arange(m) for m in (n_reference, n_compared)
    ]
    return pick[0], pick[1]


def jsd_from_probabilities(prob: np.ndarray, label: np.ndarray) -> float:
    """(ln 2 - BCE) / ln 2 of calibrated probabilities, the network classifier's JSD."""
    return float((np.log(2.0) - binary_cross_entropy(prob, label)) / np.log(2.0))


def tree_classifier_test(
    reference: np.ndarray, compared: np.ndarray, config: TreeClassifierConfig
) -> TreeClassifierResult:
    """Cross-validated AUC and JSD of calibrated boosted trees separating ``reference`` (n, d) from
    ``compared`` (m, d); see the module docstring."""
    reference = np.asarray(reference, dtype=np.float64)
    compared = np.asarray(compared, dtype=np.float64)
    if reference.ndim != 2 or compared.ndim != 2 or reference.shape[1] != compared.shape[1]:
        raise ValueError(
            f"tree classifier inputs must be (n, d) with equal d, got {reference.shape}, {compared.shape}"
        )
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(compared))):
        raise ValueError("tree classifier inputs contain NaN or infinite values")
    rows_ref, rows_cmp = balanced_rows(len(reference), len(compared), config.seed)
    n = len(rows_ref)
    # every fold's held-out part and both parts of every training split need objects of each class
    share = min(config.calibration_fraction, 1.0 - config.calibration_fraction)
    minimum = max(2 * config.folds, int(np.ceil(4.0 / share)))
    if n < minimum:
        raise ValueError(f"tree classifier needs at least {minimum} objects per class, got {n}")
    x = np.concatenate([reference[rows_ref], compared[rows_cmp]])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    cv = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    model = CalibratedTrees(
        max_iter=config.max_iter,
        learning_rate=config.learning_rate,
        max_leaf_nodes=config.max_leaf_nodes,
        max_bins=config.max_bins,
        calibration_fraction=config.calibration_fraction,
        random_state=config.seed,
    )
    prob = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    folds = [held_out for _, held_out in cv.split(x, y)]
    fold_aucs = tuple(float(roc_auc_score(y[i], prob[i])) for i in folds)
    fold_jsds = tuple(jsd_from_probabilities(prob[i], y[i]) for i in folds)
    root_k = np.sqrt(config.folds)
    result = TreeClassifierResult(
        auc=float(roc_auc_score(y, prob)),
        auc_error=float(np.std(fold_aucs) / root_k),
        jsd=jsd_from_probabilities(prob, y),
        jsd_error=float(np.std(fold_jsds) / root_k),
        fold_aucs=fold_aucs,
        fold_jsds=fold_jsds,
        n_per_class=n,
        n_features=x.shape[1],
        config=config,
    )
    log.info("tree classifier AUC %.4f, JSD %.4f (%d vs %d)", result.auc, result.jsd, n, n)
    return result
