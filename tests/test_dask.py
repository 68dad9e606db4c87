"""The evaluation on a Dask cluster gives the metrics.json of the single-process run."""

import json

import numpy as np
import pytest

from caloforge.data import open_showers, write_showers
from caloforge.errors import InputError
from caloforge.evaluation.classifier import ClassifierConfig
from caloforge.evaluation.pipeline import EvaluationOptions, evaluate
from caloforge.evaluation.prdc import PRDCConfig
from caloforge.geometry import get_geometry

distributed = pytest.importorskip("distributed", reason="needs the optional extra caloforge[dask]")

def toy_showers(n: int, seed: int, scale: float = 1.0, radius: float = 40.0):
    """Toy DS1-photon showers: a smooth mean profile times gamma fluctuations, some voxels empty."""
    g = get_geometry("ds1-photons")
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    profile = np.exp(-g.voxel_r / radius) * (1 + g.voxel_layer) ** -0.5
    s = e[:, None] * (profile / profile.sum())[None] * rng.gamma(2.0, 0.5, (n, g.n_voxels))
    s[rng.random((n, g.n_voxels)) < 0.3] = 0.0
    return e.astype(np.float32), (scale * s).astype(np.float32)


#: Keys that differ between any two runs (wall-clock seconds, dates, this process's memory).
VOLATILE = {"timing_seconds", "created", "peak_memory_mb", "seconds"}


def _stable(x):
    if isinstance(x, dict):
        return {k: _stable(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_stable(v) for v in x]
    return x


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    write_showers(d / "ref.h5", *toy_showers(400, 1))
    write_showers(d / "same.h5", *toy_showers(300, 2))
    write_showers(d / "scaled.h5", *toy_showers(300, 3, scale=1.3, radius=25.0))
    return d


def test_dask_cluster_gives_the_single_process_metrics(files):
    from caloforge.evaluation.distributed import in_process_runner

    opts = EvaluationOptions(
        metrics=("hist", "fpd", "kpd", "prdc", "cls-high", "cls-low", "multiclass"), floor=True,
        classifier=ClassifierConfig.official(max_epochs=3, hidden_units=16, hidden_layers=2, batch_size=100),
        prdc=PRDCConfig.official(max_samples=200), fpd_min_samples=100, fpd_max_samples=200, kpd_batch_size=100,
        seed=3)
    ref = open_showers(files / "ref.h5")
    gens = {"same": open_showers(files / "same.h5"), "scaled": open_showers(files / "scaled.h5")}
    one, _ = evaluate(ref, gens, opts)
    submitted = []
    with in_process_runner(workers=2, threads=1) as runner:
        submit = runner.submit
        runner.submit = lambda fn, *args: submitted.append(fn.__name__) or submit(fn, *args)  # count the tasks
        spread, _ = evaluate(ref, gens, opts, runner=runner)
    # 6 metric families for each sample and the floor, and the multiclass test, as dask tasks
    assert submitted.count("_compare_part") == 18 and submitted.count("_multiclass") == 1
    # the same metrics.json, bit for bit, but for wall-clock keys; and in the same key order
    assert json.dumps(_stable(spread)) == json.dumps(_stable(one))
    scaled = one["generated"][1]
    for key in ("separation_power", "fpd", "kpd", "prdc", "cls_high", "cls_low", "multiclass_log_posterior"):
        assert key in scaled and key in one["floor"]
    assert scaled["fpd"]["value"] > one["floor"]["fpd"]["value"]


def test_scheduler_spec():
    from caloforge.evaluation.distributed import SchedulerSpec

    assert SchedulerSpec.parse("local") == SchedulerSpec(None, 2)
    assert SchedulerSpec.parse("local:3").workers == 3
    assert SchedulerSpec.parse("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    for bad in ("local:0", "local:x", "nonsense", ""):
        with pytest.raises(InputError):
            SchedulerSpec.parse(bad)


def test_cli_rejects_a_bad_scheduler(files, tmp_path):
    from typer.testing import CliRunner

    from caloforge.cli.main import app

    r = CliRunner().invoke(app, ["evaluate", str(files / "ref.h5"), str(files / "same.h5"), "-o",
                                 str(tmp_path / "o"), "--metrics", "hist", "--no-plots", "--scheduler", "local:0"])
    assert r.exit_code == 2 and "local:N" in r.output and "Traceback" not in r.output


def test_cli_local_cluster_of_processes_gives_the_same_metrics_json(files, tmp_path):
    """``--scheduler local:1``: a worker process (tasks pickled and shipped) writes the
    metrics.json of the run without --scheduler."""
    from typer.testing import CliRunner

    from caloforge.cli.main import app

    common = [str(files / "ref.h5"), str(files / "scaled.h5"), "--metrics", "hist,fpd,kpd,cls-high", "--floor",
              "--cls-epochs", "2", "--cls-width", "16", "--cls-depth", "1", "--cls-batch-size", "100",
              "--no-plots", "--threads", "1"]
    runs = {}
    for tag, extra in (("one", []), ("dask", ["--scheduler", "local:1"])):
        r = CliRunner().invoke(app, ["evaluate", *common, "-o", str(tmp_path / tag), *extra])
        assert r.exit_code == 0, r.output
        runs[tag] = _stable(json.loads((tmp_path / tag / "metrics.json").read_text()))
    assert runs["dask"] == runs["one"]
    one = runs["one"]  # and it is a real evaluation: the mis-scaled sample stands out against the floor
    assert one["separation_power"]["etot_einc"] > 10 * one["floor"]["separation_power"]["etot_einc"]
    assert 0 <= one["cls_high"]["auc"] <= 1 and one["floor"]["cls_high"]["n_train"] > 0
