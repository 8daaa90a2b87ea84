#!/usr/bin/env python
"""Matrix-product speed (GFLOP/s) in fp32 and bf16 on this CPU, for the shapes of GPT-2 medium.

    python benchmarks/gemm_rates.py                 # this CPU as it is
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python benchmarks/gemm_rates.py   # as a CPU without bf16 instructions
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/gemm_rates.py  # as an AVX2-only CPU

``bench_speed.py`` runs it in child processes (the ISA cap must be set before torch
starts) to check ``device.choose_precision``: bf16 autocast only pays where the CPU has
bf16 instructions. Prints one JSON object: GFLOP/s per precision and shape (best of
``--repeats``), and what ``choose_precision("cpu")`` answers in that process.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llmdefinitions.device import choose_precision  # noqa: E402

# (rows, inputs, outputs): a training batch through the MLP, the vocabulary head on target
# tokens, and one decoding step of 32 prompts and of 1 prompt.
SHAPES = {"mlp 412x1024x4096": (412, 1024, 4096), "cabeça 412x1024x50257": (412, 1024, 50257),
          "decode 32x1024x4096": (32, 1024, 4096), "decode 1x1024x4096": (1, 1024, 4096)}


def rate(rows: int, inputs: int, outputs: int, dtype: torch.dtype, repeats: int) -> float:
    """Best GFLOP/s of ``F.linear`` (what ``nn.Linear`` runs) over ``repeats`` calls."""
    x = torch.randn(rows, inputs, dtype=dtype)
    w = torch.randn(outputs, inputs, dtype=dtype)
    F.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        F.linear(x, w)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inputs * outputs / best / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"isa_cap": os.environ.get("ONEDNN_MAX_CPU_ISA", ""), "auto": choose_precision("cpu"),
              "gflops": {name: {"fp32": rate(*shape, torch.float32, args.repeats),
                                "bf16": rate(*shape, torch.bfloat16, args.repeats)}
                         for name, shape in SHAPES.items()}}
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
