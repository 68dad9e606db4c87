"""The FPGA anomaly trigger (caloforge.export.trigger): float vs quantisation-aware autoencoder,
hls4ml conversion and its C simulation against the bit-accurate torch model.

Background: single-electron Geant4 showers (training: rows 0-11,999 of the shared DS2 file;
test: 1,000 held-out rows from 12,000 with E_inc >= 2 GeV, the signal's energy range). Signal:
the 1,000 two-electron events of g4_ds2_two_electrons_dev.h5 (separations 0/5/10/20 mm). Readout
threshold (15.15 keV) applied to both. Prints and writes OUT/trigger.json and OUT/trigger.md.

    python benchmarks/fpga_trigger.py --out bench-output/trigger
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--background", type=Path, default=DATA / "g4_ds2_electrons_1-100GeV.h5")
    ap.add_argument("--signal", type=Path, default=DATA / "g4_ds2_two_electrons_dev.h5")
    ap.add_argument("--out", type=Path, default=Path("bench-output/trigger"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    from sklearn.metrics import roc_auc_score

    from caloforge.export.trigger import (
        TriggerConfig,
        anomaly_score,
        convert_to_hls,
        distill_score,
        fixed_inputs,
        lsb_difference,
        train_trigger,
        trigger_features,
    )
    from caloforge.geometry import get_geometry
    from caloforge.geometry.builtin import THRESHOLD_DS23

    g = get_geometry("ds2")

    def read(path: Path, a: int = 0, b: int | None = None):
        with h5py.File(path) as f:
            e = f["incident_energies"][a:b, 0]
            x = f["showers"][a:b]
            extra = f["separation_mm"][a:b] if "separation_mm" in f else None
        return e, np.where(x < THRESHOLD_DS23, 0.0, x), extra

    _, x_train, _ = read(args.background, 0, 12000)
    e_test, x_test, _ = read(args.background, 12000, 15000)
    x_test = x_test[e_test >= 2000][:1000]
    _, x_sig, sep = read(args.signal)
    f_train, f_bkg, f_sig = (trigger_features(x, g) for x in (x_train, x_test, x_sig))

    cfg = TriggerConfig.default()
    t = time.perf_counter()
    model, qmodel, losses = train_trigger(f_train, cfg)
    train_s = time.perf_counter() - t

    def auc(b: np.ndarray, s: np.ndarray) -> float:
        return float(roc_auc_score(np.r_[np.zeros(len(b)), np.ones(len(s))], np.r_[b, s]))

    with torch.no_grad():
        float_b = anomaly_score(f_bkg, model(torch.from_numpy(f_bkg)).numpy())
        float_s = anomaly_score(f_sig, model(torch.from_numpy(f_sig)).numpy())
    fixed_b = anomaly_score(fixed_inputs(qmodel, f_bkg), qmodel.forward_fixed(f_bkg))
    fixed_s = anomaly_score(fixed_inputs(qmodel, f_sig), qmodel.forward_fixed(f_sig))
    # the float model's weights rounded to the same types, without quantisation-aware training
    ptq = type(qmodel)(f_train.shape[1], cfg)
    ptq.load_state_dict(model.state_dict())
    ptq_b = anomaly_score(fixed_inputs(ptq, f_bkg), ptq.forward_fixed(f_bkg))
    ptq_s = anomaly_score(fixed_inputs(ptq, f_sig), ptq.forward_fixed(f_sig))

    t = time.perf_counter()
    hls = convert_to_hls(qmodel, args.out / "hls_project")
    hls.compile()
    compile_s = time.perf_counter() - t
    inputs = np.ascontiguousarray(f_bkg)
    t = time.perf_counter()
    csim = np.asarray(hls.predict(inputs), np.float64).reshape(inputs.shape)
    csim_s = time.perf_counter() - t
    diff = lsb_difference(csim, qmodel.forward_fixed(inputs), cfg.data_t)
    hls_b = anomaly_score(fixed_inputs(qmodel, f_bkg), csim)

    res = {
        "inputs": int(f_train.shape[1]), "layers": [f_train.shape[1], *cfg.hidden, f_train.shape[1]],
        "multiplications": qmodel.multiplications(), "reuse_factor": cfg.reuse_factor,
        "multipliers_instantiated": -(-qmodel.multiplications() // cfg.reuse_factor), "strategy": "Latency",
        "io_type": "io_parallel", "types": {k: getattr(cfg, k).hls() for k in ("input_t", "weight_t", "data_t", "accum_t")},
        "train_s": round(train_s, 1), "hls_compile_s": round(compile_s, 1), "csim_s": round(csim_s, 2),
        "n_background": len(f_bkg), "n_signal": len(f_sig),
        "auc": {"float": auc(float_b, float_s), "fixed_qat": auc(fixed_b, fixed_s), "fixed_ptq": auc(ptq_b, ptq_s),
                "hls_csim": auc(hls_b, fixed_s)},
        "auc_by_separation_mm": {str(int(d)): {"float": auc(float_b, float_s[sep == d]),
                                               "fixed_qat": auc(fixed_b, fixed_s[sep == d])}
                                 for d in np.unique(sep)},
        "csim_vs_torch": {"showers": len(inputs), "outputs": int(diff.size), "bit_exact": int((diff == 0).sum()),
                          "max_lsb": float(diff.max())},
        "final_loss": {"float": losses["float"][-1], "qat": losses["qat"][-1]},
    }
    # distillation (arXiv:2310.06047): a larger float autoencoder as the teacher, a 70-16-1
    # regressor of its log score as the student (float, then quantisation-aware), and its HLS check
    t = time.perf_counter()
    big_cfg = TriggerConfig(hidden=(64, 32, 8, 32, 64))
    teacher, _, _ = train_trigger(f_train, replace(big_cfg, qat_epochs=0))
    with torch.no_grad():
        teach = {k: anomaly_score(f, teacher(torch.from_numpy(f)).numpy())
                 for k, f in (("train", f_train), ("bkg", f_bkg), ("sig", f_sig))}
    def teacher_score(f: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return anomaly_score(f, teacher(torch.from_numpy(f)).numpy())

    from scipy.stats import spearmanr

    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    res["distillation"] = {"teacher": {"layers": [70, *big_cfg.hidden, 70], "parameters": n_params(teacher),
                                       "multiplications": teacher.multiplications(),
                                       "auc": auc(teach["bkg"], teach["sig"])}}
    for key, levels in (("student", (0.0,)), ("student_augmented", (0.0, 0.02, 0.05, 0.1))):
        student = distill_score(f_train, teacher_score, TriggerConfig(hidden=(16,)), noise_levels=levels)
        hs = convert_to_hls(student.quantised_model, args.out / f"hls_{key}", project_name=key)
        hs.compile()
        s_csim = np.asarray(hs.predict(inputs), np.float64).reshape(len(inputs), 1)
        s_diff = lsb_difference(s_csim, student.quantised_model.forward_fixed(inputs), cfg.data_t)
        res["distillation"][key] = {
            "noise_levels": list(levels), "layers": [70, 16, 1], "parameters": n_params(student.float_model),
            "multiplications": student.float_model.multiplications(),
            "auc_float": auc(student.standardised(f_bkg, False), student.standardised(f_sig, False)),
            "auc_fixed": auc(student.standardised(f_bkg), student.standardised(f_sig)),
            "spearman_vs_teacher_test": float(spearmanr(np.r_[student.standardised(f_bkg), student.standardised(f_sig)],
                                                        np.r_[teach["bkg"], teach["sig"]]).statistic),
            "csim_bit_exact": f"{int((s_diff == 0).sum())}/{s_diff.size}", "csim_max_lsb": float(s_diff.max())}
    res["distillation"]["seconds"] = round(time.perf_counter() - t, 1)
    (args.out / "trigger.json").write_text(json.dumps(res, indent=2))
    a = res["auc"]
    lines = ["| trigger autoencoder | anomaly AUC (two electrons vs one) |", "|---|---|",
             f"| float32 | {a['float']:.3f} |",
             f"| fixed point, weights rounded after training (no QAT) | {a['fixed_ptq']:.3f} |",
             f"| fixed point, quantisation-aware training (bit-accurate torch) | {a['fixed_qat']:.3f} |",
             f"| fixed point, hls4ml C simulation | {a['hls_csim']:.3f} |", "",
             "by separation (float / QAT): " + ", ".join(
                 f"{d} mm {v['float']:.3f} / {v['fixed_qat']:.3f}" for d, v in res["auc_by_separation_mm"].items()),
             f"C simulation vs torch: {res['csim_vs_torch']['bit_exact']:,} of {res['csim_vs_torch']['outputs']:,} "
             f"outputs bit-exact (max {res['csim_vs_torch']['max_lsb']:g} LSB) on {len(inputs):,} showers; "
             f"{res['multiplications']:,} multiplications per inference, reuse factor {cfg.reuse_factor} "
             f"(~{res['multipliers_instantiated']} multipliers), Latency strategy, io_parallel; "
             f"training {train_s:.0f} s, hls4ml compile {compile_s:.0f} s"]
    dd = res["distillation"]
    lines += ["", "| distillation (arXiv:2310.06047) | parameters | multiplications | AUC float | AUC fixed point "
              "| Spearman vs teacher (test) |", "|---|---|---|---|---|---|",
              f"| teacher: float autoencoder 70-64-32-8-32-64-70 | {dd['teacher']['parameters']:,} | "
              f"{dd['teacher']['multiplications']:,} | {dd['teacher']['auc']:.3f} | – | 1 |"]
    for key, what in (("student", "student 70-16-1, trained on the background"),
                      ("student_augmented", "student 70-16-1, background + noisy copies (0.02/0.05/0.1)")):
        st = dd[key]
        lines.append(f"| {what} | {st['parameters']:,} | {st['multiplications']:,} | {st['auc_float']:.3f} | "
                     f"{st['auc_fixed']:.3f} (C sim bit-exact {st['csim_bit_exact']}) | "
                     f"{st['spearman_vs_teacher_test']:.3f} |")
    text = "\n".join(lines)
    print(text)
    (args.out / "trigger.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
