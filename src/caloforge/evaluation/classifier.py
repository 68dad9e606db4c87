"""The CaloChallenge classifier test: can a network tell generated showers from reference ones?

Protocol of the official evaluation (``evaluate.py``), run here in float32 with torch:

1. Inputs: *low-level* (:func:`low_level_inputs`): ``[log10 E_inc, voxel energies / E_inc]``
   after the readout threshold (``showers[showers < cut] = 0``), as ``prepare_low_data_for_
   classifier``; or *high-level* (:func:`high_level_inputs`): the high-level feature vector of
   ``prepare_high_data_for_classifier`` (:meth:`ShowerFeatures.high_level_vector`).
2. Equal class sizes (the larger sample is cut to the smaller; here a random subset, where the
   official script keeps the first rows), each class split 60/20/20 into train/test/validation
   (``int(0.6 N)``, ``int(0.2 N)``, the rest), classes merged and shuffled. Reference label 1,
   generated label 0.
3. Network: the official ``DNN``, ``Linear(in, H)`` then ``hidden_layers - 1`` times
   ``Linear(H, H)``, each followed by LeakyReLU (and dropout, 0 by default), then ``Linear(H, 1)``;
   ``BCEWithLogitsLoss``, Adam (lr 2e-4), batches of 1000, up to 50 epochs. "3 x 2048" is
   ``hidden_layers=3, hidden_units=2048`` (the official ``--cls_n_layer 2 --cls_n_hidden 2048``).
4. After every epoch the accuracy on the *test* split is measured (probability rounded at 0.5);
   the epoch with the best accuracy is kept (training stops at accuracy 1).
5. The kept network's sigmoid outputs on the test split calibrate an isotonic regression
   (``IsotonicRegression(out_of_bounds='clip', y_min=1e-6, y_max=1 - 1e-6)``); on the separate
   *validation* split the calibrated probabilities give the reported AUC and
   ``JSD = (ln 2 - BCE) / ln 2``.

On the CPU, inputs that are mostly exact zeros (the low-level voxels: ~90% for DS2) go through a
wide (>= 512 units) first layer that reads only the non-zeros (:class:`~caloforge.evaluation.sparse_input.
SparseInputLinear`, about 20% less time per epoch of the official network); the same products
summed in another order, so the numbers equal the dense layer's to float32 rounding.

Presets: :meth:`ClassifierConfig.official` (the protocol above, the CaloChallenge paper's
"3 x 2048" network) and :meth:`ClassifierConfig.fast` (same network and data, at most 25 epochs
and early stopping once the test accuracy has not improved for 10 epochs: about half the cost, a
cheaper estimate for development, not for publication). Same seed, device and thread count give the same result.

Memory: the two input arrays are used in place (float32, no merged copy; two halves of one
array are addressed by row indices, not copied); batches are gathered by index. For 100k DS2 showers the low-level input is 100k x 6481 float32 = 2.6 GB per sample.
Either input may instead be a :class:`~caloforge.evaluation.rowfile.RowFile` (rows in a scratch
file, what the evaluation pipeline uses beyond its memory budget): the batches are then read from
the file, the same rows in the same order, so the numbers are those of the in-memory arrays.
On CUDA the arrays are moved to the GPU once when they fit comfortably, else batch by batch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from caloforge.evaluation.rowfile import RowFile
from caloforge.evaluation.sparse_input import MAX_DENSITY, MIN_OUTPUTS, SparseInputLinear, nonzero_fraction

_LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------- inputs
def low_level_inputs(
    e_inc: np.ndarray, showers, threshold: float = 0.0, chunk_size: int = 4096, out: np.ndarray | None = None
) -> np.ndarray:
    """Low-level classifier input ``[log10 E_inc, showers / E_inc]`` (N, voxels + 1), float32.

    ``showers`` (MeV) may be any row-sliceable array (numpy, h5py dataset); it is converted block
    by block so that peak memory is the output plus one block. Voxels below ``threshold`` (MeV)
    are zeroed first. ``out`` may supply the (N, voxels + 1) float32 output buffer.
    """
    e = np.asarray(e_inc, dtype=np.float32).reshape(-1)
    n = len(e)
    if len(showers) != n:
        raise ValueError(f"{n} incident energies but {len(showers)} showers")
    if np.any(e <= 0):
        raise ValueError("incident energies must be positive")
    n_vox = showers.shape[1]
    if out is None:
        out = np.empty((n, n_vox + 1), dtype=np.float32)
    elif out.shape != (n, n_vox + 1) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(n, n_vox + 1)}")
    out[:, 0] = np.log10(e)
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        block = out[a:b, 1:]
        block[...] = np.asarray(showers[a:b], dtype=np.float32)
        if threshold > 0:
            block[block < threshold] = 0.0
        block /= e[a:b, None]
    return out


def high_level_inputs(features) -> np.ndarray:
    """High-level classifier input (the official high-level vector of ``features``), float32."""
    return np.ascontiguousarray(features.high_level_vector(), dtype=np.float32)


# ------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ClassifierConfig:
    """Settings of :func:`classifier_test`. Defaults: the official protocol (see module doc)."""

    hidden_layers: int = 3
    hidden_units: int = 2048
    dropout: float = 0.0
    learning_rate: float = 2e-4
    batch_size: int = 1000
    max_epochs: int = 50
    patience: int | None = None  # stop after this many epochs without a better test accuracy
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    device: str | None = None  # None: CUDA when available, else CPU
    data_on_device: bool | None = None  # None: move inputs to the GPU when they fit
    eval_batch_size: int = 10_000

    @classmethod
    def official(cls, **changes) -> ClassifierConfig:
        """The final CaloChallenge protocol: MLP 3 x 2048, up to 50 epochs, best test epoch."""
        return replace(cls(), **changes)

    @classmethod
    def fast(cls, **changes) -> ClassifierConfig:
        """Development preset: as official but at most 25 epochs, early stopping (patience 10).

        Measured on 7,500 vs 7,500 DS2 Geant4 showers against a copy scaled by 1.05: the
        official protocol gives low-level AUC 0.71 (best epoch 27 of 50); an earlier preset with
        patience 3 stopped at epoch 5 with AUC 0.51 and missed it. The test accuracy plateaus
        before it improves again, so keep the patience long; use the official protocol for
        figures that are compared with published ones."""
        return replace(cls(max_epochs=25, patience=10), **changes)

    def __post_init__(self) -> None:
        if self.hidden_layers < 1 or self.hidden_units < 1:
            raise ValueError("the network needs at least one hidden layer of one unit")
        if len(self.split) != 3 or min(self.split) <= 0 or sum(self.split) > 1 + 1e-9:
            raise ValueError("split must be three positive fractions summing to at most 1")
        if self.max_epochs < 1 or self.batch_size < 1:
            raise ValueError("max_epochs and batch_size must be positive")


@dataclass
class ClassifierResult:
    """Outcome of :func:`classifier_test`: calibrated AUC and JSD on the validation split."""

    auc: float
    jsd: float
    best_epoch: int
    n_train: int
    seconds: float
    n_test: int = 0
    n_val: int = 0
    epochs_run: int = 0
    auc_uncalibrated: float = float("nan")
    test_accuracy: float = float("nan")
    device: str = "cpu"
    history: list[dict] = field(default_factory=list)
    sparse_input: bool = False  # the first layer was a SparseInputLinear


# ------------------------------------------------------------------------------------ network
def build_mlp(input_dim: int, hidden_layers: int, hidden_units: int, dropout: float = 0.0,
              outputs: int = 1, sparse_input: bool = False) -> torch.nn.Sequential:
    """The official classifier DNN: hidden Linear+LeakyReLU(+Dropout) blocks, one logit out
    (``outputs`` logits for the multiclass test). ``sparse_input``: the first layer is a
    :class:`~caloforge.evaluation.sparse_input.SparseInputLinear` with the same initial values
    (for CPU inputs that are mostly zeros: the low-level voxels)."""
    layers: list[torch.nn.Module] = []
    width = input_dim
    for _ in range(hidden_layers):
        layers += [torch.nn.Linear(width, hidden_units), torch.nn.LeakyReLU(), torch.nn.Dropout(dropout)]
        width = hidden_units
    layers.append(torch.nn.Linear(width, outputs))
    if sparse_input:
        first = layers[0]
        assert isinstance(first, torch.nn.Linear)
        layers[0] = SparseInputLinear.from_linear(first)
    return torch.nn.Sequential(*layers)


class _Data:
    """Two float32 sources addressed by one index space: i < n_ref is reference row i (label
    1), otherwise generated row i - n_ref (label 0). With ``ref_rows`` / ``gen_rows`` the
    sources are those rows of the arrays (no copy: the rows are looked up batch by batch), so
    that two halves of one array (the floor) can be compared without copying either half."""

    def __init__(self, ref: np.ndarray | RowFile, gen: np.ndarray | RowFile, device: torch.device, on_device: bool,
                 ref_rows: np.ndarray | None = None, gen_rows: np.ndarray | None = None):
        self.n_ref = len(ref) if ref_rows is None else len(ref_rows)
        self.device = device
        self.ref_rows, self.gen_rows = ref_rows, gen_rows
        self.ref = _source(ref, device, on_device)
        self.gen = self.ref if gen is ref else _source(gen, device, on_device)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        is_ref = idx < self.n_ref
        r, g = idx[is_ref], idx[~is_ref] - self.n_ref
        ir = r if self.ref_rows is None else self.ref_rows[r]
        ig = g if self.gen_rows is None else self.gen_rows[g]
        parts = []
        if len(ir):
            parts.append(_gather(self.ref, ir))
        if len(ig):
            parts.append(_gather(self.gen, ig))
        x = torch.cat(parts) if len(parts) > 1 else parts[0]
        y = torch.cat([torch.ones(len(ir)), torch.zeros(len(ig))])
        return x.to(self.device, non_blocking=True), y.to(self.device)


def _source(x: np.ndarray | RowFile, device: torch.device, on_device: bool) -> torch.Tensor | RowFile:
    """A classifier input as the batches read it: a tensor (on the device if asked) or the file."""
    if isinstance(x, RowFile):
        return x
    t = torch.from_numpy(x)
    return t.to(device) if on_device else t


def _gather(src: torch.Tensor | RowFile, rows: np.ndarray) -> torch.Tensor:
    if isinstance(src, RowFile):
        return torch.from_numpy(src.take(rows))
    return src.index_select(0, torch.from_numpy(rows).to(src.device))


def _split_indices(n_ref: int, n_gen: int, split, rng: np.random.Generator):
    n = min(n_ref, n_gen)
    ref = rng.permutation(n_ref)[:n]
    gen = rng.permutation(n_gen)[:n] + n_ref
    counts = (n * np.asarray(split, dtype=np.float64)).astype(int)
    cuts = counts.cumsum()
    parts = []
    for lo, hi in ((0, cuts[0]), (cuts[0], cuts[1]), (cuts[1], n)):  # validation: the rest
        idx = np.concatenate([ref[lo:hi], gen[lo:hi]])
        parts.append(idx[rng.permutation(len(idx))])
    return parts  # train, test, validation


@torch.inference_mode()
def _logits(model, data: _Data | _MultiData, idx: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    out, lab = [], []
    for a in range(0, len(idx), batch):
        x, y = data.batch(idx[a : a + batch])
        o = model(x).float().cpu()
        out.append(o.reshape(-1) if o.shape[-1] == 1 else o)  # binary: one logit per row
        lab.append(y.cpu())
    return torch.cat(out).numpy(), torch.cat(lab).numpy()


def _sigmoid64(logits: np.ndarray) -> np.ndarray:
    return torch.sigmoid(torch.from_numpy(logits.astype(np.float64))).numpy()


def _accuracy(prob: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.round(prob) == y))  # np.round: 0.5 -> 0, as the official code


def _bce(prob: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy, logs clamped at -100 like ``torch.nn.BCELoss``."""
    lp = np.maximum(np.log(prob), -100.0)
    lq = np.maximum(np.log1p(-prob), -100.0)
    return float(-np.mean(y * lp + (1.0 - y) * lq))


