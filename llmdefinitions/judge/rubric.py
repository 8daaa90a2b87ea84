"""Rubric mode: a 1–5 score with a sentence of feedback, asked for as a JSON object."""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

from ..io import PathLike
from ..prompts import format_input
from .core import decimal_value, number_text, strip_thinking
from .defaults import DEFAULT_MODEL
from .scoring import ScoreResults, score_responses
from .structured import RUBRIC_SCHEMA

_NUMBER = r"[-+−]?\d+(?:[.,]\d+)?"


def build_rubric_prompt(entry: Mapping[str, Any], json_key: str) -> str:
    """A 1–5 rubric prompt asking for a JSON object with ``score`` and ``feedback``."""
    return (
        f"You are grading the answer of a small language model.\n"
        f"Instruction and input:\n`{format_input(entry)}`\n"
        f"Reference answer: `{entry['output']}`\n"
        f"Model response: `{entry[json_key]}`\n\n"
        "Rate the model response on a scale from 1 to 5:\n"
        "5 = correct and complete; 4 = correct with minor issues; 3 = partly correct;\n"
        "2 = mostly wrong but related; 1 = wrong, empty or irrelevant.\n"
        'Respond with a JSON object only, e.g. {"score": 4, "feedback": "one short sentence"}.'
    )


def parse_rubric(text: Optional[str], low: int = 1, high: int = 5) -> Optional[Tuple[int, str]]:
    """``(score, feedback)`` from a rubric reply, or ``None``.

    Accepts a JSON object anywhere in the reply (also inside a ```json fence)
    with ``score`` (int, or integral float/str) and optional ``feedback``;
    or text ``Score: N`` followed by ``Feedback: ...``. The score must lie in
    ``low``–``high`` (1–5). ``<think>`` blocks are ignored, as in ``parse_score``.
    """
    return explain_rubric(text, low, high)[0]


def explain_rubric(text: Optional[str], low: int = 1, high: int = 5
                   ) -> Tuple[Optional[Tuple[int, str]], Optional[str]]:
    """``((score, feedback), None)`` or ``(None, reason)`` as in :func:`parse_rubric`."""
    answer, reason = strip_thinking(text or "")
    if reason:
        return None, reason
    answer = answer.strip()
    if not answer:
        return None, "resposta do juiz vazia"
    found = _rubric_from_json(answer) or _rubric_from_text(answer)
    if found is None:
        return None, "a resposta do juiz não tem 'score' em JSON nem 'Score: N'"
    raw, feedback = found
    try:
        value = decimal_value(str(raw).strip())
    except ArithmeticError:
        return None, f"a nota {raw!r} não é um número"
    if not value.is_finite() or value != value.to_integral_value() or not low <= value <= high:
        shown = number_text(value) if value.is_finite() else repr(raw)
        return None, f"a nota {shown} não é um inteiro de {low} a {high}"
    return (int(value), feedback.strip()), None


def _rubric_from_json(text: str) -> Optional[Tuple[Any, str]]:
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            lowered = {str(k).lower(): v for k, v in obj.items()}
            if "score" in lowered:
                feedback = lowered.get("feedback", lowered.get("explanation", ""))
                return lowered["score"], str(feedback or "")
    return None


def _rubric_from_text(text: str) -> Optional[Tuple[Any, str]]:
    score = re.search(r"\bscore\s*[:=]\s*(" + _NUMBER + r")(?:\s*/\s*\d+)?", text, re.IGNORECASE)
    if not score:
        return None
    feedback = re.search(r"\bfeedback\s*[:=]\s*(.*)", text, re.IGNORECASE | re.DOTALL)
    return score.group(1), feedback.group(1) if feedback else ""


def parse_1_5(reply: str) -> Tuple[Optional[int], Optional[str], Optional[str]]:
    """``(score, feedback, reason)`` of a rubric reply (the parser :func:`score_with_rubric` uses)."""
    found, reason = explain_rubric(reply)
    return (found[0], found[1], None) if found else (None, None, reason)


def score_with_rubric(
    json_data: Union[Sequence[Mapping[str, Any]], PathLike],
    json_key: str,
    model: str = DEFAULT_MODEL,
    *,
    structured: bool = False,
    **kwargs: Any,
) -> ScoreResults:
    """Rubric mode: scores 1–5 with a sentence of ``feedback`` per item.

    Uses :func:`build_rubric_prompt` and :func:`parse_rubric`; empty responses
    get 1 without asking. ``structured=True`` sends :data:`~.structured.RUBRIC_SCHEMA`
    so the reply is always the JSON object. Other keywords as in
    :func:`~.scoring.score_responses`.
    """
    kwargs.setdefault("empty_response_score", 1)
    return score_responses(json_data, json_key, model, prompt_builder=build_rubric_prompt, parser=parse_1_5,
                           structured=RUBRIC_SCHEMA if structured else False, **kwargs)


__all__ = ["build_rubric_prompt", "parse_rubric", "explain_rubric", "score_with_rubric", "parse_1_5"]
