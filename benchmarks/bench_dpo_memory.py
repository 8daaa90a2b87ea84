#!/usr/bin/env python
"""Peak memory of DPO training: a second copy of the model as reference, or LoRA with the adapters off.

    python benchmarks/bench_dpo_memory.py            # GPT-2 small shape (random weights), 3-5 min on 2 cores
    python benchmarks/bench_dpo_memory.py --quick    # CI: the tiny GPT-2, ~30 s

Three ways to run the same DPO steps (same batches, same loss code):

* ``livro``: as the book's notebook: the whole model is trained (AdamW over every weight)
  and a second full copy is the frozen reference;
* ``lora+copia``: LoRA on the policy, and still a frozen full copy as the reference;
* ``lora``: LoRA on the policy, and the reference is the same model with the adapters
  switched off (``reference_model=None``): one copy of the weights.

Each way runs in its own fresh Python process, so one way's freed memory cannot hide
another's peak. What is measured: on the CPU, the process's resident set (RSS) high-water
mark, ``VmHWM`` of ``/proc/self/status`` (reset at the start by ``clear_refs``), minus the RSS
before the models were built; on CUDA, ``torch.cuda.max_memory_allocated``. Python's
``tracemalloc`` cannot see these bytes (torch allocates tensors outside Python's allocator)
and torch keeps no allocator statistics on the CPU, so RSS it is. The weights (random: the
memory does not depend on their values) are built inside the measured block.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")    # see bench_speed.py
HERE = Path(__file__).resolve().parent
if importlib.util.find_spec("llmdefinitions") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

WAYS = {
    "livro": "livro: modelo inteiro treinado + cópia de referência",
    "lora+copia": "LoRA + cópia de referência",
    "lora": "LoRA, referência = adaptadores desligados",
}


def synthetic_batch(pairs: int, length: int, response: int, vocab: int, seed: int) -> dict:
    """A batch shaped like ``preference_collate_fn``'s: the last ``response`` tokens are scored."""
    import torch

    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(pairs, length, dtype=torch.bool)
    mask[:, length - response:] = True
    return {key: torch.randint(0, vocab, (pairs, length), generator=g) for key in ("chosen", "rejected")} | {
        "chosen_mask": mask, "rejected_mask": mask.clone()}


def run_way(way: str, args) -> dict:
    """Build the models and run ``args.steps`` DPO steps; peak memory and time (in this process)."""
    import torch

    from peak_memory import PeakMemory
    from llmdefinitions.config import get_config
    from llmdefinitions.dpo import compute_dpo_loss_batch
    from llmdefinitions.lora import count_parameters, replace_linear_with_lora
    from llmdefinitions.model import GPTModel
    from llmdefinitions.trainer import make_optimizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = get_config(args.model)
    batches = [synthetic_batch(args.pairs, args.length, args.response, cfg["vocab_size"], seed)
               for seed in range(args.steps)]

    def build():
        torch.manual_seed(123)
        policy = GPTModel(cfg).to(device)
        reference = None if way == "lora" else copy.deepcopy(policy).eval().requires_grad_(False)
        if way != "livro":
            replace_linear_with_lora(policy, rank=args.rank, alpha=args.rank,
                                     targets="all_linear", include_head=True)
        return policy, reference, make_optimizer(policy, lr=5e-6)

    def step(policy, reference, optimizer, batch) -> float:
        optimizer.zero_grad()
        loss, _, _ = compute_dpo_loss_batch(batch, policy, reference, beta=0.1)
        loss.backward()
        optimizer.step()
        return loss.item()

    # Warm-up on a one-layer model: the first backward and optimizer step load code and
    # allocate once-only buffers, which would otherwise count in the first way's peak.
    cfg, full_cfg = {**cfg, "n_layers": 1}, cfg
    step(*build(), batches[0])
    cfg = full_cfg
    with PeakMemory(device) as peak:
        policy, reference, optimizer = build()
        policy.train()
        start = time.perf_counter()
        losses = [step(policy, reference, optimizer, batch) for batch in batches]
        seconds = (time.perf_counter() - start) / len(batches)
    trainable, total = count_parameters(policy)
    weights = sum(p.numel() * p.element_size() for m in (policy, reference) if m is not None
                  for p in m.parameters())
    return {"way": way, "peak_bytes": peak.bytes - peak.start_bytes, "rss_before_bytes": peak.start_bytes,
            "method": peak.method, "weights_bytes": weights, "trainable": trainable, "total": total,
            "seconds_per_step": seconds, "loss": losses[-1]}


def mib(n: float) -> str:
    """Bytes as pt-BR MiB with a thousands dot: ``3.245``."""
    return f"{n / 2**20:,.0f}".replace(",", ".")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="modelo minúsculo (CI)")
    parser.add_argument("--model", default=None, help="configuração (padrão: gpt2-small; --quick: gpt2-tiny)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2, help="passos de DPO medidos")
    parser.add_argument("--pairs", type=int, default=8, help="pares por lote (o livro usa 8)")
    parser.add_argument("--length", type=int, default=96, help="tokens por sequência")
    parser.add_argument("--response", type=int, default=24, help="tokens de resposta (pontuados)")
    parser.add_argument("--rank", type=int, default=16, help="posto do LoRA (em todas as camadas lineares)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="grava os resultados neste arquivo JSON")
    parser.add_argument("--child", choices=sorted(WAYS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model = args.model or ("gpt2-tiny (test)" if args.quick else "gpt2-small (124M)")
    from llmdefinitions.stats import format_decimal

    if args.child:                                   # one way, in a fresh process
        print(json.dumps(run_way(args.child, args)))
        return 0

    forwarded = list(argv if argv is not None else sys.argv[1:])     # the child ignores --json
    results = []
    for way in WAYS:
        child = subprocess.run([sys.executable, __file__, *forwarded, "--model", args.model,
                                "--child", way], capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"O processo que mede '{way}' falhou:\n{child.stderr}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))

    print(f"DPO, {args.model}, pesos aleatórios, {args.device}; {args.steps} passos de {args.pairs} pares "
          f"x {args.length} tokens ({args.response} pontuados); LoRA posto {args.rank} em todas as lineares.")
    print(f"Memória: {results[0]['method']}, acima da memória do processo antes de criar os modelos "
          f"({mib(results[0]['rss_before_bytes'])} MiB).\n")
    width = max(map(len, WAYS.values()))
    header = f"{'jeito':<{width}} {'pesos (MiB)':>12} {'pico (MiB)':>11} {'x LoRA':>7} {'s/passo':>8}"
    print(header + "\n" + "-" * len(header))
    lora_peak = results[-1]["peak_bytes"]
    for r in results:
        print(f"{WAYS[r['way']]:<{width}} {mib(r['weights_bytes']):>12} {mib(r['peak_bytes']):>11} "
              f"{format_decimal(r['peak_bytes'] / lora_peak):>7} {format_decimal(r['seconds_per_step']):>8}")
    saved = results[1]["peak_bytes"] - lora_peak
    print(f"\nDesligar os adaptadores em vez de copiar o modelo poupa {mib(saved)} MiB de pico "
          f"(a cópia pesa {mib(results[1]['weights_bytes'] - results[2]['weights_bytes'])} MiB).")
    print("Perda no último passo (as duas linhas LoRA devem coincidir): "
          + "; ".join(f"{r['way']} {format_decimal(r['loss'], 6)}" for r in results))
    if args.json:
        from llmdefinitions.io import write_json_atomic

        write_json_atomic(args.json, {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
