"""Train the CFM teacher and its one-step student on the Geant4 DS2 file, within a time budget.

    python benchmarks/train_ds2.py --out runs/ds2 --teacher-time 12m --student-time 6m --threads 2
    python benchmarks/train_ds2.py --out runs/ds2_long --teacher-time 4h --student-time 1h --n-pairs 50000

The first ``--n-train`` showers (default 12,000) train, the last ``--n-test`` (3,000) are kept
aside for the closing check. Steps: (1) the ``cfm`` teacher trains with
:func:`caloforge.training.train` for ``--teacher-time`` (the step count is set from a short
timing so that the cosine learning-rate schedule ends with the budget); (2) the teacher integrates
its ODE for ``--n-pairs`` noise draws and the ``cfm-student`` regresses them for
``--student-time``; (3) both generate showers for the held-out incident energies and are compared
with Geant4 (E_tot/E_inc, layer profile, radial moments, sparsity; separation powers), and the
speed is measured. Writes ``OUT/teacher`` and ``OUT/student`` (:func:`caloforge.models.save_model`
folders; the training runs with checkpoints in ``OUT/runs``), ``OUT/summary.json`` and
``OUT/check.png``. Pair generation counts against neither budget.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from caloforge.data import open_showers
from caloforge.models import build_model, save_model

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"


def seconds(text: str) -> float:
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d*)?)\s*([hms]?)", text.strip().lower()):
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]
        pos = m.end()
    if pos == 0 or total <= 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}")
    return total


def step_time(model, e: torch.Tensor, x: torch.Tensor, batch: int, n: int = 6) -> float:
    """Seconds per optimisation step, measured on a copy of the model."""
    m = copy.deepcopy(model)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(n + 2):
        idx = torch.randint(0, len(e), (batch,), generator=g)
        t = time.perf_counter()
        loss = m.loss(e[idx], x[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:  # the first steps pay one-time costs
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def train_for(model, e, x, budget_s: float, batch: int, lr: float, run_dir: Path, seed: int, ema: float | None) -> dict:
    dt = step_time(model, e, x, batch)
    steps = max(10, int(budget_s / (dt * 1.05)))
    print(f"[{model.name}] {dt:.3f} s/step at batch {batch} -> {steps} steps in {budget_s / 60:.1f} min", flush=True)
    from caloforge.training import train

    res = train(model, (e.numpy(), x.numpy()), None, steps=steps, batch_size=batch, lr=lr, ema_decay=ema,
                max_time=budget_s * 1.15, run_dir=run_dir, seed=seed, device="cpu", progress=False,
                log_every=max(1, steps // 20), checkpoint_every=600.0)
    return {"steps": res.step, "planned_steps": steps, "train_loss": res.train_loss, "seconds": res.elapsed_s,
            "stop_reason": res.stop_reason}


def sample_all(model, e: torch.Tensor, batch: int = 500, **options) -> np.ndarray:
    g = torch.Generator().manual_seed(1234)
    out = [model.sample(e[a : a + batch], generator=g, **options).numpy() for a in range(0, len(e), batch)]
    return np.concatenate(out)


def separation(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float:
    ha, _ = np.histogram(a, edges)
    hb, _ = np.histogram(b, edges)
    ha = ha / max(ha.sum(), 1)
    hb = hb / max(hb.sum(), 1)
    return float(0.5 * np.sum((ha - hb) ** 2 / (ha + hb + 1e-16)))


def compare(geometry, e: np.ndarray, ref: np.ndarray, gen: np.ndarray) -> dict:
    from caloforge.features.highlevel import compute_features

    fr = compute_features(e, ref, geometry)
    fg = compute_features(e, gen, geometry)
    out: dict = {}
    rr, rg = fr.etot_einc, fg.etot_einc
    out["etot_einc_mean"] = [float(rr.mean()), float(rg.mean())]
    out["etot_einc_std"] = [float(rr.std()), float(rg.std())]
    bands = np.exp(np.linspace(np.log(1e3), np.log(1e5), 5))
    out["etot_einc_resolution_by_band"] = []
    for lo, hi in zip(bands[:-1], bands[1:]):
        m = (e >= lo) & (e < hi)
        out["etot_einc_resolution_by_band"].append(
            {"GeV": [round(lo / 1e3, 2), round(hi / 1e3, 2)], "g4": [float(rr[m].mean()), float(rr[m].std())],
             "model": [float(rg[m].mean()), float(rg[m].std())]})
    out["sep_etot_einc"] = separation(rr, rg, np.linspace(0.5, 1.3, 41))
    pr = (fr.e_layer / e[:, None]).mean(0)
    pg = (fg.e_layer / e[:, None]).mean(0)
    out["layer_profile_g4"] = pr.tolist()
    out["layer_profile_model"] = pg.tolist()
    main = pr > 0.01 * pr.max()
    out["layer_profile_max_rel_dev_main_layers"] = float(np.max(np.abs(pg[main] / pr[main] - 1)))
    out["shower_max_layer"] = [int(np.argmax(pr)), int(np.argmax(pg))]
    seps = []
    for k in range(fr.e_layer.shape[1]):
        lr_, lg_ = np.log10(fr.e_layer[:, k] + 1e-8), np.log10(fg.e_layer[:, k] + 1e-8)
        seps.append(separation(lr_, lg_, np.linspace(-8.5, 5, 55)))
    out["sep_layer_energy_mean"] = float(np.mean(seps))
    for name in ("sparsity", "ec_r", "width_r"):
        a, b = getattr(fr, name), getattr(fg, name)
        out[f"{name}_mean"] = [float(np.nanmean(a)), float(np.nanmean(b))]
        lo, hi = np.nanpercentile(np.concatenate([a.ravel(), b.ravel()]), [0.5, 99.5])
        seps = [separation(a[:, k][np.isfinite(a[:, k])], b[:, k][np.isfinite(b[:, k])], np.linspace(lo, hi, 41))
                for k in range(a.shape[1])]
        out[f"sep_{name}_mean"] = float(np.nanmean(seps))
    out["hits_per_shower"] = [float((ref > 0).sum(1).mean()), float((gen > 0).sum(1).mean())]
    return out


def speed(model, batch: int, reps: int = 2, **options) -> float:
    e = torch.full((batch,), 2e4)
    model.sample(e[: min(batch, 8)], **options)
    t = time.perf_counter()
    for _ in range(reps):
        model.sample(e, **options)
    return (time.perf_counter() - t) / (reps * batch) * 1e3


def plot(path: Path, geometry, e, ref, gens: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    L = geometry.n_layers
    bins = np.linspace(0.5, 1.3, 61)
    ax[0].hist(ref.sum(1) / e, bins, histtype="step", color="k", label="Geant4", density=True)
    for name, g in gens.items():
        ax[0].hist(g.sum(1) / e, bins, histtype="step", label=name, density=True)
    ax[0].set_xlabel("E_tot / E_inc")
    ax[0].legend()
    prof = lambda x: (x.reshape(len(x), L, -1).sum(-1) / e[:, None]).mean(0)  # noqa: E731
    ax[1].plot(prof(ref), "k-", label="Geant4")
    for name, g in gens.items():
        ax[1].plot(prof(g), "--", label=name)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("layer")
    ax[1].set_ylabel("<E_layer / E_inc>")
    rbins = np.logspace(-2, 4, 61)
    ax[2].hist(ref[ref > 0], rbins, histtype="step", color="k", label="Geant4", density=True)
    for name, g in gens.items():
        ax[2].hist(g[g > 0], rbins, histtype="step", label=name, density=True)
    ax[2].set_xscale("log")
    ax[2].set_yscale("log")
    ax[2].set_xlabel("voxel energy (MeV)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-train", type=int, default=12000)
    p.add_argument("--n-test", type=int, default=3000)
    p.add_argument("--teacher-time", type=seconds, default=seconds("12m"))
    p.add_argument("--student-time", type=seconds, default=seconds("6m"))
    p.add_argument("--n-pairs", type=int, default=4000)
    p.add_argument("--pair-steps", type=int, default=None, help="teacher solver steps for the pairs (default: its config)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--student-lr", type=float, default=3e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--teacher-config", type=json.loads, default={}, help="JSON object of cfm config overrides")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-n", type=int, default=3000, help="held-out showers generated for the check (0: skip)")
    p.add_argument("--skip-teacher", action="store_true", help="reuse OUT/teacher")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    f = open_showers(a.data)
    geometry = f.geometry
    if a.n_train + a.n_test > len(f):
        sys.exit(f"{a.data} holds {len(f)} showers, fewer than --n-train + --n-test")
    e_np, x_np = f.read(0, a.n_train)
    e_tr, x_tr = torch.from_numpy(e_np.astype(np.float32)), torch.from_numpy(x_np)
    summary: dict = {"data": str(a.data), "n_train": a.n_train, "n_test": a.n_test, "threads": a.threads,
                     "args": {k: str(v) for k, v in vars(a).items()}}

    # ------------------------------------------------------------ teacher
    if a.skip_teacher:
        from caloforge.models import load_model

        teacher = load_model(a.out / "teacher")
    else:
        torch.manual_seed(a.seed)
        teacher = build_model("cfm", geometry, a.teacher_config)
        print(f"teacher: {teacher.n_parameters():,} parameters", flush=True)
        summary["teacher_training"] = train_for(teacher, e_tr, x_tr, a.teacher_time, a.batch_size, a.lr,
                                                a.out / "runs" / "teacher", a.seed, a.ema)
        save_model(teacher, a.out / "teacher", extra={"trained_on": str(a.data), "n_train": a.n_train})
    teacher.eval()
    summary["teacher_parameters"] = teacher.n_parameters()

    # ------------------------------------------------------------ student
    arch = teacher.config.architecture()
    student = build_model("cfm-student", geometry, {**arch, "n_pairs": a.n_pairs, "pair_steps": a.pair_steps,
                                                     "teacher": str(a.out / "teacher"),
                                                     "pairs_file": str(a.out / "pairs.safetensors")})
    t = time.perf_counter()
    student.fit_preprocessing(e_tr, x_tr)  # teacher pairs (cached in OUT/pairs.safetensors)
    summary["pair_generation_s"] = time.perf_counter() - t
    print(f"student: {a.n_pairs} teacher pairs in {summary['pair_generation_s']:.0f} s", flush=True)
    summary["student_training"] = train_for(student, e_tr, x_tr, a.student_time, a.batch_size, a.student_lr,
                                            a.out / "runs" / "student", a.seed, a.ema)
    save_model(student, a.out / "student", extra={"teacher": str(a.out / "teacher")})
    student.eval()

    # ------------------------------------------------------------ check on held-out energies
    if a.eval_n > 0:
        e_te, x_te = f.read(len(f) - a.n_test, len(f))
        e_te, x_te = e_te[: a.eval_n].astype(np.float64), x_te[: a.eval_n]
        t = time.perf_counter()
        gen_t = sample_all(teacher, torch.from_numpy(e_te).float())
        summary["teacher_eval_sampling_s"] = time.perf_counter() - t
        gen_s = sample_all(student, torch.from_numpy(e_te).float())
        summary["check_teacher"] = compare(geometry, e_te, x_te, gen_t)
        summary["check_student"] = compare(geometry, e_te, x_te, gen_s)
        plot(a.out / "check.png", geometry, e_te, x_te, {"teacher": gen_t, "student": gen_s})
    summary["ms_per_shower_batch1000"] = {"teacher": speed(teacher, 1000, reps=1), "student": speed(student, 1000)}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for k in ("check_teacher", "check_student"):
        if k in summary:
            c = summary[k]
            print(f"{k}: E_tot/E_inc mean g4/model {c['etot_einc_mean']}, std {c['etot_einc_std']}, "
                  f"sep {c['sep_etot_einc']:.3f}; profile max dev {c['layer_profile_max_rel_dev_main_layers']:.3f}; "
                  f"hits {c['hits_per_shower']}", flush=True)
    print(f"wrote {a.out}/summary.json", flush=True)


if __name__ == "__main__":
    main()
