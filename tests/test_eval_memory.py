"""The classifiers address rows of their inputs instead of copying them (the floor's halves)."""

import numpy as np
import pytest

from caloforge.evaluation.classifier import ClassifierConfig, classifier_test


def test_rows_of_one_array_give_the_result_of_copied_halves():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)).astype(np.float32)
    x[::3, :4] += 0.8  # a third of the rows differ: the halves are not alike
    half = rng.random(400) < 0.5
    cfg = ClassifierConfig.official(max_epochs=3, hidden_units=16, hidden_layers=2, batch_size=50)
    copied = classifier_test(x[half], x[~half], cfg, seed=5)
    rows = classifier_test(x, x, cfg, seed=5, reference_rows=np.flatnonzero(half),
                           generated_rows=np.flatnonzero(~half))
    assert rows.auc == copied.auc and rows.jsd == copied.jsd and rows.best_epoch == copied.best_epoch
    assert (rows.n_train, rows.n_test, rows.n_val) == (copied.n_train, copied.n_test, copied.n_val)
    assert [h["train_loss"] for h in rows.history] == [h["train_loss"] for h in copied.history]
    # a different subset is a different test
    other = classifier_test(x, x, cfg, seed=5, reference_rows=np.flatnonzero(half)[::-1][:150],
                            generated_rows=np.flatnonzero(~half))
    assert other.n_train != rows.n_train


def test_rows_out_of_range_are_refused():
    x = np.zeros((100, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="reference_rows"):
        classifier_test(x, x, ClassifierConfig.fast(max_epochs=1), reference_rows=np.array([0, 100]))
