"""The parametric shower simulator and its seeded, batched drivers.

:class:`ParametricSimulator` turns incident energies into voxelised showers in three vectorised
steps per batch (no Python loop over showers): per-shower longitudinal gamma profiles
(:mod:`~caloforge.simulation.longitudinal`), depth-dependent core + tail radial profiles
(:mod:`~caloforge.simulation.lateral`) and compound-Poisson sampling fluctuations
(:mod:`~caloforge.simulation.hits`), all in the spirit of GFlash (Grindhammer & Peters,
hep-ex/0001020).

Reproducibility: :func:`simulate`, :func:`iter_simulate` and :func:`simulate_to_file` cut the
sample into fixed blocks (their size depends on the geometry only) and draw block ``b`` from its
own generator, ``PCG64(SeedSequence(seed, spawn_key=(b,)))``. The output is therefore
bit-identical for a given seed whatever the batch size or the number of threads.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caloforge.data import EnergySpec, ShowerWriter, parse_energy
from caloforge.data.hdf5 import provenance
from caloforge.errors import InputError
from caloforge.geometry import Geometry, get_geometry
from caloforge.simulation.detector import Detector, detector_for
from caloforge.simulation.hits import cluster_weights, sample_voxel_energies
from caloforge.simulation.lateral import radial_parameters, ring_fractions
from caloforge.simulation.longitudinal import layer_fractions, sample_profile_parameters
from caloforge.simulation.params import SimulationParams

GENERATOR_NAME = "caloforge.simulation.parametric"
DEFAULT_ENERGY = "log-uniform:1GeV:1TeV"
_PHOTON_CONVERSION_X0 = 9.0 / 7.0
_BLOCK_VOXELS = 2**19  # ~0.5 M voxels (2 MB of float32) per block: cache-friendly
_WRITE_VOXELS = 2**23  # ~8 M voxels (32 MB) per write to a file


@dataclass(frozen=True)
class _Group:
    """Consecutive relevant layers sharing one binning: simulated as one (N, L, A, R) array."""

    layers: slice  # positions among the relevant layers
    n_alpha: int
    r_edges_rm: np.ndarray  # radial edges in Moliere radii
    voxels: slice  # columns of the flat voxel vector


def _groups(geometry: Geometry, moliere_mm: float) -> list[_Group]:
    groups: list[_Group] = []
    rel = [geometry.layers[i] for i in geometry.relevant_layers]
    offsets = geometry.layer_offsets
    start = 0
    for k in range(1, len(rel) + 1):
        if k == len(rel) or rel[k].r_edges != rel[start].r_edges or rel[k].n_alpha != rel[start].n_alpha:
            first = rel[start]
            groups.append(
                _Group(
                    layers=slice(start, k),
                    n_alpha=first.n_alpha,
                    r_edges_rm=np.asarray(first.r_edges, dtype=np.float64) / moliere_mm,
                    voxels=slice(int(offsets[start]), int(offsets[k])),
                )
            )
            start = k
    return groups


def block_size_for(geometry: Geometry) -> int:
    """Showers per internal block (a power of two fixed by the voxel count)."""
    n = _BLOCK_VOXELS / max(geometry.n_voxels, 1)
    return int(min(max(2 ** round(math.log2(n)), 32), 4096))


def _as_geometry(geometry: Geometry | str) -> Geometry:
    return get_geometry(geometry) if isinstance(geometry, str) else geometry


class ParametricSimulator:
    """GFlash-style parametric electromagnetic shower simulator for a readout geometry.

    >>> from caloforge.geometry import get_geometry
    >>> sim = ParametricSimulator(get_geometry("ds2"))
    >>> showers = sim.sample(np.array([1e4, 5e4]), np.random.default_rng(1))
    >>> showers.shape, showers.dtype
    ((2, 6480), dtype('float32'))

    ``params`` defaults to :class:`SimulationParams` (tuned to Geant4 DS2 electrons);
    ``detector`` to :func:`~caloforge.simulation.detector.detector_for` the geometry.
    """

    def __init__(
        self,
        geometry: Geometry | str,
        params: SimulationParams | None = None,
        detector: Detector | None = None,
    ):
        self.geometry = _as_geometry(geometry)
        self.params = params or SimulationParams()
        self.detector = detector or detector_for(self.geometry)
        if len(self.detector.depth_start) != self.geometry.n_layers:
            raise InputError(
                f"detector {self.detector.name} describes {len(self.detector.depth_start)} layers "
                f"but geometry {self.geometry.name} has {self.geometry.n_layers}"
            )
        self._lo, self._hi = self.detector.edges(self.params.depth_offset)
        self._groups = _groups(self.geometry, self.detector.moliere_mm)
        self.block_size = block_size_for(self.geometry)

    @property
    def n_voxels(self) -> int:
        return self.geometry.n_voxels

    def hit_energy(self, energy: np.ndarray) -> np.ndarray:
        """Mean visible energy (MeV) of one hit, per shower."""
        p = self.params
        h = p.hit_energy * self.detector.hit_energy_scale
        return h * (np.asarray(energy, dtype=np.float64) / 1e4) ** p.hit_energy_slope

    def response(self, energy: np.ndarray) -> np.ndarray:
        """Mean visible / incident energy before leakage, per shower."""
        p = self.params
        r0 = p.response * self.detector.response_scale
        e_gev = np.maximum(np.asarray(energy, dtype=np.float64) / 1e3, 0.5)  # tuned from 1 GeV up
        r = r0 * (1.0 + p.response_inv_e / e_gev)
        return np.clip(r, 0.05, 2.0)

    # ------------------------------------------------------------------ sampling
    def sample(self, incident_energies: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Simulate one shower per incident energy (MeV): float32 (N, voxels) in MeV.

        The energies are processed in blocks of :attr:`block_size` in order, all drawing from
        ``rng``: the same generator state and energies give bit-identical showers.
        """
        e = np.asarray(incident_energies, dtype=np.float64).reshape(-1)
        if e.size and not (np.all(np.isfinite(e)) and np.all(e > 0)):
            raise InputError("incident energies must be positive and finite")
        out = np.empty((e.size, self.n_voxels), dtype=np.float32)
        for a in range(0, e.size, self.block_size):
            b = min(a + self.block_size, e.size)
            out[a:b] = self._sample_block(e[a:b], rng)
        return out

    def _sample_block(self, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p, det = self.params, self.detector
        n = e.size
        start = rng.exponential(_PHOTON_CONVERSION_X0, n) if det.photon_start else None
        t_max, alpha = sample_profile_parameters(e, det.critical_mev, p, rng)
        tail = np.clip(p.tail_a + p.tail_b * np.log(e / 1e3), 0.0, 0.5)
        frac, centroid = layer_fractions(
            t_max, alpha, self._lo, self._hi, start, tail, p.tail_slope, p.tail_start
        )
        tau = centroid / t_max[:, None]
        r_core, r_tail, p_core = radial_parameters(tau, np.log(e / 1e3), p)
        hit_energy = self.hit_energy(e)  # (N,) MeV
        # expected hits per layer (N, L); divided by the voxels of a ring below
        layer_hits = (e * self.response(e) / hit_energy)[:, None] * frac
        n_track = self._track_layers()
        if n_track:  # the primary's own hits replace part of the profile's energy there
            track_energy = round(p.track_hits) * p.mip_energy
            track_hits = (track_energy / hit_energy)[:, None]
            layer_hits[:, :n_track] = np.maximum(layer_hits[:, :n_track] - track_hits, 0.0)
        out = np.zeros((n, self.n_voxels), dtype=np.float32)
        single = len(self._groups) == 1
        for g in self._groups:
            ls = g.layers
            rings = ring_fractions(g.r_edges_rm, r_core[:, ls], r_tail[:, ls], p_core[:, ls])
            mu = rings * (layer_hits[:, g.layers, None] / g.n_alpha)
            weights = None
            if p.cluster_size > 0 and g.n_alpha > 1:
                weights = cluster_weights(layer_hits[:, g.layers], g.n_alpha, p.cluster_size, rng)
            # energies in units of the mean hit energy, scaled per shower below
            if single:  # write in place: the group is the whole (contiguous) voxel vector
                view = out.reshape(mu.shape[:2] + (g.n_alpha, -1))
                sample_voxel_energies(
                    mu, g.n_alpha, 1.0, p.hit_shape, rng, out=view, alpha_weights=weights
                )
            else:
                vox = sample_voxel_energies(mu, g.n_alpha, 1.0, p.hit_shape, rng, alpha_weights=weights)
                out[:, g.voxels] = vox.reshape(n, -1)
        out *= hit_energy.astype(np.float32)[:, None]
        if n_track:
            self._add_track_hits(out, n_track, rng)
        return out

    def _track_layers(self) -> int:
        if not self.detector.primary_track or round(self.params.track_hits) < 1:
            return 0
        return min(round(self.params.track_layers), self.geometry.n_layers)

    def _add_track_hits(self, out: np.ndarray, n_track: int, rng: np.random.Generator) -> None:
        """Minimum-ionising hits of the primary on the axis (innermost ring, random angular bin)."""
        p, g = self.params, self.geometry
        n, hits = len(out), round(p.track_hits)
        rows = np.repeat(np.arange(n), hits)
        for k in range(n_track):
            layer = g.layers[g.relevant_layers[k]]
            alpha_bin = rng.integers(0, layer.n_alpha, n * hits)
            energy = p.mip_min + rng.exponential(p.mip_energy - p.mip_min, n * hits)
            cols = int(g.layer_offsets[k]) + alpha_bin * layer.n_r  # radial bin 0
            np.add.at(out, (rows, cols), energy.astype(np.float32))


# ---------------------------------------------------------------------- drivers
def _energy_spec(energy: EnergySpec | str) -> EnergySpec:
    return energy if isinstance(energy, EnergySpec) else parse_energy(str(energy))


def _block_rng(seed: int, block: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(block,))))


