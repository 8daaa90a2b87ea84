"""Dataset quality checks: duplicates, train/test overlap and lengths in tokens.

Every comparison here looks at entries through one normalization
(:func:`normalize_text`): Unicode NFC, whitespace runs collapsed to one space,
leading/trailing whitespace stripped, then ``str.casefold()``. An entry becomes
one string (:func:`entry_key`): its normalized fields joined by ``"\\x1f"``
(a control character that normalized text keeps but real text never has), so
``{"instruction": "a b", "input": ""}`` and ``{"instruction": "a", "input": "b"}``
stay different.

* exact duplicates: entries with the same key;
* near duplicates: Jaccard similarity of the sets of character n-grams
  (*shingles*) of the keys, found with an exact prefix-filtering join (no pair
  above the threshold is missed, unlike MinHash) that needs a fraction of a
  second for the course's 1,100 entries;
* overlap: items of validation/test that also occur in training.

``quality_report`` gathers everything; ``print(report)`` shows a pt-BR table.
"""
from __future__ import annotations

import math
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Callable,
    Dict,
    FrozenSet,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from .prompts import get_prompt_style

Entry = Mapping[str, str]
PathLike = Union[str, Path]

ALL_FIELDS: Tuple[str, ...] = ("instruction", "input", "output")
PROMPT_FIELDS: Tuple[str, ...] = ("instruction", "input")
GPT2_CONTEXT_LENGTH = 1024
FIELD_SEPARATOR = "\x1f"
_EPS = 1e-9  # slack for float rounding in the prefix and length filters


# ---------------------------------------------------------------- normalization


def normalize_text(text: str) -> str:
    """NFC, whitespace collapsed and stripped, casefolded: ``" Olá\\n  MUNDO "`` -> ``"olá mundo"``."""
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def entry_key(entry: Entry, fields: Sequence[str] = ALL_FIELDS) -> str:
    """The normalized ``fields`` of ``entry`` joined by ``FIELD_SEPARATOR`` (missing field = "")."""
    return FIELD_SEPARATOR.join(normalize_text(entry.get(name) or "") for name in fields)


def shingles(text: str, n: int = 3) -> FrozenSet[str]:
    """Set of the character n-grams of ``text``; a non-empty text shorter than ``n`` is one shingle."""
    if n < 1:
        raise ValueError(f"O tamanho do n-grama deve ser pelo menos 1 (recebido: {n}).")
    if len(text) < n:
        return frozenset([text]) if text else frozenset()
    return frozenset(text[k:k + n] for k in range(len(text) - n + 1))


def jaccard(a: FrozenSet[str], b: FrozenSet[str]) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets count as identical (1.0)."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


# ---------------------------------------------------------------- duplicates


def exact_duplicates(data: Sequence[Entry], fields: Sequence[str] = ALL_FIELDS) -> List[List[int]]:
    """Groups (sorted, size >= 2) of indices whose entries have the same :func:`entry_key`.

    ``fields=PROMPT_FIELDS`` compares instruction+input only (same question, any answer).
    Groups are ordered by their first index.
    """
    groups: Dict[str, List[int]] = defaultdict(list)
    for index, entry in enumerate(data):
        groups[entry_key(entry, fields)].append(index)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


class NearDuplicate(NamedTuple):
    """Two entries ``i < j`` whose shingle sets have Jaccard ``similarity``."""

    i: int
    j: int
    similarity: float


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"O limiar de similaridade deve estar em (0, 1] (recebido: {threshold}).")


def _similarity_join(
    sets: Sequence[FrozenSet[str]],
    threshold: float,
    keep: Optional[Callable[[int, int], bool]] = None,
) -> List[NearDuplicate]:
    """All pairs ``i < j`` with ``jaccard(sets[i], sets[j]) >= threshold`` (and ``keep(i, j)``).

    Prefix filtering (all-pairs similarity join): order each set's shingles rarest
    first; if J(x, y) >= t then |x ∩ y| >= ceil(t * max(|x|, |y|)), so the first
    |x| - ceil(t|x|) + 1 shingles of x and of y share one. Sets are visited by
    size, each probes an inverted index of the prefixes seen so far (length filter:
    |y| >= t|x|), and only those candidates get the exact Jaccard. Exact: no misses.
    """
    _check_threshold(threshold)
    freq = Counter(s for x in sets for s in x)
    index: Dict[str, List[int]] = defaultdict(list)
    empties: List[int] = []
    pairs: List[NearDuplicate] = []

    def add(a: int, b: int, sim: float) -> None:
        i, j = (a, b) if a < b else (b, a)
        if keep is None or keep(i, j):
            pairs.append(NearDuplicate(i, j, sim))

    for k in sorted(range(len(sets)), key=lambda k: (len(sets[k]), k)):
        x = sets[k]
        size = len(x)
        if size == 0:  # only empty sets are similar to an empty set
            for other in empties:
                add(other, k, 1.0)
            empties.append(k)
            continue
        min_overlap = max(1, math.ceil(threshold * size - _EPS))
        prefix = sorted(x, key=lambda s: (freq[s], s))[: size - min_overlap + 1]
        min_size = threshold * size - _EPS
        candidates = {other for tok in prefix for other in index.get(tok, ()) if len(sets[other]) >= min_size}
        for other in candidates:
            sim = jaccard(x, sets[other])
            if sim >= threshold:
                add(other, k, sim)
        for tok in prefix:
            index[tok].append(k)
    return pairs


