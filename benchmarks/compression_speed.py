"""Speed alone of the shipped student's ONNX variants (float32, fp16, int8) and of torch, on
``--threads`` threads of an otherwise idle machine: the timing part of ``compression_table.py``
without its classifiers (which take half an hour), for the speed targets of the deployment work.

    python benchmarks/compression_speed.py --threads 2 --out bench-output/compression-speed

Each variant is timed at batch 1, 100 and 1000 (``ms_per_shower`` of compression_table.py:
a warm-up draw, then at least one second of draws), ``--repeats`` rounds interleaved over the
variants, the fastest of each kept. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compression_table import ms_per_shower  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ds2-electrons-cfm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench-output/compression-speed"))
    a = ap.parse_args()
    from caloforge._threads import configure_threads
    from caloforge.export.compress import compress_model
    from caloforge.export.onnx import OnnxSampler, export_onnx
    from caloforge.models import load_model
    from caloforge.models.pretrained import resolve

    configure_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    src = resolve(a.model)
    base = load_model(src)
    float_onnx = a.out / "float32.onnx"
    export_onnx(base, float_onnx)
    files = {"uncompressed (ONNX Runtime)": float_onnx}
    for method in ("fp16", "int8"):
        folder = a.out / f"model-{method}"
        if not folder.exists():
            summary = compress_model(src, method, folder)
        else:
            import json

            summary = json.loads((folder / "model.json").read_text())["compression"]
        files[method] = folder / summary["file"]

    gen = torch.Generator().manual_seed(1)
    draws = {"uncompressed (torch)": lambda e: base.sample(torch.from_numpy(np.asarray(e, np.float32)), generator=gen)}
    for name, path in files.items():
        sampler = OnnxSampler(path, threads=a.threads)
        rng = np.random.default_rng(1)
        draws[name] = (lambda s, r: (lambda e: s.sample(np.asarray(e, np.float32), rng=r)))(sampler, rng)
    e_pool = np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e5), 4000)).astype(np.float32)
    best: dict[str, dict[int, float]] = {n: {} for n in draws}
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(a.repeats):
            for name, draw in draws.items():
                for bs in (1, 100, 1000):
                    best[name][bs] = min(ms_per_shower(draw, e_pool, bs), best[name].get(bs, np.inf))
    ref = best["uncompressed (ONNX Runtime)"]
    print(f"{a.model}, {a.threads} threads, best of {a.repeats} interleaved rounds ({time.perf_counter() - t:.0f} s)\n")
    print("| variant | size | ms/shower b=1 | b=100 | b=1000 | speed-up at b=1000 vs float ONNX |")
    print("|---|---|---|---|---|---|")
    sizes = {"uncompressed (torch)": (src / "model.safetensors").stat().st_size,
             **{n: p.stat().st_size for n, p in files.items()}}
    for name, ms in best.items():
        print(f"| {name} | {sizes[name] / 2**20:.2f} MiB | {ms[1]:.2f} | {ms[100]:.3f} | {ms[1000]:.3f} | "
              f"{ref[1000] / ms[1000]:.2f}x |")


if __name__ == "__main__":
    main()
