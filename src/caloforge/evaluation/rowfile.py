"""Classifier inputs too large for memory: float32 rows in a scratch file, read batch by batch.

The low-level classifier inputs of DS3 are 40,501 float32 numbers (162 kB) per shower: 16 GB per
100,000-shower sample. :func:`~caloforge.evaluation.pipeline.evaluate` keeps them in memory up to
a budget and beyond it writes them, in the one streamed read of each file, to a :class:`RowFile`
(uncompressed rows, in order); the classifier then reads the rows of each batch with
``os.preadv`` (a row, or a run of consecutive rows, per call). The batches are the rows the
in-memory arrays would give, in the same order, so the classifier's numbers do not change.

Reads go through the operating system's page cache, not the process's memory: on a machine with
enough free memory the file is read from disk once and the later epochs run from the cache.

>>> import tempfile, numpy as np
>>> with tempfile.TemporaryDirectory() as d:
...     f = RowFile.create(f"{d}/x.f32", n_cols=3)
...     f.append(np.arange(12, dtype=np.float32).reshape(4, 3))
...     f.take(np.array([3, 0, 1])).tolist()
[[9.0, 10.0, 11.0], [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_ROW_DTYPE = np.dtype(np.float32)


class RowFile:
    """Float32 rows of a fixed width in a raw binary file: appended in order, then read by index.

    Quacks like the 2-D float32 arrays the classifier takes (``shape``, ``dtype``, ``len``) and
    adds :meth:`take`. Pickles as its path and shape (for Dask workers on the same machine or a
    shared file system), never as data.
    """

    def __init__(self, path: str | os.PathLike, n_cols: int, n_rows: int = 0):
        self.path = Path(path)
        self.n_cols = int(n_cols)
        self.n_rows = int(n_rows)
        self._fd: int | None = None

    @classmethod
    def create(cls, path: str | os.PathLike, n_cols: int) -> RowFile:
        """A new, empty file at ``path`` (an existing file there is an error)."""
        out = cls(path, n_cols)
        out._fd = os.open(out.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return out

    # ------------------------------------------------------------------ array-like
    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)

    @property
    def dtype(self) -> np.dtype:
        return _ROW_DTYPE

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return self.n_rows * self.n_cols * _ROW_DTYPE.itemsize

    def __len__(self) -> int:
        return self.n_rows

    # ------------------------------------------------------------------ writing and reading
    def _handle(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def append(self, block: np.ndarray) -> None:
        """Write ``block`` ((k, n_cols), converted to float32) after the rows already written."""
        b = np.ascontiguousarray(block, dtype=_ROW_DTYPE)
        if b.ndim != 2 or b.shape[1] != self.n_cols:
            raise ValueError(f"{self.path}: rows must have {self.n_cols} columns, got shape {b.shape}")
        view, offset = b.data.cast("B"), self.nbytes
        while len(view):  # pwrite may write less than asked
            done = os.pwrite(self._handle(), view, offset)
            view, offset = view[done:], offset + done
        self.n_rows += len(b)

    def take(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as a (len(rows), n_cols) float32 array."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise IndexError(f"{self.path}: row index out of range [0, {self.n_rows})")
        if out is None:
            out = np.empty((len(rows), self.n_cols), dtype=_ROW_DTYPE)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        # runs of consecutive rows (in sorted order) are read with one call each
        cuts = np.flatnonzero(np.diff(srt) != 1) + 1
        buf = np.empty_like(out)
        row_bytes = self.n_cols * _ROW_DTYPE.itemsize
        fd = self._handle()
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(srt)], strict=True):
            view, offset = buf[a:b].data.cast("B"), int(srt[a]) * row_bytes
            while len(view):
                done = os.preadv(fd, [view], offset)
                if done == 0:
                    raise OSError(f"{self.path}: file shorter than its {self.n_rows} rows")
                view, offset = view[done:], offset + done
        out[order] = buf
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def unlink(self) -> None:
        """Close and delete the file."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __getstate__(self) -> dict:
        return {"path": str(self.path), "n_cols": self.n_cols, "n_rows": self.n_rows}

    def __setstate__(self, state: dict) -> None:
        self.path, self.n_cols, self.n_rows = Path(state["path"]), int(state["n_cols"]), int(state["n_rows"])
        self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    def __repr__(self) -> str:
        return f"RowFile({str(self.path)!r}, shape={self.shape})"