def near_duplicates(
    data: Sequence[Entry],
    threshold: float = 0.9,
    n: int = 3,
    fields: Sequence[str] = ALL_FIELDS,
    include_exact: bool = False,
) -> List[NearDuplicate]:
    """Pairs ``(i, j, similarity)``, ``i < j``, with shingle Jaccard >= ``threshold``.

    Shingles are the character ``n``-grams of :func:`entry_key`. Pairs that are exact
    duplicates (same key; see :func:`exact_duplicates`) are left out unless
    ``include_exact``. Sorted by decreasing similarity, then by ``(i, j)``.
    """
    keys = [entry_key(entry, fields) for entry in data]
    sets = [shingles(key, n) for key in keys]
    keep = None if include_exact else (lambda i, j: keys[i] != keys[j])
    pairs = _similarity_join(sets, threshold, keep)
    return sorted(pairs, key=lambda p: (-p.similarity, p.i, p.j))


class Overlap(NamedTuple):
    """Item ``i_other`` of validation/test that also occurs as item ``i_train`` of training."""

    i_other: int
    i_train: int


def overlap(
    train: Sequence[Entry],
    other: Sequence[Entry],
    fields: Sequence[str] = ALL_FIELDS,
    near_threshold: Optional[float] = None,
    n: int = 3,
) -> List[Overlap]:
    """Pairs ``(i_other, i_train)`` where ``other[i_other]`` also occurs in ``train``.

    Exact after normalization (same :func:`entry_key` over ``fields``); with
    ``near_threshold`` also pairs whose shingle Jaccard is at least that. Every
    matching training item is listed; sorted by ``(i_other, i_train)``.
    """
    by_key: Dict[str, List[int]] = defaultdict(list)
    for i_train, entry in enumerate(train):
        by_key[entry_key(entry, fields)].append(i_train)
    found = set()
    for i_other, entry in enumerate(other):
        for i_train in by_key.get(entry_key(entry, fields), ()):
            found.add(Overlap(i_other, i_train))
    if near_threshold is not None:
        n_train = len(train)
        sets = [shingles(entry_key(e, fields), n) for e in list(train) + list(other)]
        for pair in _similarity_join(sets, near_threshold, lambda i, j: i < n_train <= j):
            found.add(Overlap(pair.j - n_train, pair.i))
    return sorted(found)


# ---------------------------------------------------------------- lengths


@dataclass(frozen=True)
class LengthSummary:
    """min/median/mean/p95/max of a list of lengths (NaN when there is none)."""

    count: int
    min: float
    median: float
    mean: float
    p95: float
    max: float

    @classmethod
    def of(cls, lengths: Sequence[int]) -> "LengthSummary":
        """Summary of ``lengths`` (percentiles as ``numpy.percentile``, linear)."""
        import numpy as np

        if len(lengths) == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan)
        x = np.asarray(lengths, dtype=float)
        return cls(
            len(x), float(x.min()), float(np.median(x)), float(x.mean()),
            float(np.percentile(x, 95)), float(x.max()),
        )


@dataclass
class LengthStats:
    """Lengths in tokens of prompt, response and the full training text of each entry.

    ``prompt`` = ``style.prompt(entry)``; ``response`` = ``style.response_prefix +
    entry["output"]``; ``total`` = the two concatenated, encoded as one text (what
    ``InstructionDataset`` stores; BPE may merge across the joint, so it can differ
    from prompt + response by a token). ``over_context`` counts totals longer than
    ``context_length`` (these would be truncated by the collate function).
    """

    prompt_style: str
    context_length: int
    prompt_lengths: List[int] = field(repr=False)
    response_lengths: List[int] = field(repr=False)
    total_lengths: List[int] = field(repr=False)

    @property
    def prompt(self) -> LengthSummary:
        return LengthSummary.of(self.prompt_lengths)

    @property
    def response(self) -> LengthSummary:
        return LengthSummary.of(self.response_lengths)

    @property
    def total(self) -> LengthSummary:
        return LengthSummary.of(self.total_lengths)

    @property
    def over_context(self) -> int:
        return sum(1 for t in self.total_lengths if t > self.context_length)


