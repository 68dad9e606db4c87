"""Exceptions that the command line turns into one-line messages (exit code 2)."""

from __future__ import annotations

from pathlib import Path


class CaloForgeError(Exception):
    """Base class of every error caloforge reports to a user without a traceback."""


class InputError(CaloForgeError):
    """A file or argument given by the user is unusable.

    The message always names the offending file (when there is one) and the problem.
    """

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)
