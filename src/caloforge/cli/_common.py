"""Shared helpers of the CLI commands: error reporting, progress bars, console output."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.progress import Progress

from caloforge._progress import make_progress
from caloforge.errors import CaloForgeError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with ``code`` (2: bad input)."""
    console.print(f"[bold red]caloforge: error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(func: F) -> F:
    """Turn :class:`CaloForgeError` (and a few other expected failures) into one-line errors."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CaloForgeError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            console.print("caloforge: interrupted")
            raise typer.Exit(130) from None
        except MemoryError:
            fail("out of memory; try a smaller --batch-size or fewer showers")

    return wrapper  # type: ignore[return-value]


def progress_bar(transient: bool = False) -> Progress:
    """A rich progress bar with count, rate-friendly columns and ETA (to stderr)."""
    return make_progress(console, transient=transient)


THREADS_HELP = ("CPU threads for torch and numpy/scipy's BLAS (default: the CPUs this process may use: "
                "affinity, cgroup quota, OMP_NUM_THREADS; at most those).")


def threads_option() -> int | None:
    """The ``--threads`` option every computing command shares (None: the library's default)."""
    return typer.Option(None, "--threads", help=THREADS_HELP)


def use_threads(threads: int | None) -> int:
    """Validate ``--threads`` and set torch's and BLAS's thread counts (the library's
    :func:`caloforge._threads.configure_threads`); print its note; return the count used."""
    from caloforge._threads import configure_threads

    cfg = configure_threads(threads)
    if cfg.note:
        console.print(f"[yellow]note:[/] {cfg.note}", highlight=False)
    return cfg.threads
