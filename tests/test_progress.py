"""Progress: a bar laid out for the terminal's width (nothing cut), plain periodic lines (count,
percent, rate, ETA) when the output is not a terminal, from the library and from the CLI."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from caloforge._progress import DEFAULT_INTERVAL, format_duration, make_progress, progress_interval

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _log_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=80), buf


def test_not_a_terminal_gives_plain_lines_with_count_percent_rate_and_eta():
    console, buf = _log_console()
    with make_progress(console, interval=0) as bar:
        assert bar.log_lines
        task = bar.add_task("generating with cfm", total=10_000, unit="showers")
        bar.update(task, advance=2_500)
        lines = bar.emit_due()
        bar.update(task, advance=7_500)
    out = buf.getvalue()
    assert "━" not in out  # no bar drawn into the log
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("generating with cfm: 2,500/10,000 (25.0%), ")
    assert re.search(r"[\d,.]+ showers/s, elapsed \d+:\d\d:\d\d, eta (\d+:\d\d:\d\d|-:--:--)$", line), line
    assert line in out
    assert re.search(r"generating with cfm: done, 10,000/10,000 in \d+:\d\d:\d\d \([\d,.]+ showers/s\)", out), out


def test_log_lines_come_periodically_from_a_thread_and_unfinished_tasks_say_where_they_stopped(monkeypatch):
    monkeypatch.setenv("CALOFORGE_PROGRESS_INTERVAL", "0.05")
    console, buf = _log_console()
    with make_progress(console) as bar:
        assert bar.interval == 0.05
        task = bar.add_task("training cfm", total=10_000, completed=0, unit="steps")
        bar.update(task, completed=32, info="loss 0.4521  val 0.4410")
        deadline = time.monotonic() + 30
        while "training cfm: 32/10,000" not in buf.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)  # waits for the thread's line, asserts nothing about time
    out = buf.getvalue()
    assert "training cfm: 32/10,000 (0.3%)" in out
    assert "eta " in out and "| loss 0.4521  val 0.4410" in out
    assert "training cfm: stopped at 32/10,000 (0.3%) after " in out.splitlines()[-1]


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("CALOFORGE_PROGRESS_INTERVAL", raising=False)
    assert progress_interval() == DEFAULT_INTERVAL
    monkeypatch.setenv("CALOFORGE_PROGRESS_INTERVAL", "7.5")
    assert progress_interval() == 7.5
    console, buf = _log_console()
    monkeypatch.setenv("CALOFORGE_PROGRESS_INTERVAL", "soon")
    assert progress_interval(console) == DEFAULT_INTERVAL
    assert "CALOFORGE_PROGRESS_INTERVAL='soon' is not a number" in buf.getvalue()


def test_terminal_bar_is_never_cut():
    # was: "training cfm  3… loss 0.4521 ... 0:00:… eta -:--:…" at 80 columns
    for width in (120, 80, 50):
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=True, width=width, color_system=None)
        bar = make_progress(console)
        assert not bar.log_lines
        task = bar.add_task("training cfm", total=10_000, unit="steps")
        bar.update(task, completed=32, info="loss 0.4521  val 0.4410  stops in 0:02:10 (max time)")
        bar.add_task("reading reference", total=3_000, completed=3_000, unit="showers")
        console.print(bar.get_renderable())
        out = buf.getvalue()
        assert "…" not in out
        words = " ".join(out.split())  # a long info line may wrap on a narrow terminal, never be cut
        for part in ("training cfm", "32/10,000", "eta ", "loss 0.4521 val 0.4410", "stops in 0:02:10",
                     "reading reference", "3,000/3,000"):
            assert part in words, (width, part, out)
        assert max(len(line) for line in out.splitlines()) <= width


def test_format_duration():
    assert format_duration(3 * 3600 + 61) == "3:01:01"
    assert format_duration(40 * 3600 + 15 * 60) == "1d 16:15:00"
    assert format_duration(None) == "-:--:--"


def test_cli_in_a_batch_job_writes_plain_progress_lines(tmp_path):
    # stdout and stderr are pipes, as in a batch job: plain lines, no bar, nothing cut
    env = {**os.environ, "PYTHONPATH": SRC, "CALOFORGE_PROGRESS_INTERVAL": "0"}
    r = subprocess.run([sys.executable, "-m", "caloforge", "simulate", "-o", "s.h5", "--n", "1500", "--seed", "1",
                        "--threads", "1", "--energy", "fixed:10GeV"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "━" not in r.stderr
    assert re.search(r"simulate ds2: done, 1,500/1,500 in \d+:\d\d:\d\d \([\d,.]+ showers/s\)", r.stderr), r.stderr
    for line in r.stderr.splitlines():
        if line.startswith("simulate ds2:") and "done" not in line:
            assert re.search(r"\(\d+\.\d%\), ([\d,.]+ showers/s, )?elapsed \d+:\d\d:\d\d, eta ", line), line


def test_every_evaluation_step_reports_progress(tmp_path):
    # FPD, KPD, histograms and both classifiers report progress (the classifiers within epochs),
    # and every task ends at done == total, also a classifier that stops early
    import numpy as np

    from caloforge.data import open_showers, write_showers
    from caloforge.evaluation.classifier import ClassifierConfig
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate
    from caloforge.geometry import get_geometry

    g = get_geometry("ds1-photons")
    for name, seed in (("ref", 1), ("gen", 2)):
        rng = np.random.default_rng(seed)
        e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), 1200))
        profile = np.exp(-g.voxel_r / 40.0)
        s = e[:, None] * profile / profile.sum() * rng.gamma(2.0, 0.5, (1200, g.n_voxels))
        write_showers(tmp_path / f"{name}.h5", e.astype(np.float32), s.astype(np.float32))
    calls: list[tuple[str, float, float]] = []
    cfg = ClassifierConfig(hidden_layers=1, hidden_units=16, batch_size=100, max_epochs=3, patience=1)
    opts = EvaluationOptions(classifier=cfg, floor=True, fpd_min_samples=500, fpd_max_samples=1000,
                             kpd_batch_size=500)
    evaluate(open_showers(tmp_path / "ref.h5"), {"gen": open_showers(tmp_path / "gen.h5")}, opts,
             progress=lambda task, done, total: calls.append((task, done, total)))
    tasks = {t for t, _, _ in calls}
    for label in ("gen: ", "floor: "):
        for step in ("histograms", "FPD", "KPD", "classifier (high-level)", "classifier (low-level)"):
            assert label + step in tasks, (label + step, tasks)
    assert {"reading reference", "reading gen"} <= tasks
    for task in tasks:
        last = [c for c in calls if c[0] == task][-1]
        assert last[1] == last[2], last  # done
    cls = [done for t, done, _ in calls if t == "gen: classifier (low-level)"]
    assert any(0 < d < 1 for d in cls)  # progress within the first epoch
