"""Reading and writing CaloChallenge HDF5 shower files.

Reading is streamed: :meth:`ShowerFile.iter_chunks` yields row blocks so that an 8 GB DS3 file
is processed in bounded memory, and several files (DS3 ships in two) read as one. Every problem
with an input file becomes an :class:`~caloforge.errors.InputError` naming the file.

Writing is atomic and compressed: :class:`ShowerWriter` writes into a temporary file beside the
target and renames it into place only when everything was written, so an interrupted write leaves
no file behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import queue
import threading
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np

from caloforge import __version__
from caloforge._atomic import finish, release, temporary_sibling
from caloforge.errors import InputError
from caloforge.geometry import Geometry, geometry_for_voxels

T = TypeVar("T")
ENERGY_KEY = "incident_energies"
SHOWER_KEY = "showers"

#: Default rows per chunk when streaming; ~26 MB of float32 for DS2, ~160 MB for DS3.
DEFAULT_CHUNK_BYTES = 64 * 2**20

try:  # ISA-L's inflate: the same bytes as zlib's, about twice as fast
    from isal.isal_zlib import decompress as _inflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _inflate = zlib.decompress


def _rows_per_chunk(n_voxels: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // (4 * max(n_voxels, 1)))


@dataclass
class _Part:
    path: Path
    n: int
    n_voxels: int
    energy_dtype: np.dtype = np.dtype(np.float64)
    shower_dtype: np.dtype = np.dtype(np.float32)


def h5_problem(exc: BaseException) -> str:
    """A reader's words for what HDF5 (through h5py) reported on a failed read."""
    text = str(exc)
    low = text.lower()
    if "external raw data file" in low or "external" in low and "open" in low:
        return "its data lie in an external raw-data file that cannot be opened (moved or missing)"
    if "plugin" in low or "required filter" in low or "not registered" in low or "can't open directory" in low:
        return ("compressed with an HDF5 filter that is not available here (a plugin filter; "
                "'pip install hdf5plugin' provides the common ones, or rewrite the file with gzip)")
    if "filter returned failure" in low or "checksum" in low or "fletcher" in low:
        return "corrupt data: a compressed or checksummed block fails to decode (damaged or truncated file)"
    if "component not found" in low or "unable to synchronously open object" in low or isinstance(exc, KeyError):
        return "a dataset is a broken link (soft or external link to an object that does not exist)"
    if "truncated" in low or "eof" in low or "file signature" in low:
        return "truncated or damaged HDF5 file"
    return f"cannot read HDF5 data ({text or type(exc).__name__})"


#: What h5py raises on damaged files, missing filters, broken links and the like.
_H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)


def _inspect(path: Path) -> _Part:
    """Structural checks of one file, reading no shower data."""
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a directory, not an HDF5 file", path)
    if not h5py.is_hdf5(path):
        raise InputError("not an HDF5 file", path)
    try:
        with h5py.File(path, "r") as f:
            for key in (ENERGY_KEY, SHOWER_KEY):
                if key not in f:
                    raise InputError(f"missing dataset '{key}'", path)
                if not isinstance(f[key], h5py.Dataset):
                    raise InputError(f"'{key}' is not a dataset", path)
            e, s = f[ENERGY_KEY], f[SHOWER_KEY]
            if s.ndim != 2:
                raise InputError(f"'showers' must be 2-dimensional (N, voxels), got shape {s.shape}", path)
            if not (e.ndim == 1 or (e.ndim == 2 and e.shape[1] == 1)):
                raise InputError(f"'incident_energies' must have shape (N, 1), got {e.shape}", path)
            if e.shape[0] != s.shape[0]:
                raise InputError(
                    f"row counts differ: {e.shape[0]} incident energies but {s.shape[0]} showers", path
                )
            if s.shape[0] == 0:
                raise InputError("holds no showers", path)
            for key, ds in ((ENERGY_KEY, e), (SHOWER_KEY, s)):
                if not np.issubdtype(ds.dtype, np.number):
                    raise InputError(f"'{key}' is not numeric (dtype {ds.dtype})", path)
            return _Part(path, int(s.shape[0]), int(s.shape[1]), np.dtype(e.dtype), np.dtype(s.dtype))
    except InputError:
        raise
    except _H5_ERRORS as exc:
        raise InputError(h5_problem(exc), path) from None


