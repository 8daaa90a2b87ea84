"""Synthetic data against a real LLM server (llama.cpp via llama-cpp-python, SmolLM2-135M-Instruct).

Start the server with ``bash tools/start_llm_server.sh`` and export the
``LLMDEF_LLM_SERVER_URL`` line it prints; without it these tests are skipped,
unless ``LLMDEF_REQUIRE_LLM_SERVER=1`` (then they fail). What the model wrote and
what happened to each item is printed (``pytest -s``). A 135M model writes poor
data: the tests check that the real protocol works end to end and that every item
is accounted for, not the quality of what is kept.
"""
from __future__ import annotations

import json

import pytest

from llmdefinitions import datagen, judge
from llmdefinitions.data import validate_entries

pytestmark = [pytest.mark.llm_server, pytest.mark.slow]

import shared_data  # noqa: E402  (tests/shared_data.py)

N_ITEMS = 3
SHORT = {"num_predict": 48}
REAL = {"timeout": 120.0, "deadline": 300.0, "retries": 1, "backoff": 1.0}


@pytest.fixture(scope="module")
def seed_tasks():
    path = shared_data.locate() / "instruction-data.json"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("method", ["magpie", "self-instruct"])
def test_every_requested_item_is_kept_or_dropped_with_a_reason(server_url, seed_tasks, method, tmp_path):
    client = judge.make_client("smollm2", server_url, **REAL)
    result = datagen.generate_dataset(method, N_ITEMS, client=client, seed_tasks=seed_tasks, output_dir=tmp_path,
                                      instruction_options=SHORT, response_options=SHORT, progress=False)
    print(f"\n--- {method}\n{result.report}")
    for candidate, verdict in zip(result.candidates, result.verdicts):
        print(f"item {candidate.index}: {verdict.label}: {verdict.reason or ''}\n"
              f"    instrução: {candidate.instruction[:120]!r}\n    resposta: {candidate.output[:120]!r}")
    assert len(result.candidates) == len(result.verdicts) == N_ITEMS
    for candidate, verdict in zip(result.candidates, result.verdicts):
        assert candidate.status == "generated", f"o servidor real falhou no item {candidate.index}: {candidate.reason}"
        assert verdict.kept != bool(verdict.reason), verdict
    assert result.report.n_kept + sum(result.report.dropped.values()) == N_ITEMS
    assert result.report.requests_asked <= 2 * N_ITEMS
    kept = json.loads(result.paths.kept.read_text(encoding="utf-8"))
    assert kept == result.kept
    if kept:
        validate_entries(kept, str(result.paths.kept))
    accounts = json.loads(result.paths.accounts.read_text(encoding="utf-8"))
    assert [a["index"] for a in accounts] == list(range(N_ITEMS))
    again = datagen.generate_dataset(method, N_ITEMS, client=client, seed_tasks=seed_tasks, output_dir=tmp_path,
                                     instruction_options=SHORT, response_options=SHORT, progress=False)
    assert again.report.requests_asked == 0                    # resumed from the cache: nothing asked twice
    assert [c.entry() for c in again.candidates] == [c.entry() for c in result.candidates]
