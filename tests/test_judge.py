"""Tests of llmdefinitions.judge against the TEST DOUBLE server (127.0.0.1 only, fast).

Parsing rules, every failure mode of the HTTP routes, accounting (no item
dropped), the JSONL cache, concurrency, statistics on real reference data.
"""
from __future__ import annotations

import json
import socket
import statistics
import sys
import time
import types
from pathlib import Path

import pytest

from llmdefinitions import judge
from llmdefinitions.judge import (
    JudgeConnectionError, JudgeDependencyError, JudgeHTTPError, JudgeProtocolError,
    JudgeStreamError, JudgeTimeoutError, ModelNotFoundError, ScoreList, ScoreResult,
)
from llmdefinitions.prompts import format_input
from llmdefinitions.testing.fake_llm_server import FakeLLMServer, Reply, overlap_judge, word_overlap

import shared_data  # noqa: E402  (tests/shared_data.py)

SHARED_DATA = shared_data.locate()   # ../shared/data, or the same public files downloaded
FAST = {"backoff": 0.01, "timeout": 5.0}


def shared_file(relative: str) -> Path:
    """A file of ../shared/data; missing data is a failure, not a skip."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.fail(f"Dados compartilhados ausentes: {path}. Os testes do juiz usam a cópia offline "
                    "em ../shared/data ao lado do repositório (veja shared/data/README.md).")
    return path


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ENTRY = {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
         "output": "The car is as fast as lightning.", "model_response": "The car is as fast as a bullet."}


# --------------------------------------------------------------------------- parse_score

@pytest.mark.parametrize("text, expected", [
    ("85", 85),                                   # rule 1: just a number
    ("  85\n", 85),
    ("85.", 85),
    ("**85**", 85),
    ("`85`", 85),
    ("85/100", 85),
    ("85 / 100", 85),
    ("85 out of 100", 85),
    ("85%", 85),
    ("85\n\nThe response is close to the reference.", 85),  # first line is the number
    ("0", 0),
    ("100", 100),
    ("Score: 85", 85),                            # rule 2: labelled
    ("score: 85/100", 85),
    ("Rating = 70", 70),
    ("Nota: 60", 60),
    ("I would score this response 85.", 85),
    ("The response is close. I give it 85/100.", 85),  # rule 2: fraction anywhere
    ("Score: 85. Final score: 85", 85),         # rule 5: the same score repeated
    ("85.0", 85),                                 # rule 3: integral float
    ("Score: 85.0", 85),
])
def test_parse_score_accepts(text, expected):
    assert judge.parse_score(text) == expected
    assert judge.explain_score(text) == (expected, None)


@pytest.mark.parametrize("text, reason_part", [
    ("85.5", "não é um número inteiro"),                       # rule 3
    ("Score: 72.5", "não é um número inteiro"),
    ("150", "fora da escala"),                                 # rule 4
    ("-5", "fora da escala"),
    ("Score: 101", "fora da escala"),
    ("Score: 80\nScore: 90", "várias notas diferentes"),       # rule 5
    ("Maybe 80/100, or rather 90/100.", "várias notas diferentes"),
    ("", "vazia"),                                             # rule 6
    ("   \n ", "vazia"),
    (None, "vazia"),
    ("The car is as fast as lightning.", "não contém uma nota"),
    ("The car is as fast as 2 bullets.", "não contém uma nota"),
    ("80 or 90", "números soltos: 80, 90"),
])
def test_parse_score_rejects(text, reason_part):
    assert judge.parse_score(text) is None
    score, reason = judge.explain_score(text)
    assert score is None and reason_part in reason


# --------------------------------------------------------------------------- parse_rubric

@pytest.mark.parametrize("text, expected", [
    ('{"score": 4, "feedback": "Mostly right."}', (4, "Mostly right.")),
    ('Here you go:\n```json\n{"score": 5, "feedback": "Perfect."}\n```', (5, "Perfect.")),
    ('{"Score": "3", "explanation": "Partly."}', (3, "Partly.")),
    ('{"score": 2.0}', (2, "")),
    ("Score: 4\nFeedback: Minor issue with tense.", (4, "Minor issue with tense.")),
    ("Score: 1/5\nFeedback: Wrong.", (1, "Wrong.")),
])
def test_parse_rubric_accepts(text, expected):
    assert judge.parse_rubric(text) == expected


@pytest.mark.parametrize("text", ['{"score": 6, "feedback": "x"}', '{"score": 0}', '{"score": 3.5}',
                                  "Score: 9\nFeedback: no", "Great answer!", "", '{"feedback": "no score"}'])
def test_parse_rubric_rejects(text):
    assert judge.parse_rubric(text) is None
    assert judge.explain_rubric(text)[1]


# --------------------------------------------------------------------------- prompts

def test_build_score_prompt_is_the_seed_prompt():
    expected = (
        f"Given the input `{format_input(ENTRY)}` "
        f"and correct output `{ENTRY['output']}`, "
        f"score the model response `{ENTRY['model_response']}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )
    assert judge.build_score_prompt(ENTRY, "model_response") == expected


# --------------------------------------------------------------------------- the stand-in server

def test_stand_in_wire_format_follows_ollama_docs():
    import urllib.request

    with FakeLLMServer(["Hello there", "Hi"]) as server:
        body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "x"}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(server.ollama_url, data=body)) as response:
            assert response.headers["Content-Type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in response.read().decode().splitlines()]
        body = json.dumps({"model": "llama3", "stream": False,
                           "messages": [{"role": "user", "content": "x"}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(server.ollama_url, data=body)) as response:
            single = json.loads(response.read())
        with urllib.request.urlopen(server.url + "/api/tags") as response:
            tags = json.loads(response.read())
    assert [line["done"] for line in lines] == [False, False, True]
    assert "".join(line["message"]["content"] for line in lines) == "Hello there"
    assert all(line["message"]["role"] == "assistant" and line["model"] == "llama3" for line in lines)
    assert lines[-1]["done_reason"] == "stop" and "total_duration" in lines[-1] and "eval_count" in lines[-1]
    assert single["message"] == {"role": "assistant", "content": "Hi"} and single["done"] is True
    assert tags["models"][0]["name"] == "llama3:latest" and tags["models"][0]["model"] == "llama3:latest"


def test_stand_in_default_judge_is_word_overlap():
    prompt = judge.build_score_prompt(ENTRY, "model_response")
    assert overlap_judge(prompt) == str(round(100 * word_overlap(ENTRY["output"], ENTRY["model_response"])))
    assert word_overlap("a b c", "a b c") == 1.0 and word_overlap("a", "z") == 0.0
    assert json.loads(overlap_judge(judge.build_rubric_prompt(ENTRY, "model_response")))["score"] in range(1, 6)


# --------------------------------------------------------------------------- query_model: success

def test_query_model_sends_the_seed_request():
    with FakeLLMServer(["42"]) as server:
        assert judge.query_model("What do llamas eat?", "llama3", server.ollama_url) == "42"
        body = server.requests[-1].body
    assert body["model"] == "llama3"
    assert body["messages"] == [{"role": "user", "content": "What do llamas eat?"}]
    assert body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
    assert body["stream"] is True


def test_query_model_ollama_without_streaming():
    with FakeLLMServer(["Score: 70"]) as server:
        assert judge.query_model("x", url=server.ollama_url, stream=False) == "Score: 70"
        assert server.requests[-1].body["stream"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_query_model_openai_route(stream):
    with FakeLLMServer(["The answer is 7 ."]) as server:
        reply = judge.query_model("x", "llama3", server.openai_url, stream=stream, options={"num_predict": 8})
        request = server.requests[-1]
    assert reply == "The answer is 7 ."
    assert request.path == "/v1/chat/completions"
    assert request.body["stream"] is stream
    assert request.body["seed"] == 123 and request.body["temperature"] == 0
    assert request.body["max_tokens"] == 8 and "num_ctx" not in request.body


def test_route_is_picked_from_url_or_argument():
    assert judge.detect_api("http://localhost:11434/api/chat") == "ollama"
    assert judge.detect_api("http://localhost:11434") == "ollama"
    assert judge.detect_api("http://h:8081/v1/chat/completions") == "openai"
    assert judge.detect_api("http://localhost:11434/v1") == "openai"
    with pytest.raises(ValueError, match="Não sei qual protocolo"):
        judge.detect_api("http://localhost:11434/generate")
    with FakeLLMServer(["ok", "ok"]) as server:
        judge.query_model("x", url=server.url, api="openai")
        judge.query_model("x", url=server.url)
        paths = [r.path for r in server.requests]
    assert paths == ["/v1/chat/completions", "/api/chat"]


# --------------------------------------------------------------------------- query_model: failures

def test_404_model_not_pulled_is_not_retried():
    with FakeLLMServer() as server:
        with pytest.raises(ModelNotFoundError, match=r"ollama pull llama3:70b"):
            judge.query_model("x", "llama3:70b", server.ollama_url, **FAST)
        assert server.chat_count() == 1


def test_404_on_the_openai_route():
    with FakeLLMServer() as server:
        with pytest.raises(ModelNotFoundError, match="404"):
            judge.query_model("x", "gpt-9", server.openai_url, **FAST)


def test_connection_refused_says_ollama_serve():
    url = f"http://127.0.0.1:{closed_port()}/api/chat"
    with pytest.raises(JudgeConnectionError, match=r"ollama serve.*após 2 tentativas"):
        judge.query_model("x", url=url, retries=1, backoff=0.01)


def test_malformed_line_is_named_and_not_retried():
    with FakeLLMServer([Reply("one two three", malformed_line=2), "unused"]) as server:
        with pytest.raises(JudgeProtocolError, match=r"linha 2 .*não é um JSON válido") as info:
            judge.query_model("x", url=server.ollama_url, **FAST)
        assert not isinstance(info.value, JudgeStreamError)
        assert server.chat_count() == 1


def test_malformed_sse_event_is_named():
    with FakeLLMServer([Reply("one two", malformed_line=1)]) as server:
        with pytest.raises(JudgeProtocolError, match=r"linha 1 "):
            judge.query_model("x", url=server.openai_url, stream=True, **FAST)


def test_500_then_success_is_retried():
    with FakeLLMServer([Reply(status=500, error="out of memory"), "77"]) as server:
        assert judge.query_model("x", url=server.ollama_url, **FAST) == "77"
        assert server.chat_count() == 2


def test_500_every_time_gives_up_with_the_server_message():
    with FakeLLMServer([Reply(status=500, error="out of memory")] * 3) as server:
        with pytest.raises(JudgeHTTPError, match=r"HTTP 500.*out of memory.*após 3 tentativas"):
            judge.query_model("x", url=server.ollama_url, retries=2, backoff=0.01)
        assert server.chat_count() == 3


def test_slow_reply_beyond_the_timeout():
    with FakeLLMServer([Reply("5", delay=3)]) as server:
        start = time.monotonic()
        with pytest.raises(JudgeTimeoutError, match=r"não respondeu em 0.3 s"):
            judge.query_model("x", url=server.ollama_url, timeout=0.3, retries=0)
        assert time.monotonic() - start < 2


def test_slow_stream_between_lines_times_out():
    with FakeLLMServer([Reply("a b c d", chunk_delay=2)]) as server:
        with pytest.raises(JudgeTimeoutError):
            judge.query_model("x", url=server.ollama_url, timeout=0.3, retries=0)


@pytest.mark.parametrize("route", ["ollama", "openai"])
def test_dropped_stream_is_detected_and_retried(route):
    script = [Reply("one two three", drop_after=2), "one two three"]
    with FakeLLMServer(script) as server:
        url = server.ollama_url if route == "ollama" else server.openai_url
        with pytest.raises(JudgeStreamError, match="caiu"):
            judge.query_model("x", url=url, stream=True, retries=0)
        server.script = script
        server._script_position = 0
        assert judge.query_model("x", url=url, stream=True, **FAST) == "one two three"
        assert server.chat_count() == 3


# --------------------------------------------------------------------------- server checks

def test_check_if_running_uses_process_names():
    import psutil

    assert judge.check_if_running(psutil.Process().name()) is True  # this very process
    assert judge.check_if_running("no-such-process-xyz-123") is False


def test_check_server_ok_missing_model_and_unreachable():
    with FakeLLMServer() as server:
        ok = judge.check_server(server.ollama_url, "llama3")
        missing = judge.check_server(server.ollama_url, "llama3:70b")
        openai = judge.check_server(server.openai_url, "llama3:latest")
    down = judge.check_server(f"http://127.0.0.1:{closed_port()}/api/chat")
    assert ok and ok.reachable and ok.version and ok.model_available is True
    assert not missing and missing.reachable and "ollama pull llama3:70b" in missing.message
    assert openai and openai.api == "openai" and openai.models == ["llama3:latest"]
    assert not down and not down.reachable and "ollama serve" in down.message
    with pytest.raises(JudgeConnectionError):
        judge.check_server(down.url, raise_error=True)


# --------------------------------------------------------------------------- scoring

def test_scoring_real_test_set_end_to_end_with_cache(tmp_path):
    data_path = shared_file("instruction-data-with-response.json")
    data = json.loads(data_path.read_text(encoding="utf-8"))
    cache = tmp_path / "cache.jsonl"
    with FakeLLMServer() as server:
        scores = judge.generate_model_scores(data_path, "model_response", url=server.ollama_url,
                                             cache_path=cache, progress=False, **FAST)
        first_run = server.chat_count()
        again = judge.generate_model_scores(data, "model_response", url=server.ollama_url,
                                            cache_path=cache, progress=False, **FAST)
        second_run = server.chat_count() - first_run
    assert isinstance(scores, ScoreList) and len(scores) == len(data) == scores.n_total == 110
    assert not scores.failures
    expected = [round(100 * word_overlap(e["output"], e["model_response"])) for e in data]
    assert list(scores) == expected and [r.index for r in scores.results] == list(range(110))
    assert first_run == 110 and second_run == 0
    assert list(again) == expected and all(r.cached for r in again.results)
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 110


def test_no_item_is_dropped_and_every_failure_has_a_reason():
    data = [dict(ENTRY, model_response=f"response {i}") for i in range(6)]
    data[4]["model_response"] = "   "
    replies = {"response 0": "90", "response 1": "I cannot score this.", "response 2": "Score: 150",
               "response 3": Reply(status=500, error="boom"), "response 5": "80 or 90"}
    with FakeLLMServer(replies) as server:
        with pytest.warns(UserWarning, match="4 de 6 itens ficaram sem nota"):
            scores = judge.generate_model_scores(data, "model_response", url=server.ollama_url,
                                                 progress=False, retries=1, backoff=0.01)
        asked = server.chat_count()
    results = scores.results
    assert len(results) == len(data) and [r.index for r in results] == list(range(6))
    assert list(scores) == [90, 0]
    assert [r.status for r in results] == ["scored", "unparsable", "unparsable", "error",
                                           "empty_response", "unparsable"]
    assert all(r.reason for r in scores.failures) and len(scores.failures) == 4
    assert results[1].reply == "I cannot score this." and "item 1" in results[1].reason
    assert "fora da escala" in results[2].reason and "HTTP 500" in results[3].reason
    assert results[4].reply is None and "sem consultar o juiz" in results[4].reason
    assert asked == 6  # 4 sent once, the 500 one twice, the empty one never


def test_empty_responses_can_be_sent_to_the_judge():
    data = [dict(ENTRY, model_response="")]
    with FakeLLMServer(["12"]) as server:
        results = judge.score_responses(data, "model_response", url=server.ollama_url,
                                        empty_response_score=None, progress=False)
        assert server.chat_count() == 1
    assert results[0].score == 12 and results[0].status == "scored"


def test_missing_field_is_recorded_and_a_wrong_key_is_refused():
    data = [dict(ENTRY), {"instruction": "x", "input": "", "output": "y"}]
    with FakeLLMServer() as server:
        results = judge.score_responses(data, "model_response", url=server.ollama_url, progress=False)
        with pytest.raises(KeyError, match="Nenhum item tem o campo 'model_respons'"):
            judge.score_responses(data, "model_respons", url=server.ollama_url, progress=False)
    assert results[0].ok and results[1].status == "missing_field" and "'model_response'" in results[1].reason


def test_per_item_timeout_is_recorded_not_fatal():
    data = [dict(ENTRY, model_response=f"r{i}") for i in range(3)]
    replies = {"`r1`": Reply("50", delay=3)}
    with FakeLLMServer(replies) as server:
        results = judge.score_responses(data, "model_response", url=server.ollama_url, progress=False,
                                        timeout=0.3, retries=0)
    assert [r.status for r in results] == ["scored", "error", "scored"]
    assert "não respondeu" in results[1].reason


def test_fatal_errors_stop_the_run_and_keep_the_cache(tmp_path):
    data = [dict(ENTRY, model_response=f"r{i}") for i in range(4)]
    with pytest.raises(JudgeConnectionError, match="ollama serve"):
        judge.score_responses(data, "model_response", url=f"http://127.0.0.1:{closed_port()}/api/chat",
                              progress=False, retries=0)
    with FakeLLMServer() as server:
        with pytest.raises(ModelNotFoundError, match="ollama pull"):
            judge.score_responses(data, "model_response", "llama3:70b", url=server.ollama_url,
                                  progress=False)
        assert server.chat_count() <= 4


def test_concurrency_keeps_input_order():
    data = [dict(ENTRY, model_response=f"word{i} " * (i + 1)) for i in range(12)]

    def slow_first(prompt, body):
        index = int(prompt.split("word")[1].split()[0])
        return Reply(str(index), delay=0.05 * (12 - index) / 4)  # early items finish last

    with FakeLLMServer(slow_first) as server:
        results = judge.score_responses(data, "model_response", url=server.ollama_url,
                                        max_workers=4, progress=False)
        in_flight = server.max_in_flight
    assert [r.index for r in results] == list(range(12))
    assert [r.score for r in results] == list(range(12))
    assert in_flight > 1


def test_cache_resume_after_interruption_with_truncated_last_line(tmp_path):
    data = [dict(ENTRY, model_response=f"r{i}") for i in range(5)]
    cache = tmp_path / "cache.jsonl"
    with FakeLLMServer() as server:
        judge.score_responses(data[:3], "model_response", url=server.ollama_url, cache_path=cache,
                              progress=False)
        with open(cache, "a", encoding="utf-8") as handle:
            handle.write('{"key": "abc", "model": "llama3", "rep')  # interrupted mid-write
        before = server.chat_count()
        results = judge.score_responses(data, "model_response", url=server.ollama_url, cache_path=cache,
                                        progress=False)
        asked = server.chat_count() - before
        other_model = judge.score_responses(data[:1], "model_response", "llama3:latest",
                                            url=server.ollama_url, cache_path=cache, progress=False)
        asked_other = server.chat_count() - before - asked
    assert asked == 2 and [r.cached for r in results] == [True, True, True, False, False]
    assert all(r.ok for r in results) and asked_other == 1 and not other_model[0].cached
    reloaded = judge.ReplyCache(cache)
    assert len(reloaded) == 6 and reloaded.skipped_lines == 1


def test_openai_route_scores_too():
    data = [dict(ENTRY), dict(ENTRY, model_response="Nothing like it.")]
    with FakeLLMServer() as server:
        plain = judge.score_responses(data, "model_response", url=server.openai_url, progress=False)
        streamed = judge.score_responses(data, "model_response", url=server.openai_url, stream=True,
                                         progress=False)
        assert {r.path for r in server.requests} == {"/v1/chat/completions"}
    assert [r.score for r in plain] == [r.score for r in streamed]
    assert plain[0].score == round(100 * word_overlap(ENTRY["output"], ENTRY["model_response"]))


def test_rubric_mode():
    data = [dict(ENTRY), dict(ENTRY, model_response=""), dict(ENTRY, model_response="x")]
    with FakeLLMServer({"`x`": "Score: 9\nFeedback: too high"}) as server:
        results = judge.score_with_rubric(data, "model_response", url=server.ollama_url, progress=False)
    assert results[0].status == "scored" and 1 <= results[0].score <= 5 and "overlap" in results[0].feedback
    assert results[1].score == 1 and results[1].status == "empty_response"
    assert results[2].score is None and "de 1 a 5" in results[2].reason


def test_save_and_load_results(tmp_path):
    results = [ScoreResult(0, 80, "scored", reply="80"), ScoreResult(1, None, "unparsable", reason="r")]
    path = judge.save_score_results(results, tmp_path / "sub" / "scores.json")
    assert judge.load_score_results(path) == results
    assert json.loads(path.read_text(encoding="utf-8"))[1]["reason"] == "r"


# --------------------------------------------------------------------------- in-process llama_cpp client

def test_llama_cpp_missing_gives_pt_br_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(JudgeDependencyError, match="pip install llama-cpp-python"):
        judge.make_client(api="llama_cpp", model_path=tmp_path / "m.gguf")
    with pytest.raises(ValueError, match="model_path"):
        judge.make_client(api="llama_cpp")


def test_llama_cpp_client_wraps_create_chat_completion(monkeypatch, tmp_path):
    calls = []

    class FakeLlama:
        def __init__(self, model_path, n_ctx, seed, verbose):
            calls.append(("init", Path(model_path).name, n_ctx, seed))

        def create_chat_completion(self, messages, **params):
            calls.append(("chat", messages[0]["content"], params))
            return {"choices": [{"message": {"role": "assistant", "content": "64"}}]}

    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=FakeLlama))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    results = judge.score_responses([ENTRY], "model_response", api="llama_cpp", model_path=gguf,
                                    progress=False)
    assert results[0].score == 64
    assert calls[0] == ("init", "tiny.gguf", 2048, 123)
    assert calls[1][2] == {"seed": 123, "temperature": 0}


# --------------------------------------------------------------------------- statistics

def test_summary_numbers():
    summary = judge.summarize_scores([10, 20, 30, None])
    assert (summary.n_scored, summary.n_total, summary.n_missing) == (3, 4, 1)
    assert summary.mean == 20 and summary.median == 20
    assert summary.std == pytest.approx(statistics.pstdev([10, 20, 30]))
    assert "3 de 4 itens" in str(summary)
    results = [ScoreResult(0, 50, "scored"), ScoreResult(1, None, "error", reason="x")]
    assert judge.summarize_scores(ScoreList(results)).n_total == 2
    assert judge.summarize_scores([None]).mean is None


def test_compare_two_models():
    comparison = judge.compare_scores([80, 50, 30, None, 40], [70, 50, 60, 90, 40])
    assert comparison.diffs == [10, 0, -30, None, 0]
    assert (comparison.wins, comparison.ties, comparison.losses, comparison.n_skipped) == (1, 2, 1, 1)
    assert comparison.mean_diff == pytest.approx(-5.0)
    with pytest.raises(ValueError, match="alinhamento"):
        judge.compare_scores([1, 2], [1])


def test_agreement_reproduces_the_reference_numbers():
    gpt4 = json.loads(shared_file("judge-reference/gpt4-model-1-response.json").read_text())
    llama = json.loads(shared_file("judge-reference/llama3-8b-model-1-response.json").read_text())
    agreement = judge.judge_agreement(gpt4, llama)
    assert agreement.n == 100
    assert round(agreement.pearson, 5) == 0.80489
    assert round(agreement.spearman, 5) == 0.69841
    assert round(agreement.kendall_tau_b, 5) == 0.57292


def test_agreement_refuses_the_99_of_100_list():
    gpt4 = json.loads(shared_file("judge-reference/gpt4-model-2-response.json").read_text())
    llama = json.loads(shared_file("judge-reference/llama3-8b-model-2-response.json").read_text())
    assert (len(gpt4), len(llama)) == (100, 99)
    with pytest.raises(ValueError, match=r"tamanhos diferentes \(100 e 99\).*alinhamento.*se perdeu"):
        judge.judge_agreement(gpt4, llama)


def test_align_by_index_and_unscored_items():
    a = [ScoreResult(0, 10, "scored"), ScoreResult(1, None, "error"), ScoreResult(2, 30, "scored"),
         ScoreResult(3, 40, "scored")]
    b = {0: 15, 1: 20, 3: 35}
    sa, sb, indices = judge.align_by_index(a, b)
    assert (sa, sb, indices) == ([10, 40], [15, 35], [0, 3])
    agreement = judge.judge_agreement([1, 2, None, 4], [2, 4, 6, 9])
    assert agreement.n == 3 and agreement.n_skipped == 1 and agreement.pearson > 0.9
    with pytest.raises(ValueError, match="duas vezes"):
        judge.align_by_index(a + [ScoreResult(0, 1, "scored")], b)


def test_plot_score_histogram(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from llmdefinitions.plotting import plot_score_histogram

    results = ScoreList([ScoreResult(0, 80, "scored"), ScoreResult(1, None, "error"),
                         ScoreResult(2, 20, "scored")])
    fig = plot_score_histogram(results, save_path=tmp_path / "hist.png", show=False)
    assert (tmp_path / "hist.png").stat().st_size > 1000
    ax = fig.axes[0]
    assert sum(patch.get_height() for patch in ax.patches) == 2
    assert "2 de 3 itens" in ax.get_title() and "1 sem nota" in ax.get_title()


def test_stand_in_runs_as_a_module():
    import subprocess
    import urllib.request

    port = closed_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmdefinitions.testing.fake_llm_server", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = proc.stdout.readline()
        assert "DUBLÊ DE TESTE" in banner and str(port) in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=5) as response:
            assert "version" in json.loads(response.read())
        assert judge.query_model(judge.build_score_prompt(ENTRY, "model_response"),
                                 url=f"http://127.0.0.1:{port}/api/chat").isdigit()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_interrupted_openai_stream_is_not_taken_as_an_empty_reply():
    # llama-cpp-python's server cuts a stream when another request arrives: role chunk, then [DONE].
    with FakeLLMServer([Reply("85", interrupted=True), "85"]) as server:
        with pytest.raises(JudgeStreamError, match="sem finish_reason"):
            judge.query_model("x", url=server.openai_url, stream=True, retries=0)
        assert judge.query_model("x", url=server.openai_url, stream=True, retries=0) == "85"
