"""Where the copula MLE's low-energy bias comes from: the MLE on parts of its likelihood.

    OMP_NUM_THREADS=1 python benchmarks/calibration_low_energy.py > benchmarks/calibration_low_energy.txt

Test showers: rows 12,000-14,999 of the first Geant4 file with 2 <= E_inc < 3.5 GeV (held back
from the copula's fit). Each likelihood is maximised on a 600-point log grid over 1-8 GeV
(0.3% spacing, finer than the 8% resolution): E_tot alone (the copula's conditional marginal of
E_tot / E_inc, with its Jacobian), E_tot plus the layer fractions' marginals without their
copula, the ``energies`` part (E_tot and layer fractions with the copula), and the full
``shower`` likelihood; then E_tot / <E_tot / E_inc> (0.9644, the training showers' mean) for scale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FILE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"


def main() -> int:
    if not FILE.is_file():
        print(f"the shared data are absent ({FILE})", file=sys.stderr)
        return 1
    import torch

    from caloforge.data import open_showers
    from caloforge.models import load_model

    torch.set_num_threads(1)
    m = load_model("ds2-electrons").eval().double()
    e_all, x_all = open_showers(FILE).read(12000, 15000)
    sel = (e_all >= 2e3) & (e_all < 3.5e3)
    e, x = e_all[sel].astype(np.float64), torch.from_numpy(x_all[sel].astype(np.float64))
    tot, lay, _ = m._split(x)
    one = torch.ones((), dtype=torch.float64)
    sp = m.config.likelihood_spacing
    grid = torch.exp(torch.linspace(np.log(1e3), np.log(8e3), 600, dtype=torch.float64))
    prof = m.likelihood_of_energy(x)
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("E_tot alone", "E_tot + layer marginals, no copula",
                                                           "energies part (with copula)", "full shower likelihood")}
    for g in grid:
        eg = torch.full((len(e),), float(g), dtype=torch.float64)
        _, dt = m.total.log_density(tot / eg[:, None], eg, scale=one, spacing=sp)
        _, dl = m.layers.log_density(lay / tot, eg, scale=one, spacing=sp)
        rows["E_tot alone"].append(dt.sum(1) - torch.log(eg))
        rows["E_tot + layer marginals, no copula"].append(dt.sum(1) + dl.sum(1) - torch.log(eg))
        rows["energies part (with copula)"].append(m.log_prob(eg, x, part="energies"))
        rows["full shower likelihood"].append(prof(eg))
    print(f"{len(e)} test showers with 2 <= E_inc < 3.5 GeV; bias = mean(E_hat/E - 1) +- s.e., res = std(E_hat/E)")
    for name, vals in rows.items():
        r = grid[torch.stack(vals, 1).argmax(1)].numpy() / e - 1
        print(f"  {name:36s} bias {100 * r.mean():+.2f} +- {100 * r.std() / np.sqrt(len(r)):.2f}%  res {100 * r.std():.2f}%")
    r = tot[:, 0].numpy() / 0.9644 / e - 1
    print(f"  {'E_tot / 0.9644':36s} bias {100 * r.mean():+.2f} +- {100 * r.std() / np.sqrt(len(r)):.2f}%  res {100 * r.std():.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
