"""Issue 20, items 2–5, replayed: a judge that cannot hang or mis-score.

2. Score parsing: only whole decimal numbers in 0–100; exponents, hex and overflow
   are unparsable with a reason; ``<think>`` blocks are ignored, an unclosed one
   means no score.
3. No request can hang or exhaust the process: an overall deadline per request
   (a drip ends at the deadline, not at the per-read timeout) and a maximum reply
   size, for JSON, NDJSON and SSE, with pt-BR messages. The misbehaving servers
   are the test double on 127.0.0.1 started here, with small limits.
4. A hung judge does not cost minutes per item: the deadline bounds every attempt,
   timeouts are not retried, and consecutive failures of the same kind stop the run
   (the rest is ``not_attempted``), with a report a command line can act on.
5. Reruns ask only for the failed items; a truncated cache line is tolerated and reported.
"""
from __future__ import annotations

import pytest

from llmdefinitions import judge
from llmdefinitions.judge import JudgeDeadlineError, JudgeReplyTooLargeError, JudgeTimeoutError
from llmdefinitions.testing.fake_llm_server import FakeLLMServer, Reply

from judge_helpers import items, raw_http_server

SMALL = {"max_reply_bytes": 10_000, "retries": 0}


# --------------------------------------------------------------------------- 2. parsing

@pytest.mark.parametrize("text, reason_part", [
    ("1e2", "notação científica (1e2)"),
    ("1e309", "notação científica (1e309)"),
    ("Score: 1e2", "notação científica"),
    ("8.5e1", "notação científica (8.5e1)"),
    ("0x50", "hexadecimal (0x50)"),
    ("Score: 0x50", "hexadecimal"),
    ("1" * 400, "fora da escala 0–100"),                 # overflow: no float, no OverflowError
    ("Score: " + "9" * 400 + "/100", "fora da escala"),
])
def test_exponent_hex_and_overflow_are_unparsable_with_a_reason(text, reason_part):
    score, reason = judge.explain_score(text)
    assert score is None and reason_part in reason
    assert judge.parse_score(text) is None


@pytest.mark.parametrize("text, expected", [
    ("85", 85), ("85/100", 85), ("Score: 85", 85), ("85.0", 85),        # the documented forms
    ("<think>Maybe 40/100.</think>\n85", 85),
    ("<think>Score: 40</think>\nScore: 85", 85),
    ("<think>a</think> <THINK>Score: 10</THINK> Score: 85", 85),
    ("Let me weigh it... Score: 40 is too low.</think>\n85", 85),          # opening tag was in the template
])
def test_documented_forms_and_think_blocks(text, expected):
    assert judge.explain_score(text) == (expected, None)


def test_an_unclosed_think_block_is_unparsable():
    score, reason = judge.explain_score("<think>reasoning... Score: 40")
    assert score is None and "<think>" in reason and "</think>" in reason and "cortado" in reason
    assert judge.explain_json_score('<think>{"score": 40}')[0] is None


# --------------------------------------------------------------------------- 3. no request can hang

def test_limits_have_sensible_defaults_and_are_configurable():
    client = judge.make_client()
    assert (client.limits.timeout, client.limits.deadline, client.limits.max_reply_bytes) == (120, 300, 1_000_000)
    client = judge.make_client(timeout=1, deadline=2, max_reply_bytes=3)
    assert (client.limits.timeout, client.limits.deadline, client.limits.max_reply_bytes) == (1, 2, 3)
    with pytest.raises(ValueError, match="deadline"):
        judge.make_client(deadline=0)


@pytest.mark.parametrize("api, stream, kind", [
    ("ollama", True, "endless NDJSON (/api/chat)"),
    ("ollama_generate", True, "endless NDJSON (/api/generate)"),
    ("openai", True, "endless SSE (/v1/chat/completions)"),
    ("openai_complete", True, "endless SSE (/v1/completions)"),
    ("llama_server", True, "endless SSE (/completion)"),
    ("ollama", False, "endless chunked JSON"),
])
def test_an_endless_reply_stops_at_max_reply_bytes(api, stream, kind):
    with FakeLLMServer([Reply("85", endless=True)]) as server:
        name = api.replace("_generate", "").replace("_complete", "")
        client = judge.make_client(url=server.url, api=name, stream=stream, **SMALL)
        ask = client.complete if api.endswith(("_generate", "_complete")) or api == "llama_server" else client.chat
        with pytest.raises(JudgeReplyTooLargeError) as info:
            ask("x")
    message = str(info.value)
    assert "passou de 10.000 bytes (limite max_reply_bytes)" in message, kind
    assert "resposta sem fim" in message


