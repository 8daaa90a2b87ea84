"""Verifiable instruction following in pt-BR and English (llmdefinitions.verifiable)."""
import json
from collections import Counter

import pytest

from llmdefinitions.verifiable import (
    INSTRUCTIONS, Prompt, as_entries, check_instruction, detect_language, load_prompts, score,
)
from llmdefinitions.verifiable.text import loose_variants, split_sentences, split_words

# (instruction id, lang, kwargs, response, followed?) — a passing and a failing answer per language
CASES = [
    ("length:words", "pt", {"relation": "at_most", "n": 5}, "O guarda-chuva d'água custa 3,50.", True),
    ("length:words", "pt", {"relation": "at_most", "n": 5}, "O mar é azul e muito grande hoje.", False),
    ("length:words", "en", {"relation": "exactly", "n": 4}, "Don't touch the well-known stove.", False),
    ("length:words", "en", {"relation": "exactly", "n": 5}, "Don't touch the well-known stove.", True),
    ("length:words", "en", {"relation": "at_least", "n": 3}, "Too short", False),
    ("length:sentences", "pt", {"relation": "exactly", "n": 2},
     "O Sr. Silva chegou às 8h, p. ex., cedo. A Dra. Ana também!", True),
    ("length:sentences", "pt", {"relation": "exactly", "n": 2}, "Uma. Duas. Três.", False),
    ("length:sentences", "en", {"relation": "at_most", "n": 1}, "Mr. Smith, e.g. the boss, left at 3.30 p.m.", True),
    ("length:sentences", "en", {"relation": "at_most", "n": 1}, "It rained. We stayed in.", False),
    ("length:sentences", "en", {"relation": "at_least", "n": 3}, "One? Two!\n\nThree without a period", True),
    ("length:paragraphs", "pt", {"relation": "exactly", "n": 2}, "Primeiro.\nAinda o primeiro.\n\n  \nSegundo.", True),
    ("length:paragraphs", "pt", {"relation": "exactly", "n": 2}, "Um só parágrafo.\nCom duas linhas.", False),
    ("length:paragraphs", "en", {"relation": "at_least", "n": 3}, "A.\n\nB.\n\nC.", True),
    ("length:paragraphs", "en", {"relation": "at_least", "n": 3}, "A.\n\nB.", False),
    ("keywords:include", "pt", {"keywords": ["sol", "Energia"]}, "A energia do Sol é limpa.", True),
    ("keywords:include", "pt", {"keywords": ["sol"]}, "A solução é o guarda-sol.", False),
    ("keywords:include", "pt", {"keywords": ["coração"]}, "Meu coracao bate forte.", False),
    ("keywords:include", "en", {"keywords": ["tide", "coral"]}, "The TIDE rose over the coral.", True),
    ("keywords:include", "en", {"keywords": ["tide", "coral"]}, "The tides rose over the reef.", False),
    ("keywords:exclude", "pt", {"keywords": ["calor"]}, "Um dia calorento e úmido.", True),
    ("keywords:exclude", "pt", {"keywords": ["calor", "quente"]}, "Que dia QUENTE!", False),
    ("keywords:exclude", "en", {"keywords": ["rain"]}, "The rainbow after the storm.", True),
    ("keywords:exclude", "en", {"keywords": ["rain"]}, "Rain, rain, go away.", False),
    ("keywords:letter_frequency", "pt", {"letter": "a", "relation": "at_least", "n": 4}, "Ação à mão.", True),
    ("keywords:letter_frequency", "pt", {"letter": "a", "relation": "at_least", "n": 5}, "Ação à mão.", False),
    ("keywords:letter_frequency", "en", {"letter": "e", "relation": "at_most", "n": 2}, "Every cat.", True),
    ("keywords:letter_frequency", "en", {"letter": "e", "relation": "at_most", "n": 2}, "Eleven geese.", False),
    ("format:json", "pt", {}, '```json\n{"fruta": "manga", "cor": "amarela"}\n```', True),
    ("format:json", "pt", {}, 'Aqui está: {"fruta": "manga"}', False),
    ("format:json", "en", {}, '[{"planet": "Mercury", "order": 1}]', True),
    ("format:json", "en", {}, '"just a string"', False),
    ("format:bullets", "pt", {"n": 3}, "Dicas:\n* Durma cedo.\n- Evite café.\n  * Leia um livro.", True),
    ("format:bullets", "pt", {"n": 3}, "* Durma cedo.\n* Evite café.\n**Negrito** não é item.", False),
    ("format:bullets", "en", {"n": 2}, "- Red\n- Blue", True),
    ("format:bullets", "en", {"n": 2}, "1. Red\n2. Blue", False),
    ("format:title", "pt", {}, "<<Chuva de verão>>\nA chuva cai.", True),
    ("format:title", "pt", {}, "<< >>\nA chuva cai.", False),
    ("format:title", "en", {}, "A haiku. <<Winter Light>>", True),
    ("format:title", "en", {}, "**Winter Light**\nSnow falls.", False),
    ("format:sections", "pt", {"n": 2}, "SEÇÃO 1\nSegunda.\n\n## Seção 2\nTerça.", True),
    ("format:sections", "pt", {"n": 2}, "SECAO 1\nSegunda.\nSECTION 2\nTerça.", False),
    ("format:sections", "en", {"n": 2}, "SECTION 1\nWarm up.\n**SECTION 2**\nRun.", True),
    ("format:sections", "en", {"n": 2}, "SECTION 1\nWarm up. See section 2 below.", False),
    ("format:placeholders", "pt", {"n": 2}, "Olá [nome], até [data].", True),
    ("format:placeholders", "pt", {"n": 2}, "Olá [nome], até [ ].", False),
    ("format:placeholders", "en", {"n": 3}, "Dear [name], at [company] on [date].", True),
    ("format:placeholders", "en", {"n": 3}, "Dear [name], see you.", False),
    ("format:quotation", "pt", {}, "“Quem não arrisca não petisca.”", True),
    ("format:quotation", "pt", {}, "Quem não arrisca não petisca.", False),
    ("format:quotation", "en", {}, '  "Better late than never."\n', True),
    ("format:quotation", "en", {}, '"Better late" than never.', False),
    ("case:lowercase", "pt", {}, "bom dia, você está ótimo!", True),
    ("case:lowercase", "pt", {}, "bom dia, Você está ótimo!", False),
    ("case:lowercase", "en", {}, "happy birthday, friend!", True),
    ("case:lowercase", "en", {}, "Happy birthday!", False),
    ("case:uppercase", "pt", {}, "ATENÇÃO: PROIBIDO CORRER!", True),
    ("case:uppercase", "pt", {}, "ATENÇÃo: PROIBIDO CORRER!", False),
    ("case:uppercase", "en", {}, "DANGER: HARD HAT AREA", True),
    ("case:uppercase", "en", {}, "DANGER: Hard hat area", False),
    ("punctuation:no_commas", "pt", {}, "Andei pelo parque e vi patos.", True),
    ("punctuation:no_commas", "pt", {}, "Andei, vi patos.", False),
    ("punctuation:no_commas", "en", {}, "I woke up and ran.", True),
    ("punctuation:no_commas", "en", {}, "I woke up, then ran.", False),
    ("startend:start", "pt", {"phrase": "Era uma vez"}, "  era uma vez um dragão.", True),
    ("startend:start", "pt", {"phrase": "Era uma vez"}, "Claro! Era uma vez um dragão.", False),
    ("startend:start", "en", {"phrase": "Hi [name]"}, "Hi [name], welcome to [team]!", True),
    ("startend:start", "en", {"phrase": "Once upon a time"}, "Once upon time a fox...", False),
    ("startend:end", "pt", {"phrase": "Obrigado pela atenção."}, "Formamos! Obrigado pela atenção.\n", True),
    ("startend:end", "pt", {"phrase": "Obrigado pela atenção."}, "Obrigado pela atenção. Até logo!", False),
    ("startend:end", "en", {"phrase": "Thank you all."}, "We did it. THANK YOU ALL.", True),
    ("startend:end", "en", {"phrase": "Thank you all."}, "We did it. Thank you all", False),
    ("content:postscript", "pt", {"marker": "P.S."}, "Oi, Ana.\nMe empresta o livro?\n\nPS: obrigado!", True),
    ("content:postscript", "pt", {"marker": "P.S."}, "Oi, Ana. Passe no escritório.", False),
    ("content:postscript", "en", {"marker": "P.S."}, "Hello.\nP. S. water them twice.", True),
    ("content:postscript", "en", {"marker": "P.P.S."}, "Hello.\nP.S. water them twice.", False),
    ("language:response", "pt", {"language": "en"}, "Bees pollinate the plants that we eat.", True),
    ("language:response", "pt", {"language": "en"}, "As abelhas polinizam as plantas que comemos.", False),
    ("language:response", "en", {"language": "pt"}, "Tóquio é a capital do Japão e é famosa pela tecnologia.", True),
    ("language:response", "en", {"language": "pt"}, "Tokyo is the capital of Japan.", False),
]


