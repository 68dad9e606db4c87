"""Unfold the incident-energy spectrum of one CaloChallenge file with another: the driver of
``caloforge unfold`` (features, OmniFold, IBU, bootstrap) and its outputs (weights HDF5,
spectrum JSON, plot, HTML page)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloforge.errors import InputError
from caloforge.inference.unfolding import (
    OmniFoldConfig,
    OmniFoldResult,
    bootstrap,
    chi2,
    detector_features,
    ibu,
    log_edges,
    omnifold,
    seed_ensemble,
    spectrum,
    write_weights,
)

Progress = Callable[[str, float, float], None]
#: Bins whose truth count is below this are left out of the closure verdict and chi2.
MIN_COUNT = 50


@dataclass
class Unfolding:
    """Everything :func:`unfold_files` computed; ``truth`` only for a closure test (the data's
    stored incident energies; for real data these do not exist).

    ``*_sigma``: the bootstrap spread (data and sim resampled, see
    :func:`~caloforge.inference.unfolding.bootstrap`); ``omnifold_seed_sigma``: the spread over
    classifier seeds alone (None without ``n_seeds``); ``*_diff_sigma`` (closure only): the
    bootstrap spread of (unfolded - truth), both made of the same resampled data events.
    """

    edges: np.ndarray
    sim_prior: np.ndarray
    omnifold: np.ndarray
    omnifold_sigma: np.ndarray
    omnifold_iterations: np.ndarray
    ibu: np.ndarray
    ibu_sigma: np.ndarray
    result: OmniFoldResult
    sim_energies: np.ndarray
    truth: np.ndarray | None = None
    omnifold_seed_sigma: np.ndarray | None = None
    omnifold_diff_sigma: np.ndarray | None = None
    ibu_diff_sigma: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def closure(self, min_count: float = MIN_COUNT) -> dict[str, Any] | None:
        """chi2/ndf of OmniFold and IBU against the truth (bins with >= min_count truth showers)
        and whether OmniFold lies within its bootstrap band there; with the replicas' truth,
        also chi2 and pulls against the spread of (unfolded - truth) (``*_diff``)."""
        if self.truth is None:
            return None
        c_of, n_of = chi2(self.omnifold, self.truth, self.omnifold_sigma, min_count)
        c_ib, n_ib = chi2(self.ibu, self.truth, self.ibu_sigma, min_count)
        use = self.truth >= min_count
        dev = np.abs(self.omnifold - self.truth)
        out: dict[str, Any] = {
            "min_count": min_count,
            "omnifold_chi2": c_of, "omnifold_ndf": n_of, "omnifold_chi2_ndf": c_of / max(n_of, 1),
            "ibu_chi2": c_ib, "ibu_ndf": n_ib, "ibu_chi2_ndf": c_ib / max(n_ib, 1),
            "omnifold_bins_within_1sigma": int(np.sum((dev <= self.omnifold_sigma) & use)), "bins_used": int(use.sum()),
            "omnifold_bins_within_2sigma": int(np.sum((dev <= 2 * self.omnifold_sigma) & use)),
        }
        if self.omnifold_diff_sigma is not None and self.ibu_diff_sigma is not None:
            cd_of, _ = chi2(self.omnifold, self.truth, self.omnifold_diff_sigma, min_count)
            cd_ib, _ = chi2(self.ibu, self.truth, self.ibu_diff_sigma, min_count)
            out.update({"omnifold_chi2_diff": cd_of, "ibu_chi2_diff": cd_ib,
                        "omnifold_bins_within_1sigma_diff": int(np.sum((dev <= self.omnifold_diff_sigma) & use))})
        return out

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "units": "MeV",
            "edges": self.edges.tolist(),
            "sim_prior": self.sim_prior.tolist(),
            "omnifold": self.omnifold.tolist(),
            "omnifold_sigma": self.omnifold_sigma.tolist(),
            "omnifold_per_iteration": self.omnifold_iterations.tolist(),
            "ibu": self.ibu.tolist(),
            "ibu_sigma": self.ibu_sigma.tolist(),
            "omnifold_seed_sigma": None if self.omnifold_seed_sigma is None else self.omnifold_seed_sigma.tolist(),
            "omnifold_diff_sigma": None if self.omnifold_diff_sigma is None else self.omnifold_diff_sigma.tolist(),
            "ibu_diff_sigma": None if self.ibu_diff_sigma is None else self.ibu_diff_sigma.tolist(),
            "truth": None if self.truth is None else self.truth.tolist(),
            "closure": self.closure(),
            "clipped_weights": [list(c) for c in self.result.clipped],
            "notes": self.result.notes(),
            "config": self.result.config,
        }
        out.update(self.info)
        return out


def _features_of(path: Path, max_showers: int | None, progress: Progress | None, name: str,
                 kind: str = "full") -> tuple[np.ndarray, np.ndarray]:
    from caloforge.data import open_showers

    file = open_showers(path)
    stop = file.n if max_showers is None else min(max_showers, file.n)
    feats, energies = [], []
    for e, s in file.iter_chunks(start=0, stop=stop):
        feats.append(detector_features(e, s, file.geometry, kind))
        energies.append(e)
        if progress:
            progress(f"features of {name}", sum(len(x) for x in energies), stop)
    return np.concatenate(energies), np.concatenate(feats)


def unfold_arrays(
    sim_energies: np.ndarray,
    sim_features: np.ndarray,
    data_features: np.ndarray,
    config: OmniFoldConfig,
    bins: int = 12,
    data_energies: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Unfolding:
    """OmniFold + IBU (+ bootstrap) of the data's incident-energy spectrum from detector-level
    features; the particle level is log E_inc; IBU unfolds E_tot (the first feature) on twice as
    many reco bins as truth bins."""
    lo, hi = float(sim_energies.min()), float(sim_energies.max())
    edges = log_edges(lo, hi * (1 + 1e-9), bins)
    t = np.log(sim_energies)
    res = omnifold(t, sim_features, data_features, config, progress=progress)
    per_iter = np.stack([spectrum(sim_energies, w, edges) for w in res.weights])
    s_obs, d_obs = sim_features[:, 0], data_features[:, 0]
    q = np.quantile(s_obs, [0.001, 0.999])
    r_edges = np.linspace(q[0], q[1], 2 * bins + 1)
    ib = ibu(t, s_obs, d_obs, np.log(edges), r_edges, config.iterations)
    reps = bootstrap(t, sim_features, data_features, np.log(edges), config,
                     ibu_reco=(s_obs, d_obs, r_edges), progress=progress,
                     data_truth=None if data_energies is None else np.log(data_energies))
    seeds = seed_ensemble(t, sim_features, data_features, np.log(edges), config, progress=progress)

    def spread(a: np.ndarray | None) -> np.ndarray:
        return a.std(axis=0, ddof=1) if a is not None and len(a) > 1 else np.full(bins, math.nan)

    closure = data_energies is not None and "truth" in reps
    prior = spectrum(sim_energies, None, edges) * len(data_features) / len(sim_energies)
    return Unfolding(
        edges=edges, sim_prior=prior, omnifold=per_iter[-1], omnifold_sigma=spread(reps.get("omnifold")),
        omnifold_iterations=per_iter, ibu=ib.final, ibu_sigma=spread(reps.get("ibu")), result=res,
        sim_energies=sim_energies,
        truth=None if data_energies is None else spectrum(data_energies, None, edges),
        omnifold_seed_sigma=spread(seeds) if len(seeds) > 1 else None,
        omnifold_diff_sigma=spread(reps["omnifold"] - reps["truth"]) if closure else None,
        ibu_diff_sigma=spread(reps["ibu"] - reps["truth"]) if closure else None,
        info={"n_sim": len(sim_energies), "n_data": len(data_features), "n_bootstrap": config.n_bootstrap,
              "n_seeds": config.n_seeds, "bootstrap": "data + sim" if config.bootstrap_sim else "data only",
              "features": config.features, "ibu_observable": "log10 E_tot", "ibu_reco_bins": len(r_edges) - 1},
    )


def unfold_files(
    sim: str | Path, data: str | Path, config: OmniFoldConfig, bins: int = 12, closure: bool = False,
    max_showers: int | None = None, progress: Progress | None = None,
) -> Unfolding:
    """:func:`unfold_arrays` on two CaloChallenge files (the same geometry); ``closure``: compare
    with the data file's stored incident energies."""
    from caloforge.data import open_showers

    fs, fd = open_showers(sim), open_showers(data)
    if fs.n_voxels != fd.n_voxels:
        raise InputError(f"has {fd.n_voxels} voxels per shower but the sim file {sim} has {fs.n_voxels}", data)
    if bins < 2:
        raise InputError("--bins must be at least 2")
    es, xs = _features_of(Path(sim), max_showers, progress, "sim", config.features)
    ed, xd = _features_of(Path(data), max_showers, progress, "data", config.features)
    out = unfold_arrays(es, xs, xd, config, bins, ed if closure else None, progress)
    out.info.update({"sim": str(Path(sim).resolve()), "data": str(Path(data).resolve())})
    return out


