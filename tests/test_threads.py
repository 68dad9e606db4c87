"""Thread counts: what the process may use (affinity, cgroup quota, OMP_NUM_THREADS), one setter
for torch and BLAS, and the CLI's --threads (validated, clamped, never a crash)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info
from typer.testing import CliRunner

from caloforge import _threads
from caloforge._threads import available_cpus, configure_threads, cpu_limits, default_threads, resolve_threads
from caloforge.cli.main import app
from caloforge.errors import InputError

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def fake_machine(tmp_path, monkeypatch):
    """A process with 8 CPUs of affinity, no cgroup quota and no OMP_NUM_THREADS, all patchable."""
    root = tmp_path / "cgroup"
    root.mkdir()
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("0::/\n")
    monkeypatch.setattr(_threads, "CGROUP_ROOT", root)
    monkeypatch.setattr(_threads, "PROC_CGROUP", proc)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return root, proc


def test_available_cpus_follows_affinity(fake_machine, monkeypatch):
    assert available_cpus() == 8 == default_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5, 6}, raising=False)
    assert available_cpus() == 3
    assert cpu_limits() == {"affinity": 3, "cgroup": None, "OMP_NUM_THREADS": None}


def test_available_cpus_follows_cgroup_v2_quota(fake_machine):
    root, proc = fake_machine
    (root / "cpu.max").write_text("max 100000\n")  # no limit
    assert available_cpus() == 8
    (root / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2 threads
    assert available_cpus() == 2
    # the process's own, nested cgroup is tighter than the root's
    (root / "jobs" / "job1").mkdir(parents=True)
    (root / "jobs" / "job1" / "cpu.max").write_text("100000 100000\n")
    proc.write_text("0::/jobs/job1\n")
    assert available_cpus() == 1
    assert cpu_limits()["cgroup"] == 1


def test_available_cpus_follows_cgroup_v1_quota(fake_machine):
    root, proc = fake_machine
    cpu = root / "cpu,cpuacct"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus() == 8
    (cpu / "cpu.cfs_quota_us").write_text("300000\n")
    proc.write_text("4:cpu,cpuacct:/\n")
    assert available_cpus() == 3


def test_available_cpus_follows_omp_num_threads(fake_machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert available_cpus() == 2 == default_threads()
    assert available_cpus(include_env=False) == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # nested levels: the first one counts
    assert available_cpus() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # unreadable: ignored
    assert available_cpus() == 8


def test_resolve_threads_validates_and_clamps(fake_machine, monkeypatch):
    assert resolve_threads(None) == (8, "")
    assert resolve_threads(3) == (3, "")
    for bad in (0, -2):
        with pytest.raises(InputError, match="at least 1"):
            resolve_threads(bad)
    n, note = resolve_threads(100_000)
    assert n == 8 and "100000" in note and "8 CPUs" in note
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # only the default: an explicit request may exceed it
    assert resolve_threads(None) == (1, "")
    assert resolve_threads(4) == (4, "")


def test_configure_threads_sets_torch_and_blas():
    before_torch = torch.get_num_threads()
    before_blas = {d["filepath"]: d["num_threads"] for d in threadpool_info()}
    with configure_threads(1) as cfg:
        assert cfg.threads == 1 and cfg.note == ""
        assert torch.get_num_threads() == 1
        info = threadpool_info()
        assert any(d["user_api"] == "blas" for d in info)  # numpy's and scipy's BLAS are loaded
        assert all(d["num_threads"] == 1 for d in info)
    assert torch.get_num_threads() == before_torch
    after = {d["filepath"]: d["num_threads"] for d in threadpool_info()}  # (may hold libraries loaded since)
    assert {k: after[k] for k in before_blas} == before_blas
    n = available_cpus(include_env=False)
    if n >= 2:
        with configure_threads(2):
            assert torch.get_num_threads() == 2
            assert all(d["num_threads"] == 2 for d in threadpool_info() if d["user_api"] == "blas")
    with configure_threads(10**6) as cfg:  # clamped, never passed on to torch as is
        assert cfg.threads == n and "more than" in cfg.note
        assert torch.get_num_threads() == n


@pytest.mark.parametrize("args", [
    ["simulate", "-o", "x.h5", "--n", "5"],
    ["generate", "ds2-electrons", "--n", "5", "-o", "x.h5"],
    ["train", "--model", "cfm", "--data", "x.h5", "-o", "run"],
    ["evaluate", "ref.h5", "gen.h5", "-o", "ev"],
    ["plot", "ref.h5", "-o", "plots"],
    ["export", "ds2-electrons", "--onnx", "x.onnx"],
    ["demo", "-o", "demo"],
])
def test_cli_rejects_zero_threads(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*args, "--threads", "0"])
    assert result.exit_code == 2, result.output
    assert "--threads must be at least 1" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "caloforge", *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": SRC, **env}, timeout=600)


def test_cli_huge_thread_count_is_clamped_not_a_crash(tmp_path):
    # torch.set_num_threads(100000) segfaults; the CLI clamps to the CPUs this process may use
    r = _cli(["simulate", "-o", "s.h5", "--n", "20", "--threads", "100000"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--threads 100000 is more than the" in r.stderr
    r = _cli(["generate", "ds2-electrons", "--n", "4", "--energy", "fixed:10GeV", "-o", "g.h5", "--seed", "1",
              "--threads", "100000"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--threads 100000 is more than the" in r.stderr
    assert (tmp_path / "g.h5").is_file()
