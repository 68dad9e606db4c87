"""``caloforge trigger``: train the FPGA anomaly trigger and write its hls4ml project."""

from __future__ import annotations

from pathlib import Path

import typer

from caloforge.cli._common import console, threads_option, use_threads, user_errors
from caloforge.errors import InputError


def trigger(
    background: Path = typer.Argument(..., help="Background showers (CaloChallenge HDF5) to train on."),
    out: Path = typer.Option(..., "-o", "--output", help="Output folder (model, hls4ml project)."),
    signal: Path | None = typer.Option(None, "--signal", help="Signal showers for the anomaly AUC."),
    max_showers: int = typer.Option(20000, "--max-showers", help="Read at most this many background showers."),
    hls: bool = typer.Option(True, "--hls/--no-hls", help="Convert with hls4ml and check its C simulation (g++)."),
    threads: int | None = threads_option(),
) -> None:
    """Train a fixed-point anomaly-trigger autoencoder (quantisation-aware) on layer energies and a
    coarse grid, write it and its hls4ml HLS project, and check the C simulation bit for bit.

    Example: caloforge trigger electrons.h5 --signal two_electrons.h5 -o trigger/
    """
    _run(background, out, signal, max_showers, hls, threads)


@user_errors
def _run(background: Path, out: Path, signal: Path | None, max_showers: int, hls: bool, threads: int | None) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists and is not an empty folder; give a new output folder", out)
    if max_showers < 10:
        raise InputError("--max-showers must be at least 10")
    if hls:
        try:
            import hls4ml  # noqa: F401
        except ModuleNotFoundError:
            raise InputError("the HLS conversion needs hls4ml: pip install 'caloforge[fpga]' (or --no-hls)") from None
    use_threads(threads)
    import numpy as np

    from caloforge.data import open_showers
    from caloforge.export.trigger import build_trigger

    f = open_showers(background)
    if not f.geometry.is_regular or f.geometry.shape[2] != 9 or f.geometry.shape[1] % 8:
        raise InputError(f"the trigger's inputs need the DS2 binning (9 r bins); this file is {f.geometry.name}", background)
    thr = f.geometry.readout_threshold
    _, x = f.read(0, min(f.n, max_showers))
    sig = None
    if signal is not None:
        fs = open_showers(signal)
        if fs.geometry != f.geometry:
            raise InputError(f"geometry {fs.geometry.name} differs from the background's {f.geometry.name}", signal)
        _, sig = fs.read(0, min(fs.n, max_showers))
        sig = np.where(sig < thr, 0.0, sig)
    summary = build_trigger(np.where(x < thr, 0.0, x), f.geometry, out, sig, hls=hls,
                            log=lambda s: console.print(s, highlight=False))
    if "auc" in summary:
        console.print(f"anomaly AUC: float {summary['auc']['float']:.3f}, fixed point {summary['auc']['fixed']:.3f}",
                      highlight=False)
    if "csim_vs_torch" in summary:
        c = summary["csim_vs_torch"]
        console.print(f"hls4ml C simulation vs torch: {c['bit_exact']:,} of {c['outputs']:,} outputs bit-exact "
                      f"(max {c['max_lsb']:g} LSB) on {c['showers']:,} showers", highlight=False)
    console.print(f"{summary['multiplications']:,} multiplications per inference, reuse factor "
                  f"{summary['reuse_factor']}; wrote {out} (synthesis needs the vendor's HLS tools)",
                  highlight=False, soft_wrap=True)
