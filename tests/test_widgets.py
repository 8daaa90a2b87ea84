"""Notebook widgets: the plain functions behind them, then each widget driven like a user would.

The model is a small GPTModel whose output head is set so that greedy decoding always
picks one chosen token: its answers are known in advance.
"""
import sys

import pytest
import torch

from llmdefinitions import widgets as W
from llmdefinitions.config import get_config
from llmdefinitions.data import DatasetError, InstructionDataset
from llmdefinitions.judge import ScoreList, ScoreResult
from llmdefinitions.model import GPTModel

ipywidgets = pytest.importorskip("ipywidgets")

ENTRIES = [
    {"instruction": "Evaluate the following phrase by transforming it into the spelling given.",
     "input": "freind --> friend", "output": "The spelling of the given phrase \"freind\" is incorrect."},
    {"instruction": "Edit the sentence <for> grammar.", "input": "",
     "output": "Use <b>bold</b> & keep \"quotes\"."},
    {"instruction": "Convert 45 kilometers to meters.", "input": "", "output": "45 kilometers is 45000 meters."},
]


def always_model(token_id: int) -> GPTModel:
    """A tiny GPT whose greedy choice is always ``token_id`` (final norm -> ones, one head row)."""
    torch.manual_seed(0)
    cfg = {**get_config("gpt2-tiny (test)"), "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "context_length": 64}
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        model.final_norm.scale.zero_()
        model.final_norm.shift.fill_(1.0)
        model.out_head.weight.zero_()
        model.out_head.weight[token_id] = 1.0
    return model


@pytest.fixture(scope="module")
def hello(gpt2_tokenizer):
    (token_id,) = gpt2_tokenizer.encode(" hello")
    return token_id


# --------------------------------------------------------------------------- dataset

def test_visible_piece_shows_whitespace():
    assert W.visible_piece(" a\n\tb") == "\u2423a\u21b5\u21e5b"


def test_entry_tokens_are_the_training_tokens(gpt2_tokenizer):
    ids, prompt_length = W.entry_tokens(ENTRIES[0], gpt2_tokenizer)
    expected = InstructionDataset(ENTRIES[:1], gpt2_tokenizer, return_prompt_length=True)[0]
    assert (ids, prompt_length) == (list(expected[0]), expected[1])
    assert gpt2_tokenizer.decode(ids[prompt_length:]).endswith(ENTRIES[0]["output"])


def test_render_entry_shows_prompt_response_ids_and_pieces(gpt2_tokenizer):
    page = W.render_entry(ENTRIES[1], gpt2_tokenizer, index=1, total=3)
    assert "Amostra 1 (de 3, contando do 0)" in page
    assert "### Instruction:" in page and "### Response:" in page
    # HTML in the data is shown as text, never interpreted.
    assert "Edit the sentence &lt;for&gt; grammar." in page
    assert "Use &lt;b&gt;bold&lt;/b&gt; &amp; keep &quot;quotes&quot;." in page
    assert "<b>bold</b>" not in page
    ids, prompt_length = W.entry_tokens(ENTRIES[1], gpt2_tokenizer)
    assert f"<b>{len(ids)} tokens</b>: {prompt_length} do prompt" in page
    for position, token_id in enumerate(ids):
        assert f'title="posição {position}, id {token_id}"' in page
    assert ">Edit<br>" in page and ">\u2423sentence<br>" in page
    phi3 = W.render_entry(ENTRIES[1], gpt2_tokenizer, style="phi3")
    assert "&lt;|user|&gt;" in phi3 and "### Instruction:" not in phi3


def test_dataset_browser_follows_the_slider(gpt2_tokenizer):
    browser = W.dataset_browser(ENTRIES, gpt2_tokenizer)
    assert isinstance(browser, ipywidgets.VBox)
    assert (browser.slider.min, browser.slider.max) == (0, 2)
    assert "Evaluate the following phrase" in browser.view.value
    browser.slider.value = 2
    assert "Convert 45 kilometers to meters." in browser.view.value
    assert "Evaluate the following phrase" not in browser.view.value
    with pytest.raises(DatasetError, match="falta o campo 'output'"):
        W.dataset_browser([{"instruction": "x", "input": ""}], gpt2_tokenizer)
    with pytest.raises(ValueError, match="Estilo de prompt desconhecido"):
        W.dataset_browser(ENTRIES, gpt2_tokenizer, prompt_style="chatml")


def test_missing_ipywidgets_gives_an_install_hint(gpt2_tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        W.dataset_browser(ENTRIES, gpt2_tokenizer)
    # The plain functions still work without ipywidgets.
    assert "Amostra" in W.render_entry(ENTRIES[0], gpt2_tokenizer)


# --------------------------------------------------------------------------- generation

def test_run_generation_returns_only_the_new_text(gpt2_tokenizer, hello):
    model = always_model(hello)
    assert W.run_generation(model, gpt2_tokenizer, "Say:", max_new_tokens=3) == " hello hello hello"
    # Stops at end-of-text: a model that always ends writes nothing.
    assert W.run_generation(always_model(50256), gpt2_tokenizer, "Say:", max_new_tokens=5) == ""
    assert W.run_generation(always_model(50256), gpt2_tokenizer, "Say:", max_new_tokens=2,
                            eos_id=None) == "<|endoftext|><|endoftext|>"
    with pytest.raises(ValueError, match="O prompt está vazio"):
        W.run_generation(model, gpt2_tokenizer, "   ")
    with pytest.raises(ValueError, match="temperatura"):
        W.run_generation(model, gpt2_tokenizer, "Say:", temperature=-1)


def test_run_generation_sampling_is_repeatable_with_a_seed(gpt2_tokenizer):
    torch.manual_seed(1)
    model = GPTModel({**get_config("gpt2-tiny (test)"), "emb_dim": 16, "n_heads": 2, "n_layers": 1,
                      "context_length": 64}).eval()
    runs = [W.run_generation(model, gpt2_tokenizer, "Once upon a time", temperature=1.5, top_k=50,
                             max_new_tokens=8, seed=7, eos_id=None) for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]
    # top_k=0 means "no top-k" and a top_k above the vocabulary is clipped, not an error.
    W.run_generation(model, gpt2_tokenizer, "Hi", temperature=1.0, top_k=0, max_new_tokens=2, seed=1)
    W.run_generation(model, gpt2_tokenizer, "Hi", temperature=1.0, top_k=10**6, max_new_tokens=2, seed=1)


def test_playground_runs_nothing_until_the_click(gpt2_tokenizer, hello):
    model = always_model(hello)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    model.out_head.register_forward_pre_hook(lambda module, args: calls.append(1))
    playground = W.generation_playground(model, gpt2_tokenizer)
    assert calls == [] and "clique em Gerar" in playground.view.value
    assert playground.button.description == "Gerar"

    playground.prompt.value = "Greet me."
    playground.max_new_tokens.value = 2
    playground.button.click()
    assert calls, "the click should run the model"
    assert "hello hello" in playground.view.value
    # The instruction was wrapped in the Alpaca prompt, which is shown (escaped) below the answer.
    assert "### Instruction:\nGreet me." in playground.view.value
    assert not playground.button.disabled

    playground.instruction_format.value = False
    playground.prompt.value = "Raw text"
    playground.button.click()
    assert "### Instruction:" not in playground.view.value and "Raw text" in playground.view.value

    playground.prompt.value = "  "
    playground.button.click()
    assert "Erro" in playground.view.value and "O prompt está vazio" in playground.view.value
    assert not playground.button.disabled


# --------------------------------------------------------------------------- scores

ITEMS = [{**entry, "model_response": answer}
         for entry, answer in zip(ENTRIES, ["The spelling is wrong.", "", "45 km is 45000 m <ok>."])]


def test_score_fields_reads_every_form():
    result = ScoreResult(0, 85, "scored", reply="Score: 85")
    assert W.score_fields(result) == {"score": 85, "reason": None, "reply": "Score: 85", "feedback": None}
    assert W.score_fields({"score": None, "reason": "timeout", "reply": None})["reason"] == "timeout"
    assert W.score_fields(40)["score"] == 40
    assert W.score_fields(None) == {"score": None, "reason": "sem nota", "reply": None, "feedback": None}


def test_render_scored_item_shows_model_reference_and_score():
    page = W.render_scored_item(ITEMS[2], ScoreResult(2, 90, "scored", reply="90"), index=2, total=3)
    assert "Item 2 (de 3, contando do 0)" in page
    assert "Convert 45 kilometers to meters." in page
    assert "45 kilometers is 45000 meters." in page               # reference
    assert "45 km is 45000 m &lt;ok&gt;." in page                   # the model's answer, escaped
    assert ">90</span> / 100" in page and "#0b6e2a" in page        # green: a high score
    missing = W.render_scored_item(ITEMS[0], {"score": None, "reason": "item 0: resposta ilegível"})
    assert "sem nota" in missing and "resposta ilegível" in missing
    empty = W.render_scored_item(ITEMS[1], 0)
    assert "(resposta vazia)" in empty and "#b00020" in empty
    rubric = W.render_scored_item(ITEMS[0], ScoreResult(0, 4, "scored", feedback="Quase certo."), scale=5)
    assert "/ 5" in rubric and "Comentário do juiz:</b> Quase certo." in rubric
    assert "Entrada:</b> freind --&gt; friend" in rubric


def test_score_order_puts_unscored_items_last():
    values = [10, None, 90, 50]
    assert W.score_order(values) == [0, 1, 2, 3]
    assert W.score_order(values, "nota crescente") == [0, 3, 2, 1]
    assert W.score_order(values, "nota decrescente") == [2, 3, 0, 1]
    with pytest.raises(ValueError, match="Ordem desconhecida"):
        W.score_order(values, "aleatória")


def test_scored_answers_browser_navigation_and_sorting():
    results = [ScoreResult(0, 10, "scored", reply="10"),
               ScoreResult(1, None, "unparsable", reason="item 1: sem número na resposta"),
               ScoreResult(2, 90, "scored", reply="90")]
    browser = W.scored_answers_browser(ITEMS, ScoreList(results))
    assert "Item 0" in browser.view.value and browser.previous.disabled
    browser.next.click()
    assert browser.slider.value == 1
    assert "Item 1" in browser.view.value and "sem número na resposta" in browser.view.value
    browser.next.click()
    assert "Item 2" in browser.view.value and browser.next.disabled
    browser.next.click()                                          # stays on the last item
    assert browser.slider.value == 2
    browser.previous.click()
    assert "Item 1" in browser.view.value

    browser.order.value = "nota decrescente"
    assert browser.slider.value == 0 and "Item 2" in browser.view.value
    browser.slider.value = 2
    assert "Item 1" in browser.view.value                          # unscored last


def test_scored_answers_browser_refuses_misaligned_scores():
    with pytest.raises(ValueError, match="3 itens mas 2 notas"):
        W.scored_answers_browser(ITEMS, [80, 70])
    browser = W.scored_answers_browser(ITEMS, [4, None, 5])        # a 1-5 rubric
    assert "/ 5" in browser.view.value
