"""Filters for generated instruction data: every item kept, or dropped with its reason.

Rules in the order they are checked (the first that fails names the reason):

1. ``empty`` — no instruction or no response;
2. ``template_leak`` — chat-template pieces in the text (``<|im_start|>``,
   ``<|eot_id|>``, ``[INST]``, ``### Instruction``, a line that is only ``assistant``...):
   the model ran past its turn, or the prompt leaked into the answer;
3. ``refusal`` — the model declined (``I'm sorry``, ``As an AI``, ``Desculpe``,
   ``Como um modelo de linguagem``...);
4. ``too_short`` / ``too_long`` — instruction of 3 words or fewer, or over 150
   (Self-Instruct's bounds: more than 3, at most 150), response under ``min_output_words`` or over
   ``max_output_words`` words;
5. ``modality`` — the instruction needs something a text model cannot see or
   produce (image, graph, file, map, video, audio...: Self-Instruct's list, plus pt-BR);
6. ``punctuation`` — the instruction starts with punctuation (Self-Instruct);
7. ``exact_duplicate`` / ``near_duplicate`` — the same instruction+input as an
   item of the pool or an earlier kept item, exactly or with character-shingle
   Jaccard >= ``near_threshold`` (:mod:`llmdefinitions.data_quality`);
8. ``rouge_l`` — not new enough: ROUGE-L F >= ``rouge_threshold`` (0.7, Self-Instruct's
   rule) with an instruction of the pool or an earlier kept item.

Rules 1–6 look at one item; 7–8 compare it with the **pool** (e.g. the seed tasks or
the course's dataset) and with the items kept before it, in order, so the first
of two similar items is the one kept.

ROUGE-L comes from ``rouge-score`` with a tokenizer that keeps accented letters
(its default one keeps only ``[a-z0-9]``: "ação" would become "a", "o").
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..data_quality import PROMPT_FIELDS, exact_duplicates, near_duplicates
from ..stats import format_decimal

Entry = Mapping[str, str]

RULES: Dict[str, str] = {
    "empty": "vazio",
    "template_leak": "vazamento de template",
    "refusal": "recusa",
    "too_short": "curto demais",
    "too_long": "longo demais",
    "modality": "pede imagem ou arquivo",
    "punctuation": "começa com pontuação",
    "exact_duplicate": "duplicata exata",
    "near_duplicate": "quase duplicata",
    "rouge_l": "pouco nova (ROUGE-L)",
    "error": "falha no pedido",
    "not_attempted": "não pedido",
}

TEMPLATE_LEAKS: Tuple[Tuple[str, "re.Pattern[str]"], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    ("token <|...|>", r"<\|[A-Za-z_]+\|>"),                    # ChatML, Llama 3, Phi-3, <|endoftext|>
    ("[INST]", r"\[/?INST\]"),                                 # Llama 2, Mistral
    ("<start_of_turn>", r"<(?:start|end)_of_turn>"),           # Gemma
    ("<s>", r"</?s>"),
    ("### Instruction", r"(?im)^\s*#{2,}\s*(?:instruction|input|response|instrução|entrada|resposta)\b"),
    ("linha só com o papel", r"(?im)^\s*(?:user|assistant|system)\s*:?\s*$"),
))

REFUSALS: Tuple["re.Pattern[str]", ...] = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"\bas an ai\b", r"\bas a(?:n ai)? language model\b", r"\bi(?:'| a)m sorry\b", r"\bi apologi[sz]e\b",
    r"\bi (?:cannot|can't|can not) (?:help|assist|provide|fulfill|comply|answer)\b",
    r"\bi(?:'| a)m (?:not able|unable) to\b",
    r"\bcomo (?:uma|um) (?:ia|inteligência artificial|modelo de linguagem|assistente de ia)\b",
    r"\bdesculpe\b", r"\bsinto muito\b", r"\blamento\b",
    r"\bnão (?:posso|consigo) (?:ajudar|fornecer|responder|atender)\b",
))

# Self-Instruct's words for what a text-only model cannot take or give, and pt-BR's.
MODALITY_WORDS = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
    "imagem", "imagens", "gráfico", "gráficos", "figura", "figuras", "arquivo", "arquivos", "mapa",
    "mapas", "desenhe", "vídeo", "áudio", "música", "fluxograma", "diagrama",
)
_MODALITY = re.compile(r"\b(" + "|".join(re.escape(w) for w in MODALITY_WORDS) + r")\b", re.IGNORECASE)
_OPENERS = "\"'“‘«([¿¡"


@dataclass(frozen=True)
class FilterConfig:
    """The filters' thresholds; the defaults are Self-Instruct's where it has one."""

    min_instruction_words: int = 4
    max_instruction_words: int = 150
    min_output_words: int = 1
    max_output_words: int = 400
    near_threshold: float = 0.9
    rouge_threshold: float = 0.7
    check_modality: bool = True


@dataclass
class Verdict:
    """What happened to item ``index``: ``kept``, or the ``rule`` that dropped it and why."""

    index: int
    kept: bool
    rule: Optional[str] = None
    reason: Optional[str] = None

    @property
    def label(self) -> str:
        """``"mantido"`` or the rule's pt-BR name."""
        return "mantido" if self.kept else RULES.get(self.rule or "", self.rule or "")

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "label": self.label}


