"""Structured output: the judge must reply with JSON that follows a schema, so every reply parses.

Servers that support it (Ollama's ``format``, ``response_format`` on llama.cpp,
vLLM, OpenAI) turn the schema into a grammar that constrains the generation: the
reply is ``{"score": 85}`` and never a paragraph. The reply is then read as JSON,
strictly: no searching for a number in free text.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, Optional, Tuple

from .core import strip_thinking

SCORE_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}},
    "required": ["score"],
}
RUBRIC_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                   "feedback": {"type": "string"}},
    "required": ["score", "feedback"],
}


def explain_json_score(text: Optional[str], low: int = 0, high: int = 100
                       ) -> Tuple[Optional[int], Optional[str]]:
    """``(score, None)`` from a reply ``{"score": N}`` (N an integer in ``low``–``high``), or ``(None, reason)``."""
    answer, reason = strip_thinking(text or "")
    if reason:
        return None, reason
    try:
        data = json.loads(answer)
    except ValueError as exc:
        return None, f"a resposta do juiz não é o JSON pedido pelo esquema ({exc.msg}): {answer[:80]!r}"
    if not isinstance(data, dict) or "score" not in data:
        return None, f"a resposta do juiz não tem o campo 'score': {answer[:80]!r}"
    value = data["score"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        return None, f"o campo 'score' da resposta do juiz não é um inteiro: {value!r}"
    if not low <= value <= high:
        return None, f"a nota {int(value)} está fora da escala {low}–{high}"
    return int(value), None


__all__ = ["SCORE_SCHEMA", "RUBRIC_SCHEMA", "explain_json_score"]
