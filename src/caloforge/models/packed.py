"""Compact storage of ternary weights: 2 bits per weight, four to a byte, plus a scale.

A ternary weight tensor ``W = scale * T`` with ``T`` in {-1, 0, +1} (BitNet b1.58) is stored in
``model.safetensors`` as ``NAME.__ternary_codes`` (uint8, the codes ``T + 1`` packed four per
byte, first code in the lowest bits) and ``NAME.__ternary_scale`` (float32, one per tensor or per output channel);
``model.json`` lists the packed tensors with their shapes under ``compression.ternary``.
:func:`unpack_state` restores the float32 weights when a model folder is loaded, so every
caloforge command runs a ternary model unchanged.

>>> t = torch.tensor([[-1, 0, 1], [1, 1, -1]], dtype=torch.int8)
>>> p = pack_codes(t)
>>> p.dtype, p.numel(), unpack_codes(p, t.shape).tolist()
(torch.uint8, 2, [[-1, 0, 1], [1, 1, -1]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

CODES = ".__ternary_codes"
SCALE = ".__ternary_scale"


def pack_codes(codes: Tensor) -> Tensor:
    """Ternary codes (any shape, values in {-1, 0, 1}) -> uint8, four per byte."""
    flat = (codes.reshape(-1).to(torch.int16) + 1).to(torch.uint8)
    pad = (-flat.numel()) % 4
    if pad:
        flat = torch.cat([flat, torch.ones(pad, dtype=torch.uint8)])
    q = flat.reshape(-1, 4)
    return q[:, 0] | (q[:, 1] << 2) | (q[:, 2] << 4) | (q[:, 3] << 6)


def unpack_codes(packed: Tensor, shape: Sequence[int]) -> Tensor:
    """The inverse of :func:`pack_codes`: int8 codes in {-1, 0, 1} of ``shape``."""
    p = packed.reshape(-1).to(torch.uint8)
    q = torch.stack([(p >> s) & 3 for s in (0, 2, 4, 6)], dim=1).reshape(-1)
    n = 1
    for d in shape:
        n *= int(d)
    if q.numel() < n or (q[n:] != 1).any() or q.numel() - n >= 4 or (q[:n] > 2).any():
        raise ValueError("packed ternary codes do not match the declared shape")
    return (q[:n].to(torch.int8) - 1).reshape(tuple(int(d) for d in shape))


def unpack_state(state: Mapping[str, Tensor], ternary: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
    """A state dict with every packed ternary weight (listed in ``ternary``: name -> shape)
    replaced by its float32 value ``scale * codes``."""
    packed = {name + suffix for name in ternary for suffix in (CODES, SCALE)}
    out = {k: v for k, v in state.items() if k not in packed}
    for name, shape in ternary.items():
        if name + CODES not in state or name + SCALE not in state:
            raise KeyError(f"packed ternary weight {name!r} is missing from the weights file")
        codes = unpack_codes(state[name + CODES], shape).to(torch.float32)
        scale = state[name + SCALE].to(torch.float32)
        out[name] = codes * scale.reshape(-1, *([1] * (len(shape) - 1))) if scale.numel() > 1 else codes * scale
    return out


def compression_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``compression`` entry of a ``model.json`` (empty for an uncompressed model)."""
    value = meta.get("compression") or {}
    return dict(value) if isinstance(value, Mapping) else {}
