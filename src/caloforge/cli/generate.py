"""``caloforge generate``: draw showers from a trained or shipped model into a CaloChallenge file."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from caloforge._atomic import check_output
from caloforge.cli._common import check_count, check_seed, console, threads_option, use_threads, user_errors
from caloforge.errors import InputError


def generate(
    model: str = typer.Argument(..., help="A training run folder, a model folder or a shipped model name."),
    output: Path = typer.Option(..., "--output", "-o", help="Output CaloChallenge HDF5 file."),
    energies_from: Path | None = typer.Option(None, "--energies-from", help="Use the incident energies of this CaloChallenge file."),
    n: int | None = typer.Option(None, "--n", "-n", help="Number of showers (with --energy; with --energies-from: the first N)."),
    energy: str | None = typer.Option(None, "--energy", help="Incident energies, e.g. log-uniform:1GeV:100GeV, fixed:50GeV (default with --n: log-uniform over the model's training range)."),
    batch_size: int = typer.Option(1000, "--batch-size", help="Showers per sampling call."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    threads: int | None = threads_option(),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: a fresh one, recorded in the file)."),
    steps: int | None = typer.Option(None, "--steps", help="Solver steps, for models that integrate an ODE."),
    onnx: bool = typer.Option(False, "--onnx", metavar="[FILE.onnx]", help="Sample with ONNX Runtime: from FILE.onnx "
                              "when given (as 'caloforge export --onnx FILE.onnx' writes it; checked against the "
                              "model), else from MODEL/model.onnx or a fresh export."),
    onnx_file: Path | None = typer.Option(None, "--onnx-file", hidden=True, help="The file of '--onnx FILE.onnx'."),
) -> None:
    """Generate showers with a model; writes CaloChallenge format with provenance and reports throughput.

    Example: caloforge generate runs/cfm --n 10000 --energy log-uniform:1GeV:100GeV -o cfm.h5
    """
    _run(locals())


class GenerateCommand(TyperCommand):
    """``--onnx`` is a flag that may take a value: ``--onnx FILE.onnx`` (or ``--onnx=FILE``)
    names the export to use. The parser has no optional values, so the file is handed over as
    the hidden ``--onnx-file``: the word after ``--onnx`` is the file when it ends in ``.onnx``
    or is an existing file (a model is a folder or a shipped name, never a file)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, split_onnx_value(args))


def split_onnx_value(args: list[str]) -> list[str]:
    """``[..., "--onnx", "m.onnx", ...]`` -> ``[..., "--onnx", "--onnx-file", "m.onnx", ...]``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # everything after it is positional
            out.extend(args[i:])
            break
        if arg.startswith("--onnx="):
            out += ["--onnx", "--onnx-file", arg.split("=", 1)[1]]
        elif arg == "--onnx" and i + 1 < len(args) and _is_onnx_file(args[i + 1]):
            out += ["--onnx", "--onnx-file", args[i + 1]]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def _is_onnx_file(word: str) -> bool:
    return not word.startswith("-") and (word.lower().endswith(".onnx") or Path(word).is_file())


#: The command class ``caloforge.cli.main`` registers ``generate`` with.
command_cls = GenerateCommand


@user_errors
def _run(a: dict[str, Any]) -> None:
    out: Path = a["output"]
    n, batch_size = a["n"], a["batch_size"]
    # ----------------------------------------------- argument checks (cheap, nothing written)
    if a["energies_from"] is not None and a["energy"] is not None:
        raise InputError("give either --energies-from or --energy, not both")
    if a["energies_from"] is None and a["energy"] is None and n is None:
        raise InputError("say which incident energies: --energies-from REF.h5, or --n N [--energy SPEC]")
    if a["energy"] is not None and n is None:
        raise InputError("--energy needs --n (the number of showers)")
    check_count(n, "--n")
    check_count(batch_size, "--batch-size")
    if a["steps"] is not None and not 1 <= a["steps"] <= 10_000:
        raise InputError(f"--steps must be between 1 and 10,000, got {a['steps']}")
    check_seed(a["seed"])
    check_output(out)
    onnx: bool | Path = a["onnx_file"] if a["onnx_file"] is not None else a["onnx"]
    if isinstance(onnx, Path) and not onnx.exists():
        raise InputError("ONNX file not found (write one with: caloforge export MODEL --onnx FILE)", onnx)
    seed = a["seed"] if a["seed"] is not None else secrets.randbelow(2**31)

    from rich.markup import escape

    from caloforge.data import open_showers, parse_energy

    spec = parse_energy(a["energy"]) if a["energy"] is not None else None
    ref = open_showers(a["energies_from"]) if a["energies_from"] is not None else None

    use_threads(a["threads"])
    import torch

    from caloforge.models.pretrained import resolve
    from caloforge.models.serialization import load_model, read_model_json
    from caloforge.training.distributed import resolve_device

    model_dir = resolve(a["model"])
    inputs = [model_dir, *(ref.paths if ref is not None else []), *([onnx] if isinstance(onnx, Path) else [])]
    check_output(out, inputs)  # never over an input: the energies' file, the model's own files
    meta = read_model_json(model_dir)
    dev = torch.device("cpu") if onnx is not False else resolve_device(a["device"])
    model = load_model(model_dir, device=dev)
    geometry = model.geometry

    # --------------------------------------------------------------- energies
    from caloforge.generation.energies import choose_energies

    if ref is not None and ref.geometry.n_voxels != geometry.n_voxels:
        console.print(
            f"[yellow]note:[/] {ref.paths[0]} is {ref.geometry.name} but the model generates {geometry.name}; "
            "only its incident energies are used", highlight=False,
        )
    chosen = choose_energies(model, reference=ref, n=n, spec=spec, seed=seed)
    energies, energy_text = chosen.values, chosen.description
    if chosen.warning:
        console.print(f"[bold yellow]warning:[/] {escape(chosen.warning)}", highlight=False)
    total = len(energies)
    batch_size = min(batch_size, total)

    # ------------------------------------------------------- sample and write
    from caloforge.data.hdf5 import provenance
    from caloforge.generation import generate_to_file, make_sampler

    sampler = make_sampler(model, device=dev, seed=seed, steps=a["steps"], onnx=onnx, model_dir=model_dir)
    onnx_path = getattr(sampler, "onnx_path", None)
    source = getattr(sampler, "source", "")
    if source:
        console.print(f"sampling with ONNX Runtime from {escape(source)}", highlight=False)
    # A small warm-up draw: surfaces unsupported options before any file is opened and keeps
    # one-time costs (CUDA context, kernel selection) out of the throughput figure.
    sampler.warm_up(energies)
    attrs = provenance(
        meta.get("model", model.name), seed=seed, model_path=str(Path(model_dir).resolve()),
        energies=energy_text, backend=sampler.backend, solver_steps=a["steps"], batch_size=batch_size,
        onnx_file=None if onnx_path is None else str(Path(onnx_path).resolve()),
    )
    result = generate_to_file(model, energies, out, sampler=sampler, batch_size=batch_size, attrs=attrs, console=console)

    rate = result.showers_per_second
    typer.echo(f"wrote {total:,} showers ({geometry.name}) from {model.name} to {out}; seed {seed}")
    backend = result.backend if onnx_path is None else f"{result.backend} from {onnx_path}"
    line = f"throughput: {rate:,.1f} showers/s, {result.ms_per_shower:.3f} ms/shower ({backend}, batch {batch_size}"
    if a["steps"] is not None:
        line += f", {a['steps']} solver steps"
    line += "; sampling only, writing excluded)"
    typer.echo(line)
