"""Device and numeric precision, chosen automatically (and overridable).

* :func:`choose_device` — ``cuda``, then Apple ``mps``, then ``cpu``;
* :func:`choose_precision` — ``bf16`` where the hardware runs it natively (Ampere+ GPUs,
  CPUs with AMX/AVX512-BF16), ``fp16`` with a gradient scaler on older GPUs (T4),
  ``fp32`` otherwise;
* :func:`autocast` — the matching ``torch.autocast`` context (a no-op for fp32);
* :func:`tune_cpu_allocator` — keep freed memory in the process (CPU runs).

Why bf16 only on such CPUs, measured (``benchmarks/gemm_rates.py``, AMD EPYC with
AVX512-BF16, torch 2.13, 2 threads): the products of a training batch run 3-5x faster
in bf16 than in fp32 there (oneDNN uses the bf16 dot-product instructions); capped to
the same CPU without them (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``) bf16 is emulated and no
faster than fp32 (and autocast adds the casts), and as an AVX2-only CPU it is slower.
Generation stays in fp32 whatever this says: greedy answers must equal the book's.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
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


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# Values of ONEDNN_MAX_CPU_ISA (oneDNN's cap on the instructions it uses) that keep bf16 ones.
_BF16_ISA_WORDS = ("BF16", "AMX", "FP16", "AVX10", "ALL", "DEFAULT")


def bf16_matmuls_are_native(cpu_flags: str, isa_cap: str = "", onednn: bool = True) -> bool:
    """The rule: the CPU has AMX or AVX512-BF16, torch has oneDNN (which runs bf16 products
    with them), and ``ONEDNN_MAX_CPU_ISA`` (``isa_cap``) does not forbid those instructions."""
    cap = isa_cap.strip().upper()
    if cap and not any(word in cap for word in _BF16_ISA_WORDS):
        return False
    return onednn and any(flag in cpu_flags.split() for flag in BF16_CPU_FLAGS)


@lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when torch's CPU matrix products can use bf16 instructions here (Linux: ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            flags = " ".join(line.split(":", 1)[1] for line in handle if line.startswith("flags"))
    except OSError:
        return False
    return bf16_matmuls_are_native(flags, os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
                                   torch.backends.mkldnn.is_available())


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


def tune_cpu_allocator() -> bool:
    """Keep freed memory inside the process (glibc only); True if applied.

    Every training step frees and allocates gigabytes (weight casts, gradients, the
    logits of the vocabulary head). glibc returns large blocks to the system and takes
    them back page by page on the next step; on virtual machines a page fault is slow
    (measured on the course's 2-core VM: fresh memory filled at ~0.7 GB/s against ~20
    GB/s for reused memory). This keeps blocks in the heap, as PyTorch's GPU allocator
    does. Set ``THP_MEM_ALLOC_ENABLE=1`` before torch starts as well (huge pages for
    large tensors): together, a GPT-2 medium step took ~25 % less CPU time here.
    The process keeps its peak memory until it ends.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4      # mallopt parameters (malloc.h)
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2 ** 30)
                and libc.mallopt(m_top_pad, 64 << 20))
