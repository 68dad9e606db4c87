"""Sampling speed of the ``cfm`` teacher and the ``cfm-student``: ms per shower on the CPU.

    python benchmarks/bench_cfm_speed.py --threads 2                        # default-size models
    python benchmarks/bench_cfm_speed.py --models runs/ds2 --threads 2      # trained ones (OUT of train_ds2.py)

Backends: torch float32, torch with bfloat16 autocast (fast on CPUs with AMX), and ONNX Runtime
float32 (the student, and the teacher with --onnx-teacher). Batch sizes 1, 100, 1000 by default;
the teacher with ``--steps`` steps of ``--solver``. Speed does not depend on the weights, so
untrained default-size models measure the same as trained ones. Prints a table and writes JSON
with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from caloforge.geometry import get_geometry
from caloforge.models import build_model, load_model


def timed(fn, batch: int, min_time: float = 2.0, max_reps: int = 200) -> float:
    fn()  # warm-up
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        el = time.perf_counter() - t0
        if el >= min_time or reps >= max_reps or (batch >= 1000 and reps >= 2):
            return el / (reps * batch) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=None, help="folder with teacher/ and student/ (train_ds2.py --out)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 100, 1000])
    p.add_argument("--steps", type=int, default=None, help="teacher solver steps (default: its config)")
    p.add_argument("--solver", default=None)
    p.add_argument("--onnx-teacher", action="store_true")
    p.add_argument("--skip-teacher-1000", action="store_true", help="teacher at batch <= 100 only (slow)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.models:
        teacher, student = load_model(a.models / "teacher"), load_model(a.models / "student")
    else:
        g = get_geometry("ds2")
        teacher, student = build_model("cfm", g).eval(), build_model("cfm-student", g).eval()
    opts = teacher.solver_options(a.steps, a.solver)
    steps, solver = opts["steps"], opts["solver"]
    rows = []

    def torch_fn(model, batch, **opt):
        e = torch.full((batch,), 2e4)
        g = torch.Generator().manual_seed(0)
        return lambda: model.sample(e, generator=g, **opt)

    def onnx_fn(model, batch, **export_opt):
        from caloforge.export.onnx import OnnxSampler, export_onnx

        path = Path(tempfile.mkdtemp()) / f"{model.name}.onnx"
        export_onnx(model, path, **export_opt)
        s = OnnxSampler(path, threads=a.threads)
        e = np.full(batch, 2e4, np.float32)
        z_e, z_s = s.noise(batch, np.random.default_rng(0))
        return lambda: s.run(e, z_e, z_s)

    for batch in a.batches:
        for name, model, opts in (
            ("student torch fp32", student, {"bf16": False}),
            ("student torch bf16", student, {"bf16": True}),
        ):
            rows.append((name, batch, timed(torch_fn(model, batch, **opts), batch)))
        rows.append(("student onnxruntime fp32", batch, timed(onnx_fn(student, batch), batch)))
        if not (a.skip_teacher_1000 and batch >= 1000):
            label = f"teacher {steps}x{solver}"
            rows.append((f"{label} torch fp32", batch,
                         timed(torch_fn(teacher, batch, steps=steps, solver=solver, bf16=False), batch)))
            rows.append((f"{label} torch bf16", batch,
                         timed(torch_fn(teacher, batch, steps=steps, solver=solver, bf16=True), batch)))
            if a.onnx_teacher:
                rows.append((f"{label} onnxruntime fp32", batch,
                             timed(onnx_fn(teacher, batch, steps=steps, solver=solver), batch)))
        for r in rows[-6:]:
            if r[1] == batch:
                print(f"{r[0]:40s} batch {r[1]:5d}: {r[2]:9.3f} ms/shower", flush=True)
    out = {
        "threads": a.threads,
        "parameters": {"teacher": teacher.n_parameters(), "student": student.n_parameters()},
        "ms_per_shower": [{"backend": n, "batch": b, "ms": ms} for n, b, ms in rows],
    }
    print(json.dumps(out["parameters"]))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