def test_a_huge_json_is_refused_before_reading_it():
    with FakeLLMServer([Reply("85", padding=5_000_000)]) as server:
        client = judge.make_client(url=server.openai_url, **SMALL)
        with pytest.raises(JudgeReplyTooLargeError, match="10.000 bytes"):
            client.chat("x")


def test_a_one_byte_per_second_drip_ends_at_the_deadline():
    # Each byte arrives well within the 5 s timeout: only the overall deadline can end this.
    with FakeLLMServer([Reply("85", byte_delay=1.0)]) as server:
        client = judge.make_client(url=server.ollama_url, timeout=5, deadline=1.5, retries=0)
        with pytest.raises(JudgeDeadlineError) as info:
            client.chat("x")
    assert "passou do prazo de 1,5 s (limite deadline)" in str(info.value)


def test_a_drip_after_the_headers_of_an_http_1_0_reply_ends_at_the_deadline():
    def respond(connection, stopping):
        connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n")
        for byte in b'{"message": {"content": "85"}, "done": true}\n':
            if stopping.wait(0.2):
                return
            connection.sendall(bytes([byte]))

    with raw_http_server(respond) as url:
        client = judge.make_client(url=url, timeout=5, deadline=0.6, retries=0)
        with pytest.raises(JudgeDeadlineError, match=r"prazo de 0,6 s \(limite deadline\)"):
            client.chat("x")


@pytest.mark.parametrize("url_attr", ["ollama_url", "openai_url"])
def test_a_slow_endless_stream_ends_at_the_deadline(url_attr):
    with FakeLLMServer([Reply("85", endless=True, chunk_delay=0.05)]) as server:
        client = judge.make_client(url=getattr(server, url_attr), stream=True, timeout=5, deadline=0.5, retries=0)
        with pytest.raises(JudgeDeadlineError, match=r"prazo de 0,5 s \(limite deadline\)"):
            client.chat("x")


def test_a_silent_server_ends_at_whichever_limit_comes_first():
    with FakeLLMServer([Reply("85", delay=10), Reply("85", delay=10)]) as server:
        with pytest.raises(JudgeDeadlineError, match="sem receber a resposta"):
            judge.make_client(url=server.ollama_url, timeout=5, deadline=0.3, retries=0).chat("x")
        with pytest.raises(JudgeTimeoutError, match=r"não respondeu em 0,3 s \(limite timeout\)") as info:
            judge.make_client(url=server.ollama_url, timeout=0.3, deadline=5, retries=0).chat("x")
    assert not isinstance(info.value, JudgeDeadlineError)


def test_the_messages_do_not_send_the_user_to_a_cli_option():
    with FakeLLMServer([Reply("85", delay=10)]) as server:
        with pytest.raises(JudgeTimeoutError) as info:
            judge.make_client(url=server.ollama_url, timeout=0.2, retries=0).chat("x")
    assert "timeout=" not in str(info.value) and "--" not in str(info.value)


# --------------------------------------------------------------------------- 4. a hung judge stops early

def test_the_deadline_applies_to_every_attempt():
    # attempt 1: the stream drops (retryable); attempt 2 drips and meets its own deadline.
    with FakeLLMServer([Reply("one two", drop_after=1), Reply("85", byte_delay=0.2), "85"]) as server:
        client = judge.make_client(url=server.ollama_url, timeout=5, deadline=0.5, retries=2, backoff=0.01)
        with pytest.raises(JudgeDeadlineError, match="após 2 tentativas"):
            client.chat("x")
        assert server.chat_count() == 2      # a deadline error is not retried


def test_consecutive_timeouts_stop_the_run():
    data = items(10)
    with FakeLLMServer(lambda prompt, body: Reply("50", delay=10)) as server:
        results = judge.score_responses(data, "model_response", url=server.ollama_url, timeout=0.2, retries=2,
                                        max_workers=1, max_consecutive_failures=3, progress=False)
        asked = server.chat_count()
    assert asked == 3                        # one attempt each, then nothing more is sent
    assert [r.status for r in results] == ["error"] * 3 + ["not_attempted"] * 7
    assert all("não foi enviado ao juiz" in r.reason and "3 itens seguidos" in r.reason for r in results[3:])
    report = results.report
    assert (report.n_failed, report.n_not_attempted, report.n_replies) == (3, 7, 0)
    assert report.judge_never_answered and not report.complete and "3 itens seguidos" in report.stopped_reason
    assert "7 não enviados ao juiz" in str(report) and "O juiz não respondeu a nenhum item" in str(report)


def test_consecutive_server_errors_stop_the_run_with_threads():
    with FakeLLMServer(lambda prompt, body: Reply(status=503, error="overloaded")) as server:
        results = judge.score_responses(items(20), "model_response", url=server.ollama_url, retries=0,
                                        max_workers=4, max_consecutive_failures=3, progress=False)
        asked = server.chat_count()
    # items already sent when the third failure arrives still finish: at most workers + (limit - 1)
    assert asked <= 4 + 2
    assert results.report.n_failed == asked and results.report.n_not_attempted == 20 - asked
    assert "HTTP 503" in results.report.stopped_reason


