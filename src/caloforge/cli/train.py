"""``caloforge train``: train a registered model on CaloChallenge files into a run folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional

import typer

from caloforge.cli._common import console, user_errors
from caloforge.errors import InputError

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
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registered model name (see 'caloforge models')."),
    config: Optional[Path] = typer.Option(None, "--config", help="Model configuration, a JSON object."),
    data: Optional[list[Path]] = typer.Option(None, "--data", "-d", help="Training file(s), CaloChallenge HDF5; repeatable."),
    val: Optional[list[Path]] = typer.Option(None, "--val", help="Validation file(s); repeatable."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Fraction of --data held out for validation when no --val is given (default: 0.1)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimisation steps (default: 10000)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Showers per step, over all processes (default: 256)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: 1e-3)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay (default: 0)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Linear warm-up steps (default: 5% of --steps, at most 1000)."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="Decay of the weight average that is saved; 0 disables (default: 0.999)."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Gradient-norm clipping; 0 disables (default: 1)."),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Stop (checkpointed and saved) after this long, e.g. 30m, 2h."),
    checkpoint_every: Optional[str] = typer.Option(None, "--checkpoint-every", help="Checkpoint interval, e.g. 5m (default: 5m)."),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate every N steps (default: steps/10, at most 1000)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last checkpoint."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the initial weights, data order and noise (default: 0)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (autocast) on CUDA."),
    amp_dtype: str = typer.Option("bf16", "--amp-dtype", help="bf16 or fp16 with --amp."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a generative model on showers; resumable, data-parallel under torchrun.

    Example: caloforge train --model cfm --data ds2_train.h5 -o runs/cfm --max-time 30m
    """
    _run(locals())


