"""``caloforge export``: write a model's sampler as an ONNX graph."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from caloforge._atomic import atomic_write, check_output
from caloforge.cli._common import console, threads_option, use_threads, user_errors
from caloforge.errors import InputError


def export(
    model: str = typer.Argument(..., help="A training run folder, a model folder or a shipped model name."),
    onnx: Path = typer.Option(..., "--onnx", help="Output ONNX file."),
    threads: int | None = threads_option(),
) -> None:
    """Export a model to ONNX (for 'caloforge generate --onnx' or use outside caloforge).

    Example: caloforge export runs/student --onnx student.onnx
    """
    _run(model, onnx, threads)


@user_errors
def _run(name: str, out: Path, threads: int | None) -> None:
    check_output(out)
    use_threads(threads)
    try:
        from caloforge.export.onnx import export_onnx
    except ModuleNotFoundError as exc:
        if exc.name in ("onnx", "onnxruntime", "onnxscript"):
            raise InputError(f"ONNX export needs the '{exc.name}' package: pip install 'caloforge[onnx]'") from None
        if exc.name and exc.name.startswith("caloforge.export"):
            raise InputError("ONNX export is not available in this caloforge installation") from None
        raise
    from caloforge.models.pretrained import resolve
    from caloforge.models.serialization import load_model

    model_dir = resolve(name)
    check_output(out, [model_dir])
    model = load_model(model_dir)
    try:  # into a temporary file renamed at the end: a failure leaves no file at ``out``
        atomic_write(out, lambda tmp: export_onnx(model, tmp))
    except NotImplementedError as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise InputError(f"model {model.name!r} has no ONNX export{detail}") from None
    except ModuleNotFoundError as exc:
        if exc.name in ("onnx", "onnxruntime", "onnxscript"):
            raise InputError(f"ONNX export needs the '{exc.name}' package: pip install 'caloforge[onnx]'") from None
        raise
    size = out.stat().st_size / 2**20 if out.is_file() else 0.0
    console.print(f"exported {model.name} from {escape(str(model_dir))} to {escape(str(out))} ({size:.1f} MiB)",
                  highlight=False)
