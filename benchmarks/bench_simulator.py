"""Throughput of the parametric shower simulator (showers per second), printed as a table.

    python benchmarks/bench_simulator.py [--n 20000] [--datasets ds2 ds3] [--threads 1 2]
                                         [--batch-sizes 64 256 1024 4096] [--energy SPEC] [--write]

Two measurements per dataset:

- ``sample(batch)``: :meth:`ParametricSimulator.sample` called on batches of the given size
  (one thread), i.e. the cost of the model itself including per-call overhead;
- ``iter_simulate``: the seeded, block-parallel driver used by ``caloforge simulate`` with 1
  and 2 threads (output identical whatever the thread count);
- with ``--write``: ``simulate_to_file`` end to end, with gzip (as the official files), lzf
  and no compression, which shows how much of a CLI run is spent compressing.

Each timing is the best of ``--repeat`` runs after a warm-up. Numbers depend on the energy
spectrum (more energy, more non-empty voxels): the default is the CLI's log-uniform 1 GeV-1 TeV.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from caloforge.data import parse_energy
from caloforge.geometry import get_geometry
from caloforge.simulation import ParametricSimulator, iter_simulate, simulate_to_file


def _best(fn, repeat: int) -> float:
    fn()  # warm-up (allocations, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="showers per DS2 timing (DS3: n / 5)")
    ap.add_argument("--datasets", nargs="+", default=["ds2", "ds3"])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 1024, 4096])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--energy", default="log-uniform:1GeV:1TeV")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="also time simulate_to_file (gzip, lzf, none)")
    args = ap.parse_args(argv)

    spec = parse_energy(args.energy)
    rows: list[tuple[str, str, str, float]] = []
    for name in args.datasets:
        geometry = get_geometry(name)
        n = args.n if geometry.n_voxels <= 10_000 else max(args.n // 5, 1)
        sim = ParametricSimulator(geometry)
        energies = spec.sample(n, np.random.default_rng(0))
        for bs in args.batch_sizes:
            def run(bs: int = bs, n: int = n, sim: ParametricSimulator = sim, energies=energies) -> None:
                rng = np.random.default_rng(1)
                for a in range(0, n, bs):
                    sim.sample(energies[a : a + bs], rng)

            rows.append((name, f"sample(batch={bs})", "1", n / _best(run, args.repeat)))
        for th in args.threads:
            def run_iter(th: int = th, n: int = n, sim: ParametricSimulator = sim, geometry=geometry) -> None:
                for _ in iter_simulate(geometry, n, spec, seed=1, threads=th, simulator=sim):
                    pass

            rate = n / _best(run_iter, args.repeat)
            rows.append((name, f"iter_simulate(block={sim.block_size})", str(th), rate))
        if args.write:
            with tempfile.TemporaryDirectory() as tmp:
                for comp in ("gzip", "lzf", None):
                    path = Path(tmp) / "bench.h5"

                    def run_file(comp: str | None = comp, path=path, geometry=geometry, n: int = n) -> None:
                        simulate_to_file(
                            path, geometry, n, spec, seed=1, threads=max(args.threads), compression=comp
                        )

                    rate = n / _best(run_file, 1)
                    rows.append((name, f"simulate_to_file({comp or 'none'})", str(max(args.threads)), rate))

    print(f"parametric simulator throughput, energies {args.energy}, {os.cpu_count()} CPU(s) visible")
    print()
    head = f"{'dataset':<8} {'mode':<34} {'threads':>7} {'showers/s':>11} {'us/shower':>10}"
    print(head)
    print("-" * len(head))
    for name, mode, th, rate in rows:
        print(f"{name:<8} {mode:<34} {th:>7} {rate:>11,.0f} {1e6 / rate:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
