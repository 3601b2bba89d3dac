"""Tree classifier test and the network classifier's optional settings: known distributions, hand-made
inputs, the settings plumbing (dataclasses, config files)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import norm
from snakemake.utils import update_config

from pipelines.config_check import settings_errors
from pipelines.metrics import evaluate_jets, evaluate_showers, jet_metrics
from pipelines.metrics.calo_features import compute_features
from pipelines.metrics.classifier import ClassifierConfig, classifier_test, standardizer
from pipelines.metrics.tree_classifier import (
    CalibratedTrees,
    TreeClassifierConfig,
    balanced_rows,
    jsd_from_probabilities,
    tree_classifier_test,
)

ROOT = Path(__file__).resolve().parents[1]
FAST = TreeClassifierConfig(max_iter=40, seed=3)


def test_same_distribution_reads_half_and_zero():
    rng = np.random.default_rng(0)
    res = tree_classifier_test(rng.normal(size=(1500, 8)), rng.normal(size=(1500, 8)), FAST)
    # null: AUC of 3000 cross-validated predictions, standard error sqrt(3001 / (12 * 1500^2)) = 0.011
    assert res.auc == pytest.approx(0.5, abs=0.035)
    assert -0.1 < res.jsd < 0.02  # isotonic calibration on 600 points over-fits a little: JSD <~ 0
    assert res.n_per_class == 1500 and res.n_features == 8 and len(res.fold_aucs) == FAST.folds


def test_shifted_gaussian_reaches_the_bayes_auc():
    # one of 5 features shifted by 1 sigma: the best possible AUC is Phi(1 / sqrt 2) = 0.760
    rng = np.random.default_rng(1)
    other = rng.normal(size=(2000, 5))
    other[:, 2] += 1.0
    res = tree_classifier_test(rng.normal(size=(2000, 5)), other, FAST)
    bayes = norm.cdf(1.0 / np.sqrt(2.0))
    assert bayes - 0.04 < res.auc < bayes + 0.015
    assert 0.0 < res.auc_error < 0.02 and res.jsd > 0.1


def test_separable_samples_give_auc_and_jsd_one():
    rng = np.random.default_rng(2)
    res = tree_classifier_test(rng.uniform(0, 1, (300, 3)), rng.uniform(2, 3, (300, 3)), FAST)
    assert res.auc == 1.0 and res.jsd > 0.99


def test_classes_are_balanced_and_results_seeded():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(500, 4)), rng.normal(size=(200, 4)) + 0.3
    res = tree_classifier_test(a, b, FAST)
    assert res.n_per_class == 200
    assert tree_classifier_test(a, b, FAST) == res
    other_seed = tree_classifier_test(a, b, dataclasses.replace(FAST, seed=4))
    assert other_seed.fold_aucs != res.fold_aucs
    ref_rows, cmp_rows = balanced_rows(500, 200, seed=7)
    assert len(ref_rows) == len(cmp_rows) == 200 and cmp_rows.tolist() == list(range(200))
    assert np.all(np.diff(ref_rows) > 0) and ref_rows.max() < 500
    assert np.array_equal(balanced_rows(500, 200, seed=7)[0], ref_rows)
    assert not np.array_equal(balanced_rows(500, 200, seed=8)[0], ref_rows)


def test_jsd_definition_and_calibrated_estimator():
    # (ln 2 - BCE) / ln 2: 0 for p = 0.5, 1 - log2(1 / 0.8) ... by hand for p = 0.8 on the right label
    y = np.array([1.0, 0.0])
    assert jsd_from_probabilities(np.array([0.5, 0.5]), y) == pytest.approx(0.0, abs=1e-15)
    assert jsd_from_probabilities(np.array([0.8, 0.2]), y) == pytest.approx(1 + np.log2(0.8))
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 1.0])
    labels = np.r_[np.ones(200), np.zeros(200)]
    model = CalibratedTrees(max_iter=20, random_state=0).fit(x, labels)
    prob = model.predict_proba(x)
    assert prob.shape == (400, 2) and np.allclose(prob.sum(axis=1), 1.0)
    assert prob.min() >= 1e-6 and prob.max() <= 1 - 1e-6
    assert set(np.unique(model.predict(x))) <= {0.0, 1.0}


def test_bad_settings_and_inputs():
    for bad in ({"folds": 1}, {"max_iter": 0}, {"learning_rate": 0.0}, {"calibration_fraction": 1.0},
                {"max_bins": 256}, {"max_leaf_nodes": 1}, {"seed": -1}):  # fmt: skip
        with pytest.raises(ValueError):
            TreeClassifierConfig(**bad)
    with pytest.raises(ValueError, match="equal d"):
        tree_classifier_test(np.zeros((50, 2)), np.zeros((50, 3)), FAST)
    with pytest.raises(ValueError, match="NaN"):
        tree_classifier_test(np.full((50, 2), np.nan), np.zeros((50, 2)), FAST)
    with pytest.raises(ValueError, match="at least 16"):
        tree_classifier_test(np.zeros((50, 2)), np.ones((15, 2)), FAST)


# ---------------------------------------------------------------- inputs of the tree test


def test_shower_tree_vector_adds_energy_ratios(ds2):
    energies = np.array([1000.0, 5000.0])
    showers = np.zeros((2, ds2.n_voxels), dtype=np.float32)
    showers[0, 0] = 300.0  # layer 0
    showers[0, ds2.n_voxels - 1] = 100.0  # layer 44
    showers[1, 16 * 9 * 3] = 2500.0  # layer 3
    x = compute_features(energies, showers, ds2).tree_vector()
    assert x.shape == (2, 362 + 45 + 1)
    ratio_layers = x[:, 362:407]
    assert ratio_layers[0, 0] == pytest.approx(np.log10(0.3)) and ratio_layers[0, 44] == pytest.approx(-1.0)
    assert ratio_layers[1, 3] == pytest.approx(np.log10(0.5))
    assert ratio_layers[1, 0] == pytest.approx(np.log10(1e-8 / 5000.0))
    np.testing.assert_allclose(x[:, 407], [0.4, 0.5])


def test_jet_level_features_by_hand():
    # jet 0: three real particles out of pt order and one pad; jet 1: one particle
    pf = np.zeros((2, 4, 4))
    pf[0, :3] = [[0.1, 0.0, 0.2, 1], [-0.2, 0.1, 0.5, 1], [0.0, -0.1, 0.3, 1]]
    pf[0, 3] = [9.0, 9.0, 9.0, 0]  # a pad with junk values must not be read
    pf[1, 0] = [0.0, 0.0, 1.0, 1]
    sample = jet_metrics.make_sample(pf, efp_values=np.zeros((2, len(jet_metrics.efp.GRAPHS))))
    x = jet_metrics.jet_level_features(sample, n_particles=5)
    assert x.shape == (2, 3 + 15)
    np.testing.assert_allclose(x[:, 0], jet_metrics.relative_mass(pf[..., :3], pf[..., 3] < 0.5))
    np.testing.assert_allclose(x[:, 1:3], [[1.0, 3], [1.0, 1]])
    np.testing.assert_allclose(x[0, 3:12], [-0.2, 0.1, 0.5, 0.0, -0.1, 0.3, 0.1, 0.0, 0.2])
    assert np.all(x[0, 12:] == 0) and np.all(x[1, 6:] == 0)
    np.testing.assert_allclose(x[1, 3:6], [0.0, 0.0, 1.0])
    assert jet_metrics.jet_level_features(sample, n_particles=2).shape == (2, 9)
    with pytest.raises(ValueError):
        jet_metrics.jet_level_features(sample, n_particles=0)


# ---------------------------------------------------------------- network classifier options


def test_standardizer_and_scale_free_network():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    shift, scale = standardizer(x)
    np.testing.assert_allclose(shift, [2.0, 5.0]) and np.testing.assert_allclose(scale, [1.0, 1.0])
    # the example of test_classifier.py (Bayes AUC 0.92) with five uninformative features at a scale of
    # 1e3: a small network with few steps is swamped by them, and reaches the Bayes AUC once the
    # inputs are standardised
    rng = np.random.default_rng(1)
    gen = rng.normal(size=(1500, 6))
    gen[:, 0] += 2.0
    ref = rng.normal(size=(1500, 6))
    scale = np.array([1.0, 1e3, 1e3, 1e3, 1e3, 1e3])
    cfg = ClassifierConfig(hidden=32, layers=2, epochs=4, lr=2e-3, batch_size=200, runs=1, seed=1)
    plain = classifier_test(ref * scale, gen * scale, cfg)
    standardised = classifier_test(ref * scale, gen * scale, dataclasses.replace(cfg, standardize=True))
    assert plain.auc < 0.6 and 0.85 < standardised.auc < 0.96


def test_early_stopping_stops_after_patience_epochs():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    cfg = ClassifierConfig(hidden=8, layers=1, epochs=200, batch_size=100, runs=2, seed=2, patience=3)
    res = classifier_test(a, b, cfg)
    assert len(res.best_epochs) == 2 and all(1 <= e < 200 for e in res.best_epochs)
    # without patience every epoch is trained; the kept epoch is where the test-split accuracy peaked
    full = classifier_test(a, b, dataclasses.replace(cfg, epochs=12, patience=0))
    assert all(1 <= e <= 12 for e in full.best_epochs)
    with pytest.raises(ValueError):
        ClassifierConfig(patience=-1)


def test_published_setting_is_recognised():
    published = ClassifierConfig(hidden=2048, layers=3, epochs=50, runs=10)
    assert published.is_published and "(published setting)" in published.describe()
    assert not ClassifierConfig().is_published
    assert not dataclasses.replace(published, standardize=True).is_published
    assert not dataclasses.replace(published, patience=5).is_published
    assert "not the published" in ClassifierConfig(standardize=True).describe()


# ---------------------------------------------------------------- settings plumbing


def test_config_files_evaluation_settings():
    default = yaml.safe_load((ROOT / "config.yaml").read_text())
    merged = copy.deepcopy(default)  # full.yaml is used on top of config.yaml, merged key by key
    update_config(merged, yaml.safe_load((ROOT / "config/full.yaml").read_text()))
    for config in (default, merged):
        assert settings_errors(config) == []
    bad = copy.deepcopy(default)
    bad["evaluation"]["showers"]["tree_folds"] = 1
    assert settings_errors(bad) == ["evaluation.showers: tree_folds must be >= 2, got 1"]
    for config in (default, merged):
        showers = evaluate_showers.EvaluateShowersSettings(**config["evaluation"]["showers"])
        jets = evaluate_jets.EvaluateJetsSettings(**config["evaluation"]["jets"])
        assert showers.tree_classifier and jets.tree_classifier
    # config/full.yaml keeps the published network classifier, whatever config.yaml sets
    published = evaluate_showers.EvaluateShowersSettings(**merged["evaluation"]["showers"])
    assert published.classifier_config().is_published
    tree_keys = {"tree_folds": 3, "tree_max_iter": 7, "tree_learning_rate": 0.2, "tree_max_leaf_nodes": 4}
    settings = evaluate_showers.EvaluateShowersSettings(seed=10, tree_seed_offset=5, **tree_keys)
    assert settings.tree_config() == TreeClassifierConfig(
        folds=3, max_iter=7, learning_rate=0.2, max_leaf_nodes=4, seed=15
    )
    with pytest.raises(ValueError, match="folds"):
        evaluate_showers.EvaluateShowersSettings.from_json('{"tree_folds": 1}')
    with pytest.raises(ValueError, match="tree_classifier must be bool"):
        evaluate_jets.EvaluateJetsSettings.from_json('{"tree_classifier": 1}')
    with pytest.raises(ValueError, match="tree_n_particles"):
        evaluate_jets.EvaluateJetsSettings(tree_n_particles=0)
