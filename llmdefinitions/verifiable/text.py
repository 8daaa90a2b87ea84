"""Language-aware text splitting for the checkers, and IFEval's loose variants of a response.

Words, sentences and paragraphs are counted the same way in every checker, so these
rules live here once:

* a **word** is a run of letters or digits, with inner hyphens and apostrophes kept
  ("guarda-chuva", "don't" and "d'água" are one word each), and so are numbers
  with a decimal separator ("3.14", "2,5");
* a **sentence** ends at ``.``, ``!``, ``?`` or ``…`` followed by a space, or at a
  paragraph break; a period after a known abbreviation of the prompt's language
  ("Sr.", "Dra.", "p. ex." / "Mr.", "e.g.") or after a single letter (an initial)
  does not end one;
* a **paragraph** is a block of text between blank lines.
"""
from __future__ import annotations

import re
from typing import Dict, FrozenSet, List

LANGUAGES = ("pt", "en")

_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+|(?<=\d)[.,]\d+)*")
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s|$)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_ABBREVIATIONS: Dict[str, FrozenSet[str]] = {
    "pt": frozenset({"sr", "sra", "srta", "dr", "dra", "prof", "profa", "ex", "p.ex", "etc", "pág", "págs",
                     "av", "cia", "ltda", "nº", "séc", "obs", "aprox", "vol", "cap"}),
    "en": frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e",
                     "fig", "approx", "vol", "ch", "inc", "ltd"}),
}


def split_words(text: str) -> List[str]:
    """The words of ``text`` (see the module docstring)."""
    return _WORD.findall(text)


def split_paragraphs(text: str) -> List[str]:
    """The non-blank blocks of ``text`` separated by blank lines."""
    return [block.strip() for block in _PARAGRAPH_BREAK.split(text.strip()) if block.strip()]


def split_sentences(text: str, lang: str) -> List[str]:
    """The sentences of ``text``, with the abbreviations of ``lang`` (``"pt"`` or ``"en"``)."""
    abbreviations = _ABBREVIATIONS[lang]
    sentences: List[str] = []
    for paragraph in split_paragraphs(text):
        start = 0
        for end in _SENTENCE_END.finditer(paragraph):
            before = paragraph[start:end.start()].split()
            last = before[-1].lower().lstrip("\"'“«([") if before else ""
            is_initial = len(last) == 1 and last.isalpha()
            if end.group().startswith(".") and (last in abbreviations or is_initial):
                continue
            sentences.append(paragraph[start:end.end()].strip())
            start = end.end()
        sentences.append(paragraph[start:].strip())
    return [s for s in sentences if split_words(s)]




def loose_variants(response: str) -> List[str]:
    """IFEval's loose variants: the response without its first line, its last line,
    both, and each of those (and the response) with ``*`` markup removed."""
    lines = response.split("\n")
    trimmed = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(),
               "\n".join(lines[1:-1]).strip()]
    return trimmed + [variant.replace("*", "") for variant in trimmed]