def check_incident_energies(e: np.ndarray, path: Path | None, first_row: int = 0) -> None:
    bad = ~np.isfinite(e)
    if bad.any():
        raise InputError(f"incident energy at row {first_row + int(np.argmax(bad))} is NaN or inf", path)
    bad = e <= 0
    if bad.any():
        row = first_row + int(np.argmax(bad))
        raise InputError(f"non-positive incident energy {e[bad][0]:g} MeV at row {row}", path)


def check_showers(s: np.ndarray, path: Path | None, first_row: int = 0) -> None:
    if s.size == 0:
        return
    lo, hi = s.min(), s.max()  # NaN propagates into both; two passes without temporaries
    if lo >= 0 and np.isfinite(hi):
        return
    finite = np.isfinite(s)
    if not finite.all():
        row = first_row + int(np.argmax(~finite.all(axis=1)))
        raise InputError(f"shower at row {row} holds NaN or inf", path)
    neg = s < 0
    if neg.any():
        row = first_row + int(np.argmax(neg.any(axis=1)))
        raise InputError(f"shower at row {row} holds a negative energy ({s[neg].min():g} MeV)", path)


@contextlib.contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn h5py's errors while reading ``what`` of ``path`` into an :class:`InputError`."""
    try:
        yield
    except InputError:
        raise
    except _H5_ERRORS as exc:
        raise InputError(f"{what}: {h5_problem(exc)}", path) from None


