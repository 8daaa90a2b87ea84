"""generate (the book's semantics), batched generation, response extraction, saving answers and models."""
import json

import pytest
import torch

from llmdefinitions.generation import (extract_response, generate, generate_batch, generate_responses,
                                       load_model_weights, save_model, save_responses,
                                       text_to_token_ids, token_ids_to_text)
from helpers import tiny_config, tiny_gpt
from llmdefinitions.model import GPTModel
from llmdefinitions.runs import sft_model_filename

CFG = tiny_config(context_length=48)


@pytest.fixture(scope="module")
def model():
    return tiny_gpt(CFG).eval()


def book_generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    """The book's loop, verbatim in logic."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)[:, -1, :]
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            logits = torch.where(logits < top_logits[:, -1], torch.tensor(float("-inf")), logits)
        if temperature > 0.0:
            idx_next = torch.multinomial(torch.softmax(logits / temperature, dim=-1), num_samples=1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def test_generate_reproduces_the_book_greedy_and_sampled(model):
    idx = torch.randint(0, 50257, (1, 10), generator=torch.Generator().manual_seed(2))
    for kwargs in ({}, {"temperature": 1.4, "top_k": 25}):
        torch.manual_seed(123)
        expected = book_generate(model, idx, 30, 48, **kwargs)
        torch.manual_seed(123)
        assert torch.equal(generate(model, idx, 30, 48, **kwargs), expected)


def test_generate_stops_at_end_of_text(model):
    idx = torch.randint(0, 50257, (1, 5), generator=torch.Generator().manual_seed(3))
    first = int(generate(model, idx, 1, 48)[0, -1])            # greedy next token, used as "eos"
    assert generate(model, idx, 20, 48, eos_id=first).shape[1] == 5


def test_batched_generation_equals_one_by_one(model):
    rng = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, 50257, (n,), generator=rng).tolist() for n in (3, 17, 9, 1, 30)]
    singles = [generate(model, torch.tensor([p]), 15, 48)[0, len(p):].tolist() for p in prompts]
    eos = singles[2][4]                                        # a token that ends row 2 early
    expected = []
    for row in singles:
        expected.append(row[:row.index(eos)] if eos in row else row)
    assert generate_batch(model, prompts, 15, eos_id=eos) == expected
    assert generate_batch(model, prompts, 15) == singles


def test_prompts_longer_than_the_context_are_trimmed_from_the_left(model):
    long_prompt = torch.randint(0, 50257, (60,), generator=torch.Generator().manual_seed(5)).tolist()
    out = generate_batch(model, [long_prompt, [1, 2, 3]], 10)
    expected = book_generate(model, torch.tensor([long_prompt]), 10, 48)[0, 60:].tolist()
    assert out[0] == expected and len(out[1]) == 10


def test_text_round_trip_and_extraction(gpt2_tokenizer):
    ids = text_to_token_ids("Olá <|endoftext|>", gpt2_tokenizer)
    # The one encoding rule: the literal text is text, never the control token (the book's differs).
    assert ids.shape[0] == 1 and 50256 not in ids[0].tolist()
    assert ids[0].tolist() == gpt2_tokenizer.encode("Olá <|endoftext|>", disallowed_special=())
    assert token_ids_to_text(ids, gpt2_tokenizer) == "Olá <|endoftext|>"
    assert extract_response("\n\n### Response:\nThe meal is cooked.") == "The meal is cooked."
    assert extract_response("Answer with ### Response: inside") == "Answer with ### Response: inside"
    assert extract_response("\n<|assistant|>:\nOi", "phi3") == "Oi"


def test_generate_responses_slices_tokens_after_the_prompt(model, gpt2_tokenizer):
    entries = [{"instruction": f"Task {i}", "input": "x" * i, "output": "y"} for i in range(5)]
    answers = generate_responses(model, gpt2_tokenizer, entries, max_new_tokens=6, batch_size=2, progress=False)
    from llmdefinitions.prompts import format_input
    for entry, answer in zip(entries, answers):
        prompt = gpt2_tokenizer.encode(format_input(entry))
        new = generate(model, torch.tensor([prompt]), 6, 48, eos_id=50256)[0, len(prompt):].tolist()
        assert answer == extract_response(gpt2_tokenizer.decode(new))


def test_generate_responses_resumes_without_regenerating_finished_answers(model, gpt2_tokenizer):
    entries = [{"instruction": f"Task {i}", "input": "x" * i, "output": "y"} for i in range(5)]
    saved = {}
    full = generate_responses(model, gpt2_tokenizer, entries, max_new_tokens=6, batch_size=2, progress=False,
                              on_batch=saved.update)
    assert saved == dict(enumerate(full))                              # every answer reported as it finishes
    # An interrupted run kept two answers: they are reused as saved, never generated again.
    kept = {1: "(salva 1)", 3: "(salva 3)"}
    regenerated = {}
    resumed = generate_responses(model, gpt2_tokenizer, entries, max_new_tokens=6, batch_size=2,
                                 progress=False, done=kept, on_batch=regenerated.update)
    assert sorted(regenerated) == [0, 2, 4]
    assert resumed == [full[0], "(salva 1)", full[2], "(salva 3)", full[4]]


def test_save_responses_is_utf8_and_atomic(tmp_path):
    entries = [{"instruction": "Traduza", "input": "coração", "output": "heart"}]
    path = tmp_path / "instruction-data-with-response.json"
    save_responses(entries, ["coração → heart"], path)
    text = path.read_text(encoding="utf-8")
    assert "coração → heart" in text and json.loads(text)[0]["model_response"] == "coração → heart"
    with pytest.raises(ValueError, match="nada foi salvo"):
        save_responses(entries, [], tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instruction-data-with-response.json"]


def test_save_and_load_model(model, tmp_path):
    path = save_model(model, tmp_path / sft_model_filename("gpt2-medium (355M)"))
    assert path.name == "gpt2-medium355M-sft.pth"
    again = load_model_weights(GPTModel(CFG), path, "cpu")
    x = torch.randint(0, 50257, (1, 6))
    torch.testing.assert_close(again.eval()(x), model(x))
    with pytest.raises(ValueError, match="não correspondem"):
        load_model_weights(GPTModel({**CFG, "n_layers": 3}), path)
    with pytest.raises(FileNotFoundError, match="não encontrado"):
        load_model_weights(GPTModel(CFG), tmp_path / "nope.pth")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrompido"):
        load_model_weights(GPTModel(CFG), path)
