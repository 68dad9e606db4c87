"""An FPGA-ready anomaly trigger: a small fixed-point autoencoder on trigger-level inputs, trained
with quantisation in the loop and converted to an HLS project with hls4ml.

Inputs (:func:`trigger_features`, 70 numbers per shower, cheap to form at trigger level): the
square roots of the 45 layer energy fractions, of the fractions in a coarse grid of 8 angular x
3 radial regions (alpha bins in pairs, r bins 0-2 / 3-5 / 6-8), and the scaled log10 of the
deposited energy. The autoencoder (70 -> 16 -> 8 -> 16 -> 70, ReLU) is trained on single-electron
showers; its anomaly score is the mean squared reconstruction error.

Fixed point (:class:`FixedPoint`, hls4ml's ``ap_fixed<W,I,AP_RND,AP_SAT>``): inputs
``ap_fixed<16,2>``, weights ``ap_fixed<8,2>``, biases and layer outputs ``ap_fixed<16,6>``,
accumulators ``ap_fixed<40,16>`` (wide enough that every sum is exact). Quantisation-aware
training uses fake quantisation with a straight-through estimator (torch's own arithmetic, no
extra package); :meth:`TriggerAE.forward_fixed` evaluates the quantised network *exactly* as the
HLS code does (float64 holds every product and sum exactly; outputs rounded half up and
saturated), which is what the hls4ml C simulation is compared with.

hls4ml (optional extra ``[fpga]``: ``pip install 'caloforge[fpga]'``) writes the HLS project
and, with ``compile()``, builds its C simulation with g++; ``predict()`` runs it. Synthesis
(resources, latency in clock cycles) needs the vendor's HLS tools (Vitis/Vivado HLS), which are
not installed here.

References:
    Duarte et al., *Fast inference of deep neural networks in FPGAs for particle physics*,
    JINST 13 (2018) P07027, arXiv:1804.06913 (hls4ml).
    Govorkova et al., *Autoencoders on field-programmable gate arrays for real-time,
    unsupervised new physics detection at 40 MHz at the Large Hadron Collider*, Nature Machine
    Intelligence 4 (2022) 154, arXiv:2108.03986.
    Coelho et al., *Automatic heterogeneous quantization of deep neural networks for low-latency
    inference on the edge for particle detectors*, Nature Machine Intelligence 3 (2021) 675,
    arXiv:2006.10159 (quantisation-aware training for hls4ml).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from caloforge.config import preset
from caloforge.geometry import Geometry

N_ALPHA_GROUPS = 8
R_GROUPS = ((0, 3), (3, 6), (6, 9))


# ====================================================================== inputs
def trigger_features(showers: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(N, voxels) MeV -> (N, layers + 8 * 3 + 1) float32 trigger inputs (see module doc)."""
    n_layers, n_alpha, n_r = geometry.shape
    if n_alpha % N_ALPHA_GROUPS or n_r != 9:
        raise ValueError(f"the trigger's coarse grid needs 9 r bins and alpha bins in multiples of "
                         f"{N_ALPHA_GROUPS}; geometry {geometry.name} has {n_r} and {n_alpha}")
    x = np.asarray(showers, np.float64).reshape(-1, n_layers, n_alpha, n_r)
    total = x.sum(axis=(1, 2, 3))
    safe = np.maximum(total, 1e-9)[:, None]
    layers = x.sum(axis=(2, 3)) / safe
    by_alpha = x.sum(axis=1).reshape(len(x), N_ALPHA_GROUPS, n_alpha // N_ALPHA_GROUPS, n_r).sum(axis=2)
    grid = np.stack([by_alpha[:, :, a:b].sum(-1) for a, b in R_GROUPS], axis=-1).reshape(len(x), -1) / safe
    log_e = (np.log10(np.maximum(total, 1.0)) - 3.5) / 1.5
    return np.concatenate([np.sqrt(layers), np.sqrt(grid), log_e[:, None]], axis=1).astype(np.float32)


# ====================================================================== fixed point
@dataclass(frozen=True)
class FixedPoint:
    """A signed fixed-point type ``ap_fixed<width, integer, AP_RND, AP_SAT>``: ``width - integer``
    fractional bits, rounding half up, saturating."""

    width: int
    integer: int

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    @property
    def bounds(self) -> tuple[float, float]:
        return -(2.0 ** (self.integer - 1)), 2.0 ** (self.integer - 1) - self.lsb

    def hls(self) -> str:
        return f"ap_fixed<{self.width},{self.integer},AP_RND,AP_SAT>"

    def quantise(self, x: Tensor) -> Tensor:
        """The exact value the HLS type holds for ``x`` (no gradient)."""
        lo, hi = self.bounds
        return torch.clamp(torch.floor(x * 2.0**self.frac + 0.5) * self.lsb, lo, hi)

    def fake(self, x: Tensor) -> Tensor:
        """:meth:`quantise` forward, identity gradient (straight-through estimator)."""
        return x + (self.quantise(x) - x).detach()


@dataclass(frozen=True)
class TriggerConfig:
    """The trigger autoencoder, its fixed-point types, training and hls4ml settings.

    References:
        Govorkova et al., arXiv:2108.03986 (autoencoders for real-time anomaly detection on
        FPGAs); Duarte et al., arXiv:1804.06913 (hls4ml).
    """

    hidden: tuple[int, ...] = (16, 8, 16)
    input_t: FixedPoint = field(default_factory=lambda: FixedPoint(16, 2))
    weight_t: FixedPoint = field(default_factory=lambda: FixedPoint(8, 2))
    data_t: FixedPoint = field(default_factory=lambda: FixedPoint(16, 6))  # biases and layer outputs
    accum_t: FixedPoint = field(default_factory=lambda: FixedPoint(40, 16))
    epochs: int = 40  # float training
    qat_epochs: int = 20  # then quantisation-aware training from the float weights
    batch_size: int = 256
    learning_rate: float = 2e-3
    reuse_factor: int = 4
    seed: int = 0

    @classmethod
    @preset
    def default(cls) -> TriggerConfig:
        return cls()

    @classmethod
    @preset
    def tiny(cls) -> TriggerConfig:
        """Few epochs: for tests."""
        return cls(epochs=3, qat_epochs=2, batch_size=64)


# ====================================================================== the network
class TriggerAE(nn.Module):
    """Fully connected network with ReLU; ``quantised`` switches fake quantisation on. An
    autoencoder (``n_outputs`` = ``n_inputs``, the default), or with one output the distilled
    score regressor of :func:`distill_score`.

    References:
        Govorkova et al., arXiv:2108.03986.
    """

    def __init__(self, n_inputs: int, config: TriggerConfig, n_outputs: int | None = None):
        super().__init__()
        self.config = config
        widths = (n_inputs, *config.hidden, n_inputs if n_outputs is None else n_outputs)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.quantised = False

    def linears(self) -> list[nn.Linear]:
        return [cast(nn.Linear, m) for m in self.layers]

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        if self.quantised:
            x = c.input_t.fake(x)
        for i, layer in enumerate(self.linears()):
            if self.quantised:
                w, b = c.weight_t.fake(layer.weight), c.data_t.fake(layer.bias)
                x = c.data_t.fake(nn.functional.linear(x, w, b))
            else:
                x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x

    @torch.no_grad()
    def quantised_parameters(self) -> list[tuple[Tensor, Tensor]]:
        """(weight, bias) of each layer as the HLS types hold them (float64)."""
        c = self.config
        return [(c.weight_t.quantise(layer.weight.double()), c.data_t.quantise(layer.bias.double()))
                for layer in self.linears()]

    @torch.no_grad()
    def forward_fixed(self, x: np.ndarray) -> np.ndarray:
        """Bit-accurate output of the HLS network for float32 inputs ``x`` (float64 holds every
        product and partial sum exactly; each layer output rounded and saturated to ``data_t``)."""
        c = self.config
        assert c.accum_t.frac >= c.weight_t.frac + max(c.input_t.frac, c.data_t.frac)
        h = c.input_t.quantise(torch.as_tensor(np.asarray(x, np.float32)).double())
        params = self.quantised_parameters()
        for i, (w, b) in enumerate(params):
            h = c.data_t.quantise(h @ w.T + b)
            if i < len(params) - 1:
                h = torch.relu(h)
        return h.numpy()

    def multiplications(self) -> int:
        """Multiplications per inference (inputs x outputs of every layer)."""
        return sum(layer.in_features * layer.out_features for layer in self.linears())


def anomaly_score(inputs: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error per shower."""
    return np.mean((np.asarray(reconstruction, np.float64) - np.asarray(inputs, np.float64)) ** 2, axis=1)


def fixed_inputs(model: TriggerAE, x: np.ndarray) -> np.ndarray:
    """The inputs as the HLS input type holds them (what the fixed-point score compares with)."""
    return model.config.input_t.quantise(torch.as_tensor(np.asarray(x, np.float32)).double()).numpy()


def _train(model: TriggerAE, x: Tensor, epochs: int, config: TriggerConfig, gen: torch.Generator,
           target: Tensor | None = None) -> list[float]:
    """Adam + cosine schedule on the mean squared error to ``target`` (default: ``x`` itself)."""
    y = x if target is None else target
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * math.ceil(len(x) / config.batch_size)))
    losses = []
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for a in range(0, len(x), config.batch_size):
            idx = perm[a : a + config.batch_size]
            loss = ((model(x[idx]) - y[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
    model.eval()
    return losses


def train_trigger(features: np.ndarray, config: TriggerConfig | None = None) -> tuple[TriggerAE, TriggerAE, dict]:
    """Train the float autoencoder on ``features`` (background only), then a copy with
    quantisation in the loop. Returns ``(float model, quantised model, losses)``."""
    cfg = config or TriggerConfig.default()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x = torch.as_tensor(np.asarray(features, np.float32))
    model = TriggerAE(x.shape[1], cfg)
    float_losses = _train(model, x, cfg.epochs, cfg, gen)
    qmodel = copy.deepcopy(model)
    qmodel.quantised = True
    q_losses = _train(qmodel, x, cfg.qat_epochs, cfg, gen)
    return model, qmodel, {"float": float_losses, "qat": q_losses}


# ====================================================================== distillation
@dataclass(frozen=True)
class DistilledScore:
    """A small network that regresses a teacher's anomaly score: ``score(x) = exp(mean + std *
    f(x))`` with ``f`` the network's single output (trained on the standardised log score).

    References:
        Pol et al., *Knowledge distillation for anomaly detection*, arXiv:2310.06047.
    """

    float_model: TriggerAE
    quantised_model: TriggerAE
    log_mean: float
    log_std: float

    def standardised(self, x: np.ndarray, fixed: bool = True) -> np.ndarray:
        """The network output (the standardised log score; monotonic in the score)."""
        if fixed:
            return self.quantised_model.forward_fixed(x)[:, 0]
        with torch.no_grad():
            return self.float_model(torch.as_tensor(np.asarray(x, np.float32))).numpy()[:, 0]

    def score(self, x: np.ndarray, fixed: bool = True) -> np.ndarray:
        return np.exp(self.log_mean + self.log_std * self.standardised(x, fixed))


def distill_score(features: np.ndarray, teacher: Callable[[np.ndarray], np.ndarray],
                  config: TriggerConfig | None = None, noise_levels: tuple[float, ...] = (0.0,)) -> DistilledScore:
    """Train a small supervised network (``config.hidden``, one output) to reproduce the
    ``teacher``'s (log) anomaly score (arXiv:2310.06047), in float and then with quantisation in
    the loop. The training inputs are ``features`` (background) plus, for each non-zero entry of
    ``noise_levels``, a copy with Gaussian noise of that width added: the teacher labels them, so
    the student also sees inputs off the background manifold (no signal is used)."""
    cfg = config or TriggerConfig(hidden=(16,))
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    f = np.asarray(features, np.float32)
    xs = [f if s == 0 else f + np.float32(s) * rng.standard_normal(f.shape, dtype=np.float32) for s in noise_levels]
    x_np = np.concatenate(xs)
    x = torch.as_tensor(x_np)
    log_s = np.log(np.maximum(np.asarray(teacher(x_np), np.float64), 1e-12))
    mean, std = float(log_s.mean()), float(log_s.std() or 1.0)
    y = torch.as_tensor((log_s - mean) / std, dtype=torch.float32).reshape(-1, 1)
    model = TriggerAE(x.shape[1], cfg, n_outputs=1)
    _train(model, x, cfg.epochs, cfg, gen, y)
    qmodel = copy.deepcopy(model)
    qmodel.quantised = True
    _train(qmodel, x, cfg.qat_epochs, cfg, gen, y)
    return DistilledScore(model, qmodel, mean, std)


# ====================================================================== hls4ml
def hls_config(model: TriggerAE) -> dict[str, Any]:
    """The hls4ml configuration of ``model``: the fixed-point types per layer, Latency strategy,
    the reuse factor (requires hls4ml)."""
    import hls4ml

    c = model.config
    seq = _as_sequential(model)
    cfg = hls4ml.utils.config_from_pytorch_model(seq, (model.linears()[0].in_features,), granularity="name",
                                                 backend="Vitis", default_precision=c.data_t.hls(),
                                                 default_reuse_factor=c.reuse_factor)
    cfg["Model"]["Strategy"] = "Latency"
    cfg["Model"]["ReuseFactor"] = c.reuse_factor
    for name, layer in cfg["LayerName"].items():
        if name.startswith("fc"):
            layer["Precision"] = {"weight": c.weight_t.hls(), "bias": c.data_t.hls(), "result": c.data_t.hls(),
                                  "accum": c.accum_t.hls()}
            layer["ReuseFactor"] = c.reuse_factor
        elif name.startswith("relu"):
            layer["Precision"] = {"result": c.data_t.hls()}
        else:  # the input layer
            layer["Precision"] = {"result": c.input_t.hls()}
    return cfg


def _as_sequential(model: TriggerAE) -> nn.Sequential:
    """A plain float network with the quantised weights (exactly representable in the HLS types)."""
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    params = model.quantised_parameters()
    for i, (w, b) in enumerate(params):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w.float())
            lin.bias.copy_(b.float())
        parts[f"fc{i}"] = lin
        if i < len(params) - 1:
            parts[f"relu{i}"] = nn.ReLU()
    return nn.Sequential(parts).eval()


def convert_to_hls(model: TriggerAE, output_dir: str | Path, project_name: str = "trigger_ae") -> Any:
    """Write the HLS project of ``model`` (quantised weights) with hls4ml; returns the hls4ml
    model (``.compile()`` builds the C simulation with g++, ``.predict(x)`` runs it)."""
    import hls4ml

    cfg = hls_config(model)
    return hls4ml.converters.convert_from_pytorch_model(
        _as_sequential(model), output_dir=str(output_dir), project_name=project_name, backend="Vitis",
        hls_config=cfg, io_type="io_parallel")


def lsb_difference(a: np.ndarray, b: np.ndarray, t: FixedPoint) -> np.ndarray:
    """|a - b| in units of the least significant bit of ``t``."""
    return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / t.lsb


# ====================================================================== one command
def save_trigger(model: TriggerAE, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``trigger.safetensors`` (float weights; the HLS types round them) and ``trigger.json``."""
    import json
    from dataclasses import asdict

    from safetensors.torch import save_file

    from caloforge._atomic import atomic_write, atomic_write_text

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(d / "trigger.safetensors", lambda p: save_file(state, p))
    meta = {"format": "caloforge-trigger", "n_inputs": model.linears()[0].in_features,
            "n_outputs": model.linears()[-1].out_features, "quantised": model.quantised,
            "config": asdict(model.config), "features": "trigger_features (caloforge.export.trigger)", **(extra or {})}
    atomic_write_text(d / "trigger.json", json.dumps(meta, indent=2, default=str) + "\n")
    return d


def load_trigger(directory: str | Path) -> TriggerAE:
    """The trigger autoencoder written by :func:`save_trigger`."""
    import json

    from safetensors.torch import load_file

    d = Path(directory)
    meta = json.loads((d / "trigger.json").read_text())
    c = dict(meta["config"])
    for key in ("input_t", "weight_t", "data_t", "accum_t"):
        c[key] = FixedPoint(**c[key])
    c["hidden"] = tuple(c["hidden"])
    model = TriggerAE(int(meta["n_inputs"]), TriggerConfig(**c), int(meta.get("n_outputs", meta["n_inputs"])))
    model.load_state_dict(load_file(str(d / "trigger.safetensors")))
    model.quantised = bool(meta["quantised"])
    return model.eval()


def build_trigger(background: np.ndarray, geometry: Geometry, out_dir: str | Path, signal: np.ndarray | None = None,
                  config: TriggerConfig | None = None, hls: bool = True, n_check: int = 1000,
                  test_fraction: float = 0.2, log: Any = None) -> dict[str, Any]:
    """Train the trigger on ``background`` showers (readout threshold applied by the caller), keep
    ``test_fraction`` for the anomaly AUC against ``signal``, write the quantised model to
    ``out_dir`` and, with ``hls``, its hls4ml project, whose C simulation is compared with the
    bit-accurate torch model on ``n_check`` held-out showers. Returns the summary."""
    from sklearn.metrics import roc_auc_score

    cfg = config or TriggerConfig.default()
    say = log or (lambda s: None)
    feats = trigger_features(background, geometry)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(feats))
    n_test = max(1, int(round(len(feats) * test_fraction)))
    test, train = feats[order[:n_test]], feats[order[n_test:]]
    say(f"training on {len(train):,} showers ({len(test):,} held out)")
    model, qmodel, losses = train_trigger(train, cfg)
    out = Path(out_dir)
    summary: dict[str, Any] = {"n_train": len(train), "n_test": len(test), "multiplications": qmodel.multiplications(),
                               "reuse_factor": cfg.reuse_factor, "final_loss": {k: v[-1] for k, v in losses.items()}}
    bkg_fixed = anomaly_score(fixed_inputs(qmodel, test), qmodel.forward_fixed(test))
    if signal is not None:
        sig = trigger_features(signal, geometry)
        with torch.no_grad():
            bkg_float = anomaly_score(test, model(torch.from_numpy(test)).numpy())
            sig_float = anomaly_score(sig, model(torch.from_numpy(sig)).numpy())
        sig_fixed = anomaly_score(fixed_inputs(qmodel, sig), qmodel.forward_fixed(sig))
        y = np.r_[np.zeros(len(test)), np.ones(len(sig))]
        summary["auc"] = {"float": float(roc_auc_score(y, np.r_[bkg_float, sig_float])),
                          "fixed": float(roc_auc_score(y, np.r_[bkg_fixed, sig_fixed]))}
    if hls:
        say("converting with hls4ml and building the C simulation (g++)")
        h = convert_to_hls(qmodel, out / "hls_project")
        h.compile()
        x = np.ascontiguousarray(test[:n_check])
        csim = np.asarray(h.predict(x), np.float64).reshape(x.shape)
        diff = lsb_difference(csim, qmodel.forward_fixed(x), cfg.data_t)
        summary["csim_vs_torch"] = {"showers": len(x), "outputs": int(diff.size), "bit_exact": int((diff == 0).sum()),
                                    "max_lsb": float(diff.max())}
    save_trigger(qmodel, out, {"summary": summary})
    return summary
