"""``caloforge export``: write a model's sampler as an ONNX graph (caloforge's own layout, or
Geant4 Par04's)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from caloforge._atomic import atomic_write, check_output
from caloforge.cli._common import console, threads_option, use_threads, user_errors
from caloforge.errors import InputError

#: The export formats: caloforge's sampler graph (for 'generate --onnx') and Geant4's Par04 example.
FORMATS = ("caloforge", "par04")


def export(
    model: str = typer.Argument(..., help="A training run folder, a model folder or a shipped model name."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output ONNX file."),
    onnx: Path | None = typer.Option(None, "--onnx", help="Output ONNX file (same as -o)."),
    fmt: str = typer.Option(
        "caloforge", "--format",
        help="caloforge: inputs e_inc + noise, for 'generate --onnx'. par04: Geant4's Par04 example "
             "(one input: latent + conditions; cells in (r, phi, z) order, / E); prints the Par04 macro settings.",
    ),
    threads: int | None = threads_option(),
) -> None:
    """Export a model to ONNX (for 'caloforge generate --onnx', Geant4's Par04 or use outside caloforge).

    Example: caloforge export ds2-electrons-cfm --format par04 -o model.onnx
    """
    _run(model, output, onnx, fmt, threads)


@user_errors
def _run(name: str, output: Path | None, onnx: Path | None, fmt: str, threads: int | None) -> None:
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if output is not None and onnx is not None and output != onnx:
        raise InputError("give the output file once (-o or --onnx)")
    out = output if output is not None else onnx
    if out is None:
        raise InputError("give the output file with -o FILE")
    check_output(out)
    use_threads(threads)
    try:
        from caloforge.export.onnx import export_onnx
        from caloforge.export.par04 import export_par04, par04_macro, par04_notes
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
    contracts: list = []

    def write(tmp: str) -> None:
        if fmt == "par04":
            contracts.append(export_par04(model, tmp))
        else:
            export_onnx(model, tmp)

    try:  # into a temporary file renamed at the end: a failure leaves no file at ``out``
        atomic_write(out, write)
    except NotImplementedError as exc:
        detail = f": {exc}" if str(exc) else ""
        raise InputError(f"model {model.name!r} has no {fmt} ONNX export{detail}") from None
    size = out.stat().st_size / 2**20
    console.print(f"exported {model.name} from {escape(str(model_dir))} to {escape(str(out))} ({size:.1f} MiB, "
                  f"{fmt} format)", highlight=False, soft_wrap=True)
    if fmt == "par04":
        console.print(escape(par04_notes(contracts[0])), highlight=False, soft_wrap=True)
        typer.echo("# Geant4 Par04 macro settings for this file")
        typer.echo(par04_macro(contracts[0], out))
