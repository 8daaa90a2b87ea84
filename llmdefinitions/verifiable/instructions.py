"""The verifiable instructions: one deterministic checker per type, in a registry.

Each entry of :data:`INSTRUCTIONS` maps an id (``"length:words"``) to an
:class:`Instruction`: a pt-BR description, the parameters its ``kwargs`` must
have, and ``check(response, lang, **kwargs) -> bool``. Call them through
:func:`check_instruction`, which also applies the rule shared by all of them: a
blank response follows no instruction (an empty answer is not "all lowercase").

The types follow IFEval's families (Zhou et al. 2023, *Instruction-Following
Evaluation for Large Language Models*), with the course's own wording and these
choices, all language-aware through ``lang`` (``"pt"`` or ``"en"``, the prompt's):

* words / sentences / paragraphs are counted as in :mod:`.text`;
* keywords match whole words, case-insensitive, accents significant
  ("coração" is not "coracao"; "sol" is not found in "solução");
* letter frequency counts a letter with or without accent ("a" counts "á", "ã");
* sections are lines starting with ``SECTION n`` (English) or ``SEÇÃO n`` /
  ``SECAO n`` (Portuguese), case-insensitive, optionally after ``#`` or ``*``;
* the postscript is a line starting with the marker, dots and the space optional
  (``P.S.``, ``PS:``, ``P. S.``);
* the response language is the one with more of its common short words
  (a stop-word count, transparent and deterministic; fine for answers of a
  sentence or more, not for a single word).
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .text import LANGUAGES, split_paragraphs, split_sentences, split_words

RELATIONS = {"at_least": "pelo menos", "at_most": "no máximo", "exactly": "exatamente"}


@dataclass(frozen=True)
class Instruction:
    """One instruction type: ``check(response, lang, **kwargs)`` says whether it was followed."""

    id: str
    description: str                      # pt-BR, for tables and the notebook
    params: Tuple[str, ...]               # names of the kwargs (kinds in PARAM_KINDS)
    check: Callable[..., bool]


INSTRUCTIONS: Dict[str, Instruction] = {}


def instruction(id: str, description: str, *params: str):
    """Register the decorated function as the checker of ``id``."""
    def register(check: Callable[..., bool]) -> Callable[..., bool]:
        INSTRUCTIONS[id] = Instruction(id, description, params, check)
        return check
    return register


def check_instruction(id: str, response: str, lang: str, kwargs: Optional[Mapping[str, Any]] = None) -> bool:
    """Whether ``response`` follows instruction ``id``; a blank response never does."""
    if not response.strip():
        return False
    return bool(INSTRUCTIONS[id].check(response, lang, **(kwargs or {})))


def compare(count: int, relation: str, n: int) -> bool:
    """``count`` against ``n`` with one of :data:`RELATIONS`."""
    return {"at_least": count >= n, "at_most": count <= n, "exactly": count == n}[relation]


# --------------------------------------------------------------------------- parameters

def _count(value: Any) -> Optional[str]:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "deve ser um inteiro >= 0"


def _relation(value: Any) -> Optional[str]:
    return None if value in RELATIONS else f"deve ser um de {', '.join(RELATIONS)}"


def _text(value: Any) -> Optional[str]:
    return None if isinstance(value, str) and value.strip() else "deve ser um texto não vazio"


def _words(value: Any) -> Optional[str]:
    ok = isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
    return None if ok else "deve ser uma lista não vazia de textos"


def _letter(value: Any) -> Optional[str]:
    ok = isinstance(value, str) and len(value) == 1 and value.isalpha() and value == _base_letter(value)
    return None if ok else "deve ser uma única letra sem acento"


def _language(value: Any) -> Optional[str]:
    return None if value in LANGUAGES else f"deve ser um de {', '.join(LANGUAGES)}"


# parameter name -> validator returning a pt-BR problem or None
PARAM_KINDS: Dict[str, Callable[[Any], Optional[str]]] = {
    "n": _count, "relation": _relation, "keywords": _words, "letter": _letter,
    "phrase": _text, "marker": _text, "language": _language,
}


# --------------------------------------------------------------------------- length

@instruction("length:words", "número de palavras (pelo menos / no máximo / exatamente n)", "relation", "n")
def _length_words(response: str, lang: str, relation: str, n: int) -> bool:
    return compare(len(split_words(response)), relation, n)


@instruction("length:sentences", "número de frases (pelo menos / no máximo / exatamente n)", "relation", "n")
def _length_sentences(response: str, lang: str, relation: str, n: int) -> bool:
    return compare(len(split_sentences(response, lang)), relation, n)


@instruction("length:paragraphs", "número de parágrafos separados por linha em branco", "relation", "n")
def _length_paragraphs(response: str, lang: str, relation: str, n: int) -> bool:
    return compare(len(split_paragraphs(response)), relation, n)


# --------------------------------------------------------------------------- keywords

def _has_word(response: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", response, re.IGNORECASE) is not None


@instruction("keywords:include", "inclui todas as palavras-chave pedidas", "keywords")
def _include(response: str, lang: str, keywords: list) -> bool:
    return all(_has_word(response, word) for word in keywords)


@instruction("keywords:exclude", "não usa nenhuma das palavras proibidas", "keywords")
def _exclude(response: str, lang: str, keywords: list) -> bool:
    return not any(_has_word(response, word) for word in keywords)


def _base_letter(ch: str) -> str:
    return unicodedata.normalize("NFD", ch)[0].lower()


@instruction("keywords:letter_frequency", "uma letra aparece n vezes (com ou sem acento)",
             "letter", "relation", "n")
def _letter_frequency(response: str, lang: str, letter: str, relation: str, n: int) -> bool:
    count = sum(_base_letter(ch) == letter.lower() for ch in response if ch.isalpha())
    return compare(count, relation, n)


# --------------------------------------------------------------------------- format

_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


@instruction("format:json", "a resposta inteira é um objeto ou lista JSON (cercas ``` aceitas)")
def _json(response: str, lang: str) -> bool:
    text = response.strip()
    fenced = _FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return False
    return isinstance(value, (dict, list))


@instruction("format:bullets", "exatamente n itens de lista com * ou -", "n")
def _bullets(response: str, lang: str, n: int) -> bool:
    return len(re.findall(r"^[ \t]*[*\-•][ \t]+\S", response, re.MULTILINE)) == n


@instruction("format:title", "tem um título entre << e >>")
def _title(response: str, lang: str) -> bool:
    return re.search(r"<<[^\n<>]*\S[^\n<>]*>>", response) is not None


_SECTION_WORDS = {"pt": r"SE[ÇC][ÃA]O", "en": r"SECTION"}


@instruction("format:sections", "exatamente n seções marcadas SEÇÃO 1, SEÇÃO 2… (SECTION em inglês)", "n")
def _sections(response: str, lang: str, n: int) -> bool:
    marker = rf"^[ \t#*]*{_SECTION_WORDS[lang]}[ \t]+\d+"
    return len(re.findall(marker, response, re.MULTILINE | re.IGNORECASE)) == n


@instruction("format:placeholders", "pelo menos n campos entre colchetes, como [nome]", "n")
def _placeholders(response: str, lang: str, n: int) -> bool:
    return len(re.findall(r"\[[^\[\]\n]*\S[^\[\]\n]*\]", response)) >= n


@instruction("format:quotation", "a resposta inteira está entre aspas duplas")
def _quotation(response: str, lang: str) -> bool:
    text = response.strip()
    return len(text) > 2 and (text[0], text[-1]) in {('"', '"'), ("“", "”")}


# --------------------------------------------------------------------------- case and punctuation

@instruction("case:lowercase", "tudo em minúsculas")
def _lowercase(response: str, lang: str) -> bool:
    return response == response.lower()


@instruction("case:uppercase", "tudo em maiúsculas")
def _uppercase(response: str, lang: str) -> bool:
    return response == response.upper()


@instruction("punctuation:no_commas", "nenhuma vírgula")
def _no_commas(response: str, lang: str) -> bool:
    return "," not in response


# --------------------------------------------------------------------------- start, end, postscript

@instruction("startend:start", "começa com a frase pedida", "phrase")
def _starts_with(response: str, lang: str, phrase: str) -> bool:
    return response.strip().lower().startswith(phrase.strip().lower())


@instruction("startend:end", "termina com a frase pedida (nada depois dela)", "phrase")
def _ends_with(response: str, lang: str, phrase: str) -> bool:
    return response.strip().lower().endswith(phrase.strip().lower())


@instruction("content:postscript", "tem um pós-escrito (linha que começa com P.S.)", "marker")
def _postscript(response: str, lang: str, marker: str) -> bool:
    letters = [ch for ch in marker if ch.isalpha()]
    pattern = r"^[ \t*]*" + r"\.?[ \t]?".join(map(re.escape, letters)) + r"(?![^\W_])"
    return re.search(pattern, response, re.MULTILINE | re.IGNORECASE) is not None


# --------------------------------------------------------------------------- language

_STOP_WORDS = {
    "pt": frozenset("""o e de que não para com uma um os da das dos em é por mais como mas foi ao ele ela
        isso este esta são está muito também seu sua quando sobre pelo pela ou ser ter você nós eles elas
        entre depois sem mesmo aos já porque onde tem há então cada pode seus suas essa esse num numa
        ainda muitos pessoas coisa""".split()),
    "en": frozenset("""the and of to is in that it with you this are was be on not have has they we he
        she his her their an or by from at which will can would there what about if more when your our
        been were these those but all also its than then them into out just""".split()),
}


def detect_language(text: str) -> Optional[str]:
    """``"pt"`` or ``"en"``: the language with more of its stop words in ``text``; None on a tie."""
    words = [w.lower() for w in split_words(text)]
    counts = {lang: sum(w in stop for w in words) for lang, stop in _STOP_WORDS.items()}
    best = max(counts, key=counts.get)
    return best if counts[best] > min(counts.values()) else None


@instruction("language:response", "responde no idioma pedido (pt ou en)", "language")
def _response_language(response: str, lang: str, language: str) -> bool:
    return detect_language(response) == language


__all__ = ["Instruction", "INSTRUCTIONS", "PARAM_KINDS", "RELATIONS", "check_instruction", "compare",
           "detect_language"]