@pytest.mark.parametrize("id, lang, kwargs, response, followed", CASES,
                         ids=[f"{c[0]}-{c[1]}-{'ok' if c[4] else 'falha'}-{i}" for i, c in enumerate(CASES)])
def test_checker_on_crafted_answers(id, lang, kwargs, response, followed):
    assert check_instruction(id, response, lang, kwargs) is followed


def test_every_instruction_type_has_passing_and_failing_cases_in_both_languages():
    covered = Counter((id, lang, followed) for id, lang, _, _, followed in CASES)
    missing = [(id, lang, followed) for id in INSTRUCTIONS for lang in ("pt", "en")
               for followed in (True, False) if not covered[(id, lang, followed)]]
    assert not missing
    assert len(INSTRUCTIONS) >= 15


@pytest.mark.parametrize("id", sorted(INSTRUCTIONS))
def test_a_blank_answer_follows_no_instruction(id):
    prompt = next(p for p in load_prompts() if id in p.instruction_ids)
    kwargs = prompt.kwargs[prompt.instruction_ids.index(id)]
    assert not check_instruction(id, "  \n ", "pt", kwargs)
    assert not score([prompt], ["\n"]).results[0].loose[0]


# --------------------------------------------------------------------------- text rules

def test_sentences_respect_each_languages_abbreviations():
    assert len(split_sentences("O Sr. Lima saiu. Voltou às 9h.", "pt")) == 2
    assert len(split_sentences("Mr. Lima left. He came back.", "en")) == 2
    assert len(split_sentences("Ele viu o Mr. Lima.", "pt")) == 2      # "Mr." is not a pt abbreviation
    assert split_sentences("", "en") == []


