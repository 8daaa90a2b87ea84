#!/usr/bin/env bash
# The whole-job benchmark on a CUDA GPU, in a few minutes: bf16 (the default there), fp16
# with a gradient scaler, attention by sample against one mask per packed row, and
# torch.compile (with its compile time). Each run writes its JSON; the book's reference is
# 0,86 min for the 2 epochs of training on an A100 (ch. 7).
#
#   LLMDEF_MIRROR=/path/to/shared/data bash benchmarks/gpu_check_speed.sh [output folder]
#
# On a GPU the book's way is fast enough to measure more of it: 8 slices of 5 steps
# (40 of the 232 steps) and all 110 test prompts one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-speed}}"
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'sem GPU CUDA'; print(torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
common=(--device cuda --rounds 8 --book-prompts 110)
python benchmarks/bench_speed.py "${common[@]}" --json "$out/bf16.json" | tee "$out/bf16.txt"
python benchmarks/bench_speed.py "${common[@]}" --precision fp16 --json "$out/fp16.json" | tee "$out/fp16.txt"
python benchmarks/bench_speed.py "${common[@]}" --attention mascara --json "$out/bf16-mascara.json" \
  | tee "$out/bf16-mascara.txt"
python benchmarks/bench_speed.py "${common[@]}" --compile-check --json "$out/bf16-compile.json" \
  | tee "$out/bf16-compile.txt"
