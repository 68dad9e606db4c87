"""The multiclass classifier test: log-posteriors on reference showers (CaloChallenge paper)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from caloforge.evaluation.classifier import ClassifierConfig, multiclass_test

TINY = ClassifierConfig(hidden_layers=1, hidden_units=32, batch_size=256, max_epochs=6, patience=3, learning_rate=3e-3)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_identical_samples_give_log_one_over_k():
    rng = np.random.default_rng(0)
    samples = [rng.normal(size=(900, 8)).astype(np.float32) for _ in range(3)]
    r = multiclass_test(samples, TINY, seed=1)
    assert r.chance == pytest.approx(math.log(1 / 3))
    assert len(r.log_posterior) == 3
    np.testing.assert_allclose(r.log_posterior, math.log(1 / 3), atol=0.06)
    assert r.accuracy < 0.45  # chance is 1/3
    # the posteriors of every reference shower sum to 1
    assert sum(math.exp(v) for v in r.log_posterior) <= 1.0 + 1e-9


def test_distinct_sample_gets_little_posterior_and_is_seeded():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(1500, 8)).astype(np.float32)
    close = rng.normal(size=(1500, 8)).astype(np.float32)
    far = (rng.normal(size=(1500, 8)) * 2.0 + 1.0).astype(np.float32)
    r = multiclass_test([ref, close, far], TINY, seed=2)
    assert r.log_posterior[2] < math.log(1 / 3) - 0.5  # the classifier tells `far` apart
    assert r.log_posterior[1] > r.log_posterior[2] + 0.5
    assert r.log_posterior[0] > math.log(1 / 3)  # reference and `close` share the posterior
    again = multiclass_test([ref, close, far], TINY, seed=2)
    assert again.log_posterior == r.log_posterior
    with pytest.raises(ValueError):
        multiclass_test([ref], TINY)
    with pytest.raises(ValueError):
        multiclass_test([ref, far[:, :4]], TINY)
