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

    for name in ("info", "plot", "simulate", "evaluate", "demo", "train", "generate", "export", "models", "anomaly",
                 "compress", "trigger", "calibrate", "unfold"):
        try:
            module = importlib.import_module(f"caloforge.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"caloforge.cli.{name}":
                raise
            continue
        command = getattr(module, name)
        if isinstance(command, typer.Typer):  # a command with sub-commands
            app.add_typer(command, name=name)
        else:
            app.command(name, cls=getattr(module, "command_cls", None))(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """The ``caloforge`` command: ``app`` with command-line mistakes (an unknown option, a value
    that is not a number) reported like every other error, in one line with exit status 2."""
    import sys

    try:  # typer >= 0.24 ships its own copy of click; earlier versions use click itself
        from typer._click import exceptions as click
    except ImportError:  # pragma: no cover - older typer
        import click  # type: ignore[no-redef]
    from rich.markup import escape
    from typer.main import get_command

    from caloforge.cli._common import console

    try:
        code = get_command(app).main(args=argv, prog_name="caloforge", standalone_mode=False)
    except click.NoArgsIsHelpError as exc:  # `caloforge` or a group alone: its help
        if exc.ctx is not None:
            typer.echo(exc.ctx.get_help())
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        message = " ".join(exc.format_message().split())
        console.print(f"[bold red]caloforge: error:[/] {escape(message)}{escape(where)}", highlight=False,
                      soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        console.print(f"[bold red]caloforge: error:[/] {escape(' '.join(exc.format_message().split()))}",
                      highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.print("caloforge: interrupted", highlight=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