def length_stats(
    data: Sequence[Entry],
    tokenizer,
    prompt_style: str = "alpaca",
    context_length: int = GPT2_CONTEXT_LENGTH,
) -> LengthStats:
    """Token lengths of ``data`` under ``prompt_style``, encoded as ``InstructionDataset`` does.

    A literal ``<|endoftext|>`` in the text counts as plain text (see ``llmdefinitions.data``).
    """
    from .data import encode_text

    style = get_prompt_style(prompt_style)

    def count(text: str) -> int:
        return len(encode_text(tokenizer, text))

    prompts, responses, totals = [], [], []
    for entry in data:
        prompt = style.prompt(entry)
        response = style.response_prefix + entry["output"]
        prompts.append(count(prompt))
        responses.append(count(response))
        totals.append(count(prompt + response))
    return LengthStats(prompt_style, context_length, prompts, responses, totals)


# ---------------------------------------------------------------- report


SPLIT_LABELS: Dict[str, str] = {"train": "treino", "val": "validação", "test": "teste", "all": "todos"}


@dataclass
class SplitQuality:
    """Duplicates inside one split (indices refer to that split)."""

    size: int
    exact_duplicates: List[List[int]]
    prompt_duplicates: List[List[int]]
    near_duplicates: List[NearDuplicate]
    lengths: Optional[LengthStats] = None

    @property
    def exact_copies(self) -> int:
        """Entries that could be removed leaving one per group."""
        return sum(len(g) - 1 for g in self.exact_duplicates)

    @property
    def prompt_copies(self) -> int:
        return sum(len(g) - 1 for g in self.prompt_duplicates)


@dataclass
class SplitOverlap:
    """Items of one split that also occur in another: exact, same prompt, near."""

    exact: List[Overlap]
    prompt: List[Overlap]
    near: List[Overlap]

    @staticmethod
    def _items(pairs: List[Overlap]) -> int:
        return len({p.i_other for p in pairs})

    @property
    def exact_items(self) -> int:
        return self._items(self.exact)

    @property
    def prompt_items(self) -> int:
        return self._items(self.prompt)

    @property
    def near_items(self) -> int:
        return self._items(self.near)


@dataclass
class QualityReport:
    """Everything :func:`quality_report` measured; ``print(report)`` shows :meth:`to_table`.

    ``splits`` has keys ``"train"``, ``"val"``, ``"test"`` and ``"all"`` (the three
    concatenated in that order; its indices refer to that concatenation).
    """

    splits: Dict[str, SplitQuality]
    test_in_train: SplitOverlap
    val_in_train: SplitOverlap
    test_in_val: SplitOverlap
    near_threshold: float
    n: int

    def to_table(self) -> str:
        """Readable plain-text table in pt-BR."""
        names = ["train", "val", "test", "all"]
        t = _fmt(self.near_threshold, 2)
        out = ["Relatório de qualidade dos dados", "=" * 32, ""]
        rows = [
            ("Exemplos", [self.splits[s].size for s in names]),
            ("Duplicatas exatas: grupos", [len(self.splits[s].exact_duplicates) for s in names]),
            ("Duplicatas exatas: cópias a mais", [self.splits[s].exact_copies for s in names]),
            ("Mesma instrução+entrada: cópias a mais", [self.splits[s].prompt_copies for s in names]),
            (f"Quase duplicatas (Jaccard >= {t}): pares", [len(self.splits[s].near_duplicates) for s in names]),
        ]
        out += _grid(["", *(SPLIT_LABELS[s] for s in names)], [[label, *vals] for label, vals in rows])
        out += ["", f"Sobreposição entre partições (itens; quase = Jaccard >= {t} de {self.n}-gramas de caracteres)"]
        header = ["", "exatos", "mesma instrução+entrada", "quase"]
        overlaps = [
            ("Itens de teste também no treino", self.test_in_train),
            ("Itens de validação também no treino", self.val_in_train),
            ("Itens de teste também na validação", self.test_in_val),
        ]
        out += _grid(header, [[label, o.exact_items, o.prompt_items, o.near_items] for label, o in overlaps])
        with_lengths = [s for s in names if self.splits[s].lengths is not None]
        out.append("")
        if not with_lengths:
            out.append("Comprimentos em tokens: não calculados (nenhum tokenizador foi passado).")
            return "\n".join(out)
        first = self.splits[with_lengths[0]].lengths
        ctx = first.context_length
        out.append(f"Comprimentos em tokens (estilo {first.prompt_style!r}; contexto: {ctx} tokens)")
        header = ["partição", "parte", "mín", "mediana", "média", "p95", "máx", f"> {ctx}"]
        table = []
        for s in with_lengths:
            stats = self.splits[s].lengths
            for part, label in (("prompt", "prompt"), ("response", "resposta"), ("total", "total")):
                summary: LengthSummary = getattr(stats, part)
                over = stats.over_context if part == "total" else ""
                table.append([
                    SPLIT_LABELS[s] if part == "prompt" else "", label,
                    _fmt(summary.min, 0), _fmt(summary.median, 1), _fmt(summary.mean, 1),
                    _fmt(summary.p95, 1), _fmt(summary.max, 0), over,
                ])
        out += _grid(header, table)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_table()


