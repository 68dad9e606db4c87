"""``caloforge generate``: draw showers from a trained or shipped model into a CaloChallenge file."""

from __future__ import annotations

import inspect
import secrets
import time
from pathlib import Path
from typing import Any, Optional

import typer

from caloforge.cli._common import console, progress_bar, user_errors
from caloforge.errors import InputError


def generate(
    model: str = typer.Argument(..., help="A training run folder, a model folder or a shipped model name."),
    output: Path = typer.Option(..., "--output", "-o", help="Output CaloChallenge HDF5 file."),
    energies_from: Optional[Path] = typer.Option(None, "--energies-from", help="Use the incident energies of this CaloChallenge file."),
    n: Optional[int] = typer.Option(None, "--n", "-n", help="Number of showers (with --energy; with --energies-from: the first N)."),
    energy: Optional[str] = typer.Option(None, "--energy", help="Incident energies, e.g. log-uniform:1GeV:100GeV, fixed:50GeV."),
    batch_size: int = typer.Option(1000, "--batch-size", help="Showers per sampling call."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: a fresh one, recorded in the file)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Solver steps, for models that integrate an ODE."),
    onnx: bool = typer.Option(False, "--onnx", help="Sample with ONNX Runtime from the model's ONNX export."),
) -> None:
    """Generate showers with a model; writes CaloChallenge format with provenance and reports throughput.

    Example: caloforge generate runs/cfm --n 10000 --energy log-uniform:1GeV:100GeV -o cfm.h5
    """
    _run(locals())


def _accepts(func, option: str) -> bool:
    params = inspect.signature(func).parameters
    return option in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@user_errors
