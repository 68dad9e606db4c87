"""``caloforge train``: train a registered model on CaloChallenge files into a run folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import typer

from caloforge._atomic import check_output
from caloforge.cli._common import check_seed, console, threads_option, use_threads, user_errors
from caloforge.errors import InputError
from caloforge.training.config import TrainConfig

_D = TrainConfig()  # the defaults, shown in --help (never restated)

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|m|s|)")


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``1h30m``, ``90s``, ``2h`` or a bare number of seconds."""
    t = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}
    while pos < len(t):
        m = _DURATION.match(t, pos)
        if not m or m.end() == pos:
            raise InputError(f"cannot read duration {text!r} (use e.g. 90s, 30m, 1h30m)")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
        if m.group(2) == "" and pos < len(t):
            raise InputError(f"cannot read duration {text!r} (use e.g. 90s, 30m, 1h30m)")
    if not t or total <= 0:
        raise InputError(f"duration {text!r} must be positive")
    return total


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "is not a file", path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON ({exc})", path) from None
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object", path)
    return value


def train(
    output: Path = typer.Option(..., "--output", "-o", help="Run folder (config, checkpoints, log, final model)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Registered model name (see 'caloforge models')."),
    config: Path | None = typer.Option(None, "--config", help="Model configuration, a JSON object (keys: 'caloforge models')."),
    preset: str | None = typer.Option(None, "--preset", help="Training preset: default, quick or tiny (see TrainConfig)."),
    data: list[Path] | None = typer.Option(None, "--data", "-d", help="Training file(s), CaloChallenge HDF5; repeatable."),
    val: list[Path] | None = typer.Option(None, "--val", help="Validation file(s); repeatable."),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="Fraction of --data held out for validation when no --val is given (default: 0.1)."),
    steps: int | None = typer.Option(None, "--steps", help=f"Optimisation steps (default: {_D.steps})."),
    batch_size: int | None = typer.Option(None, "--batch-size", help=f"Showers per step, over all processes (default: {_D.batch_size})."),
    lr: float | None = typer.Option(None, "--lr", help=f"Peak learning rate (default: {_D.lr:g})."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help=f"AdamW weight decay (default: {_D.weight_decay:g})."),
    warmup: int | None = typer.Option(None, "--warmup", help="Linear warm-up steps (default: 5% of --steps, at most 1000)."),
    ema_decay: float | None = typer.Option(None, "--ema-decay", help=f"Decay of the weight average that is saved; 0 disables (default: {_D.ema_decay})."),
    grad_clip: float | None = typer.Option(None, "--grad-clip", help=f"Gradient-norm clipping; 0 disables (default: {_D.grad_clip:g})."),
    max_time: str | None = typer.Option(None, "--max-time", help="Stop (checkpointed and saved) after this long, e.g. 30m, 2h."),
    checkpoint_every: str | None = typer.Option(None, "--checkpoint-every", help=f"Checkpoint interval, e.g. 5m (default: {_D.checkpoint_every:g} s)."),
    val_every: int | None = typer.Option(None, "--val-every", help="Validate every N steps (default: steps/10, at most 1000)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last checkpoint."),
    seed: int | None = typer.Option(None, "--seed", help=f"Seed of the initial weights, data order and noise (default: {_D.seed})."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (autocast) on CUDA."),
    amp_dtype: str = typer.Option("bf16", "--amp-dtype", help="bf16 or fp16 with --amp."),
    threads: int | None = threads_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a generative model on showers; resumable, data-parallel under torchrun.

    Example: caloforge train --model cfm --data ds2_train.h5 -o runs/cfm --max-time 30m
    """
    _run(locals())


def _overrides(a: dict[str, Any]) -> dict[str, Any]:
    """The training settings given on the command line (unset ones keep the preset's/run's)."""
    out: dict[str, Any] = {k: a[k] for k in ("steps", "batch_size", "lr", "weight_decay", "warmup", "val_every", "seed")
                           if a[k] is not None}
    if a["ema_decay"] is not None:
        out["ema_decay"] = a["ema_decay"] or None  # 0 disables
    if a["grad_clip"] is not None:
        out["grad_clip"] = a["grad_clip"] or None
    if a["checkpoint_every"] is not None:
        out["checkpoint_every"] = parse_duration(a["checkpoint_every"])
    if a["amp"]:
        if str(a["amp_dtype"]).lower() not in ("bf16", "fp16"):
            raise InputError(f"--amp-dtype must be bf16 or fp16, got {a['amp_dtype']!r}")
        out["amp"] = str(a["amp_dtype"]).lower()
    return out


@user_errors
def _run(a: dict[str, Any]) -> None:
    rank = int(os.environ.get("RANK", "0"))
    say = (lambda text: console.print(text, highlight=False)) if rank == 0 else (lambda text: None)
    out: Path = a["output"]
    overrides = _overrides(a)
    max_time = parse_duration(a["max_time"]) if a["max_time"] else None
    check_seed(a["seed"])

    from caloforge import training

    use_threads(a["threads"])
    common = {"device": a["device"], "max_time": max_time, "progress": a["progress"], "say": say}
    if a["resume"]:
        saved = training.read_run_config(out)
        if a["model"] and a["model"] != saved.get("model"):
            raise InputError(f"the run in {out} trains {saved.get('model')!r}, not {a['model']!r}")
        data = saved.get("data") or {}
        same = {  # the command line may repeat what the run recorded, not change it
            "--data": a["data"] is None or [str(p.resolve()) for p in a["data"]] == data.get("train"),
            "--val": a["val"] is None or [str(p.resolve()) for p in a["val"]] == data.get("val"),
            "--val-fraction": a["val_fraction"] is None or a["val_fraction"] == data.get("val_fraction"),
            "--config": a["config"] is None or _same_model_config(saved, _read_json(a["config"], "model configuration")),
            "--preset": a["preset"] is None,
        }
        for flag, ok in same.items():
            if not ok:
                raise InputError(f"{flag} cannot change on --resume: the run keeps what it recorded in {out}/config.json")
        result = training.resume(out, **common, **overrides)
        name = saved["model"]
    else:
        if not a["model"]:
            raise InputError("--model is required (see 'caloforge models')")
        if not a["data"]:
            raise InputError("--data is required: the training file(s)")
        check_output(out, [*a["data"], *(a["val"] or []), *([a["config"]] if a["config"] is not None else [])],
                     folder=True)
        model_config = _read_json(a["config"], "model configuration") if a["config"] is not None else None
        preset = training.TrainConfig.from_preset(a["preset"]) if a["preset"] else None
        result = training.train_files(
            a["model"], a["data"], out, model_config=model_config, val=a["val"], val_fraction=a["val_fraction"],
            config=preset, **common, **overrides,
        )
        name = a["model"]
    _report(result, name, out, say)


def _same_model_config(saved: dict[str, Any], given: dict[str, Any]) -> bool:
    from caloforge.models import get_model_class

    cls = get_model_class(saved["model"])
    return cls.make_config(given).to_dict() == cls.make_config(saved.get("model_config") or {}).to_dict()


def _report(result: Any, name: str, out: Path, say: Any) -> None:
    val_text = f", validation loss {result.val_loss:.5g}" if result.val_loss is not None else ""
    loss_text = f"loss {result.train_loss:.5g}" if result.train_loss is not None else "no loss"
    gen = f"generate with: caloforge generate {out} --n 1000 --energy log-uniform:1GeV:100GeV -o showers.h5"
    if result.stop_reason == "fitted":
        say(f"fitted {name} in closed form in {result.elapsed_s:.1f} s; model in {result.model_dir}")
        say(gen)
    elif result.stop_reason == "completed":
        say(f"trained {result.step:,} steps ({loss_text}{val_text}) in {result.elapsed_s:.1f} s; model in {result.model_dir}")
        say(gen)
    else:
        why = {"max_time": "time limit reached", "interrupted": "interrupted", "stop_at": "stop step reached"}
        say(f"stopped at step {result.step:,} of {result.steps:,} ({why.get(result.stop_reason, result.stop_reason)}; "
            f"{loss_text}{val_text}); checkpoint and model saved in {out}")
        say(f"continue with: caloforge train --resume -o {out}")
        if result.stop_reason == "interrupted":
            raise typer.Exit(130)
