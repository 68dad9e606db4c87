"""The ResNet classifier (--metrics cnn): the official network's structure, that it separates
showers moved outwards, and its place in metrics.json and the report. Tiny network, tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import open_showers, write_showers
from caloforge.evaluation.classifier import ClassifierConfig, classifier_test
from caloforge.evaluation.pipeline import EvaluationOptions, evaluate
from caloforge.evaluation.report import write_report
from caloforge.evaluation.resnet import ResNetConfig, build_resnet
from caloforge.simulation import simulate

runner = CliRunner()
DS2 = (45, 16, 9)
def widened(showers: np.ndarray) -> np.ndarray:
    """Every shower moved one radial bin outwards: a spatial difference, same energies."""
    return np.roll(showers.reshape(-1, *DS2), 1, axis=3).reshape(len(showers), -1)


SMALL = ClassifierConfig(batch_size=100, max_epochs=4, patience=2, learning_rate=2e-3, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_official_network_structure():
    net = build_resnet(DS2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    stem = convs[0]
    assert stem.weight.shape == (32, 1, 7, 7, 7) and stem.stride == (2, 2, 2) and stem.bias is None
    blocks = [m for m in net.stages]
    assert len(blocks) == 8  # ResNet-18: two basic blocks in each of four stages
    assert [b.conv2.out_channels for b in blocks] == [32, 32, 64, 64, 64, 64, 128, 128]
    assert net.fc.in_features == 128 + 1 and net.fc.out_features == 1  # pooled image + log10 E_inc
    tiny = build_resnet(DS2, ResNetConfig.tiny())
    assert len(tiny.stages) == 4 and tiny.fc.in_features == 32 + 1  # ResNet-10, channels / 4
    x = torch.randn(3, 1 + 45 * 16 * 9)
    net.eval()
    assert net(x).shape == (3, 1)
    with pytest.raises(ValueError):
        ResNetConfig(depth=7)


def test_resnet_classifier_separates_widened_showers():
    e1, s1 = simulate("ds2", 400, "log-uniform:1GeV:100GeV", seed=1)
    e2, s2 = simulate("ds2", 400, "log-uniform:1GeV:100GeV", seed=2)
    # showers in MeV, not divided by E_inc: the official inputs (~1e-4) need a few hundred batches
    # before the batch norms' running variances (initialised at 1) fit them, far more than a test
    # can afford; the network is the same
    ref = np.column_stack([np.log10(e1), s1]).astype(np.float32)
    gen = np.column_stack([np.log10(e2), widened(s2)]).astype(np.float32)
    r = classifier_test(ref, gen, SMALL, seed=0, build=lambda _: build_resnet(DS2, ResNetConfig.tiny()))
    assert r.auc > 0.8
    assert r.best_epoch >= 1 and r.device == "cpu"


def test_evaluate_cnn_in_metrics_and_report(tmp_path):
    e1, s1 = simulate("ds2", 300, "log-uniform:1GeV:100GeV", seed=3)
    e2, s2 = simulate("ds2", 300, "log-uniform:1GeV:100GeV", seed=4)
    write_showers(tmp_path / "ref.h5", e1, s1)
    write_showers(tmp_path / "gen.h5", e2, widened(s2))
    opts = EvaluationOptions(metrics=("cnn",), floor=True, classifier=SMALL, resnet=ResNetConfig.tiny())
    m, _ = evaluate(open_showers(tmp_path / "ref.h5"), {"gen": open_showers(tmp_path / "gen.h5")}, opts)
    # too few batches here for the ResNet to learn on the official inputs (see above): the
    # plumbing only: the sample's and the floor's blocks, the settings, the report's row
    for block in (m["cls_cnn"], m["floor"]["cls_cnn"]):
        assert 0.0 <= block["auc"] <= 1.0 and block["epochs_run"] >= 1 and block["n_train"] > 0
    assert m["cls_cnn"]["network"] == "ResNet-10 x0.25 channels" and m["cls_cnn"]["n_train"] == 2 * 180
    assert m["resnet"] == {"depth": 10, "width_factor": 0.25}
    report = write_report(m, {}, tmp_path / "report.html").read_text()
    assert "classifier AUC, ResNet (voxels)" in report


def test_cnn_needs_a_regular_geometry_and_cuda_must_exist(tmp_path):
    e, s = simulate("ds1-photons", 50, "log-uniform:1GeV:100GeV", seed=5)
    write_showers(tmp_path / "ds1.h5", e, s)
    r = runner.invoke(app, ["evaluate", str(tmp_path / "ds1.h5"), str(tmp_path / "ds1.h5"), "-o", str(tmp_path / "o"),
                            "--metrics", "cnn", "--no-plots"])
    assert r.exit_code == 2 and "regular geometry" in r.output and "Traceback" not in r.output
    if not torch.cuda.is_available():
        r = runner.invoke(app, ["evaluate", str(tmp_path / "ds1.h5"), str(tmp_path / "ds1.h5"), "-o",
                                str(tmp_path / "o"), "--metrics", "hist", "--device", "cuda", "--no-plots"])
        assert r.exit_code == 2 and "CUDA is not available" in r.output