class _ChunkDecoder:
    """Decodes row blocks of a gzip-compressed float32 ``showers`` dataset in worker threads.

    Applies when every HDF5 chunk spans whole rows and the filter pipeline is deflate alone or
    byte shuffle then deflate (what the official files and :class:`ShowerWriter` use). Each chunk's
    stored bytes are read (``read_direct_chunk``), inflated (ISA-L, else zlib: both release the
    GIL) and unshuffled (the four byte planes of the little-endian float32 values put back
    together as 32-bit integers), in ``threads`` workers, so that decompression, the largest cost
    of reading a compressed file, runs on every CPU and beside the caller's computation. A block
    whose chunks cannot be read this way (a chunk stored with a filter skipped, or not allocated)
    is read by HDF5 instead. The values are those HDF5 returns, bit for bit.
    """

    def __init__(self, ds: h5py.Dataset, rows: int, shuffled: bool, threads: int):
        self.ds, self.rows, self.shuffled = ds, rows, shuffled
        self.n_cols = int(ds.shape[1])
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="caloforge-inflate")

    @classmethod
    def for_dataset(cls, ds: h5py.Dataset, threads: int) -> _ChunkDecoder | None:
        """A decoder for ``ds``, or None when its layout is not one it decodes."""
        if ds.chunks is None or ds.ndim != 2 or ds.chunks[1] != ds.shape[1] or ds.dtype != np.dtype("<f4"):
            return None
        try:
            plist = ds.id.get_create_plist()
            filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        except _H5_ERRORS:
            return None
        if filters == [h5py.h5z.FILTER_DEFLATE]:
            return cls(ds, int(ds.chunks[0]), False, threads)
        if filters == [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]:
            return cls(ds, int(ds.chunks[0]), True, threads)
        return None

    def _decode(self, first_row: int, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows ``lo:hi`` of the dataset (inside the chunk starting at ``first_row``) into ``out``."""
        mask, raw = self.ds.id.read_direct_chunk((first_row, 0))
        if mask:
            raise _NotDecodable
        data = np.frombuffer(_inflate(raw), dtype=np.uint8)
        if data.size != self.rows * self.n_cols * 4:
            raise _NotDecodable
        e0, e1 = (lo - first_row) * self.n_cols, (hi - first_row) * self.n_cols
        if not self.shuffled:
            out[...] = data.view("<f4")[e0:e1].reshape(out.shape)
            return
        planes = data.reshape(4, -1)  # byte k of every value, least significant first
        bits = out.reshape(-1).view(np.uint32)
        np.copyto(bits, planes[3, e0:e1])
        for k in (2, 1, 0):
            bits <<= 8
            bits |= planes[k, e0:e1]

    def submit(self, a: int, b: int) -> tuple[int, int, np.ndarray, list[Future]]:
        """Start decoding rows ``a:b``."""
        out = np.empty((b - a, self.n_cols), dtype=np.float32)
        futures = []
        for first in range(a // self.rows * self.rows, b, self.rows):
            lo, hi = max(a, first), min(b, first + self.rows)
            futures.append(self.pool.submit(self._decode, first, lo, hi, out[lo - a : hi - a]))
        return a, b, out, futures

    def result(self, job: tuple[int, int, np.ndarray, list[Future]]) -> np.ndarray:
        """The rows of a :meth:`submit`; read by HDF5 if any chunk could not be decoded here."""
        a, b, out, futures = job
        # every worker must be done with ``out`` before HDF5 refills it or it is returned: a
        # worker still unshuffling a chunk leaves partial values behind (seen as NaN)
        wait(futures)
        if any(f.exception() is not None for f in futures):  # HDF5 reads the block, reports real damage
            out[...] = np.asarray(self.ds[a:b], dtype=np.float32)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _NotDecodable(Exception):
    """A chunk that :class:`_ChunkDecoder` leaves to HDF5."""


class ShowerFile:
    """One or several CaloChallenge HDF5 files read as one sample.

    Structural problems (missing file, not HDF5, missing dataset, row counts that differ, voxel
    counts that fit no geometry or differ between files, wrong dimensionality) and bad incident
    energies are found when the object is made; NaN, inf or negative voxel energies are found as
    the showers are streamed (they are checked in every chunk read).
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], geometry: Geometry | None = None):
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise InputError("no input file given")
        self.parts = [_inspect(Path(p)) for p in paths]
        v0 = self.parts[0].n_voxels
        for part in self.parts[1:]:
            if part.n_voxels != v0:
                raise InputError(
                    f"has {part.n_voxels} voxels per shower but {self.parts[0].path} has {v0}", part.path
                )
        if geometry is None:
            geometry = geometry_for_voxels(v0, self.parts[0].path)
        elif geometry.n_voxels != v0:
            raise InputError(
                f"has {v0} voxels per shower but geometry {geometry.name} has {geometry.n_voxels}",
                self.parts[0].path,
            )
        self.geometry = geometry
        self._energies: np.ndarray | None = None
        self.incident_energies()  # validates them now: they are small

    # ------------------------------------------------------------------ basics
    @property
    def paths(self) -> list[Path]:
        return [p.path for p in self.parts]

    @property
    def n(self) -> int:
        return sum(p.n for p in self.parts)

    def __len__(self) -> int:
        return self.n

    @property
    def n_voxels(self) -> int:
        return self.parts[0].n_voxels

    @property
    def energy_dtype(self) -> np.dtype:
        """The floating dtype the stored incident energies have (float32 or float64; integer or
        mixed files give float64). :meth:`incident_energies` always returns float64, which holds
        float32 values exactly; the official evaluation divides E_tot by E_inc in the stored dtype,
        so :mod:`caloforge.evaluation` casts back to this dtype where it matters."""
        dts = {p.energy_dtype for p in self.parts}
        return np.dtype(np.float32) if dts == {np.dtype(np.float32)} else np.dtype(np.float64)

    @property
    def shower_dtype(self) -> np.dtype:
        """The dtype of the stored showers (:meth:`iter_chunks` always yields float32)."""
        return np.result_type(*(p.shower_dtype for p in self.parts))

    @property
    def attrs(self) -> dict:
        """The HDF5 attributes of the first file (provenance)."""
        try:
            with h5py.File(self.parts[0].path, "r") as f:
                return {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in f.attrs.items()}
        except _H5_ERRORS as exc:
            raise InputError(f"cannot read the file's attributes: {h5_problem(exc)}", self.parts[0].path) from None

    def incident_energies(self) -> np.ndarray:
        """All incident energies (MeV) as a flat float64 array, validated."""
        if self._energies is None:
            out, start = [], 0
            for part in self.parts:
                try:
                    with h5py.File(part.path, "r") as f:
                        e = np.asarray(f[ENERGY_KEY][...], dtype=np.float64).reshape(-1)
                except _H5_ERRORS as exc:
                    raise InputError(f"'{ENERGY_KEY}': {h5_problem(exc)}", part.path) from None
                check_incident_energies(e, part.path)
                out.append(e)
                start += part.n
            self._energies = np.concatenate(out)
        return self._energies

    # --------------------------------------------------------------- streaming
    def iter_chunks(
        self,
        chunk_size: int | None = None,
        validate: bool = True,
        start: int = 0,
        stop: int | None = None,
        threads: int = 1,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(incident_energies (n,), showers (n, voxels) float32)`` blocks in file order.

        Memory use is bounded by a few blocks (``chunk_size`` rows; by default ~64 MB of
        showers, rounded down to whole HDF5 chunks). ``start``/``stop`` select a global row range
        across all files. Files compressed with gzip (optionally after HDF5's byte shuffle), as
        the official and caloforge-written ones are, are decoded here by ``threads`` worker
        threads (:class:`_ChunkDecoder`), the next block while the caller works on this one;
        other layouts are read by HDF5. Both give the same values, bit for bit.
        """
        stop = self.n if stop is None else min(stop, self.n)
        energies = self.incident_energies()
        offset = 0
        for part in self.parts:
            lo, hi = max(start - offset, 0), min(stop - offset, part.n)
            if lo < hi:
                with _reading(part.path, "'showers'"), h5py.File(part.path, "r", rdcc_nbytes=16 * 2**20) as f:
                    ds = f[SHOWER_KEY]
                    decoder = _ChunkDecoder.for_dataset(ds, threads)
                    chunk = chunk_size or _rows_per_chunk(self.n_voxels)
                    if decoder is not None and chunk_size is None:
                        chunk = max(decoder.rows, chunk // decoder.rows * decoder.rows)
                    ranges = [(a, min(a + chunk, hi)) for a in range(lo, hi, chunk)]
                    try:
                        pending = decoder.submit(*ranges[0]) if decoder is not None else None
                        for i, (a, b) in enumerate(ranges):
                            with _reading(part.path, f"'showers' rows {a}-{b - 1}"):
                                if decoder is not None and pending is not None:
                                    current = pending
                                    if i + 1 < len(ranges):  # decode the next block meanwhile
                                        pending = decoder.submit(*ranges[i + 1])
                                    s = decoder.result(current)
                                else:
                                    s = np.asarray(ds[a:b], dtype=np.float32)
                            if validate:
                                check_showers(s, part.path, a)
                            yield energies[offset + a : offset + b], s
                    finally:
                        if decoder is not None:
                            decoder.close()
            offset += part.n

    def read(self, start: int = 0, stop: int | None = None, validate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Read a row range into memory: ``(incident_energies (n,), showers (n, voxels))``."""
        es, ss = [], []
        for e, s in self.iter_chunks(validate=validate, start=start, stop=stop):
            es.append(e)
            ss.append(s)
        return np.concatenate(es), np.concatenate(ss)

    def __repr__(self) -> str:
        names = ", ".join(str(p) for p in self.paths)
        return f"ShowerFile([{names}], n={self.n}, geometry={self.geometry.name})"


def prefetch(blocks: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield from ``blocks`` while a background thread reads the next one (overlaps HDF5
    decompression with the caller's computation; numpy releases the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def worker() -> None:
        try:
            for b in blocks:
                q.put(b)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)
        q.put(done)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()


def open_showers(paths: str | Path | Sequence[str | Path], geometry: Geometry | None = None) -> ShowerFile:
    """Open (and structurally validate) one or several CaloChallenge files as one sample."""
    return ShowerFile(paths, geometry)


def read_showers(
    paths: str | Path | Sequence[str | Path], geometry: Geometry | None = None, max_showers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read whole files into memory; small files only (see :meth:`ShowerFile.iter_chunks`)."""
    return open_showers(paths, geometry).read(stop=max_showers)


# ---------------------------------------------------------------------- writing
def provenance(generator: str, seed: int | None = None, **extra: object) -> dict:
    """Standard provenance attributes stored in every file caloforge writes."""
    attrs: dict[str, object] = {
        "generator": generator,
        "caloforge_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if seed is not None:
        attrs["seed"] = int(seed)
    for k, v in extra.items():
        if v is not None:
            attrs[k] = v if isinstance(v, (int, float, str, np.number)) else str(v)
    return attrs


class ShowerWriter:
    """Stream showers into a new CaloChallenge file, atomically.

    >>> with ShowerWriter("out.h5", n_voxels=6480, attrs=provenance("demo")) as w:  # doctest: +SKIP
    ...     w.append(energies, showers)

    The data go to a temporary file in the target's folder; on a clean exit it is renamed to the
    target, on an exception it is deleted, so no half-written file is ever left at the target.
    """

    def __init__(
        self,
        path: str | Path,
        n_voxels: int,
        attrs: dict | None = None,
        compression: str | None = "gzip",
        compression_level: int = 1,
        expected_rows: int | None = None,
    ):
        self.path = Path(path)
        self.n_voxels = int(n_voxels)
        self.attrs = attrs or {}
        self.compression = compression
        self.compression_level = compression_level
        self.expected_rows = expected_rows
        self.n = 0
        self._file: h5py.File | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> ShowerWriter:
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError("output folder does not exist", parent)
        self._tmp = temporary_sibling(self.path)
        self._file = h5py.File(self._tmp, "w")
        rows = _rows_per_chunk(self.n_voxels, 2**20)  # ~1 MB HDF5 chunks
        kw = {}
        if self.compression == "gzip":
            kw = {"compression": "gzip", "compression_opts": self.compression_level, "shuffle": True}
        elif self.compression:
            kw = {"compression": self.compression}
        self._e = self._file.create_dataset(
            ENERGY_KEY, shape=(0, 1), maxshape=(None, 1), dtype="f4", chunks=(max(rows, 1024), 1), **kw
        )
        self._s = self._file.create_dataset(
            SHOWER_KEY, shape=(0, self.n_voxels), maxshape=(None, self.n_voxels), dtype="f4",
            chunks=(rows, self.n_voxels), **kw,
        )
        for k, v in self.attrs.items():
            self._file.attrs[k] = v
        return self

    def append(self, incident_energies: np.ndarray, showers: np.ndarray) -> None:
        e = np.asarray(incident_energies, dtype=np.float32).reshape(-1, 1)
        s = np.asarray(showers, dtype=np.float32)
        if s.ndim != 2 or s.shape[1] != self.n_voxels or s.shape[0] != e.shape[0]:
            raise ValueError(f"expected ({e.shape[0]}, {self.n_voxels}) showers, got {s.shape}")
        a, b = self.n, self.n + e.shape[0]
        try:
            self._e.resize(b, axis=0)
            self._s.resize(b, axis=0)
            self._e[a:b] = e
            self._s[a:b] = s
        except (OSError, RuntimeError) as exc:
            raise _write_error(exc, self.path) from None
        self.n = b

    def _abandon(self) -> None:
        """Close a file whose writes failed (full disk, file-size limit) without crashing.

        HDF5 keeps unwritten metadata and tries to flush it on close and again at interpreter
        exit, where a second failure crashes the process (seen as a segmentation fault on a full
        disk). Pointing the file's descriptor at the null device lets those last writes succeed
        harmlessly; the temporary file is deleted right after."""
        assert self._file is not None
        try:
            fd = self._file.id.get_vfd_handle()
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
        except (OSError, RuntimeError, ValueError, TypeError):
            pass
        try:
            self._file.close()
        except (OSError, RuntimeError, ValueError):
            pass

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._tmp is not None
        try:
            if exc_type is None:
                try:
                    self._file.attrs["n_showers"] = self.n
                    self._file.flush()  # a full disk fails here, while the file can still be abandoned
                    self._file.close()
                except (OSError, RuntimeError) as error:
                    self._abandon()
                    raise _write_error(error, self.path) from None
            else:
                self._abandon()
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            release(self._tmp)
            raise
        if exc_type is None:
            finish(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
            release(self._tmp)


def _write_error(exc: BaseException, path: Path) -> OSError:
    """An :class:`OSError` naming the output file, with the operating system's reason when HDF5
    reports one (``errno = 28``: no space left on the device)."""
    import errno as _errno
    import re

    code = getattr(exc, "errno", None)
    if not code:
        m = re.search(r"errno = (\d+)", str(exc))
        code = int(m.group(1)) if m else _errno.EIO
    return OSError(code, os.strerror(code), str(path))


def write_showers(
    path: str | Path,
    incident_energies: np.ndarray,
    showers: np.ndarray,
    attrs: dict | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write a whole sample to ``path`` atomically (see :class:`ShowerWriter`)."""
    showers = np.asarray(showers)
    with ShowerWriter(path, showers.shape[1], attrs, compression) as w:
        w.append(incident_energies, showers)
    return Path(path)
