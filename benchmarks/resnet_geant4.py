"""The 3-D ResNet classifier (``--metrics cnn``, official protocol) on real Geant4 DS2 showers.

Two parts, each on one CPU thread by default (no GPU needed; ResNet-18 trains at ~3 ms per shower
per epoch on one core of this machine):

    python benchmarks/resnet_geant4.py floor  --out bench-output/resnet   # two Geant4 halves
    python benchmarks/resnet_geant4.py models --out bench-output/resnet   # shipped models + simulator

``floor``: every shower of the two shared files (15,000 + 8,201), shuffled with a fixed seed and
cut into two halves; the ResNet classifier (official: ResNet-18, 50 epochs, best test epoch,
isotonic calibration) of half A against half B. Two samples of the same simulation: the AUC
should be 0.5 up to the validation split's noise (printed).

``models``: the reference of the model table (rows 12,000-14,999 of the first file, never
trained on); samples at its incident energies from every shipped model and the parametric
simulator, and 3,000 Geant4 showers of the training rows (the floor at this size); the ResNet
classifier of each against the reference and the multiclass classifier over all of them at
once (high-level inputs, official protocol), with the reference's halves as the multiclass floor.
Writes OUT/models/metrics.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = (SHARED / "g4_ds2_electrons_1-100GeV.h5", SHARED / "g4_ds2_electrons_1-100GeV_part2.h5")
MODELS = ("ds2-electrons", "ds2-electrons-cfm", "ds2-electrons-teacher", "voxel-lognormal-ds2")


def _progress(tag: str):
    def show(d: dict) -> None:
        print(f"  [{tag}] epoch {d['epoch']}/{d['max_epochs']} loss {d['train_loss']:.4f} "
              f"test acc {d['test_accuracy']:.4f} best {d['best_epoch']} ({d['seconds']:.0f} s)", flush=True)
    return show


def floor(args) -> None:
    from caloforge.data import open_showers
    from caloforge.evaluation.classifier import ClassifierConfig, classifier_test, low_level_inputs
    from caloforge.evaluation.resnet import ResNetConfig, build_resnet

    es, xs = [], []
    for path in FILES:
        f = open_showers(path)
        e, x = f.read(0, f.n)
        es.append(e)
        xs.append(x)
    geometry = f.geometry
    e, x = np.concatenate(es), np.concatenate(xs)
    del xs
    if args.n:
        e, x = e[: args.n], x[: args.n]
    low = low_level_inputs(e, x, threshold=geometry.readout_threshold)
    del x
    perm = np.random.default_rng(args.seed).permutation(len(low))
    h = len(low) // 2
    cfg = ClassifierConfig.official(max_epochs=args.epochs, device=args.device)
    net = ResNetConfig.official(depth=args.depth)
    shape = geometry.shape
    print(f"Geant4 DS2 halves: {h} vs {len(low) - h} showers, ResNet-{net.depth}, {cfg.max_epochs} epochs, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    r = classifier_test(low, low, cfg, seed=args.seed, build=lambda _: build_resnet(shape, net),
                        reference_rows=np.sort(perm[:h]), generated_rows=np.sort(perm[h:]),
                        progress=_progress("halves"))
    # The AUC of an uninformative score on n0 + n1 validation showers has standard deviation
    # sqrt((n0 + n1 + 1) / (12 n0 n1)) (Mann-Whitney U under the null).
    n1 = r.n_val // 2
    sd = math.sqrt((r.n_val + 1) / (12 * n1 * (r.n_val - n1)))
    out = {"n_half": h, "auc": r.auc, "auc_uncalibrated": r.auc_uncalibrated, "jsd": r.jsd,
           "best_epoch": r.best_epoch, "epochs": r.epochs_run, "n_train": r.n_train, "n_val": r.n_val,
           "null_sd": sd, "seconds": r.seconds, "threads": torch.get_num_threads(), "device": r.device}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "floor.json").write_text(json.dumps(out, indent=2))
    print(f"\nResNet-{net.depth}, Geant4 half A vs half B ({h} vs {len(low) - h}): AUC {r.auc:.4f} "
          f"(uncalibrated {r.auc_uncalibrated:.4f}), JSD {r.jsd:.4f}, best epoch {r.best_epoch} of "
          f"{r.epochs_run}; null sd of the AUC on {r.n_val} validation showers {sd:.4f}; {r.seconds / 60:.1f} min")


def models(args) -> None:
    from caloforge.data import open_showers, write_showers
    from caloforge.data.hdf5 import provenance
    from caloforge.evaluation.classifier import ClassifierConfig
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate, write_json
    from caloforge.evaluation.resnet import ResNetConfig
    from caloforge.models import load_model
    from caloforge.models.pretrained import resolve
    from caloforge.simulation import ParametricSimulator

    out = args.out / "models"
    out.mkdir(parents=True, exist_ok=True)
    f = open_showers(FILES[0])
    n, n_test = f.n, 3000
    e_test, x_test = f.read(n - n_test, n)
    e_floor, x_floor = f.read(n - 2 * n_test - 3000, n - n_test - 3000)  # training rows, as model_table.py
    write_showers(out / "geant4_test.h5", e_test, x_test, provenance("geant4 (held-out rows)"))
    write_showers(out / "geant4_train_rows.h5", e_floor, x_floor, provenance("geant4 (training rows)"))
    samples = {"Geant4 (training rows)": out / "geant4_train_rows.h5"}
    for name in MODELS:
        model = load_model(resolve(name))
        gen = torch.Generator().manual_seed(1)
        x = np.concatenate([model.sample(torch.from_numpy(e_test[a: a + 500]), generator=gen).numpy()
                            for a in range(0, n_test, 500)])
        write_showers(out / f"{name}.h5", e_test, x, provenance(name))
        samples[name] = out / f"{name}.h5"
        print(f"generated {name}", flush=True)
    sim = ParametricSimulator("ds2")
    write_showers(out / "parametric.h5", e_test, sim.sample(e_test, np.random.default_rng(1)), provenance("parametric"))
    samples["parametric simulator"] = out / "parametric.h5"

    shown: dict[str, int] = {}

    def progress(task: str, done: float, total: float) -> None:
        if int(done) > shown.get(task, -1):
            shown[task] = int(done)
            print(f"  {task}: epoch {int(done)}/{int(total)} ({(time.perf_counter() - t) / 60:.1f} min)", flush=True)

    t = time.perf_counter()
    opts = EvaluationOptions(metrics=("cnn", "multiclass"), floor=True, seed=0,
                             classifier=ClassifierConfig.official(max_epochs=args.epochs, device=args.device),
                             resnet=ResNetConfig.official(depth=args.depth))
    res, _ = evaluate(open_showers(out / "geant4_test.h5"), {k: open_showers(v) for k, v in samples.items()}, opts,
                      progress=progress)
    write_json(res, out / "metrics.json")
    mc = res.get("multiclass", {})
    print(f"\n{n_test} held-out Geant4 showers as reference; ResNet-{args.depth}, {args.epochs} epochs; "
          f"{(time.perf_counter() - t) / 60:.0f} min on {torch.get_num_threads()} thread(s)\n")
    lp = mc.get("log_posterior") or {}
    by_name = {g["name"]: g for g in res["generated"]}
    rows = [(name, by_name[name].get("cls_cnn", {}), by_name[name].get("multiclass_log_posterior")) for name in samples]
    rows.append(("reference half B (floor, 1,500 vs 1,500)", res["floor"].get("cls_cnn", {}),
                 res["floor"].get("multiclass_log_posterior")))
    print("| sample | ResNet AUC | JSD | best epoch | multiclass log-posterior |\n|---|---|---|---|---|")
    for name, c, v in rows:
        print(f"| {name} | {c.get('auc', float('nan')):.3f} | {c.get('jsd', float('nan')):.3f} | "
              f"{c.get('best_epoch')} | {'-' if v is None else f'{v:.3f}'} |")
    print(f"multiclass: reference class {lp.get('reference', float('nan')):.3f}, chance {mc.get('chance')}, accuracy {mc.get('accuracy')}, classes {mc.get('classes')}, "
          f"best epoch {mc.get('best_epoch')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("floor", "models"))
    ap.add_argument("--out", type=Path, default=Path("bench-output/resnet"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=50, help="official: 50")
    ap.add_argument("--depth", type=int, default=18, help="official: 18")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=None, help="floor: use only the first N showers (smoke runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not FILES[0].exists():
        raise SystemExit(f"{FILES[0]}: not found (needs ../shared/data)")
    (floor if args.part == "floor" else models)(args)


if __name__ == "__main__":
    main()
