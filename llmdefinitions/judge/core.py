"""The judge as notebook 07 teaches it: the book's prompt, ``query_model``, ``generate_model_scores``.

A bigger LLM (Llama 3 8B through Ollama, in the book) reads the instruction, the
reference answer and our model's answer, and replies with a score from 0 to 100.
The book's three steps are here with the book's names and signatures:

1. :func:`build_score_prompt` — the book's prompt, ending in "Respond with the
   integer number only.";
2. :func:`query_model` — one request to the judge, the reply text;
3. :func:`generate_model_scores` — a score for every item of a JSON list.

And a fourth the book did with ``int(reply)``: :func:`explain_score` reads the
score with written rules and says why when there is none, so that no item
disappears from the list in silence. Everything else (HTTP, retries, cache,
threads, statistics) lives in the sibling modules.
"""
from __future__ import annotations

import re
import warnings
from decimal import Decimal
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Sequence, Tuple, Union

from ..io import PathLike
from ..prompts import format_input
from .clients import JudgeClient, make_client
from .defaults import DEFAULT_MODEL, DEFAULT_URL

if TYPE_CHECKING:
    from .scoring import ScoreList


def build_score_prompt(entry: Mapping[str, Any], json_key: str) -> str:
    """The book's 0–100 scoring prompt for ``entry`` and its response under ``json_key``."""
    return (
        f"Given the input `{format_input(entry)}` "
        f"and correct output `{entry['output']}`, "
        f"score the model response `{entry[json_key]}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


def query_model(
    prompt: str,
    model: str = DEFAULT_MODEL,
    url: str = DEFAULT_URL,
    *,
    client: Optional[JudgeClient] = None,
    **client_kwargs: Any,
) -> str:
    """The judge's reply to ``prompt``, as in the book (Ollama ``/api/chat``, streaming).

    The book's request: the prompt as a user message, ``seed=123``,
    ``temperature=0``, ``num_ctx=2048``, the NDJSON stream joined into one text.
    Keyword-only extras: ``client`` (reuse a :class:`~.clients.JudgeClient`) or
    anything :func:`~.clients.make_client` takes (``api``, ``timeout``,
    ``deadline``, ``max_reply_bytes``, ``retries``, ``options``, ``stream``...).
    Raises a :class:`~.errors.JudgeError` with a pt-BR message.
    """
    client = client or make_client(model, url, **client_kwargs)
    return client.chat(prompt)


def generate_model_scores(
    json_data: Union[Sequence[Mapping[str, Any]], PathLike],
    json_key: str,
    model: str = DEFAULT_MODEL,
    **kwargs: Any,
) -> "ScoreList":
    """The book's function: the list of int scores of ``entry[json_key]`` for every entry.

    A :class:`~.scoring.ScoreList`: the scores of the scored items (like the
    book's list), plus ``.results`` (one result per item: a score or the reason
    there is none), ``.failures`` and ``.report``. A warning says how many items
    have no score. Keyword-only extras as in :func:`~.scoring.score_responses`
    (``url``, ``cache_path``, ``max_workers``, ``structured``, ``deadline``...).
    """
    from .scoring import ScoreList, score_responses   # scoring builds on this module

    scores = ScoreList(score_responses(json_data, json_key, model, **kwargs))
    if scores.failures:
        warnings.warn(
            f"{len(scores.failures)} de {scores.n_total} itens ficaram sem nota (veja .failures); "
            f"primeiro motivo: {scores.failures[0].reason}", stacklevel=2)
    return scores


# --------------------------------------------------------------------------- reading the score

_NUMBER = r"[-+−]?\d+(?:[.,]\d+)?(?!\w|[.,]\d)"    # a whole number token: not 1e2, 0x50, 10a
_SCORE_LABEL = re.compile(
    r"\b(?:score|rating|grade|nota|pontua[çc][ãa]o)\b[^\d\n+−-]{0,30}?(" + _NUMBER + r")", re.IGNORECASE)
_FRACTION = re.compile(r"(" + _NUMBER + r")\s*(?:/\s*100\b|out of 100\b|de 100\b)", re.IGNORECASE)
_BARE = re.compile(r"^(" + _NUMBER + r")\s*(?:/\s*100|out of 100|de 100|%)?$", re.IGNORECASE)
_EXPONENT = re.compile(r"\d(?:[.,]\d+)?[eE][-+]?\d+")
_HEX = re.compile(r"\b0[xX][0-9a-fA-F]+\b")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def parse_score(text: Optional[str]) -> Optional[int]:
    """The 0–100 score in a judge's reply, or ``None`` when there is no single valid one.

    Rules (each one is tested):

    1. A reply (or its first line) that is just a number is that number:
       ``"85"``, ``"85."``, ``"**85**"``, ``"85/100"``, ``"85 out of 100"``, ``"85%"``,
       ``"85\\n\\nThe response is..."``.
    2. Otherwise the score is a number after a label (``Score: 85``,
       ``score this response 85``, ``Rating = 85``, ``Nota: 85``) or a number
       written as a fraction of 100 anywhere (``I give it 85/100``).
    3. ``85.0`` counts as 85; a non-integer such as ``85.5`` is rejected (rounding
       would invent a score the judge did not give). Numbers are whole tokens
       written in decimal: ``1e2``, ``0x50`` are rejected, not read as 1 or 0.
    4. Outside 0–100 (``150``, ``-5``, a 400-digit number) is rejected.
    5. Several *different* candidate scores (``Score: 80 ... Score: 90``) are
       rejected as ambiguous; the same score repeated is fine.
    6. Empty text, or text with no score in one of the forms above (e.g. the
       judge rewrote the answer, or loose numbers like ``80 or 90``) gives ``None``.
    7. Reasoning models: ``<think>...</think>`` blocks are ignored (a score inside
       one is a draft, not the answer); a ``<think>`` never closed means the
       reply was cut during the reasoning, so there is no score.

    :func:`explain_score` gives the same result with the reason in pt-BR.
    """
    return explain_score(text)[0]


def explain_score(text: Optional[str]) -> Tuple[Optional[int], Optional[str]]:
    """``(score, None)`` or ``(None, reason)`` following the rules of :func:`parse_score`."""
    answer, reason = strip_thinking(text or "")
    if reason:
        return None, reason
    cleaned = _clean_reply(answer)
    if not cleaned:
        return None, "resposta do juiz vazia"
    candidates = _score_candidates(cleaned)
    if not candidates:
        return None, _why_no_score(cleaned)
    values = {decimal_value(c) for c in candidates}
    if len(values) > 1:
        shown = ", ".join(number_text(v) for v in sorted(values))
        return None, f"a resposta do juiz tem várias notas diferentes ({shown})"
    value = values.pop()
    if value != value.to_integral_value():
        return None, f"a nota {number_text(value)} não é um número inteiro"
    if not 0 <= value <= 100:
        return None, f"a nota {number_text(value)} está fora da escala 0–100"
    return int(value), None


def strip_thinking(text: str) -> Tuple[str, Optional[str]]:
    """``text`` without ``<think>...</think>`` blocks, or ``("", reason)`` if a block never closes.

    A reply that only has ``</think>`` (the opening tag was in the chat template)
    keeps what follows the last ``</think>``.
    """
    answer = _THINK_BLOCK.sub("", text)
    lowered = answer.lower()
    if "<think>" in lowered:
        return "", ("o juiz não fechou o bloco <think> (falta </think>): o raciocínio foi cortado antes "
                    "da nota; dê mais tokens à resposta (num_predict)")
    if "</think>" in lowered:
        answer = answer[lowered.rindex("</think>") + len("</think>"):]
    return answer, None


def _clean_reply(text: str) -> str:
    text = text.strip().strip("`\"'*#_ \t\n")
    return text.rstrip(".!").strip()


def _score_candidates(text: str) -> List[str]:
    first_line = _clean_reply(text.splitlines()[0])
    for candidate in (text, first_line):
        match = _BARE.match(candidate)
        if match:
            return [match.group(1)]
    return [m.group(1) for m in _SCORE_LABEL.finditer(text)] + [m.group(1) for m in _FRACTION.finditer(text)]


def _why_no_score(text: str) -> str:
    for pattern, what in ((_EXPONENT, "em notação científica"), (_HEX, "em hexadecimal")):
        found = pattern.search(text)
        if found:
            return (f"a resposta do juiz traz um número {what} ({found.group(0)}): a nota precisa ser um "
                    "inteiro escrito em decimal, como 85")
    loose = re.findall(r"[-+−]?\d+(?:[.,]\d+)?", text)
    extra = f" (números soltos: {', '.join(loose[:5])})" if loose else ""
    return "a resposta do juiz não contém uma nota reconhecível" + extra


def decimal_value(text: str) -> Decimal:
    """Exact decimal value (a float would overflow on a 400-digit reply and round ``85.0000000001``)."""
    return Decimal(text.replace("−", "-").replace(",", "."))


def number_text(value: Decimal) -> str:
    """A number for a message: ``85``, ``85.5``; a 400-digit reply shortened with an ellipsis."""
    shown = str(int(value)) if value == value.to_integral_value() else str(value)
    return shown if len(shown) <= 15 else shown[:12] + "…"


__all__ = ["build_score_prompt", "query_model", "generate_model_scores", "parse_score", "explain_score",
           "strip_thinking"]