def _fmt(value: float, digits: int) -> str:
    """Number with a decimal comma (pt-BR text); NaN as a dash."""
    if value != value:
        return "—"
    return f"{value:.{digits}f}".replace(".", ",")


def _grid(header: Sequence[object], rows: Sequence[Sequence[object]]) -> List[str]:
    """Columns padded to fit: text left-aligned, numbers (and their headers) right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    numeric = [all(not any(ch.isalpha() for ch in row[k]) for row in cells[1:]) for k in range(len(header))]
    lines = []
    for r, row in enumerate(cells):
        parts = [cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(row, widths, numeric)]
        lines.append("  ".join(parts).rstrip())
        if r == 0:
            lines.append("-" * len(lines[0]))
    return lines


def _split_overlap(train, other, near_threshold: float, n: int) -> SplitOverlap:
    return SplitOverlap(
        exact=overlap(train, other),
        prompt=overlap(train, other, fields=PROMPT_FIELDS),
        near=overlap(train, other, near_threshold=near_threshold, n=n),
    )


def quality_report(
    train: Sequence[Entry],
    val: Sequence[Entry],
    test: Sequence[Entry],
    tokenizer=None,
    near_threshold: float = 0.9,
    n: int = 3,
    prompt_style: str = "alpaca",
    context_length: int = GPT2_CONTEXT_LENGTH,
) -> QualityReport:
    """Duplicates in each split, val/test items also in train, and (with ``tokenizer``) lengths."""
    parts = {"train": list(train), "val": list(val), "test": list(test)}
    parts["all"] = parts["train"] + parts["val"] + parts["test"]
    lengths: Dict[str, Optional[LengthStats]] = {name: None for name in parts}
    if tokenizer is not None:
        for name in ("train", "val", "test"):
            lengths[name] = length_stats(parts[name], tokenizer, prompt_style, context_length)
        lengths["all"] = LengthStats(  # concatenated, not encoded a second time
            prompt_style, context_length,
            *([x for name in ("train", "val", "test") for x in getattr(lengths[name], f"{part}_lengths")]
              for part in ("prompt", "response", "total")),
        )
    splits = {
        name: SplitQuality(
            size=len(data),
            exact_duplicates=exact_duplicates(data),
            prompt_duplicates=exact_duplicates(data, fields=PROMPT_FIELDS),
            near_duplicates=near_duplicates(data, near_threshold, n),
            lengths=lengths[name],
        )
        for name, data in parts.items()
    }
    return QualityReport(
        splits=splits,
        test_in_train=_split_overlap(parts["train"], parts["test"], near_threshold, n),
        val_in_train=_split_overlap(parts["train"], parts["val"], near_threshold, n),
        test_in_val=_split_overlap(parts["val"], parts["test"], near_threshold, n),
        near_threshold=near_threshold,
        n=n,
    )


# ---------------------------------------------------------------- plot


def plot_length_histogram(
    lengths: Union[Sequence[int], Mapping[str, Sequence[int]]],
    save_path: Optional[PathLike] = None,
    show: bool = True,
    bins: int = 30,
    context_length: Optional[int] = None,
    title: Optional[str] = None,
):
    """Histogram of lengths in tokens; a mapping ``label -> lengths`` overlays several.

    ``context_length`` draws a dashed line at that length. ``save_path`` writes the
    figure atomically (PNG, PDF or SVG by extension). Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    series = dict(lengths) if isinstance(lengths, Mapping) else {None: lengths}
    fig, ax = plt.subplots(figsize=(5, 3))
    for label, values in series.items():
        ax.hist(list(values), bins=bins, alpha=0.6 if len(series) > 1 else 0.9, label=label)
    if context_length is not None:
        ax.axvline(context_length, color="black", linestyle="--", label=f"contexto ({context_length})")
    ax.set_xlabel("Comprimento (tokens)")
    ax.set_ylabel("Número de exemplos")
    if title:
        ax.set_title(title)
    if len(series) > 1 or context_length is not None:
        ax.legend(loc="upper right")
    from .plotting import finish_figure

    return finish_figure(fig, save_path, show)
