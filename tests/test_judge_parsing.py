"""Reading a score from the judge's reply: the book's prompt, the 0–100 rules, the rubric, JSON replies.

The hostile forms of issue 20 (exponents, hex, <think> blocks) are in test_reliability_judge.py.
"""
from __future__ import annotations

import pytest

from llmdefinitions import judge
from llmdefinitions.prompts import format_input

from judge_helpers import ENTRY


# --------------------------------------------------------------------------- the book's prompt

def test_build_score_prompt_is_the_book_prompt():
    expected = (
        f"Given the input `{format_input(ENTRY)}` "
        f"and correct output `{ENTRY['output']}`, "
        f"score the model response `{ENTRY['model_response']}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )
    assert judge.build_score_prompt(ENTRY, "model_response") == expected


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
    ("85,0", 85),
    ('{"score": 85}', 85),                        # a JSON reply is a labelled score too
])
def test_parse_score_accepts(text, expected):
    assert judge.parse_score(text) == expected
    assert judge.explain_score(text) == (expected, None)


@pytest.mark.parametrize("text, reason_part", [
    ("85.5", "não é um número inteiro"),                       # rule 3
    ("Score: 72.5", "não é um número inteiro"),
    ("150", "fora da escala"),                                 # rule 4
    ("-5", "fora da escala"),
    ("−5", "fora da escala"),
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


# --------------------------------------------------------------------------- structured (JSON) replies

@pytest.mark.parametrize("text, expected", [
    ('{"score": 85}', 85), ('{ "score": 0 }', 0), ('{"score": 100.0}', 100),
    ('<think>json?</think>{"score": 7}', 7),
])
def test_json_score_accepts(text, expected):
    assert judge.explain_json_score(text) == (expected, None)


@pytest.mark.parametrize("text, reason_part", [
    ("85", "não tem o campo 'score'"),
    ("Score: 85", "não é o JSON pedido"),
    ('{"nota": 85}', "não tem o campo 'score'"),
    ('{"score": "85"}', "não é um inteiro"),
    ('{"score": true}', "não é um inteiro"),
    ('{"score": 85.5}', "não é um inteiro"),
    ('{"score": 1e309}', "não é um inteiro"),                 # JSON reads it as infinity
    ('{"score": 101}', "fora da escala 0–100"),
    ('{"score": 100000000000000000000000000000000000000000}', "fora da escala"),
])
def test_json_score_rejects(text, reason_part):
    score, reason = judge.explain_json_score(text)
    assert score is None and reason_part in reason


def test_score_schema_is_the_documented_one():
    assert judge.SCORE_SCHEMA == {"type": "object", "properties": {"score": {
        "type": "integer", "minimum": 0, "maximum": 100}}, "required": ["score"]}


# --------------------------------------------------------------------------- rubric

@pytest.mark.parametrize("text, expected", [
    ('{"score": 4, "feedback": "Mostly right."}', (4, "Mostly right.")),
    ('Here you go:\n```json\n{"score": 5, "feedback": "Perfect."}\n```', (5, "Perfect.")),
    ('{"Score": "3", "explanation": "Partly."}', (3, "Partly.")),
    ('{"score": 2.0}', (2, "")),
    ("Score: 4\nFeedback: Minor issue with tense.", (4, "Minor issue with tense.")),
    ("Score: 1/5\nFeedback: Wrong.", (1, "Wrong.")),
    ('<think>{"score": 1}</think>{"score": 4, "feedback": "ok"}', (4, "ok")),
])
def test_parse_rubric_accepts(text, expected):
    assert judge.parse_rubric(text) == expected


@pytest.mark.parametrize("text", ['{"score": 6, "feedback": "x"}', '{"score": 0}', '{"score": 3.5}',
                                  "Score: 9\nFeedback: no", "Great answer!", "", '{"feedback": "no score"}',
                                  '{"score": "abc"}', '{"score": NaN}', "<think>Score: 4"])
def test_parse_rubric_rejects(text):
    assert judge.parse_rubric(text) is None
    assert judge.explain_rubric(text)[1]
