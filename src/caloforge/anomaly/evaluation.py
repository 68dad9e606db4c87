"""How well anomaly scores separate signal from background: ROC, AUC, SIC, efficiencies.

For each score: the ROC curve (signal efficiency eps_S against background efficiency eps_B,
a shower passing when its score is above the cut), its AUC, the significance improvement
SIC = eps_S / sqrt(eps_B) for eps_B down to :data:`MIN_EPS_B`, and eps_S at eps_B = 1e-2 and
1e-3 (the cut at the background's (1 - eps_B) quantile). All of it also in bins of a signal
property when the signal file has one (e.g. ``separation_mm`` of the two-electron showers): a
property with few distinct values is binned by value, others in quartiles.

At eps_B = 1e-3 the cut sits between the highest few background scores (3 of 3,000): the
figures there carry the background's sampling error; :class:`ScoreMetrics` gives the number of
background showers above each cut and the binomial error of eps_S.

:func:`write_anomaly_report` writes ``metrics.json``, the plots and one self-contained HTML page.

References:
    Kasieczka et al., *The LHC Olympics 2020*, Rep. Prog. Phys. 84 (2021) 124201 (ROC, SIC and
    eps_S at fixed eps_B as the figures of merit of anomaly detection).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloforge._atomic import atomic_write_text
from caloforge.errors import InputError
from caloforge.evaluation.report import REPORT_CSS

__all__ = [
    "AnomalyEvaluation",
    "MIN_EPS_B",
    "ScoreMetrics",
    "evaluate_scores",
    "property_bins",
    "roc",
    "score_metrics",
    "signal_efficiency_at",
    "write_anomaly_report",
]

#: Smallest background efficiency of the SIC curves and efficiency figures.
MIN_EPS_B = 1e-3
#: The background efficiencies at which signal efficiencies are quoted.
WORKING_POINTS = (1e-2, 1e-3)


def roc(background: np.ndarray, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eps_B, eps_S, cuts) of the cut ``score >= cut`` over all distinct cuts (sklearn)."""
    from sklearn.metrics import roc_curve

    b, s = _clean(background, "background"), _clean(signal, "signal")
    y = np.concatenate([np.zeros(len(b)), np.ones(len(s))])
    fpr, tpr, cuts = roc_curve(y, np.concatenate([b, s]), drop_intermediate=False)
    return fpr, tpr, cuts