def _resolve_device(config: ClassifierConfig) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _fits_on_device(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < 0.6 * free


def _on_device(cfg: ClassifierConfig, device: torch.device, inputs: list[np.ndarray | RowFile]) -> bool:
    """Whether the (distinct) inputs move to the device once: ``cfg.data_on_device``, else on
    CUDA when they fit comfortably; never when one is a scratch file (its batches are read from
    disk, so all batches are gathered on the host)."""
    if any(isinstance(x, RowFile) for x in inputs):
        return False
    if cfg.data_on_device is not None:
        return bool(cfg.data_on_device)
    return device.type == "cuda" and _fits_on_device(device, sum(x.nbytes for x in inputs))


def _as_float32(x, name: str) -> np.ndarray | RowFile:
    if isinstance(x, RowFile):
        return x  # float32 rows by construction
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {a.shape}")
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=np.float32)  # the only copy, and only when needed
    if not a.flags.writeable:
        a = a.copy()  # torch.from_numpy needs a writeable buffer
    return a


def _rows(rows: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    """Row indices into an array of ``n`` rows, as int64 (None: every row)."""
    if rows is None:
        return None
    r = np.asarray(rows)
    if r.ndim != 1 or (r.size and (not np.issubdtype(r.dtype, np.integer) or r.min() < 0 or r.max() >= n)):
        raise ValueError(f"{name} must be 1-D integer indices in [0, {n})")
    return r.astype(np.int64, copy=False)


# ------------------------------------------------------------------------------------ training
def _fit(
    make_model: Callable[[], torch.nn.Module],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    accuracy: Callable[[np.ndarray, np.ndarray], float],
    data,
    train: np.ndarray,
    test: np.ndarray,
    cfg,
    device: torch.device,
    rng: np.random.Generator,
    seed: int,
    t0: float,
    progress: Callable[[dict], None] | None,
    on_batch: Callable[[float], None] | None,
):
    """The training loop of the official protocol, shared by every classifier test: Adam,
    shuffled batches of ``cfg.batch_size``, after every epoch the accuracy on the test split,
    the best epoch's weights kept (stop at accuracy 1 or after ``cfg.patience`` epochs without
    a better one). ``loss_fn(model(x), y)``; ``accuracy(test logits, test labels)``.
    Returns (model, best state, best epoch, best accuracy, epochs run, history)."""
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = make_model().to(device)
        # fused: one kernel per step instead of ~10 passes over every weight (the same Adam; a
        # step of the 3 x 2048 network on 6,481 voxels costs 0.02 s instead of 0.11 s on one CPU thread)
        optim = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                                 fused=True if device.type in ("cpu", "cuda") else None)
        best_acc, best_epoch, best_state = -math.inf, 0, None
        history: list[dict] = []
        epochs_run = 0
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
            order = train[rng.permutation(len(train))]
            total, count = 0.0, 0
            for a in range(0, len(order), cfg.batch_size):
                x, y = data.batch(order[a : a + cfg.batch_size])
                out = model(x)
                loss = loss_fn(out.reshape(-1) if out.shape[-1] == 1 else out, y)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
                if on_batch is not None:
                    on_batch(epoch - 1 + min(a + cfg.batch_size, len(order)) / len(order))
            logits, y_test = _logits(model, data, test, cfg.eval_batch_size)
            acc = accuracy(logits, y_test)
            epochs_run = epoch
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            info = {"epoch": epoch, "max_epochs": cfg.max_epochs, "train_loss": total / max(count, 1),
                    "test_accuracy": acc, "best_epoch": best_epoch, "seconds": time.perf_counter() - t0}
            history.append(info)
            if progress is not None:
                progress(info)
            if acc == 1.0:
                break
            if cfg.patience is not None and epoch - best_epoch >= cfg.patience:
                break
    return model, best_state, best_epoch, best_acc, epochs_run, history


