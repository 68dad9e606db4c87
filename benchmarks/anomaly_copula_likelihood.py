"""The Gaussian copula's likelihood as an anomaly score, on the split of ``anomaly_study.py``.

    OMP_NUM_THREADS=1 python benchmarks/anomaly_copula_likelihood.py --threads 1 > benchmarks/anomaly_copula_likelihood.txt

The shipped default model ``ds2-electrons`` (a Gaussian copula, fitted on rows 0-11,999 of the
first Geant4 file plus the second file) scores ``-log p(shower | E_inc)`` with its pseudo-likelihood
(``GaussianCopula.log_prob``: marginal densities and the copula density of the normal scores;
see its docstring), and the same in energy-calibrated form (``likelihood_z``: mean and spread as
functions of log E_inc fitted on background rows 10,000-11,999, which the copula was fitted on:
conservative, as for the autoencoders of ``anomaly_study.py``). Background: rows 12,000-14,999
(never fitted on); signal: ``g4_ds2_two_electrons_dev.h5``. Also run: the ``energies`` part
alone (E_tot and the layer fractions, no voxels), to show where the power comes from.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BKG = DATA / "g4_ds2_electrons_1-100GeV.h5"
SIG = DATA / "g4_ds2_two_electrons_dev.h5"
TEST_ROWS = (12000, 15000)
CAL_ROWS = (10000, 12000)
SEPARATIONS = ("0", "5", "10", "20")


class _Part:
    """The copula's likelihood restricted to one part (a HasLikelihood view for the score)."""

    def __init__(self, model, part: str):
        self.model, self.part, self.name, self.geometry = model, part, f"copula-{part}", model.geometry

    def log_prob(self, e_inc, showers):
        return self.model.log_prob(e_inc, showers, part=self.part)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if not BKG.is_file() or not SIG.is_file():
        print(f"the shared data are absent ({DATA})", file=sys.stderr)
        return 1
    from caloforge._threads import configure_threads

    configure_threads(a.threads)
    import torch

    from caloforge.anomaly.evaluation import evaluate_files
    from caloforge.anomaly.scores import calibrate, make_score, score_file, write_scores
    from caloforge.data import open_showers
    from caloforge.models import load_model

    model = load_model("ds2-electrons").eval()
    bkg, sig = open_showers(BKG), open_showers(SIG)
    out = Path(tempfile.mkdtemp(prefix="anomaly-copula-"))
    files = []
    costs = {}
    for part in ("shower", "energies"):
        score = make_score(_Part(model, part) if part != "shower" else model, "likelihood")  # type: ignore[arg-type]
        label = "copula" if part == "shower" else "copula-energies"
        cal = score_file(score, bkg, *CAL_ROWS, model_name=label)
        for tag, f, rows in (("bkg", bkg, TEST_ROWS), ("sig", sig, (0, None))):
            res = calibrate(score_file(score, f, rows[0], rows[1], model_name=label), cal)
            write_scores(out / f"{tag}_{label}.h5", res)
            files.append(out / f"{tag}_{label}.h5")
        e, s = bkg.read(TEST_ROWS[0], TEST_ROWS[0] + 1000)
        et, st = torch.from_numpy(e.astype(np.float32)), torch.from_numpy(s)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(0, 1000, 500):
                score(et[i : i + 500], st[i : i + 500])
            best = min(best, time.perf_counter() - t0)
        costs[label] = 1e3 * best / 1000
    ev = evaluate_files(BKG, SIG, files, "separation_mm")
    rows: dict[str, dict[str, tuple[float, float, float]]] = {}
    for m in ev.metrics:
        sep = m.bin.split("=")[1] if "=" in m.bin else "all"
        rows.setdefault(m.score, {})[sep] = (m.auc, m.sic["1e-03"], m.eps_s["1e-02"])
    print(f"background: {BKG.name} rows {TEST_ROWS[0]}-{TEST_ROWS[1] - 1}; signal: {SIG.name}")
    print("\n| score | " + " | ".join(f"{s} mm AUC / SIC(1e-3) / eps_S(1e-2)" for s in SEPARATIONS) + " | all AUC |")
    print("|---|" + "---|" * (len(SEPARATIONS) + 1))
    for name, by in rows.items():
        print(f"| {name} | " + " | ".join(f"{by[s][0]:.3f} / {by[s][1]:.2f} / {by[s][2]:.3f}" for s in SEPARATIONS)
              + f" | {by['all'][0]:.3f} |")
    for note in ev.notes:
        print(f"note: {note}")
    print(f"\ncost of scoring, ms per shower ({a.threads} thread(s), batch 500, showers in memory, best of 3):")
    for label, sec in costs.items():
        print(f"  {label}: {sec:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
