"""Entry point of the ``caloforge`` command (typer)."""

from __future__ import annotations

import typer

from caloforge import __version__

app = typer.Typer(
    name="caloforge",
    help="Fast calorimeter shower simulation with deep generative models (CaloChallenge format).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"caloforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """caloforge: simulate, train, generate and evaluate calorimeter showers."""


def _register() -> None:
    # Each command module defines a function named like the command; heavy imports stay inside.
    import importlib

    for name in ("info", "plot", "simulate", "evaluate", "demo", "train", "generate", "export", "models", "calibrate", "unfold"):
        try:
            module = importlib.import_module(f"caloforge.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"caloforge.cli.{name}":
                raise
            continue
        app.command(name, cls=getattr(module, "command_cls", None))(getattr(module, name))


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