def words(text: str) -> int:
    return len(text.split())


def find_template_leak(text: str) -> Optional[str]:
    """The name of the first chat-template piece found in ``text``, or ``None``."""
    for name, pattern in TEMPLATE_LEAKS:
        match = pattern.search(text)
        if match:
            return f"{name} ({match.group(0).strip()!r})"
    return None


def find_refusal(text: str) -> Optional[str]:
    """The refusal phrase found in ``text`` (e.g. ``"I'm sorry"``), or ``None``."""
    for pattern in REFUSALS:
        match = pattern.search(text)
        if match:
            return match.group(0)
    return None


def check_entry(entry: Entry, config: FilterConfig = FilterConfig()) -> Optional[Tuple[str, str]]:
    """``(rule, reason)`` of the first one-item rule (1–6) that ``entry`` fails, or ``None``."""
    instruction = (entry.get("instruction") or "").strip()
    input_text = (entry.get("input") or "").strip()
    output = (entry.get("output") or "").strip()
    if not instruction or not output:
        return "empty", "sem instrução" if not instruction else "sem resposta"
    for field_name, text in (("instrução", instruction), ("entrada", input_text), ("resposta", output)):
        leak = find_template_leak(text)
        if leak:
            return "template_leak", f"{field_name} contém {leak}"
    for field_name, text in (("instrução", instruction), ("resposta", output)):
        refusal = find_refusal(text)
        if refusal:
            return "refusal", f"{field_name} contém {refusal!r}"
    n_instruction, n_output = words(instruction), words(output)
    if n_instruction < config.min_instruction_words:
        return "too_short", f"instrução com {n_instruction} palavra(s) (mínimo {config.min_instruction_words})"
    if n_instruction > config.max_instruction_words:
        return "too_long", f"instrução com {n_instruction} palavras (máximo {config.max_instruction_words})"
    if n_output < config.min_output_words:
        return "too_short", f"resposta com {n_output} palavra(s) (mínimo {config.min_output_words})"
    if n_output > config.max_output_words:
        return "too_long", f"resposta com {n_output} palavras (máximo {config.max_output_words})"
    if config.check_modality:
        match = _MODALITY.search(instruction)
        if match:
            return "modality", f"a instrução fala em {match.group(0)!r}"
    first = instruction[0]
    if unicodedata.category(first).startswith("P") and first not in _OPENERS:
        return "punctuation", f"a instrução começa com {first!r}"
    return None


# --------------------------------------------------------------------------- ROUGE-L

class _UnicodeWords:
    """rouge-score tokenizer: lowercase words with their accents (``\\w+``)."""

    @staticmethod
    def tokenize(text: str) -> List[str]:
        return re.findall(r"\w+", text.casefold())


_SCORER = None


