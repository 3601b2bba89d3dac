"""Classifier test: AUC ~ 0.5 on one distribution, clearly above on two; hand-checked helpers."""

import numpy as np
import pytest

from pipelines.metrics.classifier import (
    ClassifierConfig,
    binary_cross_entropy,
    build_network,
    classifier_test,
    low_level_inputs,
    split_per_class,
)

SMALL = ClassifierConfig(hidden=32, layers=2, epochs=4, lr=2e-3, batch_size=200, runs=2, seed=1)


def test_same_distribution_auc_half():
    rng = np.random.default_rng(0)
    res = classifier_test(rng.normal(size=(1500, 6)), rng.normal(size=(1500, 6)), SMALL)
    assert res.auc == pytest.approx(0.5, abs=0.06)
    assert abs(res.jsd) < 0.15  # isotonic calibration on 600 test points over-fits a little: JSD <~ 0
    assert len(res.aucs) == 2 and res.config == SMALL


def test_distinguishable_samples_auc_high():
    rng = np.random.default_rng(1)
    gen = rng.normal(size=(1500, 6))
    gen[:, 0] += 2.0  # Bayes-optimal AUC = Phi(2 / sqrt 2) = 0.92
    res = classifier_test(rng.normal(size=(1500, 6)), gen, SMALL)
    assert 0.85 < res.auc < 0.96
    assert res.jsd > 0.3


def test_seeded_reproducible():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) + 0.3
    cfg = ClassifierConfig(hidden=8, layers=1, epochs=2, batch_size=100, runs=1, seed=5)
    assert classifier_test(a, b, cfg) == classifier_test(a, b, cfg)


def test_helpers_by_hand():
    assert binary_cross_entropy(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(np.log(2))
    assert binary_cross_entropy(np.array([1.0]), np.array([0])) == pytest.approx(100.0)
    x = low_level_inputs(np.array([1000.0]), np.array([[10.0, 0.0, 990.0]]))
    np.testing.assert_allclose(x, [[3.0, 0.01, 0.0, 0.99]], rtol=1e-6)
    net = build_network(7, 16, 3)
    assert sum(isinstance(m, type(net[0])) for m in net) == 4 and net[-1].out_features == 1
    tr, te, va = split_per_class(10, np.random.default_rng(0))
    assert (len(tr), len(te), len(va)) == (6, 2, 2)
    assert sorted(np.concatenate([tr, te, va]).tolist()) == list(range(10))


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError):
        ClassifierConfig(hidden=0)
    with pytest.raises(ValueError):
        classifier_test(np.zeros((20, 2)), np.zeros((20, 3)), SMALL)
    with pytest.raises(ValueError):
        classifier_test(np.full((20, 2), np.nan), np.zeros((20, 2)), SMALL)