# --------------------------------------------------------------------------------------- test
def classifier_test(
    reference_X,
    generated_X,
    config: ClassifierConfig | None = None,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
    on_batch: Callable[[float], None] | None = None,
    build: Callable[[int], torch.nn.Module] | None = None,
    reference_rows: np.ndarray | None = None,
    generated_rows: np.ndarray | None = None,
) -> ClassifierResult:
    """Train the classifier of the official protocol on ``reference_X`` vs ``generated_X``
    ((N, features) arrays, ideally float32) and return its calibrated validation AUC and JSD.

    ``reference_rows`` / ``generated_rows``: use only these rows of the arrays, as if they had
    been copied out first (same result), without the copy; both arrays may then be the same
    array (two halves of one sample).

    ``build(n_features)`` makes the network (one logit out); default the official MLP of
    ``config`` (:func:`build_mlp`); the ResNet classifier passes
    :func:`~caloforge.evaluation.resnet.build_resnet`.

    ``progress`` is called after every epoch with a dict (epoch, max_epochs, train_loss,
    test_accuracy, best_epoch, seconds); ``on_batch`` after every training batch with the epochs
    done so far (a fraction, for a progress bar within an epoch).
    """
    cfg = config or ClassifierConfig.official()
    t0 = time.perf_counter()
    ref = _as_float32(reference_X, "reference_X")
    gen = ref if generated_X is reference_X else _as_float32(generated_X, "generated_X")
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(f"feature counts differ: {ref.shape[1]} vs {gen.shape[1]}")
    ref_rows, gen_rows = _rows(reference_rows, len(ref), "reference_rows"), _rows(generated_rows, len(gen), "generated_rows")
    n_ref = len(ref) if ref_rows is None else len(ref_rows)
    n_gen = len(gen) if gen_rows is None else len(gen_rows)
    device = _resolve_device(cfg)
    data = _Data(ref, gen, device, _on_device(cfg, device, [ref] if gen is ref else [ref, gen]), ref_rows, gen_rows)
    rng = np.random.default_rng(seed)
    train, test, val = _split_indices(n_ref, n_gen, cfg.split, rng)
    if min(len(train), len(test), len(val)) < 2:
        raise ValueError(f"samples too small for the classifier test ({n_ref} and {n_gen} rows)")

    # mostly-zero inputs (the low-level voxels) on the CPU: the first layer reads only the non-zeros
    sparse = (build is None and device.type == "cpu" and cfg.hidden_units >= MIN_OUTPUTS
              and nonzero_fraction(data.batch(train[:1000])[0]) < MAX_DENSITY)
    model, best_state, best_epoch, best_acc, epochs_run, history = _fit(
        (lambda: build(ref.shape[1])) if build is not None
        else (lambda: build_mlp(ref.shape[1], cfg.hidden_layers, cfg.hidden_units, cfg.dropout, sparse_input=sparse)),
        torch.nn.BCEWithLogitsLoss(), lambda logits, y: _accuracy(_sigmoid64(logits), y),
        data, train, test, cfg, device, rng, seed, t0, progress, on_batch)

    if best_state is None:  # unreachable: max_epochs >= 1 and the first epoch's accuracy beats -inf
        raise RuntimeError("classifier test: no epoch was evaluated")
    model.load_state_dict(best_state)
    logit_test, y_test = _logits(model, data, test, cfg.eval_batch_size)
    logit_val, y_val = _logits(model, data, val, cfg.eval_batch_size)
    p_test, p_val = _sigmoid64(logit_test), _sigmoid64(logit_val)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1.0 - 1e-6).fit(p_test, y_test)
    p_cal = iso.predict(p_val)
    auc = float(roc_auc_score(y_val, p_cal))
    jsd = (_LN2 - _bce(p_cal, y_val)) / _LN2
    return ClassifierResult(
        auc=auc,
        jsd=float(jsd),
        best_epoch=best_epoch,
        n_train=len(train),
        seconds=time.perf_counter() - t0,
        n_test=len(test),
        n_val=len(val),
        epochs_run=epochs_run,
        auc_uncalibrated=float(roc_auc_score(y_val, p_val)),
        test_accuracy=best_acc,
        device=str(device),
        history=history,
        sparse_input=sparse,
    )


