"""Running the evaluation's independent parts on a Dask cluster (``caloforge evaluate --scheduler``).

:func:`~caloforge.evaluation.pipeline.evaluate` reads every file once in this process (the
streamed pass: features, histograms, classifier inputs), then hands its independent parts to a
runner: each generated sample's metric families (histograms, FPD, KPD, PRDC, each classifier),
the floor's and the multiclass test. :class:`DaskRunner` submits them as ``dask.distributed``
tasks; arrays used by several parts (the reference's features and classifier inputs) are
scattered once. Every part keeps the seed it has in one process, and each task sets the same
torch/BLAS thread count as this process, so the metrics are those of the single-process run.

Tasks in one worker process run one at a time (a lock): torch's random generator and thread
settings are global to a process, so two classifiers trained by two threads of one process
could interleave their draws. Parallelism comes from worker processes (``local:N`` starts N
processes of one thread each) or from the machines of a cluster.

The scheduler may be any ``dask.distributed`` scheduler: ``local`` / ``local:N`` starts a
:class:`distributed.LocalCluster` here; an address (``tcp://host:8786``) connects to a running
one, for instance one that ``dask-jobqueue`` (``SLURMCluster``, ``HTCondorCluster``) started on a
batch system. Needs the optional extra: ``pip install 'caloforge[dask]'``.

References:
    Rocklin, "Dask: Parallel Computation with Blocked algorithms and Task Scheduling", Proc.
    14th Python in Science Conference (2015).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from caloforge.errors import InputError

#: One task at a time per worker process (see the module docstring).
_TASK_LOCK = threading.Lock()


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler``: a local cluster of ``workers`` processes, or an ``address``."""

    address: str | None = None  # None: a LocalCluster
    workers: int = 2

    @classmethod
    def parse(cls, text: str) -> SchedulerSpec:
        """``local`` (2 workers), ``local:N`` or a scheduler address (``tcp://host:8786``,
        ``host:8786``, ``tls://...``)."""
        t = text.strip()
        if t == "local":
            return cls()
        if t.startswith("local:"):
            n = t.removeprefix("local:")
            if not n.isdigit() or int(n) < 1:
                raise InputError(f"--scheduler {text!r}: local:N needs a positive number of workers")
            return cls(workers=int(n))
        if not t or any(c.isspace() for c in t) or ":" not in t:
            raise InputError(f"--scheduler {text!r}: give 'local', 'local:N' or a scheduler address "
                             "such as tcp://host:8786")
        return cls(address=t)


def _in_worker(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    """Run one part in a worker: this process's thread count as the client's, one task at a time."""
    import torch
    from threadpoolctl import threadpool_limits

    with _TASK_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with threadpool_limits(threads):
                return fn(*args)
        finally:
            torch.set_num_threads(previous)


class DaskRunner:
    """Runs the evaluation's parts as tasks of a ``distributed.Client`` (see the module docstring).

    References:
        Rocklin, Proc. SciPy 2015 (Dask).
    """

    def __init__(self, client: Any, threads: int = 1):
        self.client = client
        self.threads = int(threads)

    def share(self, value: Any) -> Any:
        """Scatter arrays and feature sets used by several tasks once; small values stay as they are."""
        if value is None or (isinstance(value, np.ndarray) and value.nbytes < 2**20):
            return value
        return self.client.scatter(value, hash=False)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(_in_worker, fn, self.threads, *args, pure=False)

    def result(self, handle: Any) -> Any:
        return handle.result()


@contextmanager
def dask_runner(scheduler: str, threads: int = 1) -> Iterator[DaskRunner]:
    """A :class:`DaskRunner` on ``scheduler`` (``local``, ``local:N`` or an address, see
    :meth:`SchedulerSpec.parse`); a local cluster is shut down on exit. ``threads``: torch/BLAS
    threads of every task (the single-process run's count, for the same numbers)."""
    spec = SchedulerSpec.parse(scheduler)
    try:
        from distributed import Client, LocalCluster
    except ModuleNotFoundError as exc:
        raise InputError("--scheduler needs dask.distributed: pip install 'caloforge[dask]'") from exc
    if spec.address is None:
        with LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield DaskRunner(client, threads)
    else:
        try:
            client = Client(spec.address, timeout="30s")
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot reach the scheduler ({exc})") from None
        with client:
            yield DaskRunner(client, threads)


@contextmanager
def in_process_runner(workers: int = 2, threads: int = 1) -> Iterator[DaskRunner]:
    """A :class:`DaskRunner` on a LocalCluster of threads in this process (``processes=False``):
    quick to start, for tests and small runs; its tasks run one at a time (the lock)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield DaskRunner(client, threads)
