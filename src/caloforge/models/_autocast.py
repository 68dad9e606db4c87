"""bfloat16 autocast on CPUs with bfloat16 matrix units (Intel AMX), for training and sampling."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch


def cpu_has_bf16_matrix_units() -> bool:
    """True on CPUs where bfloat16 matrix products are fast (Intel AMX-BF16)."""
    try:
        caps = torch._C._cpu._get_cpu_capability()  # private but stable since torch 2.3
    except Exception:  # pragma: no cover - older or other builds
        return False
    return bool(caps.get("amx_bf16", False))


def autocast_context(device: torch.device, mode: Any) -> Any:
    """bfloat16 autocast on the CPU when ``mode`` is True, or "auto" and the CPU has AMX."""
    if device.type != "cpu" or mode in (False, None, "off"):
        return nullcontext()
    if mode == "auto" and not cpu_has_bf16_matrix_units():
        return nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)