def iter_simulate(
    geometry: Geometry | str,
    n: int,
    energy: EnergySpec | str = DEFAULT_ENERGY,
    seed: int = 0,
    batch_size: int | None = None,
    params: SimulationParams | None = None,
    threads: int = 1,
    simulator: ParametricSimulator | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(incident energies (b,) MeV, showers (b, voxels) float32)`` batches, n in total.

    Batches hold ``batch_size`` showers (the last one fewer); the concatenated output depends
    only on (geometry, n, energy, seed, params). ``threads`` > 1 simulates blocks in parallel
    (numpy's generators release the GIL) without changing the result.
    """
    n = int(n)
    if n < 1:
        raise InputError(f"the number of showers must be at least 1 (got {n})")
    if seed is None or int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer (got {seed})")
    spec = _energy_spec(energy)
    sim = simulator or ParametricSimulator(_as_geometry(geometry), params)
    bs = sim.block_size
    batch = int(batch_size) if batch_size else bs
    if batch < 1:
        raise InputError(f"batch size must be at least 1 (got {batch})")
    n_blocks = -(-n // bs)
    threads = max(int(threads), 1)
    return _batches(sim, spec, n, int(seed), batch, n_blocks, threads)


def _batches(
    sim: ParametricSimulator, spec: EnergySpec, n: int, seed: int, batch: int, n_blocks: int, threads: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    bs = sim.block_size

    def run_block(b: int) -> tuple[np.ndarray, np.ndarray]:
        rng = _block_rng(seed, b)
        e = spec.sample(min(bs, n - b * bs), rng).astype(np.float64)
        return e, sim._sample_block(e, rng)

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if threads <= 1:
            for b in range(n_blocks):
                yield run_block(b)
            return
        with ThreadPoolExecutor(max_workers=threads) as pool:
            pending: deque = deque()
            nxt = 0
            while nxt < n_blocks or pending:
                while nxt < n_blocks and len(pending) < threads + 1:
                    pending.append(pool.submit(run_block, nxt))
                    nxt += 1
                yield pending.popleft().result()

    buf_e: list[np.ndarray] = []
    buf_s: list[np.ndarray] = []
    held = 0
    for e, s in blocks():
        buf_e.append(e)
        buf_s.append(s)
        held += e.size
        while held >= batch:
            cat_e = np.concatenate(buf_e) if len(buf_e) > 1 else buf_e[0]
            cat_s = np.concatenate(buf_s) if len(buf_s) > 1 else buf_s[0]
            yield cat_e[:batch], cat_s[:batch]
            buf_e, buf_s = [cat_e[batch:]], [cat_s[batch:]]
            held -= batch
    if held:
        yield np.concatenate(buf_e), np.concatenate(buf_s)


def simulate(
    geometry: Geometry | str,
    n: int,
    energy: EnergySpec | str = DEFAULT_ENERGY,
    seed: int = 0,
    batch_size: int | None = None,
    params: SimulationParams | None = None,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate ``n`` showers in memory: ``(incident energies (n,) MeV, showers (n, voxels))``."""
    batches = iter_simulate(geometry, n, energy, seed, batch_size, params, threads)
    geo = _as_geometry(geometry)
    energies = np.empty(int(n), dtype=np.float64)
    showers = np.empty((int(n), geo.n_voxels), dtype=np.float32)
    a = 0
    for e, s in batches:
        energies[a : a + e.size] = e
        showers[a : a + e.size] = s
        a += e.size
    return energies, showers


def simulate_to_file(
    path: str | Path,
    geometry: Geometry | str,
    n: int,
    energy: EnergySpec | str = DEFAULT_ENERGY,
    seed: int = 0,
    batch_size: int | None = None,
    params: SimulationParams | None = None,
    threads: int = 1,
    progress: Callable[[int], object] | None = None,
    compression: str | None = "gzip",
    timings: dict | None = None,
) -> Path:
    """Simulate ``n`` showers straight into a CaloChallenge HDF5 file, atomically.

    ``progress`` is called with the number of showers just written after every batch. The file
    records the generator, seed, energy specification, geometry and parameters (as JSON) in its
    attributes; nothing is left at ``path`` if the run fails or is interrupted. ``compression``
    is passed to :class:`~caloforge.data.ShowerWriter` (gzip, as the official files, is the
    slowest part of a run; ``"lzf"`` or ``None`` write several times faster). A ``timings`` dict,
    when given, receives the seconds spent simulating (``"simulate"``) and writing (``"write"``).
    """
    import time

    geo = _as_geometry(geometry)
    spec = _energy_spec(energy)
    sim = ParametricSimulator(geo, params)
    attrs = provenance(
        GENERATOR_NAME,
        seed,
        dataset=geo.name,
        particle=geo.particle,
        energy=str(spec),
        detector=sim.detector.name,
        simulation_params=sim.params.to_json(),
        reference="GFlash-style parametrisation, Grindhammer & Peters, hep-ex/0001020",
    )
    if batch_size is None:
        batch_size = max(sim.block_size, _WRITE_VOXELS // geo.n_voxels)
    batches = iter_simulate(geo, n, spec, seed, batch_size, threads=threads, simulator=sim)
    t_sim = t_write = 0.0
    writer = ShowerWriter(path, geo.n_voxels, attrs=attrs, compression=compression, expected_rows=int(n))
    with writer:
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            t1 = time.perf_counter()
            t_sim += t1 - t0
            if batch is None:
                break
            writer.append(*batch)
            t_write += time.perf_counter() - t1
            if progress is not None:
                progress(batch[0].size)
    if timings is not None:
        timings.update(simulate=t_sim, write=t_write)
    return Path(path)
