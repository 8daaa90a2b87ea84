"""Synthetic data (llmdefinitions.datagen) against the fake LLM server: request bodies, filters, resume, CLI."""
from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from llmdefinitions import cli, datagen, judge
from llmdefinitions.data import validate_entries
from llmdefinitions.datagen import FilterConfig, check_entry, filter_entries, rouge_l
from llmdefinitions.testing.fake_llm_server import FakeLLMServer, Reply

CHATML_PREFIX = "<|im_start|>user\n"
LLAMA3_PREFIX = "<|start_header_id|>user<|end_header_id|>\n\n"
SEEDS = [
    {"instruction": "Name the capital of Italy.", "input": "", "output": "Rome."},
    {"instruction": "Translate the sentence into Spanish.", "input": "I like apples.", "output": "Me gustan las manzanas."},
    {"instruction": "Give a synonym for 'quick'.", "input": "", "output": "Fast."},
    {"instruction": "Convert 5 kilometers to meters.", "input": "", "output": "5000 meters."},
]
TASKS = ["Explain how volcanoes erupt.", "Write a haiku about tides.", "Suggest a simple bread recipe.",
         "Summarize the rules of chess.", "Give two facts about glaciers.", "Why do bees dance?",
         "Describe the tail of a comet.", "List three uses of coffee beans.", "Compare deserts and tundras.",
         "How is a violin tuned?", "Name famous bridges in Europe.", "What makes clouds rain?"]


def _seed(body: Dict[str, Any]) -> int:
    return int(body.get("seed", (body.get("options") or {}).get("seed", 0)))


def varied_llm(prompt: str, body: Dict[str, Any]) -> str:
    """A scripted model whose instruction depends on the request's seed, so items differ."""
    if body.get("messages"):
        return f"Here is a short answer about: {prompt}"
    task = TASKS[_seed(body) % len(TASKS)]
    if prompt.startswith(datagen.PROMPT_HEADER):
        return f" {task} Input: one paragraph\n"
    return task


def server(script=varied_llm) -> FakeLLMServer:
    return FakeLLMServer(script, check_model=False)


def generation_bodies(fake: FakeLLMServer):
    return [r for r in fake.requests if r.method == "POST"]


# --------------------------------------------------------------------------- templates

@pytest.mark.parametrize("model, family", [("smollm2", "chatml"), ("SmolLM2-135M-Instruct", "chatml"),
                                           ("qwen2.5:0.5b", "chatml"), ("llama3", "llama3"),
                                           ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3"),
                                           ("llama3.1:8b", "llama3"), ("phi3", "phi3"), ("gemma2", "gemma")])
def test_the_template_is_guessed_from_the_model_name(model, family):
    assert datagen.template_for_model(model).name == family


def test_an_unknown_model_asks_for_a_template():
    with pytest.raises(ValueError, match="template="):
        datagen.template_for_model("gpt2")
    with pytest.raises(ValueError, match="chatml"):
        datagen.get_template("alpaca")


# --------------------------------------------------------------------------- Magpie: what goes on the wire

@pytest.mark.parametrize("api, model, path, prefix", [
    ("openai", "smollm2", "/v1/completions", CHATML_PREFIX),
    ("llama_server", "smollm2", "/completion", CHATML_PREFIX),
    ("ollama", "llama3", "/api/generate", LLAMA3_PREFIX),
])
def test_magpie_sends_only_the_template_prefix_with_no_chat_wrapper(api, model, path, prefix):
    with server() as fake:
        client = judge.make_client(model, fake.url, api=api)
        result = datagen.generate_dataset("magpie", 2, client=client, progress=False)
        bodies = generation_bodies(fake)
    first = bodies[0]
    assert first.path == path
    assert first.body["prompt"] == prefix                                 # exactly the pre-query template
    assert json.loads(first.raw)["prompt"] == prefix                      # byte for byte on the wire
    assert "messages" not in first.body and "system" not in first.body and "template" not in first.body
    if api == "ollama":
        assert first.body["raw"] is True                                  # Ollama adds no template
        assert first.body["options"]["seed"] == 123 and first.body["options"]["temperature"] == 1.0
    stop = first.body["options"]["stop"] if api == "ollama" else first.body["stop"]
    assert stop[0] == ("<|eot_id|>" if model == "llama3" else "<|im_end|>")
    # step 2 is a chat request with the instruction the model wrote; item 1 samples with seed 124
    assert bodies[1].body["messages"] == [{"role": "user", "content": result.candidates[0].instruction}]
    assert _seed(bodies[2].body) == 124
    assert [c.instruction for c in result.candidates] == [TASKS[3], TASKS[4]]


