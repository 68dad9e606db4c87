"""The training loop behind ``caloforge train`` and :meth:`ShowerModel.fit`.

One loop serves every registered model, through the capabilities it declares
(:mod:`caloforge.models.capabilities`): it calls ``model.fit_preprocessing(e_inc, showers)`` once
on the training data, then per batch (raw MeV showers, float32) either the default step (AdamW on
``model.loss``: :class:`~caloforge.models.capabilities.TrainableByLoss`) or the model's own
``training_step`` with the optimisers it configured
(:class:`~caloforge.models.capabilities.OwnsTrainingStep`: GANs, alternating updates). A model
:class:`~caloforge.models.capabilities.FittedInClosedForm` is fitted and saved, with no steps.
On top the loop provides linear warm-up and cosine decay of the learning rate, gradient clipping,
an exponential moving average of the weights (what gets saved), validation loss, a progress bar,
periodic atomic checkpoints without pickles, exact resumption, mixed precision on CUDA and data
parallelism under ``torchrun`` (default step). The settings are a
:class:`~caloforge.training.config.TrainConfig`. See :func:`train`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import random
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from rich.console import Console
from torch import Tensor, nn

from caloforge import __version__
from caloforge._progress import format_duration, make_progress
from caloforge.config import ConfigError
from caloforge.errors import CaloForgeError, InputError
from caloforge.models.base import ShowerModel
from caloforge.models.capabilities import FittedInClosedForm, OwnsTrainingStep, TrainableByLoss
from caloforge.models.serialization import geometry_to_json, save_model
from caloforge.training import distributed as D
from caloforge.training.checkpoint import (
    flatten_optimizer,
    has_checkpoint,
    jsonable,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)
from caloforge.training.config import TrainConfig
from caloforge.training.data import BatchPlan, as_arrays, data_paths
from caloforge.training.ema import EMA

RUN_CONFIG = "config.json"
CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"
TRAIN_LOG = "train_log.jsonl"

_console = Console(stderr=True)

#: Keep the training data on the GPU when it is smaller than this.
_GPU_DATA_LIMIT = 4 * 2**30


class TrainingError(CaloForgeError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class TrainResult:
    step: int  # global steps done
    steps: int  # steps asked for
    completed: bool  # reached ``steps``
    train_loss: float | None  # mean loss over the last logging interval
    val_loss: float | None  # last validation loss (EMA weights)
    elapsed_s: float  # wall time of this call
    steps_per_s: float  # training steps per second in this call
    run_dir: Path | None = None
    model_dir: Path | None = None
    resumed_from: int | None = None
    stop_reason: str = "completed"  # completed | max_time | stop_at | interrupted | fitted (closed form)
    history: list[dict[str, Any]] = field(default_factory=list)


class _LossModule(nn.Module):
    """Routes ``forward`` to ``model.loss`` so that DistributedDataParallel's hooks see the call."""

    def __init__(self, model: TrainableByLoss):
        super().__init__()
        self.model = model

    def forward(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        return self.model.loss(e_inc, showers)


def lr_factor(step: int, steps: int, warmup: int, min_lr_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _amp_dtype(amp: bool | str | None) -> torch.dtype | None:
    if amp in (None, False, "", "none", "off", "no"):
        return None
    if amp is True or str(amp).lower() in ("bf16", "bfloat16", "on", "yes", "true"):
        return torch.bfloat16
    if str(amp).lower() in ("fp16", "float16", "half"):
        return torch.float16
    raise InputError(f"unknown --amp mode {amp!r} (use bf16 or fp16)")


@contextmanager
def _graceful_stop(flag: list[bool]):
    """First SIGINT/SIGTERM asks the loop to stop at the next step (checkpointed); a second
    SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _python_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    # the legacy tuple form (the default; the stubs also allow the dict of legacy=False)
    name, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _set_python_rng_state(state: dict[str, Any]) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _seed_all(seed: int, rank: int, step: int = 0) -> None:
    s = int(np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1)[0])
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)


def train(
    model,
    train_data,
    val_data=None,
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device = "auto",
    max_time: float | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` (a :class:`~caloforge.models.ShowerModel`) on showers; return a summary.

    ``train_data``/``val_data``: a :class:`~caloforge.data.ShowerFile`, file path(s), or a pair
    ``(incident_energies, showers)`` of arrays; showers are raw MeV.

    ``config``: the optimisation settings, a :class:`~caloforge.training.config.TrainConfig`
    (or its JSON form; default ``TrainConfig()``), with ``overrides`` (its keys, e.g.
    ``steps=500, lr=3e-4``) on top. At the end the model holds the averaged (EMA) weights,
    which are also the ones saved.

    Run folder (when ``run_dir`` is given): ``config.json`` (model, options, data), ``checkpoint/``
    (latest checkpoint, every ``checkpoint_every`` seconds and at the end), ``model/`` (final
    model, :func:`~caloforge.models.save_model`) and ``train_log.jsonl``. With ``resume`` the
    run continues from its checkpoint exactly as if it had never stopped (same batches, same
    random numbers), so a crash costs at most one checkpoint interval (see also
    :func:`caloforge.training.resume`, which rebuilds everything from the run folder).

    ``max_time`` (seconds) ends this call early, checkpointed and saved, as does ``stop_at`` (a
    global step) and a first Ctrl-C / SIGTERM. ``device`` is ``auto`` (CUDA when present),
    ``cpu`` or ``cuda``.
    """
    cfg = as_train_config(config, **overrides)
    if max_time is not None and not max_time > 0:
        raise InputError("max time must be positive")
    info, dev = D.setup(device)
    try:
        return _train(
            model, train_data, val_data, info, dev,
            **cfg.to_dict(), max_time=max_time, run_dir=run_dir, resume=resume, device=str(device),
            progress=progress, metadata=metadata, stop_at=stop_at,
        )
    finally:
        D.cleanup(info)


def as_train_config(config: TrainConfig | dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """``config`` (a TrainConfig, its JSON form or None) with ``overrides``; bad keys or values
    raise :class:`~caloforge.errors.InputError`."""
    try:
        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        return cfg.replace(**overrides) if overrides else cfg
    except ConfigError as exc:
        raise InputError(str(exc)) from None


def _opt_prefix(i: int) -> str:
    """Tensor-name prefix of optimiser ``i`` in a checkpoint (the first keeps the old name)."""
    return "optimizer." if i == 0 else f"optimizer{i}."


def _train(model: ShowerModel, train_data, val_data, info: D.DistInfo, dev: torch.device, **o: Any) -> TrainResult:
    steps, batch_size, seed = o["steps"], o["batch_size"], int(o["seed"])
    amp_dtype = _amp_dtype(o["amp"])
    main = info.is_main
    say = _console.print if main else (lambda *a, **k: None)
    if amp_dtype is not None and dev.type != "cuda":
        say("[yellow]note:[/] mixed precision is used on CUDA only; training in float32 on the CPU")
        amp_dtype = None
    warmup = o["warmup"] if o["warmup"] is not None else min(1000, steps // 20)
    log_every = o["log_every"] or max(1, min(100, steps // 50))
    val_every = o["val_every"] or max(1, min(1000, steps // 10))

    # ------------------------------------------------------------- run folder
    run_dir = Path(o["run_dir"]) if o["run_dir"] is not None else None
    ckpt_dir = run_dir / CHECKPOINT_DIR if run_dir is not None else None
    if o["resume"]:
        if ckpt_dir is None:
            raise InputError("resuming needs the run folder (-o RUN_DIR) of the interrupted run")
        if not has_checkpoint(ckpt_dir):
            raise InputError("holds no checkpoint to resume from", run_dir)
    elif run_dir is not None and run_dir.exists():
        if not run_dir.is_dir():
            raise InputError("exists and is not a folder", run_dir)
        # A folder with only config.json/train_log.jsonl is a run that failed before its first
        # checkpoint: starting afresh over it loses nothing.
        if has_checkpoint(run_dir / CHECKPOINT_DIR) or (run_dir / MODEL_DIR).exists():
            raise InputError("already holds a training run; pass --resume to continue it or choose another folder", run_dir)
    D.barrier(info)  # every rank has looked before rank 0 writes anything

    # ------------------------------------------------------------------- data
    e_np, s_np = as_arrays(train_data, "training data")
    val = as_arrays(val_data, "validation data") if val_data is not None else None
    n_vox = model.geometry.n_voxels
    for what, arr in (("training", s_np), ("validation", None if val is None else val[1])):
        if arr is not None and arr.shape[1] != n_vox:
            raise InputError(
                f"{what} showers have {arr.shape[1]} voxels but model geometry {model.geometry.name} has {n_vox}"
            )
    data_dev = dev if dev.type == "cuda" and s_np.nbytes < _GPU_DATA_LIMIT else torch.device("cpu")
    e_all = torch.from_numpy(e_np).to(data_dev)
    s_all = torch.from_numpy(s_np).to(data_dev)
    plan = BatchPlan(len(e_np), batch_size, seed, info.rank, info.world_size)
    if plan.batch_size < batch_size:
        say(f"[yellow]note:[/] batch size {batch_size} exceeds the {len(e_np)} training showers; using {plan.batch_size}")

    # ------------------------------------------------------------ model & co.
    model.to(dev)
    t_fit = time.monotonic()
    resume_state = None
    if o["resume"]:
        assert ckpt_dir is not None  # checked with the run folder above
        tensors, resume_state = load_checkpoint(ckpt_dir)
        if resume_state.get("model") != model.name or resume_state.get("model_config") != jsonable(model.config.to_dict()):
            raise InputError(
                f"checkpoint is of model {resume_state.get('model')!r} with config "
                f"{resume_state.get('model_config')}, not {model.name!r} with {model.config}", ckpt_dir,
            )
        try:
            _load_model_tensors(model, tensors, ckpt_dir)
        except RuntimeError as exc:  # shapes that do not fit
            raise InputError(f"checkpoint does not fit the model ({exc})", ckpt_dir) from None
    elif isinstance(model, FittedInClosedForm):
        # A closed-form model (e.g. ``copula``) is complete once fitted: save it, no steps.
        _seed_all(seed, 0)
        say(f"fitting {model.name} on {len(e_all)} showers (closed form)")
        model.fit(e_all, s_all)
        return _finish_fitted(model, run_dir, main, info, train_data, seed, time.monotonic() - t_fit)
    else:
        _seed_all(seed, 0)
        # Every rank computes the statistics on the same full training set: identical buffers.
        say(f"fitting {model.name} statistics on {len(e_all)} showers")
        model.fit_preprocessing(e_all, s_all)
    if isinstance(model, FittedInClosedForm):
        raise TrainingError(f"model {model.name!r} is fitted in closed form; there is nothing to resume")
    owns_step = isinstance(model, OwnsTrainingStep)
    if not owns_step and not isinstance(model, TrainableByLoss):
        raise TrainingError(f"model {model.name!r} declares no way to be trained (a loss, its own training step "
                            "or a closed-form fit)")
    if owns_step and info.enabled:
        raise InputError(f"model {model.name!r} trains through its own step, which does not run under torchrun yet; "
                         "train it in one process")
    model.train()
    ema = EMA(model, o["ema_decay"]) if o["ema_decay"] is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    if owns_step:
        optimizers = list(cast(OwnsTrainingStep, model).configure_optimizers(o["lr"], o["weight_decay"]))
        if not optimizers:
            raise TrainingError(f"model {model.name!r} configured no optimiser")
    else:
        if not params:
            raise TrainingError(f"model {model.name!r} has no trainable parameters")
        optimizers = [torch.optim.AdamW(params, lr=o["lr"], weight_decay=o["weight_decay"])]
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup, o["min_lr_ratio"]))
        for opt in optimizers
    ]
    optimizer = optimizers[0]
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and not owns_step else None
    # every trainable model has a loss (the validation loss of one that owns its step), checked above
    wrapper: nn.Module = _LossModule(cast(TrainableByLoss, model))
    if info.enabled:
        import inspect

        from torch.nn.parallel import DistributedDataParallel as DDP

        # The constructor broadcasts rank 0's parameters and buffers to every rank; buffers
        # (preprocessing statistics) do not change afterwards, so forwards need not sync them.
        no_buffer_sync: dict[str, Any] = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
            else {"broadcast_buffers": False}
        )
        wrapper = DDP(wrapper, device_ids=[dev.index] if dev.type == "cuda" else None, **no_buffer_sync)

    start = 0
    elapsed_before = 0.0
    if resume_state is not None:
        try:  # a damaged or partial checkpoint is a bad input, not a crash
            start = int(resume_state["step"])
            elapsed_before = float(resume_state.get("elapsed_s", 0.0))
            if ema is not None:
                if resume_state.get("ema") is None:
                    raise InputError("checkpoint holds no EMA weights but EMA is enabled", ckpt_dir)
                ema.load({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, resume_state["ema"]["num_updates"])
            opt_metas = resume_state.get("optimizers") or [resume_state["optimizer"]]
            sched_states = resume_state.get("schedulers") or [resume_state["scheduler"]]
            if len(opt_metas) != len(optimizers):
                raise InputError(f"checkpoint holds {len(opt_metas)} optimiser(s), the model has {len(optimizers)}", ckpt_dir)
            for i, (opt, sched) in enumerate(zip(optimizers, schedulers, strict=True)):
                opt.load_state_dict(unflatten_optimizer(tensors, opt_metas[i], prefix=_opt_prefix(i)))
                sched.load_state_dict(dict(sched_states[i]))
            if scaler is not None and resume_state.get("scaler"):
                scaler.load_state_dict(resume_state["scaler"])
            _restore_rng(tensors, resume_state, info, dev, seed)
        except InputError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise InputError(
                f"checkpoint is damaged or incomplete ({type(exc).__name__}: {exc}); restore it, or start the "
                "run again in a new folder", ckpt_dir,
            ) from None
        old = resume_state.get("training", {})
        for key in ("seed", "batch_size"):
            if key in old and old[key] != o[key]:
                say(f"[yellow]warning:[/] {key} differs from the interrupted run ({old[key]} -> {o[key]}); "
                    "the resumed run is not the same as an uninterrupted one")
        if start >= steps:
            say(f"[yellow]note:[/] the checkpoint is at step {start}, not before the {steps} steps asked for")
    else:
        _seed_all(seed, info.rank)

    options = {k: o[k] for k in (
        "steps", "batch_size", "lr", "weight_decay", "min_lr_ratio", "ema_decay", "max_time",
        "checkpoint_every", "seed", "device", "amp", "grad_clip",
    )}
    options.update(warmup=warmup, val_every=val_every, log_every=log_every, world_size=info.world_size)
    if main and run_dir is not None:
        _write_run_config(run_dir, model, options, train_data, val_data, o["metadata"], resumed_at=start if o["resume"] else None)
        _truncate_log(run_dir / TRAIN_LOG, start)

    # ------------------------------------------------------------------- loop
    history: list[dict[str, Any]] = []
    log_file = open(run_dir / TRAIN_LOG, "a") if main and run_dir is not None else None
    stop_flag = [False]
    last_loss: float | None = resume_state.get("last_loss") if resume_state else None
    last_val: float | None = resume_state.get("last_val_loss") if resume_state else None
    acc = torch.zeros((), dtype=torch.float64, device=dev)
    n_acc = 0
    t0 = time.monotonic()
    last_ckpt = t0
    step = start
    stop_reason = "completed"
    val_done_at = -1
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if amp_dtype is not None else nullcontext

    def checkpoint_now() -> None:
        _save_checkpoint(
            ckpt_dir, model, ema, optimizers, schedulers, scaler, step, steps, info, dev,
            elapsed_before + time.monotonic() - t0, options, last_loss, last_val,
        )

    bar = _progress(main and o["progress"])
    loss_text = ""  # the progress line's loss (and validation loss), updated every log_every steps
    try:
        with bar, _graceful_stop(stop_flag):
            task = bar.add_task(f"training {model.name}", total=steps, completed=start, unit="steps")
            while step < steps:
                idx = torch.from_numpy(plan.indices(step)).to(data_dev)
                e_b = e_all.index_select(0, idx).to(dev, non_blocking=True)
                s_b = s_all.index_select(0, idx).to(dev, non_blocking=True)
                if owns_step:
                    loss = cast(OwnsTrainingStep, model).training_step(e_b, s_b, optimizers, step)
                else:
                    with autocast():
                        loss = wrapper(e_b, s_b)
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(optimizer)
                    else:
                        loss.backward()
                    if o["grad_clip"] is not None:
                        torch.nn.utils.clip_grad_norm_(params, o["grad_clip"])
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                for sched in schedulers:
                    sched.step()
                if ema is not None:
                    ema.update(model)
                acc += loss.detach().to(torch.float64)
                n_acc += 1
                step += 1

                now = time.monotonic()
                flags = [
                    ckpt_dir is not None and now - last_ckpt >= o["checkpoint_every"],
                    o["max_time"] is not None and now - t0 >= o["max_time"],
                    stop_flag[0],
                ]
                ckpt_due, time_up, interrupted = D.broadcast_flags(info, flags, dev)
                if o["stop_at"] is not None and step >= o["stop_at"] and step < steps:
                    stop_reason = "stop_at"
                elif time_up and step < steps:
                    stop_reason = "max_time"
                elif interrupted and step < steps:
                    stop_reason = "interrupted"
                ending = step >= steps or stop_reason != "completed"
                if step % log_every == 0 or ending or ckpt_due:
                    total, count = D.all_reduce_sum(info, [acc.item(), float(n_acc)], dev)
                    last_loss = total / max(count, 1.0)
                    acc.zero_()
                    n_acc = 0
                    if not math.isfinite(last_loss):
                        raise TrainingError(
                            f"the training loss became {last_loss} by step {step}; "
                            "try a smaller --lr or --amp off (the last checkpoint is kept)"
                        )
                    record: dict[str, Any] = {"step": step, "loss": last_loss, "lr": schedulers[0].get_last_lr()[0]}
                    if val is not None and (step % val_every == 0 or ending):
                        last_val = _validate(model, ema, val, batch_size, dev, data_dev, amp_dtype, info, seed)
                        record["val_loss"] = last_val
                        val_done_at = step
                    elapsed = now - t0
                    record["time"] = round(elapsed_before + elapsed, 3)
                    record["steps_per_s"] = (step - start) / elapsed if elapsed > 0 else None
                    history.append(record)
                    if log_file is not None:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                    loss_text = f"loss {last_loss:.4g}"
                    if last_val is not None:
                        loss_text += f"  val {last_val:.4g}"
                text = loss_text
                if o["max_time"] is not None and not ending:
                    # the step ETA may lie far beyond the time limit: say when the run stops
                    left = format_duration(max(o["max_time"] - (now - t0), 0.0))
                    text = f"{text}  stops in {left} (max time)" if text else f"stops in {left} (max time)"
                bar.update(task, completed=step, info=text)
                if ending:
                    break
                if ckpt_due:
                    checkpoint_now()
                    last_ckpt = time.monotonic()
            if ckpt_dir is not None:
                checkpoint_now()
    finally:
        if log_file is not None:
            log_file.close()

    if val is not None and val_done_at != step and step > start:
        last_val = _validate(model, ema, val, batch_size, dev, data_dev, amp_dtype, info, seed)
    if ema is not None:
        ema.copy_to(model)
    model_dir = _save_final(model, run_dir, main, info, {
        "step": step, "steps": steps, "train_loss": last_loss, "val_loss": last_val, "seed": seed,
        "ema_decay": o["ema_decay"], "data": data_paths(train_data),
    })
    elapsed = time.monotonic() - t0
    return TrainResult(
        step=step, steps=steps, completed=step >= steps, train_loss=last_loss, val_loss=last_val,
        elapsed_s=elapsed, steps_per_s=(step - start) / elapsed if elapsed > 0 else 0.0,
        run_dir=run_dir, model_dir=model_dir, resumed_from=start if o["resume"] else None,
        stop_reason=stop_reason, history=history,
    )


# ---------------------------------------------------------------------- helpers
def _save_final(model, run_dir, main, info, training: dict[str, Any]) -> Path | None:
    """Put the model in eval mode and save it into ``run_dir/model`` (rank 0), if there is a run folder."""
    model.eval()
    if run_dir is None:
        return None
    model_dir = run_dir / MODEL_DIR
    if main:
        save_model(model, model_dir, extra={"training": {"run_dir": str(run_dir.resolve()), **training}})
    D.barrier(info)
    return model_dir


def _finish_fitted(model, run_dir, main, info, train_data, seed, fit_s) -> TrainResult:
    model_dir = _save_final(model, run_dir, main, info, {
        "step": 0, "steps": 0, "seconds": fit_s, "seed": seed, "stop_reason": "fitted", "data": data_paths(train_data),
    })
    if main:
        _console.print(f"{model.name}: fitted in closed form in {fit_s:.1f} s (no optimisation steps)")
    return TrainResult(step=0, steps=0, completed=True, train_loss=None, val_loss=None, elapsed_s=fit_s,
                       steps_per_s=0.0, run_dir=run_dir, model_dir=model_dir, stop_reason="fitted")


def _progress(enabled: bool):

    return make_progress(_console, disable=not enabled)


@torch.no_grad()
def _validate(model, ema, val, batch_size, dev, data_dev, amp_dtype, info: D.DistInfo, seed: int) -> float:
    """Mean loss on the validation set with the EMA weights; the same random numbers each time
    (the training random stream is left untouched)."""
    e_np, s_np = val
    rows = np.arange(info.rank, len(e_np), info.world_size)
    devices = [dev] if dev.type == "cuda" else []
    was_training = model.training
    model.eval()
    total = 0.0
    count = 0.0
    ctx = ema.swapped_in(model) if ema is not None else nullcontext()
    with torch.random.fork_rng(devices=devices), ctx:
        torch.manual_seed(seed + 1_000_003)
        for a in range(0, len(rows), batch_size):
            r = torch.from_numpy(rows[a : a + batch_size])
            e_b = torch.from_numpy(e_np)[r].to(dev)
            s_b = torch.from_numpy(s_np)[r].to(dev)
            with torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else nullcontext():
                loss = model.loss(e_b, s_b)
            total += float(loss) * len(r)
            count += len(r)
    if was_training:
        model.train()
    total, count = D.all_reduce_sum(info, [total, count], dev)
    return total / max(count, 1.0)


def _load_model_tensors(model, tensors: dict[str, Tensor], where: Path) -> None:
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"checkpoint does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})", where)


def _save_checkpoint(ckpt_dir, model, ema, optimizers, schedulers, scaler, step, steps, info, dev, elapsed,
                     options, last_loss, last_val) -> None:
    # RNG states of every rank travel to rank 0 (a collective: all ranks take part).
    torch_states = D.gather_tensor(info, torch.get_rng_state(), dev)
    cuda_states = D.gather_tensor(info, torch.cuda.get_rng_state(dev), dev) if dev.type == "cuda" else None
    if not info.is_main:
        return
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.tensors().items()})
    opt_metas = []
    for i, opt in enumerate(optimizers):
        opt_tensors, meta = flatten_optimizer(opt.state_dict(), prefix=_opt_prefix(i))
        tensors.update(opt_tensors)
        opt_metas.append(meta)
    for r, t in enumerate(torch_states):
        tensors[f"rng.torch.rank{r}"] = t
    for r, t in enumerate(cuda_states or []):
        tensors[f"rng.cuda.rank{r}"] = t
    state = {
        "step": step,
        "steps": steps,
        "model": model.name,
        "model_config": jsonable(model.config.to_dict()),
        "elapsed_s": elapsed,
        "world_size": info.world_size,
        "training": jsonable(options),
        "optimizer": opt_metas[0],
        "scheduler": jsonable(schedulers[0].state_dict()),
        "optimizers": opt_metas,
        "schedulers": [jsonable(sc.state_dict()) for sc in schedulers],
        "scaler": jsonable(scaler.state_dict()) if scaler is not None else None,
        "ema": {"decay": ema.decay, "num_updates": ema.num_updates} if ema is not None else None,
        "rng": _python_rng_state(),
        "last_loss": last_loss,
        "last_val_loss": last_val,
        "caloforge_version": __version__,
        "saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    save_checkpoint(ckpt_dir, tensors, state)


def _restore_rng(tensors, state, info: D.DistInfo, dev, seed: int) -> None:
    key = f"rng.torch.rank{info.rank}"
    if state.get("world_size") == info.world_size and key in tensors:
        torch.set_rng_state(tensors[key].cpu())
        ckey = f"rng.cuda.rank{info.rank}"
        if dev.type == "cuda" and ckey in tensors:
            torch.cuda.set_rng_state(tensors[ckey].cpu(), dev)
        if info.is_main:
            _set_python_rng_state(state["rng"])
        else:
            _seed_all(seed, info.rank, int(state["step"]) + 1)
    else:  # a different number of processes: fresh, but reproducible, streams
        s = int(np.random.SeedSequence([seed, info.rank, int(state["step"])]).generate_state(1)[0])
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s)


def _write_run_config(run_dir: Path, model, options, train_data, val_data, metadata, resumed_at) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_CONFIG
    if resumed_at is not None and path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError:
            cfg = {}
        cfg.setdefault("resumes", []).append({
            "step": resumed_at, "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "training": jsonable(options),
        })
    else:
        cfg = {
            "format": "caloforge-run",
            "model": model.name,
            "model_config": jsonable(model.config.to_dict()),
            "geometry": geometry_to_json(model.geometry),
            "training": jsonable(options),
            "data": {"train": data_paths(train_data), "val": data_paths(val_data) if val_data is not None else None},
            "caloforge_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        if metadata:
            cfg.update(jsonable(metadata))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(cfg, indent=2))
    os.replace(tmp, path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text("".join(l + "\n" for l in keep))
    os.replace(tmp, path)
