"""``caloforge compress``: a compressed variant of a model (fp16, int8, ternary, pruned)."""

from __future__ import annotations

from pathlib import Path

import typer

from caloforge.cli._common import console, threads_option, use_threads, user_errors
from caloforge.errors import InputError


def compress(
    model: str = typer.Argument(..., help="A training run folder, a model folder or a shipped model name."),
    method: str = typer.Option(..., "--method", help="fp16 | int8 (ONNX graphs) | ternary | prune:P (0<P<1)."),
    out: Path = typer.Option(..., "-o", "--output", help="New output folder (a model folder)."),
    steps: int | None = typer.Option(
        None, "--finetune-steps", help="Fine-tune steps after ternary/prune (default 300; 0: none)."),
    threads: int | None = threads_option(),
) -> None:
    """Compress a model: fp16/int8 ONNX graphs (use with 'generate OUT --onnx'), BitNet-style
    ternary weights (2 bits each) or magnitude pruning, each ternary/pruned model fine-tuned
    briefly against the original.

    Example: caloforge compress ds2-electrons-cfm --method ternary -o ds2-ternary
    """
    _run(model, method, out, steps, threads)


@user_errors
def _run(name: str, method: str, out: Path, steps: int | None, threads: int | None) -> None:
    from caloforge.export.compress import FineTuneConfig, compress_model, parse_method

    m = parse_method(method)
    if steps is not None and steps < 0:
        raise InputError("--finetune-steps must not be negative")
    use_threads(threads)
    from caloforge.models.pretrained import resolve

    model_dir = resolve(name)
    if m.name in ("fp16", "int8"):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ModuleNotFoundError as exc:
            raise InputError(f"{m.name} compression needs the '{exc.name}' package: pip install 'caloforge[onnx]'") from None
    cfg = FineTuneConfig.default() if steps is None else FineTuneConfig(steps=steps)
    summary = compress_model(model_dir, m, out, cfg, log=lambda s: console.print(s, highlight=False))
    size = summary["bytes"] / 2**20
    what = f"{summary['file']}, {size:.2f} MiB" if "file" in summary else f"weights {size:.2f} MiB"
    extra = f", sparsity {summary['sparsity']:.2f}" if "sparsity" in summary else ""
    console.print(f"compressed {summary['source_model']} ({m.label}) from {model_dir} to {out} ({what}{extra}, "
                  f"{summary['seconds']:.0f} s)", highlight=False, soft_wrap=True)
    if "file" in summary:
        console.print(f"sample with: caloforge generate {out} --onnx ...", highlight=False, soft_wrap=True)