def _clean(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        raise InputError(f"no {what} scores")
    if not np.isfinite(x).all():
        raise InputError(f"{what} scores hold NaN or inf")
    return x


def auc(background: np.ndarray, signal: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a signal shower scores above a background one."""
    from sklearn.metrics import roc_auc_score

    b, s = _clean(background, "background"), _clean(signal, "signal")
    return float(roc_auc_score(np.concatenate([np.zeros(len(b)), np.ones(len(s))]), np.concatenate([b, s])))


def signal_efficiency_at(background: np.ndarray, signal: np.ndarray, eps_b: float) -> tuple[float, int, float]:
    """(eps_S, background showers above the cut, cut) for the cut that keeps at most a fraction
    ``eps_b`` of the background (``score > cut``, the cut at the background's order statistic)."""
    b, s = np.sort(_clean(background, "background")), _clean(signal, "signal")
    k = int(math.floor(eps_b * len(b)))  # background showers allowed above the cut
    cut = float(b[len(b) - 1 - k]) if k < len(b) else -math.inf
    return float(np.mean(s > cut)), int(np.sum(b > cut)), cut


@dataclass
class ScoreMetrics:
    """The figures of one score on one signal bin."""

    score: str
    bin: str
    n_background: int
    n_signal: int
    auc: float
    eps_s: dict[str, float]  # "1e-02" -> eps_S at that eps_B
    eps_s_error: dict[str, float]  # binomial error of eps_S
    background_above: dict[str, int]  # background showers above the cut (sampling caveat)
    sic: dict[str, float]  # eps_S / sqrt(eps_B) at the working points
    max_sic: float  # largest SIC for eps_B >= MIN_EPS_B

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(eps_b: float) -> str:
    return f"{eps_b:.0e}"


def score_metrics(name: str, background: np.ndarray, signal: np.ndarray, bin_label: str = "all") -> ScoreMetrics:
    """AUC, eps_S and SIC at the working points, and the best SIC down to :data:`MIN_EPS_B`."""
    b, s = _clean(background, "background"), _clean(signal, "signal")
    eps_s, err, above, sic = {}, {}, {}, {}
    for wp in WORKING_POINTS:
        e, n_above, _ = signal_efficiency_at(b, s, wp)
        eps_s[_key(wp)] = e
        err[_key(wp)] = math.sqrt(max(e * (1 - e), 1.0 / len(s)) / len(s))
        above[_key(wp)] = n_above
        sic[_key(wp)] = e / math.sqrt(wp)
    fpr, tpr, _ = roc(b, s)
    ok = fpr >= max(MIN_EPS_B, 1.0 / len(b))
    max_sic = float(np.max(tpr[ok] / np.sqrt(fpr[ok]))) if ok.any() else float("nan")
    return ScoreMetrics(name, bin_label, len(b), len(s), auc(b, s), eps_s, err, above, sic, max_sic)


def property_bins(values: np.ndarray, max_distinct: int = 10) -> list[tuple[str, np.ndarray]]:
    """(label, mask) per bin of a signal property: by value for few distinct values, else quartiles."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    distinct = np.unique(v[np.isfinite(v)])
    if len(distinct) <= max_distinct:
        return [(f"{d:g}", v == d) for d in distinct]
    edges = np.quantile(v, [0, 0.25, 0.5, 0.75, 1])
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        mask = (v >= lo) & ((v <= hi) if i == 3 else (v < hi))
        out.append((f"{lo:.3g}-{hi:.3g}", mask))
    return out


@dataclass
class AnomalyEvaluation:
    """Metrics of several scores, overall and per bin of a signal property, and their ROC curves."""

    metrics: list[ScoreMetrics]
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # score -> bin -> (eps_B, eps_S)
    property_name: str | None = None
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        return [m.as_dict() for m in self.metrics]

    def to_json(self) -> dict[str, Any]:
        return {"property": self.property_name, "min_eps_b": MIN_EPS_B, "working_points": list(WORKING_POINTS),
                "metrics": self.table(), "notes": self.notes, "info": self.info}


def evaluate_scores(background: Mapping[str, np.ndarray], signal: Mapping[str, np.ndarray],
                    signal_property: np.ndarray | None = None, property_name: str | None = None) -> AnomalyEvaluation:
    """Evaluate each score (same names in ``background`` and ``signal``), overall and in bins of
    ``signal_property`` (one value per signal shower) when given."""
    missing = sorted(set(background) ^ set(signal))
    if missing:
        raise InputError(f"scores {', '.join(missing)} are given for only one of background and signal")
    if not background:
        raise InputError("no scores to evaluate")
    bins: list[tuple[str, np.ndarray]] = []
    if signal_property is not None:
        n_sig = {len(v) for v in signal.values()}
        if n_sig != {len(signal_property)}:
            raise InputError(f"signal property {property_name!r} has {len(signal_property)} values but there are "
                             f"{sorted(n_sig)} signal scores")
        bins = property_bins(signal_property)
    metrics, curves, notes = [], {}, []
    for name in background:
        b, s = np.asarray(background[name]), np.asarray(signal[name])
        metrics.append(score_metrics(name, b, s))
        fpr, tpr, _ = roc(b, s)
        curves[name] = {"all": (fpr, tpr)}
        for label, mask in bins:
            if mask.sum() == 0:
                continue
            metrics.append(score_metrics(name, b, s[mask], f"{property_name}={label}"))
            fpr, tpr, _ = roc(b, s[mask])
            curves[name][label] = (fpr, tpr)
    n_b = min(len(v) for v in background.values())
    for wp in WORKING_POINTS:
        if wp * n_b < 10:
            notes.append(f"at eps_B = {wp:g} the cut keeps {wp * n_b:.0f} of {n_b:,} background showers: "
                         "eps_S and SIC there carry that sampling error")
    return AnomalyEvaluation(metrics, curves, property_name, notes)


# ------------------------------------------------------------------------------------- output
def plot_curves(evaluation: AnomalyEvaluation, directory: Path) -> list[Path]:
    """ROC (eps_S vs 1/eps_B) and SIC plots, one pair per score (every bin in one panel)."""
    from caloforge.plotting.style import SAMPLE_COLORS, figure, hep_style, label, save_figure

    paths = []
    with hep_style(font_scale=0.8):
        for name, bins in evaluation.curves.items():
            fig, (ax_roc, ax_sic) = figure(1, 2, figsize=(12, 5))
            for k, (bin_label, (fpr, tpr)) in enumerate(bins.items()):
                ok = fpr >= MIN_EPS_B
                lab = "all signal" if bin_label == "all" else f"{evaluation.property_name} = {bin_label}"
                color = "black" if bin_label == "all" else SAMPLE_COLORS[(k - 1) % len(SAMPLE_COLORS)]
                ax_roc.plot(tpr[ok], 1.0 / fpr[ok], color=color, label=lab, lw=2 if bin_label == "all" else 1.4)
                ax_sic.plot(fpr[ok], tpr[ok] / np.sqrt(fpr[ok]), color=color, label=lab,
                            lw=2 if bin_label == "all" else 1.4)
            x = np.linspace(MIN_EPS_B, 1, 200)
            ax_roc.plot(x, 1 / x, ls=":", color="grey", label="random")
            ax_roc.set(xlabel=r"signal efficiency $\epsilon_S$", ylabel=r"background rejection $1/\epsilon_B$",
                       yscale="log", xlim=(0, 1))
            ax_sic.axhline(1, ls=":", color="grey")
            ax_sic.set(xlabel=r"background efficiency $\epsilon_B$", ylabel=r"SIC $\epsilon_S/\epsilon_B^{1/2}$",
                       xscale="log", xlim=(MIN_EPS_B, 1))
            ax_roc.legend(loc="upper right")
            label(ax_roc, name, "ROC")
            label(ax_sic, name, "significance improvement")
            paths.append(save_figure(fig, directory / f"roc_sic_{_safe(name)}.png"))
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# The evaluation report's stylesheet, with this page's own rules (an "all" row in bold, wide figures).
_CSS = REPORT_CSS + """
tr.all td{font-weight:600} .grid figure{width:100%;max-width:1000px}
"""


def _f(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if abs(x) < 100 else f"{x:.4g}"


def render_html(evaluation: AnomalyEvaluation, images: Sequence[Path], title: str = "caloforge anomaly evaluation") -> str:
    """The self-contained HTML page (plots embedded as base64 PNGs)."""
    import base64

    rows = []
    for m in evaluation.metrics:
        cls = ' class="all"' if m.bin == "all" else ""
        cells = [f'<td class="l">{html.escape(m.score)}</td>', f'<td class="l">{html.escape(m.bin)}</td>',
                 f"<td>{m.n_background:,}</td>", f"<td>{m.n_signal:,}</td>", f"<td>{_f(m.auc)}</td>"]
        for wp in WORKING_POINTS:
            k = _key(wp)
            cells.append(f"<td>{_f(m.eps_s[k])} ± {_f(m.eps_s_error[k])} ({m.background_above[k]})</td>")
            cells.append(f"<td>{_f(m.sic[k], 2)}</td>")
        cells.append(f"<td>{_f(m.max_sic, 2)}</td>")
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    head = ('<tr><th class="l">score</th><th class="l">signal</th><th>background</th><th>signal</th><th>AUC</th>'
            + "".join(f"<th>&epsilon;<sub>S</sub> at &epsilon;<sub>B</sub>={wp:g} (bkg above)</th><th>SIC at {wp:g}</th>"
                      for wp in WORKING_POINTS)
            + f"<th>max SIC (&epsilon;<sub>B</sub> &ge; {MIN_EPS_B:g})</th></tr>")
    notes = "".join(f'<p class="warn">{html.escape(n)}</p>' for n in evaluation.notes)
    info = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in evaluation.info.items())
    figs = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode("ascii")}" '
        f'alt="{html.escape(p.name)}"><figcaption>{html.escape(p.stem)}</figcaption></figure>' for p in images)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='sub'>a shower passes when its score is above the cut; larger scores are more anomalous</p>"
            f"{notes}<h2>Scores</h2><table>{head}{''.join(rows)}</table>"
            f"<p class='note'>&epsilon;<sub>S</sub> errors are binomial; the background's sampling error at small "
            f"&epsilon;<sub>B</sub> is not included (the number of background showers above the cut is in brackets).</p>"
            f"<h2>Inputs</h2><ul>{info}</ul><h2>Curves</h2><div class='grid'>{figs}</div></body></html>")


def write_anomaly_report(evaluation: AnomalyEvaluation, directory: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``metrics.json``, ``plots/roc_sic_<score>.png`` and ``report.html`` into ``directory``."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError("exists and is not a folder", directory)
    directory.mkdir(parents=True, exist_ok=True)
    images = plot_curves(evaluation, directory / "plots") if plots else []
    out = {"metrics": atomic_write_text(directory / "metrics.json",
                                        json.dumps(evaluation.to_json(), indent=2, allow_nan=True) + "\n")}
    out["report"] = atomic_write_text(directory / "report.html", render_html(evaluation, images))
    return out


def read_property(path: str | Path, name: str, rows: tuple[int, int]) -> np.ndarray | None:
    """The per-shower dataset ``name`` of a shower file for ``rows`` (None when it has none)."""
    import h5py

    with h5py.File(path, "r") as f:
        if name not in f:
            return None
        ds = f[name]
        if ds.ndim != 1 and not (ds.ndim == 2 and ds.shape[1] == 1):
            raise InputError(f"dataset {name!r} is not one value per shower (shape {ds.shape})", path)
        return np.asarray(ds[rows[0] : rows[1]], dtype=np.float64).reshape(-1)


def evaluate_files(background: str | Path, signal: str | Path, score_files: Sequence[str | Path],
                   property_name: str | None = "separation_mm") -> AnomalyEvaluation:
    """Evaluate score files of ``caloforge anomaly score``: each belongs to the background or the
    signal shower file (by the source it records); scores are paired by model and name.

    The two shower files must have the same geometry; ``property_name`` (when the signal file has
    that dataset; None: no binning) gives the per-bin figures."""
    from caloforge.anomaly.scores import read_scores
    from caloforge.data import open_showers

    bkg_file, sig_file = open_showers(background), open_showers(signal)
    if bkg_file.geometry.n_voxels != sig_file.geometry.n_voxels or bkg_file.geometry.name != sig_file.geometry.name:
        raise InputError(f"is of geometry {sig_file.geometry.name} ({sig_file.geometry.n_voxels} voxels) but the "
                         f"background {background} is {bkg_file.geometry.name} ({bkg_file.geometry.n_voxels} voxels)", signal)
    b_src, s_src = str(Path(background).resolve()), str(Path(signal).resolve())
    bkg: dict[str, np.ndarray] = {}
    sig: dict[str, np.ndarray] = {}
    sig_rows: tuple[int, int] | None = None
    info: dict[str, Any] = {"background": b_src, "signal": s_src}
    for path in score_files:
        s = read_scores(path)
        if s.source not in (b_src, s_src):
            raise InputError(f"holds scores of {s.source}, which is neither the background nor the signal file", path)
        target = bkg if s.source == b_src else sig
        if s.source == s_src:
            if sig_rows is not None and sig_rows != s.rows:
                raise InputError(f"scores rows {s.rows[0]}:{s.rows[1]} of the signal, another score file "
                                 f"rows {sig_rows[0]}:{sig_rows[1]}", path)
            sig_rows = s.rows
        for name, values in s.scores.items():
            key = f"{s.model}:{name}" if s.model else name
            if key in target:
                raise InputError(f"score {key!r} is given twice for the same file", path)
            target[key] = values
            if s.seconds_per_shower is not None:
                info[f"cost of {key} on {Path(s.source).name}"] = (
                    f"{1e3 * float(s.seconds_per_shower):.3g} ms/shower on {s.threads} thread(s)")
        info[f"score file {Path(path).name}"] = f"{s.kind} scores {', '.join(s.scores)} of {s.source} rows {s.rows[0]}:{s.rows[1]}"
    prop = None
    if property_name and sig_rows is not None:
        prop = read_property(signal, property_name, sig_rows)
    ev = evaluate_scores(bkg, sig, prop, property_name if prop is not None else None)
    ev.info.update(info)
    return ev
