"""Device and numeric precision, chosen automatically (and overridable).

* :func:`choose_device` — ``cuda``, then Apple ``mps``, then ``cpu``;
* :func:`choose_precision` — ``bf16`` where the hardware runs it natively (Ampere+ GPUs,
  CPUs with AMX/AVX512-BF16), ``fp16`` with a gradient scaler on older GPUs (T4),
  ``fp32`` otherwise;
* :func:`autocast` — the matching ``torch.autocast`` context (a no-op for fp32).
"""
from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Optional, Union

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def choose_device(preferred: Optional[str] = None) -> torch.device:
    """``torch.device`` to use: ``preferred`` if given, else cuda > mps > cpu."""
    if preferred:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: Optional[str] = None) -> torch.device:
    """``torch.device`` for a user's choice (``None``: the best available), checked to exist here."""
    try:
        device = choose_device(name)
    except RuntimeError:
        raise ValueError(f"Dispositivo inválido: {name!r}. Use cpu, cuda, cuda:0 ou mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Dispositivo {name}: não há GPU CUDA disponível nesta máquina "
                         "(use cpu, ou deixe o dispositivo ser escolhido automaticamente).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Dispositivo {name}: MPS (GPU da Apple) não está disponível nesta máquina.")
    return device


@lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_precision(device: Union[str, torch.device], precision: str = "auto") -> str:
    """Resolve ``"auto"`` to ``"bf16"``, ``"fp16"`` or ``"fp32"`` for ``device``."""
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"Precisão desconhecida: {precision!r}. Use 'auto', {', '.join(PRECISIONS)}.")
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: Union[str, torch.device], precision: str):
    """``torch.autocast`` for ``precision`` on ``device``; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def make_grad_scaler(device: Union[str, torch.device], precision: str):
    """A gradient scaler for fp16 on CUDA (keeps small gradients from underflowing), else None."""
    if precision == "fp16" and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