def _scorer():
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_UnicodeWords())
    return _SCORER


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F-measure of two texts (0–1; symmetric), words compared in lowercase with accents."""
    return _scorer().score(a, b)["rougeL"].fmeasure


class _RougePool:
    """Instructions seen so far; finds the most similar one by ROUGE-L.

    ROUGE-L F = 2·LCS / (|a| + |b|), and the LCS is at most the number of words the
    two share (as multisets), so pairs whose bound is under the threshold are
    skipped without computing the LCS. The result is the same as comparing all pairs.
    """

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.texts: List[str] = []
        self.bags: List[Counter] = []

    def add(self, text: str) -> None:
        self.texts.append(text)
        self.bags.append(Counter(_UnicodeWords.tokenize(text)))

    def most_similar(self, text: str) -> Tuple[float, Optional[int]]:
        """``(score, position)`` of the first pool text with ROUGE-L >= threshold, else the best below."""
        bag = Counter(_UnicodeWords.tokenize(text))
        size = sum(bag.values())
        best, where = 0.0, None
        for position, other in enumerate(self.bags):
            total = size + sum(other.values())
            if total == 0 or 2 * sum((bag & other).values()) / total < max(self.threshold, best):
                continue
            score = rouge_l(text, self.texts[position])
            if score > best:
                best, where = score, position
            if best >= self.threshold:
                break
        return best, where


# --------------------------------------------------------------------------- all rules

def filter_entries(entries: Sequence[Entry], pool: Sequence[Entry] = (),
                   config: FilterConfig = FilterConfig(),
                   indices: Optional[Sequence[int]] = None) -> List[Verdict]:
    """One :class:`Verdict` per entry, in order: kept, or the first rule it fails and why.

    ``pool``: items the generated ones must not repeat (seed tasks, the training
    data). ``indices`` names the entries in the verdicts (default ``0 .. n-1``).
    """
    indices = list(range(len(entries))) if indices is None else list(indices)
    if len(indices) != len(entries):
        raise ValueError(f"indices tem {len(indices)} valores para {len(entries)} itens.")
    verdicts: Dict[int, Verdict] = {}
    survivors: List[int] = []        # positions in entries
    for position, entry in enumerate(entries):
        failed = check_entry(entry, config)
        if failed:
            verdicts[position] = Verdict(indices[position], False, *failed)
        else:
            survivors.append(position)

    pool = list(pool)
    n_pool = len(pool)
    combined = pool + [entries[p] for p in survivors]
    dropped: Dict[int, Tuple[str, str]] = {}    # position in combined -> (rule, reason)

    def where(k: int) -> str:
        return f"item {k} da referência" if k < n_pool else f"item gerado {indices[survivors[k - n_pool]]}"

    for group in exact_duplicates(combined, fields=PROMPT_FIELDS):
        first = group[0]
        for k in group[1:]:
            if k >= n_pool:
                dropped[k] = ("exact_duplicate", f"mesma instrução e entrada do {where(first)}")
    for pair in sorted(near_duplicates(combined, config.near_threshold, fields=PROMPT_FIELDS),
                       key=lambda p: (p.j, p.i)):
        if pair.j >= n_pool and pair.j not in dropped and pair.i not in dropped:
            dropped[pair.j] = ("near_duplicate", f"Jaccard {format_decimal(pair.similarity)} com o {where(pair.i)}")

    rouge = _RougePool(config.rouge_threshold)
    rouge_kept: List[int] = []       # rouge pool position - n_pool -> position in combined
    for entry in pool:
        rouge.add(entry.get("instruction") or "")
    for k, position in enumerate(survivors, start=n_pool):
        if k in dropped:
            verdicts[position] = Verdict(indices[position], False, *dropped[k])
            continue
        instruction = entries[position]["instruction"]
        score, similar = rouge.most_similar(instruction)
        if similar is not None and score >= config.rouge_threshold:
            other = similar if similar < n_pool else rouge_kept[similar - n_pool]
            verdicts[position] = Verdict(indices[position], False, "rouge_l",
                                         f"ROUGE-L {format_decimal(score)} com o {where(other)}")
            continue
        verdicts[position] = Verdict(indices[position], True)
        rouge.add(instruction)
        rouge_kept.append(k)
    return [verdicts[p] for p in range(len(entries))]


__all__ = ["RULES", "FilterConfig", "Verdict", "check_entry", "find_template_leak", "find_refusal",
           "rouge_l", "filter_entries", "TEMPLATE_LEAKS", "REFUSALS", "MODALITY_WORDS"]