# ---------------------------------------------------------------------------------- multiclass
@dataclass
class MulticlassResult:
    """Outcome of :func:`multiclass_test`.

    ``log_posterior[c]``: the mean over the reference's (class 0's) validation showers of
    ``log p(c | x)``, the classifier's posterior of class ``c``; ``chance`` = ``log(1 / k)``, what
    every class gets when all samples are drawn like the reference. A sample closer to the
    reference takes a larger share of the reference showers' posterior (a larger, less negative
    value); one the classifier tells apart gets a very negative value.
    """

    log_posterior: list[float]
    chance: float
    accuracy: float
    best_epoch: int
    epochs_run: int
    n_train: int
    n_test: int
    n_val: int
    seconds: float
    device: str = "cpu"
    history: list[dict] = field(default_factory=list)


class _MultiData:
    """k float32 sources addressed by one index space: index i belongs to the class c with
    ``offsets[c] <= i < offsets[c + 1]`` (label c)."""

    def __init__(self, arrays: list[np.ndarray | RowFile], device: torch.device, on_device: bool):
        self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])])
        self.device = device
        self.arrays = [_source(a, device, on_device) for a in arrays]

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        label = np.searchsorted(self.offsets, idx, side="right") - 1
        parts, labels = [], []
        for c, src in enumerate(self.arrays):
            rows = idx[label == c] - self.offsets[c]
            if len(rows):
                parts.append(_gather(src, rows))
                labels.append(torch.full((len(rows),), c, dtype=torch.long))
        x = torch.cat(parts) if len(parts) > 1 else parts[0]
        return x.to(self.device, non_blocking=True), torch.cat(labels).to(self.device)


