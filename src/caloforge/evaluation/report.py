"""A self-contained HTML report of an evaluation: summary table, floors, published results, plots.

The report is one file: plots are embedded as base64 PNGs so it can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from caloforge._atomic import atomic_write_text
from caloforge.evaluation.published import published_results

#: The stylesheet of every caloforge HTML page (evaluation, anomaly, unfolding reports).
REPORT_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.6em;margin-bottom:0} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:0.92em}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left}
tr.ours td{background:#eef6ff;font-weight:600} tr.floor td{color:#666;font-style:italic}
.good{color:#1a7f37} .bad{color:#b42318} .warn{color:#b42318} .note{color:#666;font-size:0.9em}
.grid{display:flex;flex-wrap:wrap;gap:12px} .grid figure{margin:0;width:420px}
.grid figure.wide{width:100%} .grid img{width:100%;border:1px solid #eee} figcaption{font-size:0.85em;color:#555}
details{margin:6px 0}
"""


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, (list, tuple)):
        return _fmt(sum(x) / len(x), digits) if x else "–"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return "–"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 10 ** -(digits - 1) or abs(x) >= 10**5):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}f}"
    return html.escape(str(x))


def _pm(d: dict | None, key: str = "value", err: str = "error") -> str:
    if not d:
        return "–"
    if d.get(err) is None:
        return _fmt(d.get(key))
    return f"{_fmt(d.get(key))} ± {_fmt(d.get(err), 2)}"


