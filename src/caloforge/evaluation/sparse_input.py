"""A first linear layer for mostly-zero inputs: the classifier's voxels on the CPU.

The low-level classifier's input is ``voxels / E_inc``, about 90% exact zeros for DS2 and DS3.
Its first layer (6,481 x 2,048 for DS2) is 60% of the multiply-adds of the official 3 x 2048
network, and a dense product spends most of them on zeros. :class:`SparseInputLinear` computes
the same layer from the non-zero entries only:

- forward: ``x @ W^T + b`` with ``x`` as a compressed-sparse-column matrix (scipy's CSC times a
  dense matrix, one pass over each column of ``x`` reading one row of ``W^T`` once);
- backward: ``dL/dW^T = x^T dL/dy`` with the same arrays read as ``x^T`` in CSR form (torch's
  sparse CSR times dense product), ``dL/db`` the column sums; ``dL/dx`` only if asked for.

Same products in another summation order: the numbers equal the dense layer's to float32
rounding (tested), not bit for bit. Measured on one thread of this machine, batches of 1,000
real Geant4 DS2 inputs (10% non-zero): a training step of the official network 1.07 s instead of
1.35 s, an evaluation pass 0.40 s instead of 0.52 s. With several torch threads the forward
product is split by output columns over as many threads (scipy releases the GIL; the same
numbers at every thread count): 0.08 s on two threads against 0.16 s for the dense product. Dense inputs are slower this way (the
break-even is near 17% non-zero), hence :data:`MAX_DENSITY`, and so are narrow layers, hence
:data:`MIN_OUTPUTS`; CUDA keeps the dense layer.

>>> import torch
>>> torch.manual_seed(0) and None
>>> dense = torch.nn.Linear(6, 3)
>>> x = torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0, 0.0, 0.0]])
>>> sparse = SparseInputLinear.from_linear(dense)
>>> torch.allclose(sparse(x), dense(x))
True
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse
import torch
from torch import nn

#: Fraction of non-zero inputs below which :class:`SparseInputLinear` is faster than a dense
#: layer on the CPU (break-even measured near 0.17 on this machine; a margin below it).
MAX_DENSITY = 0.12
#: Fewest outputs of the layer for which it pays: the conversion of each batch to the sparse
#: format costs about as much as a dense product with ~200 outputs (DS3 with a 32-unit layer:
#: 35.7 s instead of 16.1 s for one epoch of 20,000 vs 20,000 showers); the official layer has 2,048.
MIN_OUTPUTS = 512

# torch marks its sparse CSR tensors as beta with a warning on every construction; the product
# used here (CSR times dense on the CPU) is tested against the dense one in tests/test_classifier_sparse.py.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _csc_times_dense(xc: scipy.sparse.csc_matrix, w: np.ndarray, threads: int) -> np.ndarray:
    """``xc @ w`` as float32; with several threads each computes a block of the output's columns
    (scipy releases the GIL). Every output number is summed in the same order whatever the
    split, so the result does not depend on the thread count."""
    n_out = w.shape[1]
    parts = min(threads, n_out // 256)
    if parts < 2:
        return np.ascontiguousarray(xc @ w, dtype=np.float32)
    out = np.empty((xc.shape[0], n_out), dtype=np.float32)
    cuts = np.linspace(0, n_out, parts + 1).astype(int)

    def block(a: int, b: int) -> None:
        out[:, a:b] = xc @ w[:, a:b]

    pool = _POOLS.get(parts)
    if pool is None:
        pool = _POOLS[parts] = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="caloforge-sparse")
    list(pool.map(block, cuts[:-1], cuts[1:]))
    return out


class _SparseInputProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        xc = scipy.sparse.csc_matrix(x.detach().contiguous().numpy())
        out = torch.from_numpy(_csc_times_dense(xc, weight_t.detach().numpy(), torch.get_num_threads()))
        out += bias.detach()
        ctx.xc, ctx.x_shape = xc, tuple(x.shape)
        ctx.save_for_backward(weight_t)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (weight_t,) = ctx.saved_tensors
        xc: scipy.sparse.csc_matrix = ctx.xc
        n, d = ctx.x_shape
        g = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = g @ weight_t.T
        if ctx.needs_input_grad[1]:
            # the CSC arrays of x are the CSR arrays of x^T
            xt = torch.sparse_csr_tensor(torch.from_numpy(xc.indptr.astype(np.int64)),
                                         torch.from_numpy(xc.indices.astype(np.int64)),
                                         torch.from_numpy(xc.data), size=(d, n), check_invariants=False)
            grad_w = xt @ g
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


class SparseInputLinear(nn.Module):
    """``nn.Linear`` for CPU float32 inputs that are mostly exact zeros (module doc).

    The weight is stored transposed, ``weight_t`` of shape (in, out), the layout both sparse
    products read; :meth:`from_linear` copies a ``nn.Linear``'s values (and so its
    initialisation).

    References:
        Duff, Erisman, Reid, "Direct Methods for Sparse Matrices" (2nd ed., 2017), for the
        compressed sparse column and row formats.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SparseInputLinear:
        out = cls(linear.in_features, linear.out_features)
        with torch.no_grad():
            out.weight_t.copy_(linear.weight.T)
            out.bias.copy_(linear.bias if linear.bias is not None else torch.zeros(linear.out_features))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 2:
            return x @ self.weight_t + self.bias
        return _SparseInputProduct.apply(x, self.weight_t, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, sparse inputs"


def nonzero_fraction(x: torch.Tensor) -> float:
    """Fraction of the entries of ``x`` that are not exactly zero."""
    return float(torch.count_nonzero(x)) / max(x.numel(), 1)
