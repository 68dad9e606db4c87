"""Atomic file writes: write a temporary sibling, then rename it over the target.

An interrupted write (exception, Ctrl-C, SIGTERM) never leaves a half-written file at the target
path; the temporary file gets the permissions of an ordinary new file (``mkstemp`` alone gives
0600). A process killed outright (SIGKILL, a crash) cannot clean up after itself: its temporary
file is named ``.NAME.HOST.PID.XXXX.part`` so that the next write to the same target removes it
once that process is gone (:func:`remove_stale_parts`).

:func:`check_output` is the one place that decides whether a path may be written at all: never
an input of the same run (a data file, a model's own files), never a device, pipe or socket.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from caloforge.errors import InputError

_HOST = socket.gethostname().replace(".", "_") or "host"
#: Temporary files this process is writing now (removed by :func:`remove_own_parts` on SIGTERM).
_OPEN_PARTS: set[Path] = set()


def new_file_mode() -> int:
    """Permissions an ordinary new file gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_parts(path: Path) -> list[Path]:
    """Delete temporary files of earlier writes to ``path`` whose writing process (on this host)
    no longer exists; return what was removed. Files of live processes and of other hosts (a
    shared file system) are left alone."""
    removed: list[Path] = []
    prefix = f".{path.name}.{_HOST}."
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        name = p.name
        if not (name.startswith(prefix) and name.endswith(".part")):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def temporary_sibling(path: Path) -> Path:
    """A new empty file beside ``path`` (same folder, so the final rename is atomic)."""
    remove_stale_parts(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".part", dir=path.parent)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    _OPEN_PARTS.add(Path(tmp))
    return Path(tmp)


def release(tmp: Path) -> None:
    """Forget ``tmp`` (renamed into place or deleted)."""
    _OPEN_PARTS.discard(tmp)


def remove_own_parts() -> None:
    """Delete every temporary file this process is writing (on SIGTERM, just before exiting)."""
    for tmp in list(_OPEN_PARTS):
        try:
            tmp.unlink()
        except OSError:
            pass
        _OPEN_PARTS.discard(tmp)


def finish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` normal permissions and move it over ``path``."""
    os.chmod(tmp, new_file_mode())
    os.replace(tmp, path)
    release(tmp)


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(temporary_path)`` then rename the result to ``path``; clean up on failure."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        write(str(tmp))
        finish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        release(tmp)
        if exc.filename is not None and Path(str(exc.filename)).name == tmp.name:
            raise OSError(exc.errno, exc.strerror, str(path)) from None  # the user's name, not the temporary one
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        release(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path: str | Path, inputs: Iterable[str | Path] = (), *, folder: bool = False) -> Path:
    """Refuse an output path that would destroy something, before anything is computed.

    ``inputs``: the files (and folders: every file in them) this run reads; the output may be
    none of them. ``folder``: the output is a folder that the run fills (it may exist; it may
    not be an input file nor hold the inputs it would overwrite). Raises :class:`InputError`
    naming the path; returns it otherwise.

    >>> check_output("/dev/null")
    Traceback (most recent call last):
    ...
    caloforge.errors.InputError: /dev/null: is a device, pipe or socket, not a regular file; give a file path
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() or path.is_symlink():
        if folder:
            if not path.is_dir():
                raise InputError("exists and is not a folder", path)
        elif path.is_dir():
            raise InputError("is a folder; give the output file name", path)
        elif not path.is_file():
            raise InputError("is a device, pipe or socket, not a regular file; give a file path", path)
    elif not folder and not parent.is_dir():
        raise InputError("output folder does not exist", parent)
    for item in inputs:
        item = Path(item)
        if not item.exists():
            continue
        files = [p for p in item.iterdir() if p.is_file()] if item.is_dir() else [item]
        if item.is_dir() and path.exists() and _same(path, item):
            raise InputError(f"is the input folder {item}; choose another output", path)
        for f in files:
            if path.exists() and _same(path, f):
                raise InputError(f"is an input of this run ({f}); choose another output, the input stays untouched",
                                 path)
    return path