def _mean(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        vals = [x for x in v if x is not None]
        return sum(vals) / len(vals) if vals else None
    return float(v)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _png_width(path: Path) -> int:
    """Pixel width from a PNG header (0 if unreadable): wide grids get the full page width."""
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big") if head[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _summary_rows(block: dict, floor: dict | None) -> list[tuple[str, str, str]]:
    """(metric, value, floor) rows of one generated sample."""
    floor = floor or {}
    rows = []
    for key, label in (("cls_low", "classifier AUC, low-level"), ("cls_high", "classifier AUC, high-level"),
                       ("cls_cnn", "classifier AUC, ResNet (voxels)")):
        if key in block:
            rows.append((label, _fmt(block[key].get("auc")), _fmt((floor.get(key) or {}).get("auc"))))
            rows.append((label.replace("AUC", "JSD"), _fmt(block[key].get("jsd")), _fmt((floor.get(key) or {}).get("jsd"))))
    for key, label in (("fpd", "FPD x1e3"), ("kpd", "KPD x1e3")):
        if key in block:
            rows.append((label, _pm(block[key]), _pm(floor.get(key))))
    if "multiclass_log_posterior" in block:
        rows.append(("multiclass log-posterior on reference showers", _fmt(block["multiclass_log_posterior"]),
                     _fmt(floor.get("multiclass_log_posterior"))))
    if "prdc" in block:
        for key in PRDC_KEYS:
            rows.append((key, _fmt(block["prdc"].get(key)), _fmt((floor.get("prdc") or {}).get(key))))
    sep, fsep = block.get("separation_power", {}), floor.get("separation_power", {})
    for key, label in (
        ("etot_einc", "sep. power E_tot/E_inc"), ("e_layer", "sep. power E_layer (mean)"),
        ("ec_eta", "sep. power EC eta (mean)"), ("ec_phi", "sep. power EC phi (mean)"),
        ("ec_r", "sep. power EC r (mean)"), ("width_eta", "sep. power width eta (mean)"),
        ("width_phi", "sep. power width phi (mean)"), ("width_r", "sep. power width r (mean)"),
        ("sparsity", "sep. power sparsity (mean)"), ("voxel_energy", "sep. power voxel energy"),
        ("etot_einc_discrete", "sep. power E_tot/E_inc per incident energy (mean)"),
    ):
        if key in sep:
            rows.append((label, _fmt(_mean(sep[key])), _fmt(_mean(fsep.get(key)))))
    return rows


PRDC_KEYS = ("precision", "recall", "density", "coverage")


def _prdc_section(blocks: Sequence[dict], floor: dict | None, label: str) -> str:
    """The PRDC table: one row per sample (and the floor), with what the numbers mean."""
    rows = [(b.get("name", "generated"), b["prdc"], "") for b in blocks if b.get("prdc")]
    if floor and floor.get("prdc"):
        rows.append((f"floor: {label}", floor["prdc"], " class='floor'"))
    if not rows:
        return ""
    head = ("<tr><th class='l'>sample</th>" + "".join(f"<th>{k}</th>" for k in PRDC_KEYS)
            + "<th>k</th><th>showers (reference, sample)</th></tr>")
    body = "".join(
        f"<tr{cls}><td class='l'>{html.escape(str(name))}</td>" + "".join(f"<td>{_fmt(d.get(k))}</td>" for k in PRDC_KEYS)
        + f"<td>{_fmt(d.get('nearest_k'))}</td><td>{_fmt(d.get('n_real'))}, {_fmt(d.get('n_fake'))}</td></tr>"
        for name, d, cls in rows
    )
    inputs = ("log10 of the voxel energies (empty voxels 0.1 MeV), as the official evaluate.py"
              if rows[0][1].get("inputs") == "voxels" else "the high-level features, standardised with the reference")
    return (
        "<h2>Precision, recall, density, coverage</h2>"
        f"<table>{head}{body}</table><p class='note'>k-nearest-neighbour balls on {inputs} "
        "(Naeem et al. 2020, arXiv:2002.09797). Precision and density: the "
        "sample's showers that fall among reference showers (fidelity; density above 1 means showers crowd "
        "dense regions); recall and coverage: the reference showers that the sample reaches (diversity). "
        "For a sample drawn like the reference, density and coverage are near 1; precision and recall "
        "stay well below 1 in many dimensions at these sample sizes (k-NN balls are small): read all four "
        "against the floor.</p>"
    )


def _multiclass_section(mc: dict | None) -> str:
    """The multiclass classifier's table: every class's mean log-posterior on reference showers."""
    if not mc:
        return ""
    chance = mc.get("chance")
    rows = "".join(
        f"<tr><td class='l'>{html.escape(str(name))}</td><td>{_fmt(v)}</td>"
        f"<td>{_fmt(None if v is None or chance is None else v - chance)}</td></tr>"
        for name, v in (mc.get("log_posterior") or {}).items()
    )
    floor_text = (" With --floor the reference's half A is the reference class and its half B one more class "
                  "(a sample drawn exactly like the reference): its value is the floor."
                  if any(str(c).startswith("floor") for c in mc.get("classes", [])) else "")
    return (
        "<h2>Multiclass classifier</h2>"
        f"<table><tr><th class='l'>class</th><th>mean log p(class | reference shower)</th><th>minus chance</th></tr>"
        f"{rows}</table><p class='note'>One classifier (the official MLP, {_fmt(mc.get('inputs'))} inputs) trained "
        f"on all {len(mc.get('classes', []))} classes at once, as in the CaloChallenge paper (arXiv:2410.21611); "
        f"chance = log(1/{len(mc.get('classes', []))}) = {_fmt(chance)}, what every class gets when all are drawn "
        "like the reference. Higher (less negative) is better: the classifier mistakes the reference's showers "
        f"for this sample's. Validation accuracy {_fmt(mc.get('accuracy'))}, best epoch {_fmt(mc.get('best_epoch'))} "
        f"of {_fmt(mc.get('epochs_run'))}.{floor_text}</p>"
    )


def _published_table(dataset: str, ours: Sequence[tuple[str, dict]]) -> str:
    pubs = published_results(dataset)
    if not pubs:
        return "<p class='note'>No published CaloChallenge results for this geometry.</p>"
    head = (
        "<tr><th class='l'>model</th><th>AUC low</th><th>AUC high</th><th>FPD x1e3</th>"
        "<th>KPD x1e3</th><th>sep. E_layer</th><th>sep. E_tot</th><th>ms/shower CPU (batch 100)</th>"
        "<th>parameters</th></tr>"
    )
    body = []
    for name, block in ours:
        sep = block.get("separation_power", {})
        body.append(
            f"<tr class='ours'><td class='l'>{html.escape(name)} (this evaluation)</td>"
            f"<td>{_fmt((block.get('cls_low') or {}).get('auc'))}</td>"
            f"<td>{_fmt((block.get('cls_high') or {}).get('auc'))}</td>"
            f"<td>{_pm(block.get('fpd'))}</td><td>{_pm(block.get('kpd'))}</td>"
            f"<td>{_fmt(_mean(sep.get('e_layer')))}</td><td>{_fmt(_mean(sep.get('etot_einc')))}</td>"
            f"<td>{_fmt(block.get('ms_per_shower_cpu'))}</td><td>{_fmt(block.get('parameters'))}</td></tr>"
        )
    for p in pubs:
        cls = " class='floor'" if p.model.upper() == "GEANT4" else ""
        body.append(
            f"<tr{cls}><td class='l'>{html.escape(p.model)}</td><td>{_fmt(p.auc_low)}</td>"
            f"<td>{_fmt(p.auc_high)}</td><td>{_fmt(p.fpd)}</td><td>{_fmt(p.kpd)}</td>"
            f"<td>{_fmt(p.sep_mean.get('E_layer'))}</td><td>{_fmt(p.sep_mean.get('E_total'))}</td>"
            f"<td>{_fmt(p.ms_cpu_100)}</td><td>{_fmt(p.parameters)}</td></tr>"
        )
    return (
        f"<table>{head}{''.join(body)}</table><p class='note'>Published rows: CaloChallenge 2022 "
        "(arXiv:2410.21611), official Geant4 files; the GEANT4 row is their Geant4-vs-Geant4 floor. "
        "Figures on other reference files are comparable only in trend.</p>"
    )


def _energy_table(block: dict) -> str:
    bins = block.get("energy_bins")
    if not bins:
        return ""
    keys = [k for k in ("n_reference", "n_generated", "etot_einc_mean_ratio", "sep_etot_einc", "sep_e_layer",
                        "fpd", "kpd", "cls_low_auc", "cls_high_auc") if any(k in b for b in bins)]
    head = "<tr><th class='l'>E_inc bin (GeV)</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>"
    rows = []
    for b in bins:
        cells = []
        for k in keys:
            v = b.get(k)
            cells.append(f"<td>{_pm(v) if isinstance(v, dict) else _fmt(v)}</td>")
        rows.append(f"<tr><td class='l'>{b['e_min_gev']:g} – {b['e_max_gev']:g}</td>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def floor_label(results: dict) -> str:
    """What the floor compares, e.g. "Geant4 vs Geant4" or "reference vs reference (parametric
    simulator)", from the reference's provenance (recorded by the pipeline)."""
    floor = results.get("floor") or {}
    if floor.get("label"):
        return str(floor["label"])
    from caloforge.evaluation.pipeline import reference_source

    ref = results.get("reference") or {}
    if "generator" not in ref:  # written before the source was recorded: nothing to decide from
        return "reference vs reference"
    return reference_source({"generator": ref.get("generator")})["floor_label"]


def all_notes(results: Mapping[str, Any]) -> list[str]:
    """Every caveat of a ``metrics.json`` dict: the top-level ``notes`` and every ``note`` (or
    ``notes`` list) inside a sample's or the floor's block (FPD/KPD batch sizes, ...) that they
    do not already hold, in order, without repeats."""
    notes = [str(n) for n in results.get("notes", [])]

    def walk(x: Any, where: str) -> None:
        if isinstance(x, Mapping):
            listed = x.get("notes")
            found = [x.get("note"), *(listed if isinstance(listed, list) else [])]
            for note in found:
                if isinstance(note, str) and note and not any(note in n for n in notes):
                    notes.append(f"{where}: {note}" if where else note)
            for k, v in x.items():
                if k not in ("note", "notes"):
                    walk(v, where)
        elif isinstance(x, list):
            for v in x:
                walk(v, where)

    for b in results.get("generated", []):
        walk(b, str(b.get("name", "generated")))
    if results.get("floor"):
        walk(results["floor"], "floor")
    return notes


def write_report(
    results: dict, plots: Mapping[str, Sequence[Path]], out_path: str | Path, title: str = "caloforge evaluation"
) -> Path:
    """Write ``report.html`` from a ``metrics.json`` dict and plot files grouped by section.

    ``plots`` maps a section title to PNG paths (their stems become captions).
    """
    out_path = Path(out_path)
    blocks = results.get("generated", [])
    floor = results.get("floor")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{REPORT_CSS}</style></head><body>"]
    parts.append(f"<h1>{html.escape(title)}</h1>")
    ref = results.get("reference", {})
    parts.append(
        f"<p class='sub'>dataset <b>{html.escape(str(results.get('dataset')))}</b> · reference "
        f"{html.escape(', '.join(ref.get('files', [])))} ({results.get('n_reference')} showers) · "
        f"caloforge {html.escape(str(results.get('caloforge_version', '')))} · {html.escape(str(results.get('created', '')))}</p>"
    )
    for warning in results.get("warnings", []):
        parts.append(f"<p class='warn'><b>warning:</b> {html.escape(str(warning))}</p>")
    for note in all_notes(results):
        parts.append(f"<p class='note'>⚠ {html.escape(note)}</p>")
    label = floor_label(results)

    parts.append("<h2>Summary</h2>")
    head = "<tr><th class='l'>metric</th>" + "".join(
        f"<th>{html.escape(b.get('name', 'generated'))}</th>" for b in blocks
    ) + (f"<th>floor: {html.escape(label)}</th>" if floor else "") + "</tr>"
    per_block = [_summary_rows(b, floor) for b in blocks]
    rows = []
    if per_block:
        for i, (metric, _, fl) in enumerate(per_block[0]):
            cells = "".join(f"<td>{rb[i][1] if i < len(rb) else '–'}</td>" for rb in per_block)
            rows.append(f"<tr><td class='l'>{html.escape(metric)}</td>{cells}" + (f"<td>{fl}</td>" if floor else "") + "</tr>")
    parts.append(f"<table>{head}{''.join(rows)}</table>")
    text = "AUC 0.5 and separation power, FPD, KPD 0 mean indistinguishable from the reference."
    if floor:
        text += (f" The floor column compares two halves of the reference sample ({html.escape(label)}): "
                 "differences below it are noise.")
    else:
        text += " Run with --floor for the reference's own noise floor (two halves of it compared)."
    parts.append(f"<p class='note'>{text}</p>")

    parts.append(_prdc_section(blocks, floor, label))
    parts.append(_multiclass_section(results.get("multiclass")))

    parts.append("<h2>Side by side with the CaloChallenge</h2>")
    source = (results.get("reference") or {}).get("source")
    if source in ("parametric", "other"):
        what = "caloforge's parametric simulator" if source == "parametric" else "a sample that is not Geant4"
        parts.append(f"<p class='note'>This reference is {what}, not Geant4: the published figures below "
                     "compare models with Geant4 and are not comparable with the figures above.</p>")
    parts.append(_published_table(str(results.get("dataset")), [(b.get("name", "generated"), b) for b in blocks]))

    if any(b.get("energy_bins") for b in blocks):
        parts.append("<h2>Per incident-energy bin</h2>")
        for b in blocks:
            parts.append(f"<h3>{html.escape(b.get('name', 'generated'))}</h3>{_energy_table(b)}")
        if floor and floor.get("energy_bins"):
            parts.append(f"<h3>floor: {html.escape(label)}</h3>{_energy_table(floor)}")

    for section, files in plots.items():
        files = [Path(f) for f in files if Path(f).is_file()]
        if not files:
            continue
        parts.append(f"<h2>{html.escape(section)}</h2><div class='grid'>")
        for f in files:
            wide = " class='wide'" if _png_width(f) > 1600 else ""
            parts.append(f"<figure{wide}>{_img(f)}<figcaption>{html.escape(f.stem.replace('_', ' '))}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out_path, "\n".join(parts))
