#!/usr/bin/env python
"""Cost of one decoding step with the KV cache (fp32), by the number of rows decoded together.

    python benchmarks/decode_rates.py                        # GPT-2 medium shape, random weights
    python benchmarks/decode_rates.py --model gpt2-small --rows 1 4 16 32 64

Why: the course's test-set generation (``generate_responses``) decodes up to 32 prompts
together, and when the queue is empty the last long answers decode alone. The time per
token at 1 row against 32 rows says how much of its time the tail costs and how far the
batched steps are from the matrix-product peak (``gemm_rates.py``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llmdefinitions.config import get_config  # noqa: E402
from llmdefinitions.generation import _last_logits  # noqa: E402
from llmdefinitions.model import GPTModel  # noqa: E402
from llmdefinitions.stats import format_decimal  # noqa: E402


def step_seconds(model: GPTModel, rows: int, cached: int, steps: int) -> float:
    """Median time of one decoding step of ``rows`` rows after a ``cached``-token prefill."""
    cache = model.new_kv_cache()
    idx = torch.randint(0, model.out_head.out_features, (rows, cached))
    positions = torch.arange(cached)[None].expand(rows, -1)
    times = []
    with torch.inference_mode():
        _last_logits(model, idx, position_ids=positions, segment_ids=torch.ones_like(idx), kv_cache=cache)
        last = idx[:, -1:]
        for s in range(steps):
            start = time.perf_counter()
            _last_logits(model, last, position_ids=torch.full((rows, 1), cached + s),
                         segment_ids=torch.ones_like(last), kv_cache=cache)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2-medium")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--cached", type=int, default=80, help="tokens já no cache (prefixo + prompt)")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = GPTModel(get_config(args.model)).eval()
    flop_per_token = 2 * sum(p.numel() for name, p in model.named_parameters()
                             if p.dim() == 2 and not name.startswith(("tok_emb", "pos_emb")))
    print(f"{args.model}, fp32, {torch.get_num_threads()} threads, {args.cached} tokens no cache")
    for rows in args.rows:
        seconds = step_seconds(model, rows, args.cached, args.steps)
        print(f"  {rows:3d} linhas: {format_decimal(seconds, 3)} s por passo, "
              f"{format_decimal(1000 * seconds / rows, 1)} ms por token, "
              f"{format_decimal(flop_per_token * rows / seconds / 1e9, 0)} GFLOP/s (matrizes de pesos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
