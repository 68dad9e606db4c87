"""Shared helpers of the CLI commands: error reporting, progress bars, console output."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.progress import Progress

from caloforge._progress import make_progress
from caloforge.config import ConfigError
from caloforge.errors import CaloForgeError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with ``code`` (2: bad input). The message is printed as
    it is (no console markup: ``[onnx]`` or brackets in a file name stay)."""
    from rich.markup import escape

    one_line = " ".join(str(message).split())
    console.print(f"[bold red]caloforge: error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a batch system's kill, ``timeout``): delete this process's temporary files and
    exit 143 at once. Raising an exception instead is not safe: a signal handler's exception is
    lost when it fires inside a finaliser (a weakref callback), and the job would run on."""
    import os

    from caloforge._atomic import remove_own_parts

    remove_own_parts()
    try:
        console.print("caloforge: terminated (SIGTERM)", highlight=False)
    finally:
        os._exit(143)


def os_error_message(exc: OSError) -> str:
    """``FILE: problem`` for an operating-system error (permission, full disk, read-only ...)."""
    import errno

    hints = {
        errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
        errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
        errno.EFBIG: "file too large for this file system or the process's file-size limit",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
    }
    problem = hints.get(exc.errno or -1) or exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    if where is not None and exc.filename2 is not None and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        where = f"{exc.filename} -> {exc.filename2}"
    if where is None:
        return f"{problem} ({exc})" if str(exc) and problem not in str(exc) else problem
    return f"{where}: {problem}"


#: Optional packages -> the extra of caloforge that installs them (``pip install 'caloforge[EXTRA]'``).
OPTIONAL_PACKAGES = {"onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx", "distributed": "dask", "dask": "dask"}


def user_errors(func: F) -> F:
    """Turn every failure into a one-line error, exit 2 (Ctrl-C: 130; SIGTERM: 143, see :func:`_on_sigterm`), no traceback.

    :class:`CaloForgeError` carries its own message (file and problem); operating-system errors
    (permissions, a full disk, a read-only folder) name the file; anything unexpected is reported
    as an internal error in one line (``CALOFORGE_DEBUG=1`` shows the traceback). Output files are
    written atomically, so none of these leaves a file under the output name.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import os
        import signal
        import sys

        from caloforge import _signals

        try:
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
            previous_int = signal.signal(signal.SIGINT, _signals.on_sigint)
        except ValueError:  # not the main thread: leave signals alone
            previous = previous_int = None
        previous_hook = sys.unraisablehook
        sys.unraisablehook = _signals.unraisable_hook
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (CaloForgeError, ConfigError) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            console.print("caloforge: interrupted", highlight=False)
            raise typer.Exit(130) from None
        except ModuleNotFoundError as exc:
            extra = OPTIONAL_PACKAGES.get((exc.name or "").split(".")[0])
            if extra is None:
                raise
            fail(f"this needs the optional package '{exc.name}': pip install 'caloforge[{extra}]'")
        except MemoryError:
            fail("out of memory; try a smaller --batch-size or fewer showers")
        except OSError as exc:
            fail(os_error_message(exc))
        except Exception as exc:
            if os.environ.get("CALOFORGE_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (please report it; CALOFORGE_DEBUG=1 shows the traceback)")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
                signal.signal(signal.SIGINT, previous_int)
            sys.unraisablehook = previous_hook
            _signals.reset()

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


#: Upper bounds of count options: beyond them a run cannot fit any machine (1e9 DS2 showers are
#: 26 TB uncompressed), and the numbers would overflow the libraries' integer types.
MAX_COUNT = 10**9
MAX_SEED = 2**63 - 1


def check_count(value: int | None, flag: str, maximum: int = MAX_COUNT) -> None:
    """``value`` of a count option (``--n``, ``--batch-size`` ...) is between 1 and ``maximum``."""
    from caloforge.errors import InputError

    if value is None:
        return
    if value < 1:
        raise InputError(f"{flag} must be at least 1, got {value}")
    if value > maximum:
        raise InputError(f"{flag} {value:,} is more than the {maximum:,} one run can handle; split the job")


def check_seed(seed: int | None) -> None:
    """A seed is an integer between 0 and 2**63 - 1 (what numpy and torch both accept)."""
    from caloforge.errors import InputError

    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed must be between 0 and 2**63 - 1, got {seed}")
