#!/usr/bin/env bash
# Checks of the distributed paths that only a GPU exercises (NCCL, cuda:LOCAL_RANK, FSDP2 with
# bf16 and the fused AdamW on CUDA). The CPU paths (gloo) are tested by tests/test_distributed.py.
# Under 3 minutes on one GPU; with 2+ GPUs it also compares 1 and 2 processes.
#
#   LLMDEF_MIRROR=../shared/data bash benchmarks/gpu_check_distributed.sh
#
# Prints one line per check and exits 1 if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export LLMDEF_MIRROR="${LLMDEF_MIRROR:-../shared/data}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
OUT="${OUT:-$(mktemp -d)}/gpu-dist"
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
[ "$GPUS" -ge 1 ] || { echo "FALHA: nenhuma GPU CUDA visível"; exit 1; }
echo "GPUs: $GPUS; saída em $OUT"

launch() {  # launch NAME NPROC STOP_AT [options of treinar...]: the teste profile, under torchrun
  local name=$1 nproc=$2 stop=$3; shift 3
  local port; port=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  python -m torch.distributed.run --nproc_per_node="$nproc" --master_addr=127.0.0.1 --master_port="$port" \
    tests/torchrun_worker.py '{"max_steps": 6, "eval_freq": 2}' "$stop" treinar --perfil teste \
    --saida "$OUT/$name" --salvar-a-cada 1 "$@" >> "$OUT/$name.log" 2>&1
}

train() {  # train NAME NPROC [options of treinar...]
  local name=$1 nproc=$2; shift 2
  if launch "$name" "$nproc" -1 "$@"; then
    echo "ok   $name: $(grep -o 'Treino distribuído.*' "$OUT/$name.log" | head -1)"
  else
    echo "FALHA $name (últimas linhas de $OUT/$name.log):"; tail -5 "$OUT/$name.log"; return 1
  fi
}

mkdir -p "$OUT"
status=0
train ddp-bf16 1 || status=1                    # NCCL, cuda:0, the fast path (packed, bf16, fused AdamW)
train fsdp-bf16 1 --fsdp || status=1            # FSDP2 on CUDA: DTensor parameters with the fused AdamW
train ddp-fp32 1 --como-no-livro || status=1
train fsdp-fp32 1 --como-no-livro --fsdp || status=1
# Interrupted after step 2 (checkpoint gathered from the shards, written), then resumed onto the GPU.
if launch fsdp-fp32-resumed 1 2 --como-no-livro --fsdp; then echo "FALHA: a interrupção não interrompeu"; status=1; fi
train fsdp-fp32-resumed 1 --como-no-livro --fsdp || status=1
grep -q "o treino continua de onde parou" "$OUT/fsdp-fp32-resumed.log" || { echo "FALHA: não retomou"; status=1; }
if [ "$GPUS" -ge 2 ]; then
  train ddp-fp32-2gpus 2 --como-no-livro || status=1
  train fsdp-fp32-2gpus 2 --como-no-livro --fsdp || status=1
fi
# The same run on the CPU with 2 gloo processes: the same global batches as on the GPU.
train cpu-fp32-2proc 2 --como-no-livro --dispositivo cpu || status=1

python - "$OUT" <<'EOF' || status=1
import json, sys
from pathlib import Path
import torch
from llmdefinitions.config import get_config
from llmdefinitions.model import GPTModel

out = Path(sys.argv[1])
def result(name):
    run = out / name / "teste"
    if not (run / "perdas.json").is_file():
        return None
    weights = torch.load(next(run.glob("*-sft.pth")), map_location="cpu", weights_only=True)
    GPTModel(get_config("gpt2-tiny (test)")).load_state_dict(weights)      # a plain GPTModel file
    return json.loads((run / "perdas.json").read_text()), weights
failed = False
for a, b, bound in [("ddp-fp32", "fsdp-fp32", 1e-4), ("fsdp-fp32", "fsdp-fp32-resumed", 1e-4),
                    ("ddp-fp32", "ddp-fp32-2gpus", 1e-4),
                    ("ddp-fp32", "fsdp-fp32-2gpus", 1e-4), ("ddp-fp32", "cpu-fp32-2proc", 1e-3),
                    ("ddp-bf16", "fsdp-bf16", 5e-2)]:
    ra, rb = result(a), result(b)
    if ra is None or rb is None:
        continue
    losses = max(abs(x - y) for k in ("train_losses", "val_losses") for x, y in zip(ra[0][k], rb[0][k]))
    weights = max(float((ra[1][k] - rb[1][k]).abs().max()) for k in ra[1])
    ok = losses < bound and weights < bound
    failed |= not ok
    print(f"{'ok  ' if ok else 'FALHA'} {a} × {b}: perdas {losses:.2e}, pesos {weights:.2e} (limite {bound:g})")
sys.exit(1 if failed else 0)
EOF
exit $status
