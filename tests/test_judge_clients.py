"""The judge's clients against the TEST DOUBLE server (127.0.0.1 only, fast).

The exact request each protocol sends (the fake records the bytes), chat with
messages and raw completion on every route, options and structured output,
every failure mode of the HTTP routes, server checks, the in-process client.
"""
from __future__ import annotations

import json
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import pytest

from llmdefinitions import judge
from llmdefinitions.judge import (
    JudgeConnectionError, JudgeDependencyError, JudgeHTTPError, JudgeProtocolError, JudgeServerError,
    JudgeStreamError, JudgeTimeoutError, ModelNotFoundError,
)
from llmdefinitions.testing.fake_llm_server import FakeLLMServer, Reply, overlap_judge, word_overlap

from judge_helpers import ENTRY, FAST, closed_port, raw_http_server

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a color."}]


def post(url: str, body: dict):
    """A plain urllib POST (what the book's code does), for checking the double's wire format."""
    request = urllib.request.Request(url, data=json.dumps(body).encode())
    return urllib.request.urlopen(request, timeout=5)


# --------------------------------------------------------------------------- the stand-in server

def test_stand_in_wire_format_follows_ollama_docs():
    with FakeLLMServer(["Hello there", "Hi", "Once upon", "x"]) as server:
        chat = {"model": "llama3", "messages": [{"role": "user", "content": "x"}]}
        with post(server.ollama_url, chat) as response:
            assert response.headers["Content-Type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in response.read().decode().splitlines()]
        with post(server.ollama_url, dict(chat, stream=False)) as response:
            single = json.loads(response.read())
        with post(server.url + "/api/generate", {"model": "llama3", "prompt": "x", "raw": True}) as response:
            generated = [json.loads(line) for line in response.read().decode().splitlines()]
        with urllib.request.urlopen(server.url + "/api/tags") as response:
            tags = json.loads(response.read())
    assert [line["done"] for line in lines] == [False, False, True]
    assert "".join(line["message"]["content"] for line in lines) == "Hello there"
    assert all(line["message"]["role"] == "assistant" and line["model"] == "llama3" for line in lines)
    assert lines[-1]["done_reason"] == "stop" and "total_duration" in lines[-1] and "eval_count" in lines[-1]
    assert single["message"] == {"role": "assistant", "content": "Hi"} and single["done"] is True
    assert "".join(g["response"] for g in generated) == "Once upon" and "context" in generated[-1]
    assert tags["models"][0]["name"] == "llama3:latest" and tags["models"][0]["model"] == "llama3:latest"


def test_stand_in_wire_format_of_the_completion_routes():
    with FakeLLMServer(["one two", "one two", "one two", "one two"]) as server:
        with post(server.url + "/v1/completions", {"model": "llama3", "prompt": "x"}) as response:
            openai_whole = json.loads(response.read())
        with post(server.url + "/v1/completions", {"model": "llama3", "prompt": "x", "stream": True}) as response:
            openai_events = response.read().decode().split("\n\n")
        with post(server.llama_server_url, {"prompt": "x"}) as response:
            llama_whole = json.loads(response.read())
        with post(server.llama_server_url, {"prompt": "x", "stream": True}) as response:
            llama_events = [json.loads(e[len("data: "):]) for e in response.read().decode().split("\n\n") if e]
    assert openai_whole["object"] == "text_completion" and openai_whole["choices"][0]["text"] == "one two"
    assert openai_events[-2] == "data: [DONE]"
    assert "".join(json.loads(e[6:])["choices"][0]["text"] for e in openai_events[:-2]) == "one two"
    assert llama_whole["content"] == "one two" and llama_whole["stop"] is True
    assert [e["stop"] for e in llama_events] == [False, False, True]
    assert "".join(e["content"] for e in llama_events) == "one two"


def test_book_query_model_code_reads_the_stand_in_stream():
    """The book's own loop (readline + json.loads + message.content) works on the double's NDJSON."""
    with FakeLLMServer(["Llamas eat grass and hay."]) as server:
        request = urllib.request.Request(server.ollama_url, method="POST", data=json.dumps({
            "model": "llama3", "messages": [{"role": "user", "content": "What do Llamas eat?"}],
            "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}}).encode("utf-8"))
        request.add_header("Content-Type", "application/json")
        book_reply = ""
        with urllib.request.urlopen(request) as response:
            while True:
                line = response.readline().decode("utf-8")
                if not line:
                    break
                book_reply += json.loads(line)["message"]["content"]
        server.script, server._script_position = ["Llamas eat grass and hay."], 0
        package_reply = judge.query_model("What do Llamas eat?", url=server.ollama_url)
    assert book_reply == package_reply == "Llamas eat grass and hay."


def test_stand_in_default_judge_is_word_overlap():
    prompt = judge.build_score_prompt(ENTRY, "model_response")
    assert overlap_judge(prompt) == str(round(100 * word_overlap(ENTRY["output"], ENTRY["model_response"])))
    assert json.loads(overlap_judge(prompt, structured=True)) == {"score": int(overlap_judge(prompt))}
    assert overlap_judge(prompt, noise=500) == "100" and overlap_judge(prompt, noise=-500) == "0"
    assert word_overlap("a b c", "a b c") == 1.0 and word_overlap("a", "z") == 0.0
    assert json.loads(overlap_judge(judge.build_rubric_prompt(ENTRY, "model_response")))["score"] in range(1, 6)


def test_stand_in_honours_stop_strings_and_max_tokens():
    with FakeLLMServer(["one two three four"] * 6) as server:
        ollama = judge.make_client(url=server.ollama_url)
        openai = judge.make_client(url=server.openai_url)
        llama = judge.make_client(url=server.llama_server_url)
        assert ollama.chat("x", options={"stop": " three"}) == "one two"
        assert openai.complete("x", options={"stop": ["four", "two"]}) == "one "
        assert llama.complete("x", options={"n_predict": 3}) == "one two three "
        with post(server.openai_url, {"model": "llama3", "messages": [], "max_tokens": 1}) as response:
            assert json.loads(response.read())["choices"][0]["finish_reason"] == "length"


def test_stand_in_runs_as_a_module():
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


# --------------------------------------------------------------------------- query_model: the book's request

def test_query_model_sends_the_book_request():
    with FakeLLMServer(["42"]) as server:
        assert judge.query_model("What do llamas eat?", "llama3", server.ollama_url) == "42"
        body = server.requests[-1].body
    assert body == {"model": "llama3", "messages": [{"role": "user", "content": "What do llamas eat?"}],
                    "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}, "stream": True}


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
    assert request.body == {"model": "llama3", "messages": [{"role": "user", "content": "x"}], "seed": 123,
                            "temperature": 0, "max_tokens": 8, "stream": stream}


def test_route_is_picked_from_url_or_argument():
    assert judge.detect_api("http://localhost:11434/api/chat") == "ollama"
    assert judge.detect_api("http://localhost:11434/api/generate") == "ollama"
    assert judge.detect_api("http://localhost:11434") == "ollama"
    assert judge.detect_api("http://h:8081/v1/chat/completions") == "openai"
    assert judge.detect_api("http://h:8081/v1/completions") == "openai"
    assert judge.detect_api("http://localhost:11434/v1") == "openai"
    assert judge.detect_api("http://h:8080/completion") == "llama_server"
    assert judge.server_base_url("http://h:8080/prefix/completion") == "http://h:8080/prefix"
    with pytest.raises(ValueError, match="Não sei qual protocolo"):
        judge.detect_api("http://localhost:11434/generate")
    with FakeLLMServer(["ok", "ok"]) as server:
        judge.query_model("x", url=server.url, api="openai")
        judge.query_model("x", url=server.url)
        paths = [r.path for r in server.requests]
    assert paths == ["/v1/chat/completions", "/api/chat"]


# --------------------------------------------------------------------------- what a data generator needs

@pytest.mark.parametrize("api, path", [("ollama", "/api/chat"), ("openai", "/v1/chat/completions"),
                                       ("llama_server", "/v1/chat/completions")])
@pytest.mark.parametrize("stream", [False, True])
def test_chat_with_a_list_of_messages(api, path, stream):
    with FakeLLMServer(["Blue."]) as server:
        client = judge.make_client("llama3", server.url, api=api, stream=stream)
        assert client.chat(MESSAGES) == "Blue."
        request = server.requests[-1]
    assert request.path == path and request.body["messages"] == MESSAGES
    with pytest.raises(ValueError, match="Mensagem 1 inválida"):
        client.chat([MESSAGES[0], {"role": "robot", "content": "x"}])


@pytest.mark.parametrize("stream", [False, True])
def test_raw_completion_request_of_each_protocol(stream):
    options = {"seed": 7, "temperature": 0.7, "top_p": 0.9, "max_tokens": 5, "stop": "###", "num_ctx": 4096}
    with FakeLLMServer(["Once upon a time"] * 3) as server:
        replies = [judge.make_client("llama3", server.url, api=api, stream=stream).complete("Once", options=options)
                   for api in ("ollama", "openai", "llama_server")]
        ollama, openai, llama = (json.loads(r.raw) for r in server.requests)
        paths = [r.path for r in server.requests]
    assert replies == ["Once upon a time"] * 3
    assert paths == ["/api/generate", "/v1/completions", "/completion"]
    assert ollama == {"model": "llama3", "prompt": "Once", "raw": True, "stream": stream, "options": {
        "seed": 7, "temperature": 0.7, "num_ctx": 4096, "top_p": 0.9, "num_predict": 5, "stop": ["###"]}}
    assert openai == {"model": "llama3", "prompt": "Once", "seed": 7, "temperature": 0.7, "top_p": 0.9,
                      "max_tokens": 5, "stop": ["###"], "stream": stream}
    assert llama == {"prompt": "Once", "seed": 7, "temperature": 0.7, "top_p": 0.9, "n_predict": 5,
                     "stop": ["###"], "stream": stream}


def test_per_call_options_override_the_client_and_names_are_checked():
    with FakeLLMServer(["x", "x"]) as server:
        client = judge.make_client(url=server.ollama_url, options={"temperature": 0.5, "n_predict": 9})
        client.chat("a")
        client.chat("a", options={"temperature": 1.0, "seed": 1})
        first, second = (r.body["options"] for r in server.requests)
    assert first == {"seed": 123, "temperature": 0.5, "num_ctx": 2048, "num_predict": 9}
    assert second == {"seed": 1, "temperature": 1.0, "num_ctx": 2048, "num_predict": 9}
    with pytest.raises(ValueError, match="Duas quantidades máximas"):
        judge.normalize_options({"max_tokens": 5, "num_predict": 6})
    with pytest.raises(TypeError, match="texto do prompt"):
        client.complete(MESSAGES)


# --------------------------------------------------------------------------- structured output

def test_schema_goes_in_each_protocol_s_field():
    schema = judge.SCORE_SCHEMA
    prompt = judge.build_score_prompt(ENTRY, "model_response")
    with FakeLLMServer() as server:
        replies = [judge.make_client(url=server.ollama_url).chat(prompt, schema=schema),
                   judge.make_client(url=server.openai_url).chat(prompt, schema=schema),
                   judge.make_client(url=server.openai_url, schema_style="json_object").chat(prompt, schema=schema)]
        ollama, openai, llama_cpp_python = (r.body for r in server.requests)
    assert ollama["format"] == schema
    assert openai["response_format"] == {"type": "json_schema",
                                         "json_schema": {"name": "reply", "strict": True, "schema": schema}}
    assert llama_cpp_python["response_format"] == {"type": "json_object", "schema": schema}
    assert all(judge.explain_json_score(r)[0] == int(overlap_judge(prompt)) for r in replies)


def test_a_server_that_refuses_json_schema_gets_a_hint_not_retries():
    error = "1 validation error: ('body', 'response_format', 'type') Input should be 'text' or 'json_object', input json_schema"
    with FakeLLMServer([Reply(status=500, error=error)] * 3) as server:
        with pytest.raises(JudgeServerError, match="schema_style='json_object'"):
            judge.make_client(url=server.openai_url, **FAST).chat("x", schema=judge.SCORE_SCHEMA)
        assert server.chat_count() == 1


# --------------------------------------------------------------------------- failures

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


def test_slow_reply_beyond_the_timeout_is_not_retried():
    with FakeLLMServer([Reply("5", delay=3), "5"]) as server:
        with pytest.raises(JudgeTimeoutError, match=r"não respondeu em 0,3 s \(limite timeout\)"):
            judge.query_model("x", url=server.ollama_url, timeout=0.3, retries=2, backoff=0.01)
        assert server.chat_count() == 1


def test_slow_stream_between_lines_times_out():
    with FakeLLMServer([Reply("a b c d", chunk_delay=2)]) as server:
        with pytest.raises(JudgeTimeoutError):
            judge.query_model("x", url=server.ollama_url, timeout=0.3, retries=0)


@pytest.mark.parametrize("route", ["ollama", "openai", "llama_server"])
def test_dropped_stream_is_detected_and_retried(route):
    script = [Reply("one two three", drop_after=2), "one two three"]
    with FakeLLMServer(script) as server:
        client = judge.make_client(url=server.url, api=route, stream=True, retries=0)
        ask = client.complete if route == "llama_server" else client.chat
        with pytest.raises(JudgeStreamError, match="caiu|terminou sem"):
            ask("x")
        server.script, server._script_position = script, 0
        client.retries, client.backoff = 2, 0.01
        assert ask("x") == "one two three"
        assert server.generation_count() == 3


def test_an_http_1_0_server_whose_body_ends_with_the_connection():
    lines = [{"message": {"role": "assistant", "content": p}, "done": False} for p in ("Hay ", "and grass.")]
    lines.append({"message": {"role": "assistant", "content": ""}, "done": True})
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()

    def respond(connection, stopping):
        connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n" + body)

    with raw_http_server(respond) as url:
        assert judge.query_model("What do llamas eat?", url=url + "/api/chat", **FAST) == "Hay and grass."


def test_interrupted_openai_stream_is_not_taken_as_an_empty_reply():
    # llama-cpp-python's server cuts a stream when another request arrives: role chunk, then [DONE].
    with FakeLLMServer([Reply("85", interrupted=True), "85"]) as server:
        with pytest.raises(JudgeStreamError, match="sem finish_reason"):
            judge.query_model("x", url=server.openai_url, stream=True, retries=0)
        assert judge.query_model("x", url=server.openai_url, stream=True, retries=0) == "85"


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
        llama = judge.check_server(server.llama_server_url, "anything")
    down = judge.check_server(f"http://127.0.0.1:{closed_port()}/api/chat")
    assert ok and ok.reachable and ok.version and ok.model_available is True
    assert not missing and missing.reachable and "ollama pull llama3:70b" in missing.message
    assert openai and openai.api == "openai" and openai.models == ["llama3:latest"]
    assert llama and llama.api == "llama_server" and llama.model_available is None
    assert not down and not down.reachable and "ollama serve" in down.message
    with pytest.raises(JudgeConnectionError):
        judge.check_server(down.url, raise_error=True)


# --------------------------------------------------------------------------- in-process llama_cpp client

def test_llama_cpp_missing_gives_pt_br_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(JudgeDependencyError, match="pip install llama-cpp-python"):
        judge.make_client(api="llama_cpp", model_path=tmp_path / "m.gguf")
    with pytest.raises(ValueError, match="model_path"):
        judge.make_client(api="llama_cpp")


def test_llama_cpp_client_wraps_chat_and_completion(monkeypatch, tmp_path):
    calls = []

    class FakeLlama:
        def __init__(self, model_path, n_ctx, seed, verbose):
            calls.append(("init", Path(model_path).name, n_ctx, seed))

        def create_chat_completion(self, messages, **params):
            calls.append(("chat", messages, params))
            return {"choices": [{"message": {"role": "assistant", "content": "64"}}]}

        def create_completion(self, prompt, **params):
            calls.append(("complete", prompt, params))
            return {"choices": [{"text": " upon a time"}]}

    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=FakeLlama))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    results = judge.score_responses([ENTRY], "model_response", api="llama_cpp", model_path=gguf, progress=False)
    client = judge.make_client(api="llama_cpp", model_path=gguf, options={"num_ctx": 512})
    assert client.complete("Once", options={"n_predict": 4, "stop": "\n"}) == " upon a time"
    assert client.chat(MESSAGES, schema=judge.SCORE_SCHEMA) == "64"
    assert results[0].score == 64
    assert calls[0] == ("init", "tiny.gguf", 2048, 123)
    assert calls[1][2] == {"seed": 123, "temperature": 0}
    assert calls[2] == ("init", "tiny.gguf", 512, 123)
    assert calls[3] == ("complete", "Once", {"seed": 123, "temperature": 0, "stop": ["\n"], "max_tokens": 4})
    assert calls[4][1] == MESSAGES
    assert calls[4][2]["response_format"] == {"type": "json_object", "schema": judge.SCORE_SCHEMA}