@user_errors
def _run(a: dict[str, Any]) -> None:
    rank = int(os.environ.get("RANK", "0"))
    say = console.print if rank == 0 else (lambda *x, **k: None)
    out: Path = a["output"]
    saved: dict[str, Any] = {}
    if a["resume"]:
        cfg_path = out / "config.json"
        if not cfg_path.is_file():
            raise InputError("holds no training run to resume (no config.json)", out)
        saved = _read_json(cfg_path, "run configuration")
    saved_training = saved.get("training", {})
    saved_data = saved.get("data") or {}

    def pick(key: str, default: Any, saved_key: str | None = None) -> Any:
        if a.get(key) is not None:
            return a[key]
        return saved_training.get(saved_key or key, default) if saved else default

    # ------------------------------------------------------------ model choice
    from caloforge.models.registry import get_model_class

    name = a["model"] or saved.get("model")
    if not name:
        raise InputError("--model is required (see 'caloforge models')")
    if saved and a["model"] and a["model"] != saved.get("model"):
        raise InputError(f"the run in {out} trains {saved.get('model')!r}, not {a['model']!r}")
    get_model_class(name)  # an unknown name fails here, before any data is read
    if a["config"] is not None:
        model_config = _read_json(a["config"], "model configuration")
    else:
        model_config = saved.get("model_config") or {}

    # ---------------------------------------------------------------- options
    steps = pick("steps", 10000)
    batch_size = pick("batch_size", 256)
    max_time = parse_duration(a["max_time"]) if a["max_time"] else None
    ckpt_every = parse_duration(a["checkpoint_every"]) if a["checkpoint_every"] else saved_training.get("checkpoint_every", 300.0)
    ema_decay = pick("ema_decay", 0.999)
    grad_clip = pick("grad_clip", 1.0)
    seed = int(pick("seed", 0))
    if a["amp"]:
        amp: Any = a["amp_dtype"]
        if str(amp).lower() not in ("bf16", "fp16"):
            raise InputError(f"--amp-dtype must be bf16 or fp16, got {amp!r}")
    else:
        amp = saved_training.get("amp", False) if saved else False
    if a["threads"] is not None:
        if a["threads"] < 1:
            raise InputError("--threads must be at least 1")
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", out)

    # ------------------------------------------------------------------- data
    from caloforge.data import open_showers
    from caloforge.training.data import split_fraction

    data_paths = [Path(p) for p in (a["data"] or saved_data.get("train") or [])]
    if not data_paths:
        raise InputError("--data is required: the training file(s)")
    val_paths = [Path(p) for p in (a["val"] or ([] if a["data"] else saved_data.get("val") or []))]
    val_fraction = a["val_fraction"]
    if val_fraction is None and saved and not a["val"]:
        val_fraction = saved_data.get("val_fraction")
    if val_fraction is None:
        val_fraction = 0.1
    if val_paths and a["val_fraction"] is not None:
        raise InputError("give either --val or --val-fraction, not both")
    train_file = open_showers(data_paths)
    val_file = open_showers(val_paths, geometry=train_file.geometry) if val_paths else None

    import torch

    if a["threads"] is not None:
        torch.set_num_threads(a["threads"])
    from caloforge.models import build_model
    from caloforge.training import train as run_training

    torch.manual_seed(seed)
    model = build_model(name, train_file.geometry, model_config)
    say(
        f"model [bold]{name}[/] ({model.n_parameters():,} parameters) on {train_file.geometry.name}: "
        f"{train_file.n:,} showers from {', '.join(str(p) for p in data_paths)}", highlight=False,
    )
    e, s = train_file.read()
    if val_file is not None:
        train_part, val_part = (e, s), val_file.read()
    else:
        train_part, val_part = split_fraction(e, s, val_fraction, seed)
        del e, s
    say(
        f"{len(train_part[0]):,} training showers, "
        f"{0 if val_part is None else len(val_part[0]):,} validation showers", highlight=False,
    )
    metadata = {
        "data": {
            "train": [str(p.resolve()) for p in data_paths],
            "val": [str(p.resolve()) for p in val_paths] or None,
            "val_fraction": None if val_paths else val_fraction,
        }
    }
    result = run_training(
        model, train_part, val_part,
        steps=steps, batch_size=batch_size, lr=pick("lr", 1e-3), weight_decay=pick("weight_decay", 0.0),
        warmup=pick("warmup", None), ema_decay=ema_decay or None, max_time=max_time,
        checkpoint_every=ckpt_every, run_dir=out, resume=a["resume"], seed=seed, device=a["device"], amp=amp,
        grad_clip=grad_clip or None, val_every=a["val_every"] or saved_training.get("val_every"),
        progress=a["progress"], metadata=metadata,
    )
    val_text = f", validation loss {result.val_loss:.5g}" if result.val_loss is not None else ""
    loss_text = f"loss {result.train_loss:.5g}" if result.train_loss is not None else "no loss"
    if result.stop_reason == "fitted":
        say(f"fitted {model.name} in closed form in {result.elapsed_s:.1f} s; model in {result.model_dir}", highlight=False)
        say(f"generate with: caloforge generate {out} --n 1000 --energy log-uniform:1GeV:100GeV -o showers.h5",
            highlight=False)
    elif result.stop_reason == "completed":
        say(f"trained {result.step:,} steps ({loss_text}{val_text}) in {result.elapsed_s:.1f} s; "
            f"model in {result.model_dir}", highlight=False)
        say(f"generate with: caloforge generate {out} --n 1000 --energy log-uniform:1GeV:100GeV -o showers.h5",
            highlight=False)
    else:
        why = {"max_time": "time limit reached", "interrupted": "interrupted", "stop_at": "stop step reached"}
        say(f"stopped at step {result.step:,} of {result.steps:,} ({why.get(result.stop_reason, result.stop_reason)}; "
            f"{loss_text}{val_text}); checkpoint and model saved in {out}", highlight=False)
        say(f"continue with: caloforge train --resume -o {out}", highlight=False)
        if result.stop_reason == "interrupted":
            raise typer.Exit(130)