def test_failures_of_different_kinds_or_broken_by_a_success_do_not_stop_the_run():
    # 500, 500, success (count reset), 500, 500, 502 (another kind), 500, success: never 3 alike in a row
    replies = {"`r0`": Reply(status=500), "`r1`": Reply(status=500), "`r2`": "70", "`r3`": Reply(status=500),
               "`r4`": Reply(status=500), "`r5`": Reply(status=502), "`r6`": Reply(status=500)}
    with FakeLLMServer(replies) as server:
        results = judge.score_responses(items(8), "model_response", url=server.ollama_url, retries=0,
                                        max_workers=1, max_consecutive_failures=3, progress=False)
    assert results.report.n_not_attempted == 0 and results.report.stopped_reason is None
    assert [r.status for r in results] == ["error", "error", "scored", "error", "error", "error", "error", "scored"]


def test_a_stopped_run_still_uses_the_cached_replies(tmp_path):
    cache = tmp_path / "cache.jsonl"
    data = items(6)
    with FakeLLMServer() as server:
        judge.score_responses(data[3:], "model_response", url=server.ollama_url, cache_path=cache, progress=False)
    with FakeLLMServer(lambda prompt, body: Reply(status=500)) as server:
        results = judge.score_responses(data, "model_response", url=server.ollama_url, cache_path=cache,
                                        retries=0, max_workers=1, max_consecutive_failures=2, progress=False)
    assert [r.status for r in results] == ["error", "error", "not_attempted", "scored", "scored", "scored"]
    assert not results.report.judge_never_answered and results.report.n_cached == 3


# --------------------------------------------------------------------------- 5. reruns retry only failures

def test_a_rerun_asks_only_for_the_failed_items(tmp_path):
    cache = tmp_path / "cache.jsonl"
    data = items(6)
    first_script = {"`r1`": Reply(status=500, error="boom"), "`r3`": Reply("50", delay=10),
                    "`r4`": Reply("one two", drop_after=1)}
    with FakeLLMServer(first_script) as server:
        first = judge.score_responses(data, "model_response", url=server.ollama_url, cache_path=cache,
                                      timeout=0.3, retries=0, max_workers=1, progress=False)
    assert [r.status for r in first] == ["scored", "error", "scored", "error", "error", "scored"]
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 3      # failures are not cached
    with FakeLLMServer() as server:
        second = judge.score_responses(data, "model_response", url=server.ollama_url, cache_path=cache,
                                       progress=False)
        prompts = {r.body["messages"][0]["content"] for r in server.requests}
    asked = [e["model_response"] for e in data if judge.build_score_prompt(e, "model_response") in prompts]
    assert asked == ["r1", "r3", "r4"]
    assert [r.cached for r in second] == [True, False, True, False, False, True]
    assert second.report.complete and second.report.n_cached == 3


def test_truncated_cache_line_is_tolerated_and_reported(tmp_path):
    cache = tmp_path / "cache.jsonl"
    data = items(5)
    with FakeLLMServer() as server:
        judge.score_responses(data[:3], "model_response", url=server.ollama_url, cache_path=cache, progress=False)
        with open(cache, "a", encoding="utf-8") as handle:
            handle.write('{"key": "abc", "model": "llama3", "rep')  # interrupted mid-write
        before = server.chat_count()
        with pytest.warns(UserWarning, match="1 linha\\(s\\) ilegível\\(is\\) ignorada\\(s\\)"):
            results = judge.score_responses(data, "model_response", url=server.ollama_url, cache_path=cache,
                                            progress=False)
        asked = server.chat_count() - before
    assert asked == 2 and [r.cached for r in results] == [True, True, True, False, False]
    assert results.report.cache_skipped_lines == 1 and "1 linha(s) ilegível(is) do cache" in str(results.report)
    with pytest.warns(UserWarning):
        reloaded = judge.ReplyCache(cache)
    assert len(reloaded) == 5 and reloaded.skipped_lines == 1
    lines = cache.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and lines[3].endswith('"rep') and lines[4].endswith("}")  # new replies on new lines


def test_clearing_the_cache_asks_everything_again(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with FakeLLMServer() as server:
        judge.score_responses(items(3), "model_response", url=server.ollama_url, cache_path=cache, progress=False)
        judge.ReplyCache(cache).clear()
        assert not cache.exists()
        again = judge.score_responses(items(3), "model_response", url=server.ollama_url, cache_path=cache,
                                      progress=False)
        assert server.chat_count() == 6
    assert not any(r.cached for r in again)