def _split_multi(sizes: list[int], split, rng: np.random.Generator) -> list[np.ndarray]:
    """Equal class sizes (each class cut to the smallest, a random subset), each class split
    ``split`` into train/test/validation, classes merged and shuffled (as the binary test)."""
    n = min(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    perms = [rng.permutation(size)[:n] + offsets[c] for c, size in enumerate(sizes)]
    cuts = (n * np.asarray(split, dtype=np.float64)).astype(int).cumsum()
    parts = []
    for lo, hi in ((0, cuts[0]), (cuts[0], cuts[1]), (cuts[1], n)):
        idx = np.concatenate([p[lo:hi] for p in perms])
        parts.append(idx[rng.permutation(len(idx))])
    return parts


def multiclass_test(
    samples,
    config: ClassifierConfig | None = None,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
    on_batch: Callable[[float], None] | None = None,
) -> MulticlassResult:
    """One classifier over several samples at once (``samples[0]`` the reference, e.g. Geant4,
    then every generated sample), scored by the mean log-posterior of each sample's class on the
    reference's showers (the multiclass metric of the CaloChallenge paper).

    The protocol of :func:`classifier_test` with k classes: equal class sizes, 60/20/20 split,
    the official MLP with k outputs (softmax, cross-entropy), Adam, the epoch with the best test
    accuracy kept; the log-posteriors are those of its softmax (float64) on the validation split's
    reference showers, without calibration.

    References:
        Krause et al., "CaloChallenge 2022: A Community Challenge for Fast Calorimeter
        Simulation", arXiv:2410.21611 (multiclass classifier, log-posterior on Geant4).
    """
    cfg = config or ClassifierConfig.official()
    t0 = time.perf_counter()
    arrays = [_as_float32(x, f"samples[{i}]") for i, x in enumerate(samples)]
    k = len(arrays)
    if k < 2:
        raise ValueError("the multiclass test needs the reference and at least one sample")
    if len({a.shape[1] for a in arrays}) != 1:
        raise ValueError(f"feature counts differ: {[a.shape[1] for a in arrays]}")
    device = _resolve_device(cfg)
    data = _MultiData(arrays, device, _on_device(cfg, device, arrays))
    rng = np.random.default_rng(seed)
    train, test, val = _split_multi([len(a) for a in arrays], cfg.split, rng)
    if min(len(train), len(test), len(val)) < 2 * k:
        raise ValueError(f"samples too small for the multiclass test ({[len(a) for a in arrays]} rows)")

    def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(np.argmax(logits, axis=1) == y))

    model, best_state, best_epoch, _, epochs_run, history = _fit(
        lambda: build_mlp(arrays[0].shape[1], cfg.hidden_layers, cfg.hidden_units, cfg.dropout, outputs=k),
        torch.nn.CrossEntropyLoss(), accuracy, data, train, test, cfg, device, rng, seed, t0, progress, on_batch)
    if best_state is None:  # unreachable: max_epochs >= 1
        raise RuntimeError("multiclass test: no epoch was evaluated")
    model.load_state_dict(best_state)
    logits, y = _logits(model, data, val, cfg.eval_batch_size)
    log_post = torch.log_softmax(torch.from_numpy(logits.astype(np.float64)), dim=1).numpy()
    on_reference = log_post[y == 0]
    return MulticlassResult(
        log_posterior=[float(v) for v in on_reference.mean(axis=0)],
        chance=float(-math.log(k)),
        accuracy=accuracy(logits, y),
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        n_train=len(train),
        n_test=len(test),
        n_val=len(val),
        seconds=time.perf_counter() - t0,
        device=str(device),
        history=history,
    )