def test_magpie_raw_response_and_system_turn_use_the_whole_template():
    with server() as fake:
        client = judge.make_client("smollm2", fake.url + "/v1/chat/completions")
        datagen.generate_dataset("magpie", 1, client=client, response_mode="raw", system="Be brief.",
                                 progress=False)
        bodies = [r.body for r in generation_bodies(fake)]
    system = "<|im_start|>system\nBe brief.<|im_end|>\n"
    assert bodies[0]["prompt"] == system + CHATML_PREFIX
    assert bodies[1]["prompt"] == (system + CHATML_PREFIX + TASKS[3]
                                   + "<|im_end|>\n<|im_start|>assistant\n")
    assert "messages" not in bodies[1]


# --------------------------------------------------------------------------- Self-Instruct

def test_self_instruct_prompt_lists_seed_tasks_and_leaves_the_next_number_open():
    prompt = datagen.build_self_instruct_prompt(SEEDS[:2])
    assert prompt == ("Come up with a series of tasks:\n\n"
                      "Task 1: Name the capital of Italy.\n"
                      "Task 2: Translate the sentence into Spanish. Input: I like apples.\n"
                      "Task 3:")
    assert datagen.parse_task(" Describe bees. Input: one paragraph\n") == ("Describe bees.", "one paragraph")
    assert datagen.parse_task("Describe bees.") == ("Describe bees.", "")


def test_self_instruct_requests_a_task_then_its_response():
    with server() as fake:
        client = judge.make_client("smollm2", fake.url + "/v1/chat/completions")
        result = datagen.generate_dataset("self-instruct", 2, client=client, seed_tasks=SEEDS, num_examples=3,
                                          progress=False)
        bodies = [r.body for r in generation_bodies(fake)]
    assert bodies[0]["prompt"].startswith("Come up with a series of tasks:\n\nTask 1: ")
    assert bodies[0]["prompt"].endswith("\nTask 4:") and bodies[0]["stop"] == ["\n", "Task "]
    examples = [line.split(": ", 1)[1] for line in bodies[0]["prompt"].splitlines()[2:-1]]
    assert all(e in [datagen.task_line(s) for s in SEEDS] for e in examples)
    first = result.candidates[0]
    assert (first.instruction, first.input) == (TASKS[3], "one paragraph")
    assert bodies[1]["messages"] == [{"role": "user", "content": TASKS[3] + "\n\none paragraph"}]


def test_self_instruct_needs_seed_tasks():
    with pytest.raises(ValueError, match="tarefas-semente"):
        datagen.generate_dataset("self-instruct", 1, client=judge.make_client("x", "http://127.0.0.1:9/v1"))


# --------------------------------------------------------------------------- filters on crafted items

GOOD = {"instruction": "List three uses of copper.", "input": "", "output": "Wires, pipes and coins."}


@pytest.mark.parametrize("change, rule", [
    ({"instruction": "  "}, "empty"),
    ({"output": ""}, "empty"),
    ({"output": "Wires.<|im_end|>\n<|im_start|>user\nMore?"}, "template_leak"),
    ({"output": "Wires, pipes and coins.\n\n### Instruction:\nName a metal."}, "template_leak"),
    ({"instruction": "List three uses of copper.\nassistant"}, "template_leak"),
    ({"output": "[INST] again"}, "template_leak"),
    ({"output": "I'm sorry, but I cannot help with that."}, "refusal"),
    ({"output": "As an AI language model, I have no hands."}, "refusal"),
    ({"output": "Desculpe, não posso ajudar com isso."}, "refusal"),
    ({"output": "Como um modelo de linguagem, não tenho opinião."}, "refusal"),
    ({"instruction": "Copper uses?"}, "too_short"),
    ({"instruction": "word " * 151}, "too_long"),
    ({"output": "word " * 401}, "too_long"),
    ({"instruction": "Draw a picture of a copper wire."}, "modality"),
    ({"instruction": "Desenhe um mapa do Brasil, por favor."}, "modality"),
    ({"instruction": "- List three uses of copper."}, "punctuation"),
])
def test_each_one_item_rule_drops_the_crafted_item(change, rule):
    failed = check_entry({**GOOD, **change})
    assert failed is not None and failed[0] == rule, failed
    assert failed[1]                                                       # a reason, in words


