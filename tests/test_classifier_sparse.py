"""The sparse-input first layer of the classifier equals the dense layer (to float32 rounding)."""

import numpy as np
import pytest
import torch

from caloforge.evaluation import classifier
from caloforge.evaluation.classifier import ClassifierConfig, classifier_test
from caloforge.evaluation.sparse_input import SparseInputLinear, nonzero_fraction


def _sparse_rows(n: int, d: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.gamma(0.5, 1.0, size=(n, d)).astype(np.float32)
    x[rng.random((n, d)) > density] = 0.0
    x[:, 0] = rng.uniform(3, 5, n)  # log10 E_inc: never zero
    return x


def test_forward_and_gradients_equal_the_dense_layer():
    torch.manual_seed(1)
    dense = torch.nn.Linear(50, 7)
    sparse = SparseInputLinear.from_linear(dense)
    x = torch.from_numpy(_sparse_rows(33, 50, 0.1, 0)).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = dense(x), sparse(x2)
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(sparse.weight_t.grad, dense.weight.grad.T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-6)
    # inputs that need no gradient, and inference mode (the evaluation passes)
    with torch.inference_mode():
        torch.testing.assert_close(sparse(x.detach()), dense(x.detach()), rtol=1e-5, atol=1e-6)
    assert nonzero_fraction(torch.tensor([[0.0, 1.0], [0.0, 0.0]])) == 0.25


def test_classifier_uses_it_for_mostly_zero_inputs_with_the_dense_numbers(monkeypatch):
    ref = _sparse_rows(500, 40, 0.08, 1)
    gen = _sparse_rows(500, 40, 0.08, 2)
    gen[:, 1:] *= 3.0  # separable
    cfg = ClassifierConfig.official(max_epochs=4, hidden_units=512, hidden_layers=1, batch_size=100, device="cpu",
                                      learning_rate=3e-3)
    fast = classifier_test(ref, gen, cfg, seed=4)
    assert fast.sparse_input
    monkeypatch.setattr(classifier, "MAX_DENSITY", 0.0)  # the dense first layer
    dense = classifier_test(ref, gen, cfg, seed=4)
    assert not dense.sparse_input
    assert fast.auc > 0.6
    np.testing.assert_allclose([h["train_loss"] for h in fast.history], [h["train_loss"] for h in dense.history],
                               rtol=1e-4)
    assert fast.auc == pytest.approx(dense.auc, abs=0.02)
    # dense inputs keep the dense layer
    full = classifier_test(ref + 1.0, gen + 1.0, cfg, seed=4)
    assert not full.sparse_input
    # and so do narrow layers (the conversion would cost more than it saves)
    monkeypatch.setattr(classifier, "MAX_DENSITY", 0.12)
    assert not classifier_test(ref, gen, ClassifierConfig.official(max_epochs=1, hidden_units=32), seed=4).sparse_input


def test_threaded_forward_product_does_not_depend_on_the_thread_count():
    import scipy.sparse

    from caloforge.evaluation.sparse_input import _csc_times_dense

    x = _sparse_rows(40, 300, 0.1, 3)
    w = np.random.default_rng(0).normal(size=(300, 1024)).astype(np.float32)
    xc = scipy.sparse.csc_matrix(x)
    one = _csc_times_dense(xc, w, 1)
    assert one.dtype == np.float32 and one.flags.c_contiguous
    for threads in (2, 3, 4):
        np.testing.assert_array_equal(_csc_times_dense(xc, w, threads), one)
    np.testing.assert_allclose(one, x @ w, rtol=1e-4, atol=1e-4)