# --------------------------------------------------------------------------------- outputs
def plot_unfolding(u: Unfolding, path: Path, title: str = "") -> Path:
    """Unfolded spectrum (OmniFold, IBU with bootstrap bands; prior and truth) and ratio panel."""
    from caloforge.plotting.style import figure, hep_style, label, save_figure

    e = u.edges / 1e3
    ref = u.truth if u.truth is not None else u.omnifold
    ref_name = "truth" if u.truth is not None else "OmniFold"
    with hep_style(font_scale=0.8):
        fig, (ax, rx) = figure(2, 1, figsize=(6.4, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
        ax.stairs(u.sim_prior, e, color="0.6", ls=":", label="sim (prior)")
        if u.truth is not None:
            ax.stairs(u.truth, e, color="k", lw=1.6, label="data truth")
        for vals, sig, col, name in ((u.omnifold, u.omnifold_sigma, "C0", "OmniFold"), (u.ibu, u.ibu_sigma, "C3", "IBU")):
            ax.stairs(vals, e, color=col, label=name)
            if np.isfinite(sig).all():
                ax.stairs(vals + sig, e, baseline=vals - sig, fill=True, color=col, alpha=0.25)
                r_lo, r_hi = (vals - sig) / np.where(ref > 0, ref, np.nan), (vals + sig) / np.where(ref > 0, ref, np.nan)
                rx.stairs(r_hi, e, baseline=r_lo, fill=True, color=col, alpha=0.25)
            rx.stairs(vals / np.where(ref > 0, ref, np.nan), e, color=col)
        rx.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylabel("showers per bin")
        ax.legend(fontsize="x-small")
        rx.set_xlabel("incident energy [GeV]")
        rx.set_ylabel(f"/ {ref_name}")
        rx.set_ylim(0.7, 1.3)
        label(ax, title or "unfolded incident-energy spectrum")
        return save_figure(fig, path)


def write_html(u: Unfolding, png: Path, path: Path) -> Path:
    """A small self-contained page in the style of the evaluation report."""
    from caloforge._atomic import atomic_write_text
    from caloforge.evaluation.report import REPORT_CSS, _img

    rows = []
    seeds = u.omnifold_seed_sigma
    for i in range(len(u.edges) - 1):
        cells = [f"{u.edges[i] / 1e3:.3g}–{u.edges[i + 1] / 1e3:.3g}", f"{u.sim_prior[i]:.1f}",
                 f"{u.omnifold[i]:.1f} ± {u.omnifold_sigma[i]:.1f}"]
        if seeds is not None:
            cells.append(f"{seeds[i]:.1f}")
        cells.append(f"{u.ibu[i]:.1f} ± {u.ibu_sigma[i]:.1f}")
        if u.truth is not None:
            cells.append(f"{u.truth[i]:.0f}")
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = (["E_inc [GeV]", "sim prior", "OmniFold"] + (["seed σ"] if seeds is not None else []) + ["IBU"]
            + (["truth"] if u.truth is not None else []))
    c = u.closure()
    verdict = ""
    if c is not None:
        verdict = (f"<p>Closure (bins with ≥ {c['min_count']:.0f} truth showers): OmniFold χ²/ndf = "
                   f"{c['omnifold_chi2']:.1f}/{c['omnifold_ndf']}, IBU χ²/ndf = {c['ibu_chi2']:.1f}/{c['ibu_ndf']} "
                   f"(bootstrap σ); OmniFold within 1σ of the truth in {c['omnifold_bins_within_1sigma']} of "
                   f"{c['bins_used']} bins, within 2σ in {c['omnifold_bins_within_2sigma']}.")
        if "omnifold_chi2_diff" in c:
            verdict += (f" Against the bootstrap spread of (unfolded − truth), which share the data's fluctuations: "
                        f"OmniFold χ² = {c['omnifold_chi2_diff']:.1f}, IBU {c['ibu_chi2_diff']:.1f}.")
        verdict += "</p>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in u.result.notes()) or "<li>no weight clipped</li>"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>caloforge unfold</title><style>{REPORT_CSS}</style></head>"
        f"<body><h1>Unfolded incident-energy spectrum</h1><p class='sub'>sim {html.escape(str(u.info.get('sim', '')))}"
        f" ({u.info.get('n_sim', 0):,} showers) → data {html.escape(str(u.info.get('data', '')))} "
        f"({u.info.get('n_data', 0):,} showers); OmniFold {u.result.config.get('iterations')} iterations, "
        f"features {html.escape(str(u.info.get('features')))}; {u.info.get('n_bootstrap')} bootstrap replicas "
        f"({html.escape(str(u.info.get('bootstrap')))} resampled), {u.info.get('n_seeds')} classifier seeds; "
        f"IBU on {html.escape(str(u.info.get('ibu_observable')))}</p>"
        f"{verdict}<div class='grid'><figure>{_img(png)}<figcaption>bands: bootstrap ±1σ ({html.escape(str(u.info.get('bootstrap')))} resampled)</figcaption></figure></div>"
        f"<h2>Per bin</h2><table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>"
        f"<h2>Weights</h2><ul class='note'>{notes}</ul></body></html>"
    )
    return atomic_write_text(path, page)


def write_unfolding(u: Unfolding, out_dir: Path) -> dict[str, Path]:
    """``weights.h5``, ``spectrum.json``, ``spectrum.png`` and ``index.html`` in ``out_dir``."""
    from caloforge._atomic import atomic_write_text
    from caloforge.features.summary import json_safe

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "weights": write_weights(out_dir / "weights.h5", u.result, u.sim_energies,
                                 attrs={"sim": u.info.get("sim"), "data": u.info.get("data")}),
        "json": atomic_write_text(out_dir / "spectrum.json", json.dumps(json_safe(u.as_json()), indent=1)),
    }
    paths["png"] = plot_unfolding(u, out_dir / "spectrum.png")
    paths["html"] = write_html(u, paths["png"], out_dir / "index.html")
    return paths