def test_a_good_item_and_quoted_or_portuguese_ones_pass():
    assert check_entry(GOOD) is None
    assert check_entry({**GOOD, "instruction": "\"Carpe diem\": translate it to English."}) is None
    assert check_entry({"instruction": "Explique a fotossíntese em uma frase.", "input": "",
                        "output": "As plantas transformam luz em açúcar."}) is None
    music = {**GOOD, "instruction": "Compose some music for a film."}
    assert check_entry(music)[0] == "modality" and check_entry(music, FilterConfig(check_modality=False)) is None


def test_rouge_l_keeps_accented_words():
    assert rouge_l("ação rápida", "ação lenta") == pytest.approx(0.5)
    assert rouge_l("The cat sat", "the CAT sat") == pytest.approx(1.0)
    assert rouge_l("a b c d", "x y") == 0.0


def test_duplicates_and_rouge_compare_with_the_pool_and_earlier_items_first_one_kept():
    italy = "Name the capital of Italy and describe its history in two sentences."
    pool = [{"instruction": italy, "input": "", "output": "Rome."}]
    entries = [
        {"instruction": "name the capital of Italy and describe  its history in two sentences.", "input": "",
         "output": "Rome, of course."},                                                     # exact (normalized)
        {"instruction": italy[:-1] + "!", "input": "", "output": "Rome."},                  # near: Jaccard 0.94
        {"instruction": "Please name the capital city of Italy and describe its long history in two sentences.",
         "input": "", "output": "Rome."},                                                   # ROUGE-L 0.89
        {"instruction": "Describe how volcanoes erupt.", "input": "", "output": "Magma rises."},    # kept
        {"instruction": "Describe how volcanoes erupt.", "input": "", "output": "Pressure."},      # exact of item 3
        {"instruction": "Explain why the sky is blue.", "input": "", "output": "Scattering."},     # kept
    ]
    verdicts = filter_entries(entries, pool)
    assert [v.rule for v in verdicts] == ["exact_duplicate", "near_duplicate", "rouge_l", None,
                                          "exact_duplicate", None]
    assert [v.kept for v in verdicts] == [False, False, False, True, False, True]
    assert "item 0 da referência" in verdicts[0].reason and "item gerado 3" in verdicts[4].reason
    assert "Jaccard 0,94" in verdicts[1].reason and "ROUGE-L 0,89" in verdicts[2].reason
    assert rouge_l(entries[2]["instruction"], italy) == pytest.approx(8 / 9)


def test_rouge_rule_against_earlier_kept_items_and_its_threshold():
    entries = [{"instruction": "Write a poem about the sea.", "input": "", "output": "Waves."},
               {"instruction": "Write a poem about the sea at night.", "input": "", "output": "Stars."}]
    assert [v.rule for v in filter_entries(entries)] == [None, "rouge_l"]
    assert [v.rule for v in filter_entries(entries, config=FilterConfig(rouge_threshold=0.95))] == [None, None]


def test_the_rouge_shortcut_finds_the_same_pairs_as_comparing_all():
    import random

    rng = random.Random(0)
    vocab = "the a of to write list name explain describe poem sea river city water fire tree".split()
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 9))) for _ in range(60)]
    entries = [{"instruction": t, "input": "", "output": "ok"} for t in texts]
    config = FilterConfig(check_modality=False, min_instruction_words=1, near_threshold=1.0)
    verdicts = filter_entries(entries, config=config)
    kept: list = []
    for text, verdict in zip(texts, verdicts):
        if verdict.rule == "exact_duplicate" or verdict.rule == "near_duplicate":
            continue
        expected = any(rouge_l(text, other) >= 0.7 for other in kept)
        assert (verdict.rule == "rouge_l") == expected, text
        if verdict.kept:
            kept.append(text)


# --------------------------------------------------------------------------- a whole run: files and accounts

