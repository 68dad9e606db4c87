"""ms per shower of the shipped ``ds2-electrons`` copula (with and without its output calibration)
and of a ``sim-quantile`` model folder, torch float32 on the CPU, at batch 1, 100 and 1000.

    python benchmarks/bench_copula_speed.py --threads 2 [--sim-quantile bench-output/study/sim-quantile_model]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def ms(draw, batch: int, min_time: float = 2.0) -> float:
    e = torch.from_numpy(np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e5), batch)).astype(np.float32))
    draw(e)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time or n < 3:
        draw(e)
        n += 1
    return 1e3 * (time.perf_counter() - t0) / (n * batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sim-quantile", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from caloforge.models import load_model
    from caloforge.models.pretrained import resolve

    m = load_model(resolve("ds2-electrons"))
    g = torch.Generator().manual_seed(0)
    cases = {"ds2-electrons (copula, calibrated)": lambda e: m.sample(e, generator=g),
             "ds2-electrons, calibrate=False": lambda e: m.sample(e, generator=g, calibrate=False)}
    if args.sim_quantile:
        s = load_model(args.sim_quantile)
        cases["sim-quantile"] = lambda e: s.sample(e, generator=g)
    print(f"torch float32, {args.threads} CPU threads; ms per shower")
    for name, draw in cases.items():
        print(f"{name}: " + ", ".join(f"batch {b}: {ms(draw, b):.3g}" for b in (1, 100, 1000)), flush=True)


if __name__ == "__main__":
    main()