def test_words_keep_hyphens_apostrophes_and_decimals():
    assert split_words("Don't use o guarda-chuva: 3.14 ou 2,5!") == ["Don't", "use", "o", "guarda-chuva",
                                                                        "3.14", "ou", "2,5"]


def test_loose_variants_are_ifevals_eight():
    variants = loose_variants("Claro!\n**Texto**\nFim")
    assert variants == ["Claro!\n**Texto**\nFim", "**Texto**\nFim", "Claro!\n**Texto**", "**Texto**",
                        "Claro!\nTexto\nFim", "Texto\nFim", "Claro!\nTexto", "Texto"]


def test_language_detection():
    assert detect_language("O gato está em cima da mesa e não quer descer.") == "pt"
    assert detect_language("The cat is on the table and will not come down.") == "en"
    assert detect_language("Tokyo!") is None


# --------------------------------------------------------------------------- the prompt set

def test_shipped_prompts_cover_the_brief():
    prompts = load_prompts()
    langs = Counter(p.lang for p in prompts)
    assert len(prompts) >= 120 and langs["pt"] == langs["en"]
    assert {i for p in prompts for i in p.instruction_ids} == set(INSTRUCTIONS)
    for lang in ("pt", "en"):
        assert sum(len(p.instruction_ids) == 2 for p in prompts if p.lang == lang) >= 10
    assert len({p.key for p in prompts}) == len(prompts)
    assert len({p.prompt for p in prompts}) == len(prompts)


def test_as_entries_gives_the_books_alpaca_entries():
    prompts = load_prompts()
    entries = as_entries(prompts)
    assert entries[0] == {"instruction": prompts[0].prompt, "input": "", "output": ""}
    assert len(entries) == len(prompts)


GOOD = {"key": "x-1", "lang": "pt", "prompt": "Responda sem vírgulas.",
        "instruction_ids": ["punctuation:no_commas"], "kwargs": [{}]}