def test_every_item_is_kept_or_dropped_with_a_reason_and_both_are_written(tmp_path):
    def llm(prompt, body):
        if body.get("messages"):
            if "bees" in prompt:
                return "I'm sorry, I can't help."
            return "Seven.\nuser\nAnother one?" if "prime" in prompt else f"An answer to: {prompt}"
        return ["Explain how tides work.", "", "Explain how tides work.", "Why do bees dance?",
                "Name a prime number."][_seed(body) - 123]

    with server(llm) as fake:
        result = datagen.generate_dataset("magpie", 5, model="smollm2", url=fake.url + "/v1/chat/completions",
                                          output_dir=tmp_path, progress=False)
    assert [v.rule for v in result.verdicts] == [None, "empty", "exact_duplicate", "refusal", "template_leak"]
    paths = result.paths
    kept = json.loads(paths.kept.read_text(encoding="utf-8"))
    assert kept == [{"instruction": "Explain how tides work.", "input": "",
                     "output": "An answer to: Explain how tides work."}]
    validate_entries(kept, str(paths.kept))
    accounts = json.loads(paths.accounts.read_text(encoding="utf-8"))
    assert [a["index"] for a in accounts] == list(range(5))
    for record in accounts:
        assert record["kept"] != bool(record["reason"])                  # kept, or a reason: never both/none
    assert accounts[4]["output"] == "Seven.\nuser\nAnother one?" and "papel" in accounts[4]["reason"]
    summary = json.loads(paths.summary.read_text(encoding="utf-8"))
    assert summary["n_requested"] == 5 and summary["n_kept"] == 1
    assert summary["dropped"] == {"refusal": 1, "empty": 1, "exact_duplicate": 1, "template_leak": 1}
    text = str(result.report)
    assert "1 de 5 itens mantidos (20,0 %)" in text and "recusa" in text and "vazamento de template" in text


class _InterruptAfter:
    """A client that lets ``n`` requests through, then raises KeyboardInterrupt (Ctrl+C mid-run)."""

    def __init__(self, client, n):
        self._client, self._left = client, n
        self.model = client.model

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _tick(self):
        if self._left == 0:
            raise KeyboardInterrupt
        self._left -= 1

    def complete(self, *args, **kwargs):
        self._tick()
        return self._client.complete(*args, **kwargs)

    def chat(self, *args, **kwargs):
        self._tick()
        return self._client.chat(*args, **kwargs)


@pytest.mark.parametrize("method", ["magpie", "self-instruct"])
def test_an_interrupted_run_resumes_with_no_repeated_request(tmp_path, method):
    n = 6
    with server() as fake:
        client = judge.make_client("smollm2", fake.url + "/v1/chat/completions")
        with pytest.raises(KeyboardInterrupt):
            datagen.generate_dataset(method, n, client=_InterruptAfter(client, 5), seed_tasks=SEEDS,
                                     output_dir=tmp_path, progress=False)
        assert fake.generation_count() == 5
        assert not (tmp_path / f"sinteticos-{method}.json").exists()      # nothing half-written
        resumed = datagen.generate_dataset(method, n, client=client, seed_tasks=SEEDS, output_dir=tmp_path,
                                           progress=False)
        assert fake.generation_count() == 2 * n                            # each request exactly once
        raws = [r.raw for r in generation_bodies(fake)]
        assert len(set(raws)) == len(raws)
        assert resumed.report.requests_asked == 2 * n - 5 and resumed.report.requests_reused == 5
        again = datagen.generate_dataset(method, n, client=client, seed_tasks=SEEDS, output_dir=tmp_path,
                                         progress=False)
        assert fake.generation_count() == 2 * n                            # a third run asks nothing
    assert again.report.requests_asked == 0 and again.report.items_per_minute is None
    with server() as other:                                                # same items as an uninterrupted run
        fresh = datagen.generate_dataset(method, n, client=judge.make_client("smollm2", other.url + "/v1"),
                                         seed_tasks=SEEDS, progress=False)
    assert [c.entry() for c in resumed.candidates] == [c.entry() for c in fresh.candidates]
    assert [v.kept for v in resumed.verdicts] == [v.kept for v in fresh.verdicts]


