"""Scoring whole files against the TEST DOUBLE: accounting (no item dropped), cache, threads, modes."""
from __future__ import annotations

import json

import pytest

from llmdefinitions import judge
from llmdefinitions.judge import JudgeConnectionError, ModelNotFoundError, ScoreList, ScoreResult
from llmdefinitions.testing.fake_llm_server import FakeLLMServer, Reply, overlap_judge, word_overlap

from judge_helpers import ENTRY, FAST, closed_port, items, read_shared


def test_scoring_real_test_set_end_to_end_with_cache(tmp_path, shared_data):
    data_path = shared_data / "instruction-data-with-response.json"
    data = read_shared(shared_data, "instruction-data-with-response.json")
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
    assert again.report.n_cached == 110 and again.report.complete
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 110


def test_no_item_is_dropped_and_every_failure_has_a_reason():
    data = items(6, prefix="response ")
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
    report = scores.report
    assert (report.n_total, report.n_scored, report.n_empty_response, report.n_unparsable, report.n_failed,
            report.n_not_attempted) == (6, 1, 1, 3, 1, 0)
    assert str(report).startswith("6 itens: 2 com nota (1 sem consultar o juiz: resposta vazia); "
                                  "3 sem nota legível na resposta do juiz; 1 com falha ao falar com o juiz.")


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
    assert results.report.n_missing_field == 1


def test_per_item_timeout_is_recorded_not_fatal():
    replies = {"`r1`": Reply("50", delay=3)}
    with FakeLLMServer(replies) as server:
        results = judge.score_responses(items(3), "model_response", url=server.ollama_url, progress=False,
                                        timeout=0.3, retries=0)
    assert [r.status for r in results] == ["scored", "error", "scored"]
    assert "não respondeu" in results[1].reason


def test_fatal_errors_stop_the_run(tmp_path):
    with pytest.raises(JudgeConnectionError, match="ollama serve"):
        judge.score_responses(items(4), "model_response", url=f"http://127.0.0.1:{closed_port()}/api/chat",
                              progress=False, retries=0)
    with FakeLLMServer() as server:
        with pytest.raises(ModelNotFoundError, match="ollama pull"):
            judge.score_responses(items(4), "model_response", "llama3:70b", url=server.ollama_url,
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


def test_cache_is_per_model_and_per_request_options(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with FakeLLMServer() as server:
        def run(model="llama3", **kwargs):
            before = server.chat_count()
            results = judge.score_responses(items(2), "model_response", model, url=server.ollama_url,
                                            cache_path=cache, progress=False, **kwargs)
            return server.chat_count() - before, results
        assert run()[0] == 2
        assert run()[0] == 0
        assert run("llama3:latest")[0] == 2
        assert run(options={"temperature": 0.8})[0] == 2
        asked, structured = run(structured=True)
        assert asked == 2 and run(structured=True)[0] == 0
    assert all(r.status == "scored" for r in structured)


def test_structured_scoring_reads_json_replies():
    data = items(3)
    with FakeLLMServer({"`r2`": "85"}) as server:
        results = judge.score_responses(data, "model_response", url=server.openai_url, structured=True,
                                        progress=False)
        bodies = [r.body for r in server.requests]
    expected = json.loads(overlap_judge(judge.build_score_prompt(data[0], "model_response"), structured=True))
    assert [r.score for r in results[:2]] == [expected["score"]] * 2
    assert results[2].status == "unparsable" and "não tem o campo 'score'" in results[2].reason  # not JSON
    assert all(b["response_format"]["json_schema"]["schema"] == judge.SCORE_SCHEMA for b in bodies)


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
        structured = judge.score_with_rubric(data[:1], "model_response", url=server.ollama_url, progress=False,
                                             structured=True)
        assert server.requests[-1].body["format"] == judge.RUBRIC_SCHEMA
    assert results[0].status == "scored" and 1 <= results[0].score <= 5 and "overlap" in results[0].feedback
    assert results[1].score == 1 and results[1].status == "empty_response"
    assert results[2].score is None and "de 1 a 5" in results[2].reason
    assert structured[0].score == results[0].score


def test_save_and_load_results(tmp_path):
    results = [ScoreResult(0, 80, "scored", reply="80"), ScoreResult(1, None, "unparsable", reason="r"),
               ScoreResult(2, None, "not_attempted", reason="parou")]
    path = judge.save_score_results(results, tmp_path / "sub" / "scores.json")
    assert judge.load_score_results(path) == results
    assert json.loads(path.read_text(encoding="utf-8"))[1]["reason"] == "r"


def test_report_of_a_run_as_a_dict_is_json():
    with FakeLLMServer(["70", "nope"]) as server:
        results = judge.score_responses(items(2), "model_response", url=server.ollama_url, progress=False,
                                        max_workers=1)
    record = json.loads(json.dumps(results.report.to_dict()))
    assert record["n_scored"] == 1 and record["n_unparsable"] == 1 and record["complete"] is True
    assert record["judge_never_answered"] is False and record["n_replies"] == 2