@pytest.mark.parametrize("line, message", [
    ("{", "linha 2: não é um JSON válido"),
    ("[]", "linha 2: deve ser um objeto JSON"),
    ({k: v for k, v in GOOD.items() if k != "kwargs"}, "linha 2: falta o campo 'kwargs'"),
    ({**GOOD, "extra": 1}, "linha 2: campo.* desconhecido.*extra"),
    ({**GOOD, "lang": "es"}, "linha 2: o campo 'lang'"),
    ({**GOOD, "prompt": " "}, "linha 2: o campo 'prompt'"),
    ({**GOOD, "key": "x-0"}, "linha 2: campo 'key': 'x-0' repete a linha 1"),
    ({**GOOD, "instruction_ids": []}, "linha 2: o campo 'instruction_ids'"),
    ({**GOOD, "instruction_ids": ["case:titlecase"]}, r"linha 2: instruction_ids\[0\]: instrução desconhecida"),
    ({**GOOD, "kwargs": []}, "linha 2: o campo 'kwargs' deve ser uma lista com um objeto por instrução"),
    ({**GOOD, "instruction_ids": ["length:words"], "kwargs": [{"n": 3}]},
     r"linha 2: kwargs\[0\]: 'length:words' pede .*faltam \['relation'\]"),
    ({**GOOD, "instruction_ids": ["length:words"], "kwargs": [{"n": -1, "relation": "at_most"}]},
     r"kwargs\[0\]: o parâmetro 'n' de 'length:words' deve ser um inteiro"),
    ({**GOOD, "instruction_ids": ["length:words"], "kwargs": [{"n": 3, "relation": "about"}]},
     "o parâmetro 'relation'"),
    ({**GOOD, "instruction_ids": ["keywords:letter_frequency"],
      "kwargs": [{"letter": "á", "relation": "at_least", "n": 2}]}, "o parâmetro 'letter'.*sem acento"),
    ({**GOOD, "instruction_ids": ["keywords:include"], "kwargs": [{"keywords": "sol"}]}, "'keywords'.*lista"),
])
def test_bad_prompt_line_is_refused_naming_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "meus-prompts.jsonl"
    second = line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)
    path.write_text(json.dumps({**GOOD, "key": "x-0"}) + "\n" + second + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_prompts(path)
    assert str(path) in str(info.value)


def test_empty_prompt_file_is_refused(tmp_path):
    path = tmp_path / "vazio.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="vazio.jsonl: nenhum prompt"):
        load_prompts(path)


# --------------------------------------------------------------------------- scoring

def two_prompts():
    return [Prompt("pt-1", "pt", "Sem vírgulas e começando com Olá.", ("punctuation:no_commas", "startend:start"),
                   ({}, {"phrase": "Olá"})),
            Prompt("en-1", "en", "All caps.", ("case:uppercase",), ({},))]


def test_strict_loose_prompt_and_instruction_accuracies():
    prompts = two_prompts()
    report = score(prompts, ["Claro!\nOlá mundo", "**HELLO** world"])
    # pt: no commas ok; starts with "Claro!" strictly, with "Olá" once the first line is dropped.
    # en: lowercase "world" fails in every variant.
    assert report.results[0].strict == (True, False) and report.results[0].loose == (True, True)
    assert report.results[1].strict == report.results[1].loose == (False,)
    acc = report.accuracy
    assert acc["prompt"]["strict"].estimate == 0 and acc["prompt"]["loose"].estimate == 50
    assert acc["instruction"]["strict"].estimate == pytest.approx(100 / 3)
    assert acc["instruction"]["loose"].estimate == pytest.approx(200 / 3)
    assert report.by_language["pt"]["prompt"]["loose"].estimate == 100
    assert report.by_language["en"]["instruction"]["loose"].estimate == 0
    assert report.by_type["startend:start"]["strict"].estimate == 0
    assert report.by_type["startend:start"]["loose"].estimate == 100


def test_markup_is_forgiven_only_in_loose_mode():
    prompt = Prompt("pt-2", "pt", "Comece com Era uma vez.", ("startend:start",), ({"phrase": "Era uma vez"},))
    result = score([prompt], ["**Era uma vez** um dragão."]).results[0]
    assert result.strict == (False,) and result.loose == (True,)


def test_report_to_dict_and_pt_br_table(tmp_path):
    report = score(two_prompts(), ["Olá, mundo", "HELLO"])
    data = json.loads(json.dumps(report.to_dict(), ensure_ascii=False))
    assert data["n_prompts"] == 2 and data["n_instructions"] == 3
    assert data["accuracy"]["instruction"]["strict"]["estimate"] == pytest.approx(200 / 3)
    assert data["results"][0]["response"] == "Olá, mundo"
    table = report.to_table()
    assert "66,7" in table and "idioma pt" in table and "nenhuma vírgula" in table
    saved = report.save_json(tmp_path / "verificáveis.json")
    assert json.loads(saved.read_text(encoding="utf-8")) == data


def test_entries_with_responses_are_accepted_and_misalignment_refused():
    prompts = two_prompts()
    entries = [{**e, "model_response": r} for e, r in zip(as_entries(prompts), ["Olá mundo", "HI"])]
    assert score(prompts, entries).accuracy["prompt"]["strict"].estimate == 100
    with pytest.raises(ValueError, match="Resposta 0: o campo 'instruction' não é o texto do prompt 'pt-1'"):
        score(prompts, entries[::-1])
    with pytest.raises(ValueError, match="2 prompts mas 1 respostas"):
        score(prompts, ["Olá"])
    with pytest.raises(ValueError, match="Resposta 1: deve ser texto"):
        score(prompts, ["Olá", None])
    with pytest.raises(ValueError, match="Resposta 0: falta o campo 'resposta'"):
        score(prompts, entries, response_key="resposta")
