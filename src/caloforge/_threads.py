"""How many CPU threads caloforge uses: one place for torch and for numpy/scipy's BLAS.

On a shared machine or in a batch job a process may use fewer CPUs than the machine has: its
CPU affinity (``taskset``, SLURM's ``--cpus-per-task``), its cgroup CPU quota (containers,
systemd slices) and ``OMP_NUM_THREADS`` all say so. torch and the BLAS libraries size their
thread pools from the machine instead, and several pools of that size on a busy machine spend
their time waiting for one another (spin-waiting threads): on a loaded 2-core machine,
generation ran 7 times and an FPD 30 times slower with 2 threads than with 1.

:func:`available_cpus` is what this process may use, :func:`default_threads` the number
caloforge uses unless told otherwise, and :func:`configure_threads` sets torch's intra-op
threads and limits every BLAS/OpenMP pool that numpy, scipy and torch loaded (threadpoolctl) to
the same number, so that the pools never add up to more threads than CPUs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caloforge.errors import InputError

#: Root of the cgroup file system (a module attribute so that tests can point it elsewhere).
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: /proc/self/cgroup, the process's cgroup path(s).
PROC_CGROUP = Path("/proc/self/cgroup")


def _affinity_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _quota_cpus(quota: float, period: float) -> int | None:
    if quota <= 0 or period <= 0:  # "max" / -1: no limit
        return None
    return max(1, math.ceil(quota / period))  # 1.5 CPUs of quota: 2 threads (as Go and the JVM)


def _cgroup_dirs(controller: str | None) -> list[Path]:
    """The process's own cgroup folder and its ancestors (v2: controller None), innermost first;
    the root itself last. Inside a container the root is usually the container's own cgroup."""
    dirs: list[Path] = []
    text = _read(PROC_CGROUP) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controller is None and controllers != "":
            continue
        if controller is not None and controller not in controllers.split(","):
            continue
        base = CGROUP_ROOT if controller is None else CGROUP_ROOT / _v1_mount(controller)
        p = Path(rel.lstrip("/"))
        while str(p) not in ("", "."):
            dirs.append(base / p)
            p = p.parent
    roots = [CGROUP_ROOT] if controller is None else [CGROUP_ROOT / _v1_mount(controller)]
    return dirs + [r for r in roots if r not in dirs]


def _v1_mount(controller: str) -> str:
    for name in (controller, "cpu,cpuacct", "cpuacct,cpu"):
        if (CGROUP_ROOT / name).is_dir():
            return name
    return controller


def _cgroup_cpus() -> int | None:
    """The CPUs the cgroup quota allows (the tightest over the process's cgroup and its
    ancestors, cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``); None: no quota."""
    limits: list[int] = []
    for d in _cgroup_dirs(None):
        text = _read(d / "cpu.max")
        if text:
            fields = text.split()
            if len(fields) == 2 and fields[0] != "max":
                try:
                    n = _quota_cpus(float(fields[0]), float(fields[1]))
                except ValueError:
                    n = None
                if n is not None:
                    limits.append(n)
    for d in _cgroup_dirs("cpu"):
        quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if quota and period:
            try:
                n = _quota_cpus(float(quota), float(period))
            except ValueError:
                n = None
            if n is not None:
                limits.append(n)
    return min(limits) if limits else None


def _omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive integer (its first level, as in ``4,2``); None when
    unset or unreadable."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text:
        return None
    try:
        n = int(text.split(",")[0])
    except ValueError:
        return None
    return n if n >= 1 else None


def cpu_limits() -> dict[str, int | None]:
    """What limits this process's CPUs, by source: ``affinity`` (CPUs it may run on),
    ``cgroup`` (CPU quota, None: none) and ``OMP_NUM_THREADS`` (None: unset)."""
    return {"affinity": _affinity_cpus(), "cgroup": _cgroup_cpus(), "OMP_NUM_THREADS": _omp_threads()}


def available_cpus(include_env: bool = True) -> int:
    """The number of CPUs this process may use: its CPU affinity, capped by the cgroup CPU quota
    and (``include_env``) by ``OMP_NUM_THREADS`` when set. At least 1."""
    limits = cpu_limits()
    if not include_env:
        limits.pop("OMP_NUM_THREADS")
    return max(1, min(v for v in limits.values() if v is not None))


def default_threads() -> int:
    """The number of threads caloforge uses when not told otherwise: :func:`available_cpus`."""
    return available_cpus()


def resolve_threads(requested: int | None = None) -> tuple[int, str]:
    """``(threads, note)`` for a requested thread count: None gives :func:`default_threads`;
    less than 1 raises :class:`~caloforge.errors.InputError`; more than the CPUs this process
    may use (affinity and cgroup quota) is clamped to them, with a note saying so. An explicit
    request may exceed ``OMP_NUM_THREADS``, which only sets the default."""
    if requested is None:
        return default_threads(), ""
    if isinstance(requested, bool) or not isinstance(requested, int | float) or requested != int(requested):
        raise InputError(f"--threads must be a whole number (got {requested!r})")
    n = int(requested)
    if n < 1:
        raise InputError(f"--threads must be at least 1 (got {n})")
    cap = available_cpus(include_env=False)
    if n > cap:
        quota, affinity = _cgroup_cpus(), _affinity_cpus()
        why = "cgroup CPU quota" if quota is not None and quota < affinity else "CPU affinity"
        return cap, f"--threads {n} is more than the {cap} CPUs this process may use ({why}); using {cap}"
    return n, ""


@dataclass
class ThreadConfig:
    """What :func:`configure_threads` set; :meth:`restore` (or leaving a ``with`` block) undoes it."""

    threads: int
    note: str = ""
    previous_torch_threads: int | None = None
    _limiter: Any = field(default=None, repr=False)

    def restore(self) -> None:
        """Put torch's thread count and the BLAS/OpenMP limits back as they were."""
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None
        if self.previous_torch_threads is not None:
            import torch

            torch.set_num_threads(self.previous_torch_threads)
            self.previous_torch_threads = None

    def __enter__(self) -> ThreadConfig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def configure_threads(threads: int | None = None) -> ThreadConfig:
    """Use ``threads`` CPU threads (None: :func:`default_threads`) for torch's intra-op pool and
    for every BLAS and OpenMP pool loaded in the process (numpy's and scipy's OpenBLAS, torch's
    OpenMP), via threadpoolctl; validated and clamped by :func:`resolve_threads`.

    A setter that is also a context manager: ``with configure_threads(1): ...`` restores the
    previous settings at the end. numpy, scipy.linalg and torch are imported first so that their
    BLAS libraries are loaded (threadpoolctl only reaches loaded libraries).

    >>> with configure_threads(1) as cfg:
    ...     import torch
    ...     torch.get_num_threads()
    1
    """
    n, note = resolve_threads(threads)
    import numpy  # noqa: F401 - loads numpy's BLAS
    import scipy.linalg  # noqa: F401 - loads scipy's BLAS
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    limiter = threadpool_limits(limits=n)
    return ThreadConfig(threads=n, note=note, previous_torch_threads=previous, _limiter=limiter)


def blas_threads() -> dict[str, int]:
    """The current thread count of every loaded BLAS/OpenMP library (threadpoolctl), by file
    name, and torch's as ``torch``; for reports and tests."""
    from threadpoolctl import threadpool_info

    out = {Path(d["filepath"]).name: int(d["num_threads"]) for d in threadpool_info()}
    import torch

    out["torch"] = torch.get_num_threads()
    return out
