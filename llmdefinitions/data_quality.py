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
  (*shingles*) of the keys. Comparing every pair grows with the square of the
  size (hours for 200,000 entries), so candidate pairs come from MinHash + LSH
  banding (numpy; time and memory grow about linearly) and each candidate is
  confirmed with the exact Jaccard: no false pair is reported, and a pair at the
  threshold is missed with probability below ``LSH_MISS`` (see :func:`lsh_bands`);
* overlap: items of validation/test that also occur in training;
* lengths in tokens, and which entries (by index) are longer than the context
  the collate function cuts at (:func:`overlength_entries`).

``quality_report`` gathers everything; ``print(report)`` shows a pt-BR table.
"""
from __future__ import annotations

import functools
import itertools
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
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
from .tokenizer import encode_text
from .stats import format_decimal
from .tables import text_table

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


# MinHash + LSH. A MinHash signature holds, for each of NUM_PERM random hash functions,
# the smallest hash of the set's shingles; two sets agree on one of them with probability
# equal to their Jaccard J. The signature is cut into `bands` bands of `rows` values, and
# two sets become a candidate pair when one whole band agrees: probability
# 1 - (1 - J^rows)^bands. `lsh_bands` picks the most selective cut that still misses a pair
# at the threshold with probability at most LSH_MISS; every candidate is then checked with
# the exact Jaccard, so a reported pair is never a false positive.
NUM_PERM = 128
LSH_MISS = 1e-5
MINHASH_SEED = 20240607
_CHUNK_CHARS = 1 << 21       # characters hashed per step: bounds the memory of the signatures
_AUTO_PROGRESS_FROM = 20_000  # entries; below this the join takes about a second: no bar


def lsh_bands(threshold: float, num_perm: int = NUM_PERM, max_miss: float = LSH_MISS) -> Tuple[int, int]:
    """``(bands, rows)`` with the most rows per band whose miss chance at ``threshold`` is <= ``max_miss``."""
    _check_threshold(threshold)
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if (1.0 - threshold ** rows) ** bands <= max_miss:
            best = (bands, rows)
    return best


def _splitmix64(x):
    """A well-mixing bijection of uint64 (SplitMix64's finalizer); numpy wraps on overflow."""
    import numpy as np

    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _shingle_hashes(texts: Sequence[str], n: int):
    """32-bit hashes of every character ``n``-gram of each text, with each text's offsets.

    The same sets as :func:`shingles` (a non-empty text shorter than ``n`` is one
    shingle, an empty text has none), hashed with numpy instead of building Python
    sets. Returns ``(hashes, starts)``: text ``k``'s hashes are ``hashes[starts[k]:starts[k+1]]``.
    """
    import numpy as np

    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    window = np.zeros(max(len(codes) - n + 1, 0), dtype=np.uint64)
    for k in range(n):                          # polynomial of the n code points (wrapping)
        window = window * np.uint64(0x100000001B3) + codes[k:len(codes) - n + 1 + k]
    counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    starts = np.concatenate([[0], np.cumsum(counts)])
    full = lengths >= n                         # windows inside the text, none crossing into the next
    per_text = counts[full]
    within = np.arange(per_text.sum()) - np.repeat(np.cumsum(per_text) - per_text, per_text)
    hashes = np.empty(int(starts[-1]), dtype=np.uint64)
    hashes[np.repeat(starts[:-1][full], per_text) + within] = window[np.repeat(offsets[:-1][full], per_text) + within]
    mask = (1 << 64) - 1
    for k in np.flatnonzero((lengths > 0) & ~full):  # short text: the whole text is the shingle
        value = len(texts[k])
        for char in texts[k]:
            value = (value * 0x100000001B3 + ord(char)) & mask
        hashes[starts[k]] = value ^ 0xA5A5A5A5A5A5A5A5
    return _splitmix64(hashes) >> np.uint64(32), starts


def minhash_signatures(texts: Sequence[str], n: int = 3, num_perm: int = NUM_PERM,
                       seed: int = MINHASH_SEED, progress: bool = False):
    """``(len(texts), num_perm)`` uint32 MinHash signatures of the texts' ``n``-gram sets.

    Each hash function is ``x -> ((a*x + b) mod 2**64) >> 32`` (multiply-add-shift, a
    universal family) with random odd ``a``; a text with no shingles gets the maximum
    value everywhere (it is never a candidate: only an empty set is similar to one).
    """
    import numpy as np
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2 ** 63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2 ** 63, size=num_perm, dtype=np.uint64)
    signatures = np.full((len(texts), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    chunks, first, size = [], 0, 0
    for k, text in enumerate(texts):
        size += len(text)
        if size >= _CHUNK_CHARS or k == len(texts) - 1:
            chunks.append((first, k + 1))
            first, size = k + 1, 0
    for lo, hi in tqdm(chunks, desc="MinHash", unit="bloco", disable=not progress):
        hashes, starts = _shingle_hashes(texts[lo:hi], n)
        has = np.flatnonzero(starts[1:] > starts[:-1])
        if len(has) == 0:
            continue
        for p in range(num_perm):
            values = (a[p] * hashes + b[p]) >> np.uint64(32)
            signatures[lo + has, p] = np.minimum.reduceat(values, starts[:-1][has]).astype(np.uint32)
    return signatures


def _candidate_pairs(signatures, usable, bands: int, rows: int):
    """Sorted unique ``(i, j)``, ``i < j``, of rows of ``signatures`` that agree on a whole band."""
    import numpy as np

    rng = np.random.default_rng(MINHASH_SEED + 1)
    multipliers = rng.integers(1, 2 ** 63, size=rows, dtype=np.uint64) | np.uint64(1)
    index = np.flatnonzero(usable)
    found = []
    for band in range(bands):
        block = signatures[index, band * rows:(band + 1) * rows].astype(np.uint64)
        keys = _splitmix64((block * multipliers).sum(axis=1, dtype=np.uint64))
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        run_starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        run_lengths = np.diff(np.r_[run_starts, len(order)])
        for start, length in zip(run_starts[run_lengths > 1], run_lengths[run_lengths > 1]):
            members = np.sort(index[order[start:start + length]])
            i, j = np.triu_indices(length, k=1)
            found.append(members[i] * len(signatures) + members[j])
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(found))
    return np.stack([codes // len(signatures), codes % len(signatures)], axis=1)


class _NearJoin:
    """The near-duplicate join of ``keys``, done once, read in several ways.

    Identical keys are one *group* (hashed once); ``similar`` holds the pairs of
    groups ``(a, b, jaccard)`` with ``a < b`` that reach the threshold: candidates from
    MinHash + LSH, each confirmed with :func:`jaccard`. Pairs of entries are only
    spelled out when asked for (a group of 10,000 copies is one row, not 50 million pairs).
    """

    def __init__(self, keys: Sequence[str], threshold: float, n: int, progress: Optional[bool] = None):
        import numpy as np
        from tqdm.auto import tqdm

        _check_threshold(threshold)
        if progress is None:
            progress = len(keys) >= _AUTO_PROGRESS_FROM
        by_key: Dict[str, List[int]] = defaultdict(list)
        for index, key in enumerate(keys):
            by_key[key].append(index)
        distinct = list(by_key)
        self.groups: List[List[int]] = list(by_key.values())
        self.similar: List[Tuple[int, int, float]] = []
        if len(distinct) < 2:
            return
        signatures = minhash_signatures(distinct, n, progress=progress)
        usable = np.fromiter((len(k) > 0 for k in distinct), dtype=bool, count=len(distinct))
        candidates = _candidate_pairs(signatures, usable, *lsh_bands(threshold))
        del signatures

        @functools.lru_cache(maxsize=4096)
        def shingle_set(k: int) -> FrozenSet[str]:
            return shingles(distinct[k], n)

        for a, b in tqdm(candidates.tolist(), desc="verificando pares", unit="par", disable=not progress):
            similarity = jaccard(shingle_set(a), shingle_set(b))
            if similarity >= threshold:
                self.similar.append((a, b, similarity))

    def within(self, start: int, stop: int, include_exact: bool = False) -> List[NearDuplicate]:
        """Pairs with both entries in ``[start, stop)``, indices from ``start``, sorted."""
        def inside(group: List[int]) -> List[int]:
            return [i - start for i in group if start <= i < stop]

        pairs = [NearDuplicate(min(i, j), max(i, j), sim) for a, b, sim in self.similar
                 for i in inside(self.groups[a]) for j in inside(self.groups[b])]
        if include_exact:
            pairs += [NearDuplicate(i, j, 1.0) for group in self.groups
                      for i, j in itertools.combinations(inside(group), 2)]
        return sorted(pairs, key=lambda p: (-p.similarity, p.i, p.j))

    def across(self, first: Tuple[int, int], second: Tuple[int, int]) -> List[Overlap]:
        """``(index in second, index in first)`` of every similar or identical pair between them."""
        def part(group: List[int], bounds: Tuple[int, int]) -> List[int]:
            return [i - bounds[0] for i in group if bounds[0] <= i < bounds[1]]

        found = {Overlap(j, i) for group in self.groups
                 for i in part(group, first) for j in part(group, second)}
        for a, b, _ in self.similar:
            for x, y in ((a, b), (b, a)):
                found.update(Overlap(j, i) for i in part(self.groups[x], first)
                             for j in part(self.groups[y], second))
        return sorted(found)


def near_duplicates(
    data: Sequence[Entry],
    threshold: float = 0.9,
    n: int = 3,
    fields: Sequence[str] = ALL_FIELDS,
    include_exact: bool = False,
    progress: Optional[bool] = None,
) -> List[NearDuplicate]:
    """Pairs ``(i, j, similarity)``, ``i < j``, with shingle Jaccard >= ``threshold``.

    Shingles are the character ``n``-grams of :func:`entry_key`. Pairs that are exact
    duplicates (same key; see :func:`exact_duplicates`) are left out unless
    ``include_exact``. Sorted by decreasing similarity, then by ``(i, j)``. Found with
    MinHash + LSH, each pair confirmed exactly (see :func:`lsh_bands` for the miss
    chance); ``progress`` shows bars (default: only for 20,000 entries or more).
    """
    keys = [entry_key(entry, fields) for entry in data]
    return _NearJoin(keys, threshold, n, progress).within(0, len(keys), include_exact)


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
        keys = [entry_key(e, fields) for e in list(train) + list(other)]
        join = _NearJoin(keys, near_threshold, n)
        found.update(join.across((0, len(train)), (len(train), len(keys))))
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
    ``context_length`` (these would be truncated by the collate function), and
    ``over_context_entries`` lists them as ``(index, length)``.
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
    def over_context_entries(self) -> List[Tuple[int, int]]:
        return [(i, t) for i, t in enumerate(self.total_lengths) if t > self.context_length]

    @property
    def over_context(self) -> int:
        return len(self.over_context_entries)


def length_stats(
    data: Sequence[Entry],
    tokenizer,
    prompt_style: str = "alpaca",
    context_length: int = GPT2_CONTEXT_LENGTH,
) -> LengthStats:
    """Token lengths of ``data`` under ``prompt_style``, encoded as ``InstructionDataset`` does.

    A literal ``<|endoftext|>`` in the text counts as plain text (see ``llmdefinitions.data``).
    """
    style = get_prompt_style(prompt_style)

    def count(text: str) -> int:
        return len(encode_text(tokenizer, text))

    prompts = [count(style.prompt(entry)) for entry in data]
    responses = [count(style.response_prefix + entry["output"]) for entry in data]
    totals = full_text_lengths(data, tokenizer, prompt_style)
    return LengthStats(prompt_style, context_length, prompts, responses, totals)


def full_text_lengths(data: Sequence[Entry], tokenizer, prompt_style: str = "alpaca") -> List[int]:
    """Tokens of each entry's prompt + response, encoded exactly as ``InstructionDataset`` does."""
    style = get_prompt_style(prompt_style)
    return [len(encode_text(tokenizer, style.full_text(entry))) for entry in data]


def overlength_entries(entries: Sequence[Entry], tokenizer, max_length: int,
                       prompt_style: str = "alpaca") -> List[Tuple[int, int]]:
    """``(index, length)`` of the entries longer than ``max_length`` tokens (prompt + response).

    The collate function appends the end-of-text token and then cuts inputs and
    targets at ``max_length`` (``allowed_max_length``): for such an entry the tail of
    its response and the end-of-text are cut, so they never reach the loss (with
    instruction masking, a long prompt can leave no response token at all). The
    trainer can call this to warn before training.
    """
    return [(i, length) for i, length in enumerate(full_text_lengths(entries, tokenizer, prompt_style))
            if length > max_length]


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
        t = format_decimal(self.near_threshold, 2)
        out = ["Relatório de qualidade dos dados", "=" * 32, ""]
        rows = [
            ("Amostras", [self.splits[s].size for s in names]),
            ("Duplicatas exatas: grupos", [len(self.splits[s].exact_duplicates) for s in names]),
            ("Duplicatas exatas: cópias a mais", [self.splits[s].exact_copies for s in names]),
            ("Mesma instrução+entrada: cópias a mais", [self.splits[s].prompt_copies for s in names]),
            (f"Quase duplicatas (Jaccard >= {t}): pares", [len(self.splits[s].near_duplicates) for s in names]),
        ]
        out += text_table(["", *(SPLIT_LABELS[s] for s in names)], [[label, *vals] for label, vals in rows])
        out += ["", f"Sobreposição entre partições (itens; quase = Jaccard >= {t} de {self.n}-gramas de caracteres)"]
        header = ["", "exatos", "mesma instrução+entrada", "quase"]
        overlaps = [
            ("Itens de teste também no treino", self.test_in_train),
            ("Itens de validação também no treino", self.val_in_train),
            ("Itens de teste também na validação", self.test_in_val),
        ]
        out += text_table(header, [[label, o.exact_items, o.prompt_items, o.near_items] for label, o in overlaps])
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
                    format_decimal(summary.min, 0), format_decimal(summary.median, 1), format_decimal(summary.mean, 1),
                    format_decimal(summary.p95, 1), format_decimal(summary.max, 0), over,
                ])
        out += text_table(header, table)
        out += ["", *self._overlength_lines(with_lengths)]
        return "\n".join(out)

    def _overlength_lines(self, names: Sequence[str], shown: int = 20) -> List[str]:
        """Which entries (split and index) the collate function cuts, not only how many."""
        ctx = self.splits[names[0]].lengths.context_length
        title = (f"Amostras mais longas que o contexto ({ctx} tokens): o collate corta o fim da "
                 "resposta, que não entra na perda")
        lines = []
        for name in (s for s in names if s != "all"):
            entries = self.splits[name].lengths.over_context_entries
            if entries:
                listed = ", ".join(f"#{i} ({_thousands(t)} tokens)" for i, t in entries[:shown])
                more = f" … e mais {len(entries) - shown}" if len(entries) > shown else ""
                lines.append(f"  {SPLIT_LABELS[name]}: {listed}{more}")
        return [f"{title}:", *lines] if lines else [f"{title}: nenhum."]

    def __str__(self) -> str:
        return self.to_table()


def _thousands(value: int) -> str:
    """``1130`` -> ``"1.130"`` (pt-BR thousands dot)."""
    return f"{value:,}".replace(",", ".")


def _split_overlap(train, other, near: List[Overlap]) -> SplitOverlap:
    return SplitOverlap(exact=overlap(train, other), prompt=overlap(train, other, fields=PROMPT_FIELDS),
                        near=near)


def quality_report(
    train: Sequence[Entry],
    val: Sequence[Entry],
    test: Sequence[Entry],
    tokenizer=None,
    near_threshold: float = 0.9,
    n: int = 3,
    prompt_style: str = "alpaca",
    context_length: int = GPT2_CONTEXT_LENGTH,
    progress: Optional[bool] = None,
) -> QualityReport:
    """Duplicates in each split, val/test items also in train, and (with ``tokenizer``) lengths.

    ``progress`` shows the near-duplicate join's bars (default: only from 20,000 entries).
    """
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
    # One near-duplicate join over train + val + test gives every split's pairs and
    # every overlap between splits (the join is the expensive step: done once).
    join = _NearJoin([entry_key(entry) for entry in parts["all"]], near_threshold, n, progress)
    bounds = {"train": (0, len(train)), "val": (len(train), len(train) + len(val)),
              "test": (len(train) + len(val), len(parts["all"])), "all": (0, len(parts["all"]))}
    splits = {
        name: SplitQuality(
            size=len(data),
            exact_duplicates=exact_duplicates(data),
            prompt_duplicates=exact_duplicates(data, fields=PROMPT_FIELDS),
            near_duplicates=join.within(*bounds[name]),
            lengths=lengths[name],
        )
        for name, data in parts.items()
    }
    return QualityReport(
        splits=splits,
        test_in_train=_split_overlap(parts["train"], parts["test"], join.across(bounds["train"], bounds["test"])),
        val_in_train=_split_overlap(parts["train"], parts["val"], join.across(bounds["train"], bounds["val"])),
        test_in_val=_split_overlap(parts["val"], parts["test"], join.across(bounds["val"], bounds["test"])),
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
