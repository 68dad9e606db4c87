"""``caloforge demo``: the whole loop on the embedded default, in a few minutes on a CPU.

simulate (parametric DS2 electron showers) -> look at them (plots) -> fit a surrogate (by
default the Gaussian copula, the model shipped as ``ds2-electrons``: a closed-form fit of about
half a minute that learns the simulator well) -> generate showers for the reference's incident
energies -> evaluate against the reference (with the floor of two reference halves; the
reference is parametric, so the report calls it "reference vs reference (parametric
simulator)", not Geant4) -> report.html. Every step is one of the ordinary commands, run with
the arguments printed before it. ``--model cfm`` trains the flow-matching model instead, for ``--train-time``; a few CPU
minutes make a poor flow-matching model.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from caloforge._atomic import check_output
from caloforge.cli._common import console, threads_option, user_errors


def _step(title: str, args: list[str]) -> None:
    from typer.main import get_command

    from caloforge.cli.main import app

    console.rule(f"[bold]{title}")
    console.print(f"[dim]$ caloforge {shlex.join(args)}[/]", highlight=False)
    code = get_command(app).main(args, prog_name="caloforge", standalone_mode=False)
    if isinstance(code, int) and code != 0:
        raise typer.Exit(code)


@user_errors
def demo(
    output: Path = typer.Option(Path("demo-output"), "--output", "-o", help="Folder for everything the demo writes."),
    model: str = typer.Option("copula", "--model", help="Model to train (see `caloforge models`)."),
    n_train: int = typer.Option(10_000, "--n-train", help="Parametric showers to train on."),
    n_reference: int = typer.Option(3_000, "--n-reference", help="Parametric reference showers for the evaluation."),
    train_time: str = typer.Option("3m", "--train-time", help="Training time budget of a model trained by steps (e.g. 90s, 3m); a closed-form fit ignores it."),
    energy: str = typer.Option("log-uniform:1GeV:100GeV", "--energy", help="Incident-energy spectrum."),
    seed: int = typer.Option(1, "--seed", help="Seed of every step."),
    threads: int | None = threads_option(),
) -> None:
    """Simulate, plot, train, generate and evaluate on the built-in parametric simulator."""
    from caloforge._threads import resolve_threads

    n_threads, note = resolve_threads(threads)  # a bad --threads fails before anything is written
    if note:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    th = [] if threads is None else ["--threads", str(n_threads)]  # None: every step takes the default

    from caloforge.models import get_model_class
    from caloforge.models.capabilities import capabilities

    caps = capabilities(get_model_class(model))  # an unknown model name fails here, before any work
    check_output(output, folder=True)
    output.mkdir(parents=True, exist_ok=True)
    train_h5, ref_h5, gen_h5 = output / "train.h5", output / "reference.h5", output / "generated.h5"
    run_dir, eval_dir = output / "run", output / "evaluation"
    common = ["--dataset", "ds2", "--energy", energy, *th]
    _step("1/6 simulate training showers", ["simulate", "-o", str(train_h5), "--n", str(n_train), *common,
                                            "--seed", str(seed)])
    _step("2/6 simulate reference showers", ["simulate", "-o", str(ref_h5), "--n", str(n_reference), *common,
                                             "--seed", str(seed + 1)])
    _step("3/6 look at the data", ["plot", str(ref_h5), "-o", str(output / "dataset-plots"), *th])
    # a closed-form fit needs no validation showers and no time budget
    fit_args = ["--val-fraction", "0"] if "FittedInClosedForm" in caps else ["--val-fraction", "0.1", "--max-time", train_time]
    _step("4/6 train a surrogate", ["train", "--model", model, "--data", str(train_h5), *fit_args,
                                   "-o", str(run_dir), "--seed", str(seed), *th])
    gen_args = ["generate", str(run_dir), "--energies-from", str(ref_h5), "-o", str(gen_h5), "--seed", str(seed), *th]
    if "SolverSteps" in caps:
        gen_args += ["--steps", "6"]  # fewer ODE steps: a quicker demo
    _step("5/6 generate", gen_args)
    _step("6/6 evaluate", ["evaluate", str(ref_h5), str(gen_h5), "-o", str(eval_dir), "--names", model,
                           "--floor", "--fast", "--cls-epochs", "10", "--seed", str(seed), *th])
    console.rule("[bold green]done")
    console.print(f"dataset plots:  {output / 'dataset-plots' / 'index.html'}")
    console.print(f"trained model:  {run_dir / 'model'}")
    console.print(f"report:         [bold]{eval_dir / 'report.html'}[/]  (open it in a browser)")
