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


# ------------------------------------------------------------- inputs spilled to scratch files
def test_row_file_reads_rows_in_any_order_and_pickles_as_its_path(tmp_path):
    import pickle

    from caloforge.evaluation.rowfile import RowFile

    x = np.random.default_rng(1).normal(size=(57, 9)).astype(np.float32)
    f = RowFile.create(tmp_path / "x.f32", n_cols=9)
    for a in range(0, 57, 20):  # blocks as the streamed read writes them
        f.append(x[a : a + 20].astype(np.float64))  # converted to float32
    assert f.shape == (57, 9) and len(f) == 57 and f.nbytes == (tmp_path / "x.f32").stat().st_size
    rows = np.array([56, 3, 4, 5, 3, 0, 30, 29])  # unsorted, a run, a repeat
    np.testing.assert_array_equal(f.take(rows), x[rows])
    assert f.take(np.array([], dtype=np.int64)).shape == (0, 9)
    g = pickle.loads(pickle.dumps(f))
    assert len(pickle.dumps(f)) < 500  # the path, not the data
    np.testing.assert_array_equal(g.take(np.arange(57)), x)
    with pytest.raises(IndexError, match="x.f32"):
        f.take(np.array([57]))
    with pytest.raises(ValueError, match="9 columns"):
        f.append(np.zeros((2, 8)))
    with pytest.raises(FileExistsError):
        RowFile.create(tmp_path / "x.f32", n_cols=9)
    f.unlink()
    assert not (tmp_path / "x.f32").exists()


def test_classifier_on_row_files_equals_in_memory(tmp_path):
    from caloforge.evaluation.rowfile import RowFile

    rng = np.random.default_rng(3)
    ref = rng.normal(size=(300, 10)).astype(np.float32)
    gen = (rng.normal(size=(260, 10)) + 0.3).astype(np.float32)
    files = []
    for name, a in (("ref", ref), ("gen", gen)):
        f = RowFile.create(tmp_path / name, 10)
        f.append(a)
        files.append(f)
    cfg = ClassifierConfig.official(max_epochs=3, hidden_units=16, hidden_layers=2, batch_size=64)
    mem = classifier_test(ref, gen, cfg, seed=2)
    disk = classifier_test(files[0], files[1], cfg, seed=2)
    assert disk.auc == mem.auc and disk.jsd == mem.jsd and disk.best_epoch == mem.best_epoch
    assert [h["train_loss"] for h in disk.history] == [h["train_loss"] for h in mem.history]
    # halves of one file, as the floor
    half = np.arange(300) < 150
    rows = classifier_test(ref, ref, cfg, seed=2, reference_rows=np.flatnonzero(half), generated_rows=np.flatnonzero(~half))
    rows_disk = classifier_test(files[0], files[0], cfg, seed=2, reference_rows=np.flatnonzero(half),
                                generated_rows=np.flatnonzero(~half))
    assert rows_disk.auc == rows.auc and rows_disk.history[-1]["train_loss"] == rows.history[-1]["train_loss"]


def _toy_pair(tmp_path, n: int = 400):
    from caloforge.data import open_showers, write_showers
    from caloforge.simulation import ParametricSimulator

    sim = ParametricSimulator("ds2")
    e = np.exp(np.random.default_rng(0).uniform(np.log(2e3), np.log(5e4), n)).astype(np.float32)
    write_showers(tmp_path / "ref.h5", e, sim.sample(e, np.random.default_rng(1)))
    write_showers(tmp_path / "gen.h5", e, 1.1 * sim.sample(e, np.random.default_rng(2)))
    return open_showers(tmp_path / "ref.h5"), {"gen": open_showers(tmp_path / "gen.h5")}


def _cls(metrics: dict) -> list:
    blocks = [*metrics["generated"], metrics["floor"]]
    return [(b["cls_low"]["auc"], b["cls_low"]["jsd"], b["cls_low"]["best_epoch"]) for b in blocks]


def test_evaluation_spills_classifier_inputs_beyond_the_budget_with_the_same_numbers(tmp_path, monkeypatch):
    from caloforge.evaluation import pipeline
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate

    ref, gen = _toy_pair(tmp_path)
    cfg = ClassifierConfig.official(max_epochs=2, hidden_units=16, hidden_layers=1, batch_size=100)
    base = dict(metrics=("cls-low",), floor=True, classifier=cfg)
    mem, _ = evaluate(ref, gen, EvaluationOptions(**base))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made = []
    create = pipeline.RowFile.create

    def spy(path, n_cols):
        made.append(path)
        return create(path, n_cols)

    monkeypatch.setattr(pipeline.RowFile, "create", spy)
    disk, _ = evaluate(ref, gen, EvaluationOptions(**base, low_level_budget=1000, scratch=str(scratch)))
    assert len(made) == 2 and all(p.parent.parent == scratch for p in made)  # reference and sample
    assert _cls(disk) == _cls(mem)
    assert any("scratch files" in n for n in disk["notes"])
    assert list(scratch.iterdir()) == []  # removed at the end


def test_without_room_to_spill_a_subset_within_the_budget_is_used(tmp_path, monkeypatch):
    import shutil

    from caloforge.evaluation import pipeline
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate

    ref, gen = _toy_pair(tmp_path, n=1100)
    cfg = ClassifierConfig.official(max_epochs=1, hidden_units=8, hidden_layers=1, batch_size=200)
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 0, 10))
    budget = 4 * 6481 * 2 * 1000  # 1,000 showers per sample
    sub, _ = evaluate(ref, gen, EvaluationOptions(metrics=("cls-low",), classifier=cfg, low_level_budget=budget))
    assert sub["n_generated"] == 1100 and sub["cls_low"]["n_train"] == 2 * 600  # 60% of 1,000 per class
    assert any("too little free space" in n for n in sub["notes"])


def test_cli_scratch_and_memory_options_are_checked(tmp_path):
    from typer.testing import CliRunner

    from caloforge.cli.main import app

    ref, _ = _toy_pair(tmp_path, n=100)
    out = tmp_path / "out"
    args = ["evaluate", str(tmp_path / "ref.h5"), str(tmp_path / "gen.h5"), "-o", str(out), "--metrics", "cls-low"]
    r = CliRunner().invoke(app, [*args, "--scratch", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "nowhere: --scratch: not an existing folder" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, [*args, "--cls-memory", "0"])
    assert r.exit_code == 2 and "--cls-memory must be positive" in r.output
    assert not out.exists() or not (out / "metrics.json").exists()


def test_scratch_files_are_removed_after_an_error(tmp_path, monkeypatch):
    from caloforge.evaluation import pipeline
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate

    ref, gen = _toy_pair(tmp_path, n=100)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def fail(*args, **kwargs):
        assert any(scratch.rglob("*.f32"))  # the inputs were spilled
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "classifier_test", fail)
    with pytest.raises(KeyboardInterrupt):
        evaluate(ref, gen, EvaluationOptions(metrics=("cls-low",), low_level_budget=1, scratch=str(scratch)))
    assert list(scratch.iterdir()) == []
