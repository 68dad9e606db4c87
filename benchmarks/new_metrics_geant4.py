"""PRDC and the multiclass classifier on real Geant4 DS2 showers: two halves of the shared file
(the floor) and the second half with every voxel x1.05 (a 5% energy-scale error).

    python benchmarks/new_metrics_geant4.py --n 15000     # rows of ../shared/data/g4_ds2_electrons_1-100GeV.h5

Prints PRDC (k = 5, high-level features standardised, and the official script's log10 voxels)
of half B and of half B x1.05 against half A, and the multiclass log-posteriors of a classifier
over [half A, half B, half B x1.05] (fast preset: at most 25 epochs, patience 10).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

G4 = Path(__file__).resolve().parents[2] / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=15_000)
    ap.add_argument("--file", type=Path, default=G4)
    ap.add_argument("--epochs", type=int, default=25)
    args = ap.parse_args()
    import torch

    from caloforge.data import open_showers
    from caloforge.evaluation.classifier import ClassifierConfig, high_level_inputs, multiclass_test
    from caloforge.evaluation.prdc import PRDCConfig, prdc, voxel_inputs
    from caloforge.features import apply_threshold, compute_features

    torch.set_num_threads(1)
    f = open_showers(args.file)
    e, s = f.read(0, min(args.n, f.n))
    s = apply_threshold(s, f.geometry.readout_threshold)
    h = len(e) // 2
    parts = {"half A": (e[:h], s[:h]), "half B": (e[h:], s[h:]),
             "half B x1.05": (e[h:], apply_threshold(s[h:] * np.float32(1.05), f.geometry.readout_threshold))}
    hl = {k: high_level_inputs(compute_features(ei, si, f.geometry, threshold=0.0)) for k, (ei, si) in parts.items()}
    vox = {k: voxel_inputs(si) for k, (_, si) in parts.items()}
    print(f"Geant4 DS2, {h} vs {len(e) - h} showers ({args.file.name})\n")
    print("| against half A | inputs | precision | recall | density | coverage | seconds |\n|---|---|---|---|---|---|---|")
    for name in ("half B", "half B x1.05"):
        for inputs, data, cfg in (("high-level", hl, PRDCConfig.official()), ("log10 voxels", vox, PRDCConfig.voxels())):
            t = time.perf_counter()
            r = prdc(data["half A"], data[name], cfg)
            print(f"| {name} | {inputs} | {r.precision:.3f} | {r.recall:.3f} | {r.density:.3f} | {r.coverage:.3f} "
                  f"| {time.perf_counter() - t:.1f} |")
    t = time.perf_counter()
    mc = multiclass_test(list(hl.values()), ClassifierConfig.fast(max_epochs=args.epochs), seed=0)
    print(f"\nmulticlass (high-level, fast preset, {mc.epochs_run} epochs, best {mc.best_epoch}, "
          f"{time.perf_counter() - t:.0f} s): mean log-posterior on half A's validation showers, "
          f"chance log(1/3) = {math.log(1 / 3):.3f}")
    for name, v in zip(hl, mc.log_posterior, strict=True):
        print(f"  {name}: {v:.3f}")
    print(f"  validation accuracy {mc.accuracy:.3f}")


if __name__ == "__main__":
    main()
