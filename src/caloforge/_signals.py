"""Ctrl-C that is never lost.

Python raises :class:`KeyboardInterrupt` wherever the main thread is when SIGINT arrives; when
that is inside a finaliser (a weakref callback, ``__del__``), the exception is printed as
"ignored" and the program runs on. The command line's handler therefore also sets a flag that
every progress update checks (:func:`check`), so a long step stops at its next update at the
latest, and :func:`unraisable_hook` keeps such a swallowed interrupt from printing a traceback
(the flag carries it on).
"""

from __future__ import annotations

import sys
from typing import Any

_interrupted = False


def on_sigint(signum: int, frame: object) -> None:
    """SIGINT handler of the command line: remember it, then interrupt as Python does."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def check() -> None:
    """Raise :class:`KeyboardInterrupt` if SIGINT arrived (and was swallowed somewhere)."""
    if _interrupted:
        raise KeyboardInterrupt


def reset() -> None:
    """Forget an earlier SIGINT (after it has been handled)."""
    global _interrupted
    _interrupted = False


def unraisable_hook(unraisable: Any) -> None:
    """``sys.unraisablehook`` of the command line: silent for a KeyboardInterrupt raised by
    :func:`on_sigint` inside a finaliser (the flag stops the step at its next progress update);
    anything else goes to Python's default hook."""
    if _interrupted and isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)
