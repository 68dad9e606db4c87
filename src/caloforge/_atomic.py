"""Atomic file writes: write a temporary sibling, then rename it over the target.

An interrupted write (exception, kill) never leaves a half-written file at the target path;
the temporary file gets the permissions of an ordinary new file (``mkstemp`` alone gives 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def new_file_mode() -> int:
    """Permissions an ordinary new file gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_sibling(path: Path) -> Path:
    """A new empty file beside ``path`` (same folder, so the final rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def finish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` normal permissions and move it over ``path``."""
    os.chmod(tmp, new_file_mode())
    os.replace(tmp, path)


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(temporary_path)`` then rename the result to ``path``; clean up on failure."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        write(str(tmp))
        finish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
