"""The benchmark table of the issue "Generative surrogates": fidelity and speed of every model.

For the shipped models (the Gaussian copula ``ds2-electrons``, the flow-matching teacher and its
one-step student, the per-voxel baseline), any ``--extra`` model folders and the parametric
simulator: generate showers for the incident energies of the held-out Geant4
showers (the last ``--n-test`` rows of the shared DS2 file, never used in training), evaluate
them with the CaloChallenge metrics (official classifier protocol), and time generation on the
CPU at batch sizes 1, 100 and 1000. A Geant4 sample from the training rows gives the floor.

    python benchmarks/model_table.py --threads 2 --out bench-output/models
    python benchmarks/model_table.py --models runs/ds2     # teacher/ and student/ of train_ds2.py
    python benchmarks/model_table.py --only ds2-electrons,copula-uncalibrated \
        --extra copula-uncalibrated=bench-output/study/copula-uncalibrated_model

Speed: torch float32 at batch 1, 100, 1000 for every model; ONNX Runtime (float32, same
threads) for the student as well. The table (markdown, with the published CaloChallenge DS2 rows
below it) is printed and written to OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

G4_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"


def ms_per_shower(draw, e_pool: np.ndarray, batch: int, min_time: float = 1.5) -> float:
    draw(e_pool[:batch])  # warm-up
    reps, t0 = 0, time.perf_counter()
    while True:
        draw(e_pool[(reps * batch) % (len(e_pool) - batch) :][:batch])
        reps += 1
        dt = time.perf_counter() - t0
        if dt > min_time or (batch == 1 and reps >= 50):
            return 1e3 * dt / (reps * batch)


def onnx_ms(model, e_pool: np.ndarray, threads: int) -> dict[int, float]:
    """ms per shower of the model's ONNX export under ONNX Runtime (empty without onnxruntime)."""
    import tempfile

    try:
        from caloforge.export.onnx import OnnxSampler, export_onnx
    except ImportError:
        return {}
    path = export_onnx(model, Path(tempfile.mkdtemp()) / "model.onnx")
    sampler = OnnxSampler(path, threads=threads)
    rng = np.random.default_rng(0)
    return {b: ms_per_shower(lambda e: sampler.sample(np.asarray(e, np.float32), rng=rng), e_pool, b) for b in (1, 100, 1000)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=G4_FILE)
    ap.add_argument("--n-test", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench-output/models"))
    ap.add_argument("--fast", action="store_true", help="fast classifier preset instead of the official one")
    ap.add_argument("--teacher-steps", type=int, default=None, help="solver steps of the teacher")
    ap.add_argument("--models", type=Path, default=None,
                    help="train_ds2.py output folder (teacher/, student/) instead of the shipped flow-matching models")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=DIR",
                    help="also evaluate the model folder DIR under NAME (repeatable)")
    ap.add_argument("--only", default=None,
                    help="comma-separated names: evaluate only these models (the Geant4 floor always; "
                         "'parametric' for the simulator)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    from caloforge.data import open_showers, write_showers
    from caloforge.data.hdf5 import provenance
    from caloforge.evaluation.classifier import ClassifierConfig
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate, write_json
    from caloforge.models import load_model
    from caloforge.models.pretrained import resolve
    from caloforge.simulation import ParametricSimulator

    f = open_showers(args.data)
    n = f.n
    e_test, x_test = f.read(n - args.n_test, n)
    e_floor, x_floor = f.read(n - 2 * args.n_test - 3000, n - args.n_test - 3000)  # training rows
    ref_path = args.out / "geant4_test.h5"
    write_showers(ref_path, e_test, x_test, provenance("geant4 (held-out rows)"))
    write_showers(args.out / "geant4_train_rows.h5", e_floor, x_floor, provenance("geant4 (training rows)"))

    rows = {}
    samples = {"Geant4 (training rows)": args.out / "geant4_train_rows.h5"}
    e_pool = np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e5), 4000)).astype(np.float32)

    only = None if args.only is None else set(args.only.split(","))
    if only is None or "parametric" in only:
        sim = ParametricSimulator("ds2")
        rng = np.random.default_rng(1)
        sim_draw = lambda e: sim.sample(e, rng)  # noqa: E731
        t = time.perf_counter()
        write_showers(args.out / "parametric.h5", e_test, sim_draw(e_test), provenance("parametric"))
        rows["parametric simulator"] = {"gen_s": time.perf_counter() - t, "parameters": 0, "train_s": None,
                                        "ms": {b: ms_per_shower(sim_draw, e_pool, b) for b in (1, 100, 1000)}}
        samples["parametric simulator"] = args.out / "parametric.h5"

    models = {"ds2-electrons": "ds2-electrons", "ds2-electrons-cfm": "ds2-electrons-cfm",
              "ds2-electrons-teacher": "ds2-electrons-teacher", "voxel-lognormal-ds2": "voxel-lognormal-ds2"}
    if args.models is not None:
        models["ds2-electrons-cfm"] = str(args.models / "student")
        models["ds2-electrons-teacher"] = str(args.models / "teacher")
    for item in args.extra:
        name, _, where = item.partition("=")
        models[name] = where
    if only is not None:
        models = {k: v for k, v in models.items() if k in only}
    for name, where in models.items():
        model_dir = resolve(where)
        model = load_model(model_dir)
        torch.manual_seed(0)
        meta = json.loads((Path(model_dir) / "model.json").read_text())
        gen = torch.Generator().manual_seed(1)
        opts = {"steps": args.teacher_steps} if (args.teacher_steps and model.name == "cfm") else {}

        def draw(e, model=model, gen=gen, opts=opts):
            return model.sample(torch.from_numpy(np.asarray(e, np.float32)), generator=gen, **opts).numpy()

        t = time.perf_counter()
        out = np.concatenate([draw(e_test[a : a + 500]) for a in range(0, len(e_test), 500)])
        gen_s = time.perf_counter() - t
        write_showers(args.out / f"{name}.h5", e_test, out, provenance(name))
        samples[name] = args.out / f"{name}.h5"
        ms = {b: ms_per_shower(draw, e_pool, b, min_time=1.0 if b == 1 else 1.5) for b in (1, 100, 1000)}
        rows[name] = {"gen_s": gen_s, "parameters": model.n_parameters(), "ms": ms,
                      "train_s": (meta.get("training") or {}).get("seconds"), "model": model.name,
                      "stored": sum(t.numel() for t in model.state_dict().values())}
        if model.name == "cfm-student":
            rows[name]["ms_onnx"] = onnx_ms(model, e_pool, args.threads)
        print(name, rows[name], flush=True)

    cfg = ClassifierConfig.fast() if args.fast else ClassifierConfig.official()
    res, _ = evaluate(open_showers(ref_path), {k: open_showers(v) for k, v in samples.items()},
                      EvaluationOptions(classifier=cfg, seed=0))
    write_json(res, args.out / "metrics.json")
    (args.out / "timing.json").write_text(json.dumps(rows, indent=2))

    lines = [f"DS2 electrons 1-100 GeV: {args.n_test} held-out Geant4 showers as reference; "
             f"{args.threads} CPU threads; classifier: {'fast' if args.fast else 'official'} protocol", "",
             "| model | AUC low | AUC high | FPD x1e3 | KPD x1e3 | sep. E_tot/E_inc | ms/shower b=1 | b=100 | b=1000 "
             "| parameters (numbers stored) | training |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda d: "–" if not d or d.get("value") is None else f"{d['value']:.3g} ± {d['error']:.2g}"  # noqa: E731
    for b in res["generated"]:
        r = rows.get(b["name"], {})
        ms = r.get("ms", {})
        times = [f"{ms[k]:.3g}" if k in ms else "–" for k in (1, 100, 1000)]
        if r.get("ms_onnx"):
            times = [f"{t} (onnx {r['ms_onnx'][k]:.3g})" for t, k in zip(times, (1, 100, 1000))]
        train = f"{r['train_s'] / 60:.1f} min CPU" if r.get("train_s") else "–"
        stored = f" ({r['stored']:,})" if r.get("stored") else ""
        lines.append(f"| {b['name']} | {b['cls_low']['auc']:.3f} | {b['cls_high']['auc']:.3f} | {fmt(b.get('fpd'))} | "
                     f"{fmt(b.get('kpd'))} | {b['separation_power']['etot_einc']:.2e} | " + " | ".join(times)
                     + f" | {r.get('parameters', '–')}{stored} | {train} |")
    from caloforge.evaluation.published import published_results

    lines += ["", "CaloChallenge DS2 (published, official FTFP_BERT files, their hardware; CPU ms at batch 1/100/10000):",
              "", "| model | AUC low | AUC high | FPD x1e3 | KPD x1e3 | CPU ms b=1 | b=100 | b=10000 | parameters |",
              "|---|---|---|---|---|---|---|---|---|"]
    num = lambda v, f=".3g": "–" if v is None else format(v, f)  # noqa: E731
    for p in published_results("ds2"):
        lines.append(f"| {p.model} | {num(p.auc_low, '.3f')} | {num(p.auc_high, '.3f')} | {num(p.fpd)} | {num(p.kpd)} | "
                     f"{num(p.ms_cpu_1)} | {num(p.ms_cpu_100)} | {num(p.ms_cpu_10000)} | {num(p.parameters, '.0f')} |")
    text = "\n".join(lines)
    print("\n" + text)
    (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
