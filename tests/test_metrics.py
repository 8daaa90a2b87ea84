"""Reference-based metrics with intervals (llmdefinitions.metrics)."""
import json

import pytest

from llmdefinitions.metrics import (
    exact_match, load_responses, normalize_answer, reference_metrics, token_f1,
)
from llmdefinitions.stats import bootstrap_mean


def entry(response, reference="The cat sat on the mat."):
    return {"instruction": "Describe.", "input": "", "output": reference, "model_response": response}


# --------------------------------------------------------------------------- SQuAD-style EM and F1

@pytest.mark.parametrize("text, normalized", [
    ("The Cat, sat!", "cat sat"),
    ("  an   apple\tA day ", "apple day"),
    ("“Theory” — of everything…", "theory of everything"),
    ("theater", "theater"),                        # articles only as whole words
])
def test_normalize_answer_is_squad_style(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("the CAT sat.", "A cat sat") == 100.0
    assert exact_match("the cat sat down", "the cat sat") == 0.0


@pytest.mark.parametrize("prediction, reference, f1", [
    ("the cat sat", "a cat sat down", 80.0),       # P = 2/2, R = 2/3
    ("cat cat cat", "cat", 50.0),                  # counts are clipped: P = 1/3, R = 1
    ("dog", "cat", 0.0),
    ("", "", 100.0),
    ("the", "cat", 0.0),                           # nothing left after normalization on one side
])
def test_token_f1_values(prediction, reference, f1):
    assert token_f1(prediction, reference) == pytest.approx(f1)


# --------------------------------------------------------------------------- ROUGE-L by hand

def lcs_length(a, b):
    """Longest common subsequence length, the textbook dynamic program."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def hand_rouge_l(prediction_tokens, reference_tokens):
    lcs = lcs_length(prediction_tokens, reference_tokens)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction_tokens), lcs / len(reference_tokens)
    return 100.0 * 2 * precision * recall / (precision + recall)


def test_hand_written_lcs_rouge_l_equals_rouge_score_on_the_book_responses(shared_data):
    from rouge_score.tokenizers import DefaultTokenizer

    entries = load_responses(shared_data / "instruction-data-with-response.json")
    entries += [entry("sat the cat on mat the"), entry("nothing in common"), entry("")]
    report = reference_metrics(entries)
    tokenize = DefaultTokenizer(use_stemmer=False).tokenize
    hand = [hand_rouge_l(tokenize(e["model_response"]), tokenize(e["output"])) for e in entries]
    assert report["rouge_l"].values == pytest.approx(hand, abs=1e-9)
    assert len(set(round(v, 6) for v in hand)) > 20       # the items really differ


def test_rouge_score_default_tokenizer_drops_accented_letters():
    # Documented in the module: "ação" becomes "a", "o"; fine for English, not for pt-BR.
    report = reference_metrics([entry("ação rápida", reference="ação lenta")])
    tokens_kept = ["a", "o", "r", "pida"]                  # what the tokenizer leaves of the answer
    reference_tokens = ["a", "o", "lenta"]
    assert report["rouge_l"].values[0] == pytest.approx(hand_rouge_l(tokens_kept, reference_tokens))


# --------------------------------------------------------------------------- the report

def test_perfect_and_disjoint_answers_score_100_and_0():
    report = reference_metrics([entry("The cat sat on the mat."), entry("zzz qqq", "ab cd")])
    for name in ("exact_match", "token_f1", "rouge_l", "bleu", "chrf"):
        assert report[name].values == pytest.approx([100.0, 0.0], abs=1e-6), name


def test_intervals_are_bootstrap_means_of_the_per_item_values():
    entries = [entry(r) for r in ("The cat sat on the mat.", "A cat sat.", "The dog sat on a mat.",
                                  "Cats sit on mats.", "The cat is on the mat.")]
    report = reference_metrics(entries)
    for metric in report.metrics.values():
        assert metric.interval == bootstrap_mean(metric.values)
        assert metric.interval.low <= metric.interval.estimate <= metric.interval.high
        assert metric.interval.n == len(entries)


def test_corpus_bleu_is_not_the_mean_of_sentence_bleu(shared_data):
    import sacrebleu

    entries = load_responses(shared_data / "instruction-data-with-response.json")
    report = reference_metrics(entries)
    bleu = report["bleu"]
    corpus = sacrebleu.corpus_bleu([e["model_response"] for e in entries], [[e["output"] for e in entries]])
    assert bleu.corpus == pytest.approx(corpus.score)
    assert abs(bleu.corpus - bleu.interval.estimate) > 5     # 28.8 against 40.9
    assert bleu.signature.startswith("nrefs:1|") and report["chrf"].corpus is not None
    assert report["token_f1"].corpus is None


def test_book_responses_report_is_json_and_pt_br_table(shared_data, tmp_path):
    report = reference_metrics(load_responses(shared_data / "instruction-data-with-response.json"))
    assert report.n == 110
    data = json.loads(json.dumps(report.to_dict(), ensure_ascii=False))
    assert set(data["metrics"]) == {"exact_match", "token_f1", "rouge_l", "bleu", "chrf"}
    assert len(data["metrics"]["bleu"]["values"]) == 110
    em = data["metrics"]["exact_match"]
    assert em["interval"]["estimate"] == pytest.approx(100 * sum(v == 100 for v in em["values"]) / 110)
    table = report.to_table()
    assert "ROUGE-L" in table and "n = 110" in table
    assert f"{report['rouge_l'].interval.estimate:.2f}".replace(".", ",") in table
    saved = report.save_json(tmp_path / "métricas.json")
    assert json.loads(saved.read_text(encoding="utf-8")) == data


# --------------------------------------------------------------------------- bad input

def write(tmp_path, content):
    path = tmp_path / "respostas.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


@pytest.mark.parametrize("content, message", [
    ("", "está vazio"),
    ("  \n", "está vazio"),
    ("[", "não é um JSON válido"),
    ([], "nenhuma entrada"),
    ({"a": 1}, "lista JSON"),
    ([entry("ok"), {"instruction": "x", "input": "", "output": "y"}], "Entrada 1 .*'model_response'"),
    ([entry("ok"), entry(None)], "Entrada 1 .*'model_response' deve ser texto.*NoneType"),
    ([{**entry("ok"), "output": 3}], "Entrada 0 .*'output' deve ser texto"),
    ([entry("ok"), "texto solto"], "Entrada 1 .*objeto JSON"),
])
def test_bad_responses_file_is_refused_in_portuguese_naming_file_item_and_field(tmp_path, content, message):
    path = write(tmp_path, content)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=message) as info:
        load_responses(path)
    assert "respostas.json" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before      # nothing written


def test_missing_file_and_other_response_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="não existe"):
        load_responses(tmp_path / "nada.json")
    path = write(tmp_path, [{**entry("x"), "model_2_response": "The cat sat on the mat."}])
    assert reference_metrics(load_responses(path, "model_2_response"), "model_2_response")[
        "exact_match"].values == [100.0]
    with pytest.raises(ValueError, match="falta o campo 'outra'"):
        reference_metrics(load_responses(path), response_key="outra")