def _run(a: dict[str, Any]) -> None:
    out: Path = a["output"]
    n, batch_size = a["n"], a["batch_size"]
    # ----------------------------------------------- argument checks (cheap, nothing written)
    if a["energies_from"] is not None and a["energy"] is not None:
        raise InputError("give either --energies-from or --energy, not both")
    if a["energies_from"] is None and a["energy"] is None:
        raise InputError("say which incident energies: --energies-from REF.h5, or --n N --energy SPEC")
    if a["energy"] is not None and n is None:
        raise InputError("--energy needs --n (the number of showers)")
    if n is not None and n < 1:
        raise InputError("--n must be at least 1")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if a["steps"] is not None and a["steps"] < 1:
        raise InputError("--steps must be at least 1")
    if a["threads"] is not None and a["threads"] < 1:
        raise InputError("--threads must be at least 1")
    if out.is_dir():
        raise InputError("is a folder; give the output file name", out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("output folder does not exist", parent)
    seed = a["seed"] if a["seed"] is not None else secrets.randbelow(2**31)

    import numpy as np

    from caloforge.data import open_showers, parse_energy

    spec = parse_energy(a["energy"]) if a["energy"] is not None else None
    ref = open_showers(a["energies_from"]) if a["energies_from"] is not None else None

    import torch

    if a["threads"] is not None:
        torch.set_num_threads(a["threads"])
    from caloforge.models.pretrained import resolve
    from caloforge.models.serialization import load_model, read_model_json
    from caloforge.training.distributed import resolve_device

    model_dir = resolve(a["model"])
    meta = read_model_json(model_dir)
    dev = torch.device("cpu") if a["onnx"] else resolve_device(a["device"])
    model = load_model(model_dir, device=dev)
    geometry = model.geometry

    # --------------------------------------------------------------- energies
    if ref is not None:
        energies = ref.incident_energies()
        if n is not None:
            if n > len(energies):
                raise InputError(f"holds {len(energies)} incident energies, fewer than --n {n}", ref.paths[0])
            energies = energies[:n]
        if ref.geometry.n_voxels != geometry.n_voxels:
            console.print(
                f"[yellow]note:[/] {ref.paths[0]} is {ref.geometry.name} but the model generates {geometry.name}; "
                "only its incident energies are used", highlight=False,
            )
        energy_text = f"from {ref.paths[0]}"
    else:
        assert spec is not None and n is not None
        energies = spec.sample(n, np.random.default_rng([seed, 1]))
        energy_text = str(spec)
    energies = np.asarray(energies, dtype=np.float32)
    total = len(energies)

    # ---------------------------------------------------------------- sampler
    options: dict[str, Any] = {}
    if a["steps"] is not None:
        if not _accepts(model.sample, "steps"):
            raise InputError(f"model {model.name!r} has no solver steps to set (--steps)")
        options["steps"] = a["steps"]
    if a["onnx"]:
        draw = _onnx_sampler(model, model_dir, seed, options)
        backend = "onnxruntime"
    else:
        generator = torch.Generator(device=dev).manual_seed(seed)

        def draw(e: np.ndarray) -> np.ndarray:
            x = model.sample(torch.from_numpy(e).to(dev), generator=generator, **options)
            return x.detach().to("cpu", torch.float32).numpy()

        backend = f"torch ({dev})"

    # A small warm-up draw: surfaces unsupported options before any file is opened and keeps
    # one-time costs (CUDA context, kernel selection) out of the throughput figure.
    if a["onnx"]:
        draw(energies[: min(8, total)])
    else:
        warm = torch.Generator(device=dev).manual_seed(seed + 1)
        model.sample(torch.from_numpy(energies[: min(8, total)]).to(dev), generator=warm, **options)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    from caloforge.data.hdf5 import ShowerWriter, provenance

    attrs = provenance(
        meta.get("model", model.name), seed=seed, model_path=str(Path(model_dir).resolve()),
        energies=energy_text, backend=backend, solver_steps=a["steps"], batch_size=batch_size,
    )
    sample_s = 0.0
    with ShowerWriter(out, geometry.n_voxels, attrs=attrs, expected_rows=total) as writer, progress_bar() as bar:
        task = bar.add_task(f"generating with {model.name}", total=total, info="")
        for a0 in range(0, total, batch_size):
            e = energies[a0 : a0 + batch_size]
            t = time.perf_counter()
            showers = draw(e)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            sample_s += time.perf_counter() - t
            if showers.shape != (len(e), geometry.n_voxels):
                raise RuntimeError(f"model returned showers of shape {showers.shape}, expected {(len(e), geometry.n_voxels)}")
            writer.append(e, showers)
            bar.update(task, advance=len(e), info=f"{(a0 + len(e)) / max(sample_s, 1e-9):,.0f} showers/s")

    rate = total / sample_s if sample_s > 0 else float("inf")
    typer.echo(f"wrote {total:,} showers ({geometry.name}) from {model.name} to {out}; seed {seed}")
    line = f"throughput: {rate:,.1f} showers/s, {1e3 / rate:.3f} ms/shower ({backend}, batch {batch_size}"
    if a["steps"] is not None:
        line += f", {a['steps']} solver steps"
    line += "; sampling only, writing excluded)"
    typer.echo(line)


def _onnx_sampler(model, model_dir: Path, seed: int, options: dict[str, Any]):
    """A ``draw(energies) -> showers`` function running the model's ONNX export."""
    import tempfile

    import numpy as np

    try:
        from caloforge.export.onnx import OnnxSampler, export_onnx
    except ModuleNotFoundError as exc:
        if exc.name in ("onnx", "onnxruntime"):
            raise InputError("--onnx needs ONNX Runtime: pip install 'caloforge[onnx]'") from None
        raise InputError("--onnx: ONNX export is not available in this caloforge installation") from None
    path = Path(model_dir) / "model.onnx"
    if not path.is_file():
        path = Path(tempfile.mkdtemp(prefix="caloforge-onnx-")) / "model.onnx"
        try:
            export_onnx(model, path)
        except NotImplementedError as exc:
            raise InputError(f"model {model.name!r} has no ONNX export ({exc})") from None
    sampler = OnnxSampler(path)
    rng = np.random.default_rng([seed, 2])
    params = inspect.signature(sampler.sample).parameters
    extra: dict[str, Any] = {}
    per_call_seed = False
    if "rng" in params:
        extra["rng"] = rng
    elif "seed" in params:
        per_call_seed = True
    if "steps" in options:
        if "steps" not in params:
            raise InputError("--steps is fixed in the ONNX export; re-export with the steps you want")
        extra["steps"] = options["steps"]

    def draw(e: np.ndarray) -> np.ndarray:
        if per_call_seed:  # a fresh, reproducible seed per batch
            extra["seed"] = int(rng.integers(2**31))
        return np.asarray(sampler.sample(e, **extra), dtype=np.float32)

    return draw
