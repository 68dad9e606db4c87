"""What each compression of the shipped one-step student costs: size, speed and fidelity.

For ``ds2-electrons-cfm`` and its ``caloforge compress`` variants (fp16, int8: ONNX graphs run
by ONNX Runtime; ternary, prune:0.5: model folders run by torch), generate showers for the
incident energies of the held-out Geant4 showers (rows 12,000-14,999 of the shared DS2 file,
never used in training), evaluate them against those showers (classifier AUCs with the ``fast``
preset unless ``--official``, FPD), and time sampling at batch 1, 100 and 1000 on ``--threads``
CPU threads. The uncompressed model is timed both in torch and in ONNX Runtime, so every
variant has its like-for-like baseline.

    python benchmarks/compression_table.py --threads 1 --out bench-output/compression

Writes OUT/table.md (printed too), OUT/metrics.json, OUT/timing.json and the variants' folders.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

G4_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"
METHODS = ("fp16", "int8", "ternary", "prune:0.5")


def ms_per_shower(draw, e_pool: np.ndarray, batch: int, min_time: float = 1.0) -> float:
    draw(e_pool[:batch])  # warm-up
    reps, t0 = 0, time.perf_counter()
    while True:
        draw(e_pool[(reps * batch) % (len(e_pool) - batch) :][:batch])
        reps += 1
        dt = time.perf_counter() - t0
        if dt > min_time or (batch == 1 and reps >= 50):
            return 1e3 * dt / (reps * batch)


def dir_bytes(path: Path, names: tuple[str, ...]) -> int:
    return sum((path / n).stat().st_size for n in names if (path / n).is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=G4_FILE)
    ap.add_argument("--rows", default="12000:15000", help="held-out rows START:STOP of --data")
    ap.add_argument("--model", default="ds2-electrons-cfm")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--finetune-steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--official", action="store_true", help="official classifier protocol instead of the fast preset")
    ap.add_argument("--hidden-units", type=int, default=None,
                    help="classifier width (default: the preset's 2048; 512 fits a shared 2-core machine)")
    ap.add_argument("--out", type=Path, default=Path("bench-output/compression"))
    ap.add_argument("--repeats", type=int, default=3,
                    help="timing rounds over all variants in turn; the table keeps each one's fastest")
    ap.add_argument("--retime", action="store_true",
                    help="only time again the variants already in OUT (and redo the table from OUT/metrics.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    args.out.mkdir(parents=True, exist_ok=True)

    from caloforge.data import open_showers, write_showers
    from caloforge.data.hdf5 import provenance
    from caloforge.evaluation.classifier import ClassifierConfig
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate, write_json
    from caloforge.export.compress import FineTuneConfig, compress_model
    from caloforge.export.onnx import OnnxSampler, export_onnx
    from caloforge.models import load_model
    from caloforge.models.pretrained import resolve

    a, b = (int(v) for v in args.rows.split(":"))
    e_test, x_test = open_showers(args.data).read(a, b)
    ref_path = args.out / "geant4_test.h5"
    write_showers(ref_path, e_test, x_test, provenance("geant4 (held-out rows)"))
    e_pool = np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e5), 4000)).astype(np.float32)

    src = resolve(args.model)
    base = load_model(src)
    rows: dict[str, dict] = {}
    samples: dict[str, Path] = {}

    def torch_draw(model, seed: int = 1):
        gen = torch.Generator().manual_seed(seed)
        return lambda e: model.sample(torch.from_numpy(np.asarray(e, np.float32)), generator=gen).numpy()

    def onnx_draw(path: Path, seed: int = 1):
        sampler = OnnxSampler(path, threads=args.threads)
        rng = np.random.default_rng(seed)
        return lambda e: sampler.sample(np.asarray(e, np.float32), rng=rng)

    draws: dict[str, object] = {}
    retime = args.retime and (args.out / "metrics.json").is_file() and (args.out / "timing.json").is_file()
    if retime:
        rows = json.loads((args.out / "timing.json").read_text())

    def record(name: str, draw, size: int, backend: str, extra: dict | None = None) -> None:
        draws[name] = draw
        if retime:
            return
        t = time.perf_counter()
        out = np.concatenate([draw(e_test[i : i + 500]) for i in range(0, len(e_test), 500)])
        gen_s = time.perf_counter() - t
        path = args.out / f"{name.replace(':', '_')}.h5"
        write_showers(path, e_test, out, provenance(name))
        samples[name] = path
        rows[name] = {"bytes": size, "backend": backend, "gen_s": round(gen_s, 1), **(extra or {})}
        print(name, rows[name], flush=True)

    weights = src / "model.safetensors"
    record("uncompressed (torch)", torch_draw(base), weights.stat().st_size, "torch")
    float_onnx = args.out / "float32.onnx"
    if not retime:
        export_onnx(base, float_onnx)
    record("uncompressed (onnx)", onnx_draw(float_onnx), float_onnx.stat().st_size, "onnxruntime")

    cfg = FineTuneConfig(steps=args.finetune_steps)
    for method in args.methods.split(","):
        folder = args.out / f"model-{method.replace(':', '_')}"
        if retime:
            summary = json.loads((folder / "model.json").read_text())["compression"]
        else:
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            summary = compress_model(src, method, folder, cfg, log=print)
        extra = {"compress_s": summary["seconds"], "finetune_loss": (summary.get("finetune") or {}).get("final_loss")}
        if "file" in summary:
            record(method, onnx_draw(folder / summary["file"]), summary["bytes"], "onnxruntime", extra)
        else:
            record(method, torch_draw(load_model(folder)), summary["bytes"], "torch", extra)

    # timing: every variant in turn, --repeats rounds, the fastest of each (a shared machine's
    # load comes and goes; interleaving spreads it over all variants alike)
    best: dict[str, dict[int, float]] = {name: {} for name in draws}
    for _ in range(args.repeats):
        for name, draw in draws.items():
            for bs in (1, 100, 1000):
                ms = ms_per_shower(draw, e_pool, bs)
                best[name][bs] = min(ms, best[name].get(bs, np.inf))
    for name in draws:
        rows[name]["ms"] = best[name]
        print(name, "ms/shower", {k: round(v, 3) for k, v in best[name].items()}, flush=True)
    (args.out / "timing.json").write_text(json.dumps(rows, indent=2))

    cls = ClassifierConfig.official() if args.official else ClassifierConfig.fast()
    if args.hidden_units:
        cls = ClassifierConfig.official(**{**cls.__dict__, "hidden_units": args.hidden_units})
    if retime:
        res = json.loads((args.out / "metrics.json").read_text())
    else:
        t = time.perf_counter()
        res, _ = evaluate(open_showers(ref_path), {k: open_showers(v) for k, v in samples.items()},
                          EvaluationOptions(metrics=("fpd", "cls-low", "cls-high"), classifier=cls, seed=0))
        print(f"evaluation {time.perf_counter() - t:.0f} s", flush=True)
        write_json(res, args.out / "metrics.json")

    by = {g["name"]: g for g in res["generated"]}
    lines = [f"DS2 electrons: {len(e_test):,} held-out Geant4 showers (rows {a:,}-{b - 1:,}) as reference; "
             f"{args.threads} CPU thread(s) on a shared machine; classifier: {'official' if args.official else 'fast'} "
             f"preset, {cls.hidden_units} hidden units; fine-tune {args.finetune_steps} steps x {cfg.batch_size} showers; "
             f"ms/shower: fastest of {args.repeats} interleaved rounds", "",
             "| variant | runtime | size on disk | ms/shower b=1 | b=100 | b=1000 | AUC low | AUC high | FPD x1e3 "
             "| change vs uncompressed (size, ms b=1000, AUC low, AUC high, FPD) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def auc(g: dict, key: str) -> float:
        return float(g[key]["auc"])

    for name, r in rows.items():
        g = by[name]
        baseline = "uncompressed (onnx)" if r["backend"] == "onnxruntime" else "uncompressed (torch)"
        r0, g0 = rows[baseline], by[baseline]
        fpd, fpd0 = g["fpd"]["value"], g0["fpd"]["value"]
        r["ms"] = {int(k): v for k, v in r["ms"].items()}
        r0["ms"] = {int(k): v for k, v in r0["ms"].items()}
        change = "–" if name == baseline else (
            f"{r0['bytes'] / r['bytes']:.1f}x smaller, {r0['ms'][1000] / r['ms'][1000]:.2f}x speed, "
            f"{auc(g, 'cls_low') - auc(g0, 'cls_low'):+.3f}, {auc(g, 'cls_high') - auc(g0, 'cls_high'):+.3f}, "
            f"{fpd - fpd0:+.2f}")
        lines.append(f"| {name} | {r['backend']} | {r['bytes'] / 2**20:.2f} MiB | {r['ms'][1]:.3g} | {r['ms'][100]:.3g} "
                     f"| {r['ms'][1000]:.3g} | {auc(g, 'cls_low'):.3f} | {auc(g, 'cls_high'):.3f} | "
                     f"{fpd:.3g} ± {g['fpd']['error']:.2g} | {change} |")
    text = "\n".join(lines)
    print("\n" + text)
    (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