def test_a_failed_request_is_recorded_and_only_it_is_asked_again(tmp_path):
    calls = {"n": 0}

    def flaky(prompt, body):
        calls["n"] += 1
        if calls["n"] == 3:                                                # item 1's instruction
            return Reply(status=500, error="boom")
        return varied_llm(prompt, body)

    with server(flaky) as fake:
        client = judge.make_client("smollm2", fake.url + "/v1", retries=0)
        first = datagen.generate_dataset("magpie", 3, client=client, output_dir=tmp_path, progress=False)
        assert [c.status for c in first.candidates] == ["generated", "error", "generated"]
        assert first.verdicts[1].rule == "error" and "500" in first.verdicts[1].reason
        assert first.report.n_failed == 1
        before = fake.generation_count()
        second = datagen.generate_dataset("magpie", 3, client=client, output_dir=tmp_path, progress=False)
        assert fake.generation_count() - before == 2                      # item 1: instruction + response
    assert second.report.n_failed == 0 and second.report.n_kept == 3


def test_consecutive_failures_stop_the_run_and_the_rest_is_not_attempted():
    with server(lambda prompt, body: Reply(status=500, error="down")) as fake:
        client = judge.make_client("smollm2", fake.url + "/v1", retries=0)
        result = datagen.generate_dataset("magpie", 5, client=client, progress=False)
        assert fake.generation_count() == 3
    assert [v.rule for v in result.verdicts] == ["error"] * 3 + ["not_attempted"] * 2
    assert all(v.reason for v in result.verdicts)


# --------------------------------------------------------------------------- command line

def test_cli_generates_resumes_and_reports(tmp_path, capsys):
    seeds = tmp_path / "sementes.json"
    seeds.write_text(json.dumps(SEEDS), encoding="utf-8")
    with server() as fake:
        argv = ["gerar-dados", "--metodo", "self-instruct", "-n", "3", "--url", fake.url + "/v1/chat/completions",
                "--modelo", "smollm2", "--saida", str(tmp_path), "--perfil", "teste",
                "--tarefas-semente", str(seeds)]
        assert cli.main(argv) == cli.EXIT_OK
        out = capsys.readouterr().out
        assert "3 de 3 itens mantidos" in out and "6 feitos, 0 respondidos pelo cache" in out
        assert cli.main(argv) == cli.EXIT_OK
        assert "0 feitos, 6 respondidos pelo cache" in capsys.readouterr().out
        assert fake.generation_count() == 6
    kept = json.loads((tmp_path / "teste" / "sinteticos-self-instruct.json").read_text(encoding="utf-8"))
    validate_entries(kept)
    assert len(kept) == 3


def test_cli_errors_are_in_portuguese_with_the_cli_exit_codes(tmp_path, capsys):
    assert cli.main(["gerar-dados", "--metodo", "magpie", "-n", "0"]) == cli.EXIT_USAGE
    assert "esperava um número inteiro >= 1" in capsys.readouterr().err
    seeds = tmp_path / "sementes.json"
    seeds.write_text(json.dumps(SEEDS), encoding="utf-8")
    code = cli.main(["gerar-dados", "--metodo", "magpie", "-n", "2", "--url", "http://127.0.0.1:9/v1",
                     "--modelo", "smollm2", "--saida", str(tmp_path), "--tarefas-semente", str(seeds)])
    assert code == cli.EXIT_ERROR
    assert "erro:" in capsys.readouterr().err
    bad = tmp_path / "ruim.json"
    bad.write_text(json.dumps([{"instruction": "x"}]), encoding="utf-8")
    assert cli.main(["gerar-dados", "--metodo", "magpie", "-n", "1", "--tarefas-semente", str(bad)]) == 1
    assert "falta o campo 'input'" in capsys.readouterr().err


def test_the_measured_reference_is_consistent_and_prints_in_portuguese(capsys):
    from llmdefinitions.datagen import reference

    assert reference.RUNS
    for run in reference.RUNS:
        assert run.n_kept + sum(run.dropped.values()) == run.n_requested
        assert set(run.dropped) <= set(datagen.RULES)
        assert len(run.examples) == 3 and validate_entries(list(run.examples))
        assert all(check_entry(e) is None for e in run.examples)          # kept items pass the one-item rules
        assert f"-n {run.n_requested} " in run.command
    reference.print_summary()
    reference.print_examples(width=76)
    out = capsys.readouterr().out
    assert "itens/min" in out and "%" in out and "." not in out.splitlines()[1].split()[-1]
    assert max(len(line) for line in out.splitlines()) <= 80


def test_the_books_published_entry_without_instruction_is_dropped_as_empty():
    """The book's instruction-data-llama3-7b.json has {"instruction": null, "output": ""} (no "input")."""
    assert check_entry({"instruction": None, "output": ""}) == ("empty", "sem instrução")
