"""Threads on an idle and on a busy machine: generate, train and FPD at 1 and 2 threads.

    python benchmarks/bench_threads.py                          # writes bench-output/threads.json
    python benchmarks/bench_threads.py --threads 1 2 4 --json out.json

For each load (``idle``; ``busy``: a second process burning one core, ``while True: pass``,
started and stopped by this script) and each thread count, three measurements, each in a fresh
subprocess that calls :func:`caloforge._threads.configure_threads` (torch's intra-op threads and
numpy/scipy's BLAS through threadpoolctl) as the CLI's ``--threads`` does:

- generate: the shipped ``ds2-electrons`` model, ms per shower (batch 500, sampling only);
- train: steps per second of the ``cfm`` model's ``tiny`` preset on simulated DS2 showers
  (batch 128, the first step excluded);
- FPD: seconds of :func:`caloforge.evaluation.fpd` on the high-level features of two simulated
  DS2 samples of 2,000 showers (10 batch sizes x ``--fpd-batches`` batches; the default 20 would
  take minutes with 2 threads on a busy machine).

"idle" means no load added by this script; on a machine shared with other jobs, read the figures
with the load average recorded next to each (the 1-minute load before the measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


# ------------------------------------------------------------------ workers (one per subprocess)
def _work_generate(n: int) -> dict:
    import numpy as np

    from caloforge.generation import make_sampler
    from caloforge.models.pretrained import resolve
    from caloforge.models.serialization import load_model

    model = load_model(resolve("ds2-electrons"))
    sampler = make_sampler(model, device="cpu", seed=1)
    e = np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e5), n)).astype(np.float32)
    sampler.warm_up(e)
    t = time.perf_counter()
    sampler.draw(e)
    dt = time.perf_counter() - t
    return {"generate_ms_per_shower": dt / n * 1e3}


def _work_train(steps: int) -> dict:
    import torch

    from caloforge.geometry import get_geometry
    from caloforge.models import build_model, get_model_class
    from caloforge.simulation import simulate
    from caloforge.training.loop import train

    e, s = simulate("ds2", 1000, "log-uniform:1GeV:100GeV", seed=3)
    torch.manual_seed(0)
    model = build_model("cfm", get_geometry("ds2"), get_model_class("cfm").Config.tiny())
    r = train(model, (e, s), steps=steps, batch_size=128, progress=False, device="cpu", seed=1, log_every=1)
    first, last = r.history[0], r.history[-1]  # the first step (allocation, warm-up) is excluded
    rate = (last["step"] - first["step"]) / (last["time"] - first["time"])
    return {"train_steps_per_s": rate, "train_steps": steps}


def _work_fpd(n: int, batches: int) -> dict:
    import warnings

    from caloforge.evaluation import fpd, high_level_inputs
    from caloforge.features import compute_features
    from caloforge.geometry import get_geometry
    from caloforge.simulation import simulate

    feats = []
    for seed in (5, 6):
        e, s = simulate("ds2", n, "log-uniform:1GeV:100GeV", seed=seed)
        feats.append(high_level_inputs(compute_features(e, s, get_geometry("ds2"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample notes
        t = time.perf_counter()
        r = fpd(feats[0], feats[1], num_batches=batches, seed=1)
        dt = time.perf_counter() - t
    if not float(r[0]) == float(r[0]):
        raise SystemExit(f"FPD not computed ({r.note}); use a larger --fpd-n")
    return {"fpd_s": dt, "fpd_value": float(r[0]), "fpd_features": int(feats[0].shape[1])}


def worker(kind: str, threads: int, a: argparse.Namespace) -> None:
    from caloforge._threads import blas_threads, configure_threads

    cfg = configure_threads(threads)
    load_before = os.getloadavg()[0]
    if kind == "generate":
        out = _work_generate(a.generate_n)
    elif kind == "train":
        out = _work_train(a.train_steps)
    else:
        out = _work_fpd(a.fpd_n, a.fpd_batches)
    out.update(threads=cfg.threads, pools=blas_threads(), load_before=load_before, load_after=os.getloadavg()[0])
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------- driver
def run_worker(kind: str, threads: int, a: argparse.Namespace) -> dict:
    args = [sys.executable, __file__, "--worker", kind, "--threads", str(threads),
            "--generate-n", str(a.generate_n), "--train-steps", str(a.train_steps),
            "--fpd-n", str(a.fpd_n), "--fpd-batches", str(a.fpd_batches)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{kind} at {threads} threads failed:\n{r.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--loads", nargs="+", default=["idle", "busy"], choices=["idle", "busy"])
    p.add_argument("--generate-n", type=int, default=500)
    p.add_argument("--train-steps", type=int, default=15)
    p.add_argument("--fpd-n", type=int, default=2000)
    p.add_argument("--fpd-batches", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("bench-output/threads.json"))
    p.add_argument("--worker", choices=["generate", "train", "fpd"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.threads[0], a)
        return

    sys.path.insert(0, str(SRC))
    from caloforge._threads import available_cpus, cpu_limits

    rows = []
    for load in a.loads:
        burner = None
        if load == "busy":
            burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(2.0)  # let it reach full speed
        try:
            for n in a.threads:
                row: dict = {"load": load, "threads_requested": n}
                for kind in ("generate", "train", "fpd"):
                    res = run_worker(kind, n, a)
                    row["threads"] = res.pop("threads")
                    row[f"{kind}_load"] = round(res.pop("load_before"), 2)
                    res.pop("load_after")
                    row["pools"] = res.pop("pools")
                    row.update(res)
                    print(f"  {load} {n} threads {kind}: " + ", ".join(
                        f"{k} {v:.4g}" for k, v in res.items() if isinstance(v, float)), flush=True)
                rows.append(row)
        finally:
            if burner is not None:
                burner.terminate()
                burner.wait()

    result = {
        "benchmark": "bench_threads", "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "available_cpus": available_cpus(),
                    "cpu_limits": cpu_limits()},
        "settings": {"generate_n": a.generate_n, "train_steps": a.train_steps, "fpd_n": a.fpd_n,
                     "fpd_batches": a.fpd_batches},
        "note": "idle = no load added by the benchmark; the load averages (1 min, before each measurement) "
                "say how busy the machine was otherwise",
        "rows": rows,
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2))
    head = f"{'load':<6} {'threads':>7} {'generate ms/shower':>19} {'train steps/s':>14} {'FPD s':>8}   load avg (gen/train/FPD)"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['load']:<6} {r['threads']:>7} {r['generate_ms_per_shower']:>19.2f} {r['train_steps_per_s']:>14.3f} "
              f"{r['fpd_s']:>8.2f}   {r['generate_load']:.1f} / {r['train_load']:.1f} / {r['fpd_load']:.1f}")
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
