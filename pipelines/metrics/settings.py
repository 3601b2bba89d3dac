"""Settings of the metric stages and of the classifier tests, importable without torch or sklearn.

The workflow builds every ``evaluation:`` block of the config with these classes when it starts
(:mod:`pipelines.config_check`), so a value a stage would reject stops it before any job runs.
FPD and KPD settings are one dataclass (:class:`DistanceSettings`) shared by the two evaluators.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipelines.settings import check_settings_types, settings_object

#: the published network and training (arXiv:2410.21611): 3 x 2048, Adam lr 2e-4, batch 1000, 50 epochs,
#: mean and std over 10 trainings
PUBLISHED = {"hidden": 2048, "layers": 3, "lr": 2e-4, "batch_size": 1000, "epochs": 50, "runs": 10}


#: error conventions of the feature-averaged W1P and W1EFP, each with the sentence metrics.json names it by
W1_ERRORS = {
    "batch_std": "error of the feature-averaged W1P / W1EFP = std over batches of the per-batch mean over "
    "features",
    "jetnet_norm": "error of the feature-averaged W1P / W1EFP = sqrt(sum_k sigma_k^2), the norm of the "
    "per-feature stds over batches (jetnet's average_over_features convention, published tables)",
}


@dataclass(frozen=True)
class ClassifierConfig:
    """Classifier settings. Published values: hidden 2048, layers 3, epochs 50, runs 10."""

    hidden: int = 128
    layers: int = 2
    epochs: int = 10
    lr: float = 2e-4
    batch_size: int = 1000
    runs: int = 1
    seed: int = 0
    standardize: bool = False
    patience: int = 0

    def __post_init__(self) -> None:
        for key in ("hidden", "layers", "epochs", "batch_size", "runs"):
            if getattr(self, key) < 1:
                raise ValueError(f"classifier_{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"classifier_lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ValueError(f"classifier_patience must be >= 0, got {self.patience}")

    @property
    def is_published(self) -> bool:
        """True for the published setting (see :data:`PUBLISHED`, plain inputs, no early stopping):
        the only one comparable with the published tables."""
        own = {key: getattr(self, key) for key in PUBLISHED}
        return own == PUBLISHED and not (self.standardize or self.patience)

    def describe(self) -> str:
        """One line naming the setting, for metrics.json and the report."""
        text = (
            f"{self.layers} x {self.hidden} LeakyReLU MLP, Adam lr {self.lr}, batch {self.batch_size}, "
            f"up to {self.epochs} epochs, {self.runs} run(s)"
        )
        if self.standardize:
            text += ", inputs standardised on the reference training split"
        if self.patience:
            text += f", early stopping after {self.patience} epochs without test-split improvement"
        return text + (" (published setting)" if self.is_published else " (not the published setting)")


@dataclass(frozen=True)
class TreeClassifierConfig:
    """Settings of the tree test; the boosting keys are those of HistGradientBoostingClassifier."""

    folds: int = 5
    max_iter: int = 100
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    max_bins: int = 63
    calibration_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"tree_folds must be >= 2, got {self.folds}")
        if self.max_iter < 1:
            raise ValueError(f"tree_max_iter must be >= 1, got {self.max_iter}")
        if not self.learning_rate > 0:
            raise ValueError(f"tree_learning_rate must be > 0, got {self.learning_rate}")
        if self.max_leaf_nodes < 2:
            raise ValueError(f"tree_max_leaf_nodes must be >= 2, got {self.max_leaf_nodes}")
        if not 2 <= self.max_bins <= 255:
            raise ValueError(f"tree classifier max_bins must be within 2..255, got {self.max_bins}")
        if not 0 < self.calibration_fraction < 1:
            raise ValueError(
                f"tree classifier calibration_fraction must be within (0, 1), got {self.calibration_fraction}"
            )
        if self.seed < 0:
            raise ValueError(f"tree classifier seed must be >= 0, got {self.seed}")

    def describe(self) -> str:
        """One line naming the recipe, for metrics.json and the report."""
        return (
            f"HistGradientBoostingClassifier (max_iter {self.max_iter}, learning_rate {self.learning_rate}, "
            f"max_leaf_nodes {self.max_leaf_nodes}, max_bins {self.max_bins}), isotonic calibration on "
            f"{self.calibration_fraction:g} of each training part, {self.folds}-fold cross-validated "
            f"predictions, seed {self.seed}"
        )


@dataclass(frozen=True)
class DistanceSettings:
    """FPD and KPD settings, shared by the shower and the jet evaluation (defaults: the published ones).

    fpd_n_sizes, fpd_n_draws: FPD sample sizes between fpd_min_samples and fpd_max_samples (equally
    spaced in 1/N) and draws per size, extrapolated linearly in 1/N to infinite size;
    fpd_min_samples, fpd_max_samples: smallest and largest FPD sample size (capped by the samples).
    kpd_n_batches, kpd_batch_size: KPD batches (median and spread reported) and clouds per batch.
    """

    fpd_n_sizes: int = 10
    fpd_n_draws: int = 20
    fpd_min_samples: int = 20_000
    fpd_max_samples: int = 50_000
    kpd_n_batches: int = 10
    kpd_batch_size: int = 5_000

    def __post_init__(self) -> None:
        check_settings_types(self)
        for name in ("fpd_n_draws", "kpd_n_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"setting {name} must be >= 1, got {getattr(self, name)}")
        for name in ("fpd_n_sizes", "fpd_min_samples", "kpd_batch_size"):
            if getattr(self, name) < 2:
                raise ValueError(f"setting {name} must be >= 2, got {getattr(self, name)}")
        if self.fpd_max_samples < self.fpd_min_samples:
            raise ValueError(
                f"setting fpd_max_samples ({self.fpd_max_samples}) must be >= fpd_min_samples "
                f"({self.fpd_min_samples})"
            )


@dataclass(frozen=True)
class TreeTestSettings:
    """The tree classifier test's settings, shared by the shower and the jet evaluation.

    tree_classifier: run the test; tree_folds, tree_max_iter, tree_learning_rate, tree_max_leaf_nodes:
    cross-validation folds, boosting iterations, learning rate and leaves per tree
    (HistGradientBoostingClassifier); tree_seed_offset: the test is seeded with seed + tree_seed_offset;
    seed: the evaluation's seed.
    """

    tree_classifier: bool = True
    tree_folds: int = 5
    tree_max_iter: int = 100
    tree_learning_rate: float = 0.1
    tree_max_leaf_nodes: int = 15
    tree_seed_offset: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()  # the other settings of the evaluation (DistanceSettings last)
        self.tree_config()  # validates the tree keys

    def tree_config(self) -> TreeClassifierConfig:
        return TreeClassifierConfig(
            folds=self.tree_folds,
            max_iter=self.tree_max_iter,
            learning_rate=self.tree_learning_rate,
            max_leaf_nodes=self.tree_max_leaf_nodes,
            seed=self.seed + self.tree_seed_offset,
        )


@dataclass(frozen=True)
class EvaluateShowersSettings(TreeTestSettings, DistanceSettings):
    """Hyperparameters of the shower evaluation (defaults sized for a quick CPU run).

    Published classifier: hidden 2048, layers 3, epochs 50, runs 10, ``classifier_standardize`` false,
    ``classifier_patience`` 0. Published FPD/KPD sizes are the defaults here (they shrink automatically
    for small samples, see distances.py).

    chunk_size: showers read and featurised at a time (bounds memory).
    classifier_runs: trainings of the network classifier (mean ± std reported);
    classifier_hidden, classifier_layers: width and hidden layers of the network classifier;
    classifier_epochs, classifier_lr, classifier_batch_size: epochs (at most), Adam learning rate and
    batch size of the network classifier; classifier_low: also train on the low-level inputs (every
    voxel); classifier_standardize: standardise the inputs on the reference training split;
    classifier_patience: stop after this many epochs without test-split improvement (0: never).
    The tree test: see :class:`TreeTestSettings`; FPD and KPD: see :class:`DistanceSettings`.
    """

    chunk_size: int = 2000
    classifier_runs: int = 1
    classifier_hidden: int = 128
    classifier_layers: int = 2
    classifier_epochs: int = 10
    classifier_lr: float = 2e-4
    classifier_batch_size: int = 1000
    classifier_low: bool = True
    classifier_standardize: bool = False
    classifier_patience: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        self.classifier_config()  # validates the classifier keys

    @classmethod
    def from_json(cls, text: str | None) -> EvaluateShowersSettings:
        """Parse a JSON object; unknown keys and wrongly typed values are a ValueError."""
        return cls(**settings_object(text, cls, "evaluate-showers"))

    def classifier_config(self) -> ClassifierConfig:
        return ClassifierConfig(
            hidden=self.classifier_hidden,
            layers=self.classifier_layers,
            epochs=self.classifier_epochs,
            lr=self.classifier_lr,
            batch_size=self.classifier_batch_size,
            runs=self.classifier_runs,
            seed=self.seed,
            standardize=self.classifier_standardize,
            patience=self.classifier_patience,
        )


@dataclass(frozen=True)
class JetMetricSettings(DistanceSettings):
    """Knobs of the jet metrics; defaults are the published ones.

    seed: seed of every random subsample and batch draw.
    FPD and KPD: see :class:`DistanceSettings` (a batch holds jets).
    """

    seed: int = 0
    num_eval_samples: int = 50_000  # jets per W1 batch (scaled down to the sample sizes)
    num_batches: int = 5  # W1 batches
    efp_normalised: bool = False  # EFP weights pt_rel / sum pt_rel instead of jetnet's raw pt_rel
    w1_error: str = "batch_std"  # error of the feature-averaged W1P / W1EFP, a key of W1_ERRORS
    cov_mmd_num_eval_samples: int = 100  # real and generated jets per COV/MMD batch (jetnet's 100)
    cov_mmd_num_batches: int = 10  # COV/MMD batches (jetnet's 10); cost: batches x samples^2 EMDs
    emd_radius: float = 1.0  # R of the energy mover's distance (energyflow's default)

    def __post_init__(self) -> None:
        if self.w1_error not in W1_ERRORS:
            raise ValueError(f"w1_error must be one of {sorted(W1_ERRORS)}, got {self.w1_error!r}")
        if not self.emd_radius > 0:
            raise ValueError(f"jet metric setting emd_radius must be > 0, got {self.emd_radius}")
        super().__post_init__()
        for name in ("num_eval_samples", "num_batches", "cov_mmd_num_eval_samples", "cov_mmd_num_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"jet metric setting {name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class EvaluateJetsSettings(TreeTestSettings, JetMetricSettings):
    """Settings of the ``evaluate-jets`` stage: the metric settings, the tree test on per-jet features
    (:class:`TreeTestSettings`) and the naming and binning."""

    dataset: str = ""  # name written to metrics.json; "" = the reference file's stem
    n_bins: int = 50  # bins of the continuous histograms
    tree_n_particles: int = 30  # leading particles whose features enter the tree test

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        if self.tree_n_particles < 1:
            raise ValueError(f"tree_n_particles must be >= 1, got {self.tree_n_particles}")

    @classmethod
    def from_json(cls, text: str) -> EvaluateJetsSettings:
        """Parse a JSON object; unknown keys or wrong types are a ValueError."""
        return cls(**settings_object(text, cls, "evaluate-jets"))

    def metric_settings(self) -> JetMetricSettings:
        names = {f.name for f in dataclasses.fields(JetMetricSettings)}
        return JetMetricSettings(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})
