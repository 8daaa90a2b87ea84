"""What the judge's scores say, with their uncertainty: summaries, comparisons, agreement, repeatability.

* :func:`summarize_scores` — mean (with a 95 % bootstrap interval), median, SD;
* :func:`compare_scores` — two models on the same items: wins/ties/losses and a
  paired test (:func:`llmdefinitions.stats.paired_comparison`);
* :func:`judge_agreement` — two judges on the same items (Pearson, Spearman, Kendall);
* :func:`repeatability` — the same judge k times on the same items.

Scores are given as numbers with ``None`` for an item without a score, or as
results with a ``.score`` (a ``ScoreList`` counts through its ``.results``). Two
lists of different lengths are refused: their item-by-item alignment was lost.
"""
from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..stats import DEFAULT_CONFIDENCE, format_decimal
from .errors import JudgeDependencyError

if TYPE_CHECKING:
    from ..stats import Interval, PairedComparison

ScoreLike = Sequence[Any]   # numbers (None = no score) or objects with .score


def score_values(scores: ScoreLike) -> List[Optional[float]]:
    """Scores as a list with ``None`` for unscored items (a ``ScoreList``: all its items)."""
    items = getattr(scores, "results", scores)
    return [getattr(s, "score", s) for s in items]


@dataclass
class ScoreSummary:
    """Scores of a run: how many, mean with its bootstrap ``interval``, median, (population) SD."""

    n_scored: int
    n_total: int
    mean: Optional[float]
    median: Optional[float]
    std: Optional[float]
    interval: Optional["Interval"] = None

    @property
    def n_missing(self) -> int:
        return self.n_total - self.n_scored

    def __str__(self) -> str:
        if not self.n_scored:
            return f"Nenhuma nota em {self.n_total} itens."
        interval = self.interval
        ci = (f" (IC {interval.confidence:.0%}: {format_decimal(interval.low)} a {format_decimal(interval.high)})"
              if interval is not None else "")
        return (f"Notas: {self.n_scored} de {self.n_total} itens ({self.n_missing} sem nota); "
                f"média {format_decimal(self.mean)}{ci}, mediana {format_decimal(self.median)}, "
                f"desvio padrão {format_decimal(self.std)}")


def summarize_scores(scores: ScoreLike, confidence: float = DEFAULT_CONFIDENCE) -> ScoreSummary:
    """Summary of ``scores``; the mean comes with a percentile bootstrap interval over the items.

    ``std`` is the population standard deviation (``numpy.std`` default, ddof=0).
    """
    from ..stats import bootstrap_mean

    values = score_values(scores)
    present = [float(v) for v in values if v is not None]
    if not present:
        return ScoreSummary(0, len(values), None, None, None)
    return ScoreSummary(len(present), len(values), statistics.fmean(present), statistics.median(present),
                        statistics.pstdev(present), bootstrap_mean(present, confidence))


def _check_aligned(a: Sequence[Any], b: Sequence[Any], what: str) -> None:
    if len(a) != len(b):
        raise ValueError(
            f"As duas listas de notas têm tamanhos diferentes ({len(a)} e {len(b)}): o alinhamento "
            f"item a item se perdeu, então {what} compararia notas de itens diferentes. Isso acontece "
            "quando uma resposta do juiz que não virou nota é descartada (o script original fazia isso). "
            "Guarde uma nota ou um motivo por item (score_responses) ou alinhe pelo índice com align_by_index.")


def _pairs(a: ScoreLike, b: ScoreLike, what: str) -> Tuple[List[float], List[float], int]:
    va, vb = score_values(a), score_values(b)
    _check_aligned(va, vb, what)
    kept = [(x, y) for x, y in zip(va, vb) if x is not None and y is not None]
    return [float(x) for x, _ in kept], [float(y) for _, y in kept], len(va) - len(kept)


@dataclass
class ScoreComparison:
    """Model A vs model B on the same items: ``diffs`` are A − B per item (``None`` if unscored).

    ``paired``: the difference of means with its interval and a paired
    permutation p-value, over the items scored for both (``None`` below 2 items).
    """

    diffs: List[Optional[float]]
    wins: int
    ties: int
    losses: int
    mean_diff: Optional[float]
    n_skipped: int
    paired: Optional["PairedComparison"] = None

    @property
    def significant(self) -> Optional[bool]:
        """Whether the interval of the difference excludes zero (``None`` without a test)."""
        return None if self.paired is None else self.paired.significant

    def __str__(self) -> str:
        mean = "—" if self.mean_diff is None else format_decimal(self.mean_diff)
        text = (f"A vence {self.wins}, empata {self.ties}, perde {self.losses}; diferença média (A − B) "
                f"{mean}; {self.n_skipped} itens sem nota em algum dos dois.")
        return text + (f"\n{self.paired}" if self.paired is not None else "")


def compare_scores(scores_a: ScoreLike, scores_b: ScoreLike,
                   confidence: float = DEFAULT_CONFIDENCE) -> ScoreComparison:
    """Compare two models' scores item by item (same items, same order; refuses other lengths)."""
    from ..stats import paired_comparison

    va, vb = score_values(scores_a), score_values(scores_b)
    _check_aligned(va, vb, "a comparação")
    diffs = [None if x is None or y is None else float(x) - float(y) for x, y in zip(va, vb)]
    present = [d for d in diffs if d is not None]
    a, b, _ = _pairs(va, vb, "a comparação")
    return ScoreComparison(
        diffs=diffs,
        wins=sum(d > 0 for d in present),
        ties=sum(d == 0 for d in present),
        losses=sum(d < 0 for d in present),
        mean_diff=statistics.fmean(present) if present else None,
        n_skipped=len(diffs) - len(present),
        paired=paired_comparison(a, b, confidence) if len(a) >= 2 else None,
    )


@dataclass
class Agreement:
    """Agreement between two judges on the same items."""

    n: int
    pearson: float
    spearman: float
    kendall_tau_b: float
    n_skipped: int = 0

    def __str__(self) -> str:
        return (f"{self.n} itens: Pearson {format_decimal(self.pearson, 5)}, "
                f"Spearman {format_decimal(self.spearman, 5)}, Kendall tau-b {format_decimal(self.kendall_tau_b, 5)} "
                f"({self.n_skipped} itens sem nota ignorados)")


def judge_agreement(scores_a: ScoreLike, scores_b: ScoreLike) -> Agreement:
    """Pearson, Spearman and Kendall tau-b between two judges' scores of the same items.

    Lists of different lengths are refused (pt-BR ``ValueError``): their
    alignment was lost. Items without a score in either list (``None``) are left out.
    """
    try:
        from scipy import stats
    except ImportError:
        raise JudgeDependencyError("judge_agreement precisa do scipy: rode `pip install scipy`.") from None
    a, b, skipped = _pairs(scores_a, scores_b, "a concordância")
    if len(a) < 2:
        raise ValueError(f"São precisos ao menos 2 itens com nota nas duas listas; há {len(a)}.")
    return Agreement(
        n=len(a),
        pearson=float(stats.pearsonr(a, b)[0]),
        spearman=float(stats.spearmanr(a, b)[0]),
        kendall_tau_b=float(stats.kendalltau(a, b, variant="b")[0]),
        n_skipped=skipped,
    )


def align_by_index(
    results_a: Union[Sequence[Any], Mapping[int, Optional[float]]],
    results_b: Union[Sequence[Any], Mapping[int, Optional[float]]],
) -> Tuple[List[float], List[float], List[int]]:
    """Scores of the items scored in both runs, matched by item index.

    Takes results (with ``.index``) or ``{index: score}`` dicts; returns
    ``(scores_a, scores_b, indices)`` ready for :func:`judge_agreement` or
    :func:`compare_scores`.
    """
    map_a, map_b = _by_index(results_a), _by_index(results_b)
    indices = sorted(i for i in map_a.keys() & map_b.keys()
                     if map_a[i] is not None and map_b[i] is not None)
    return [map_a[i] for i in indices], [map_b[i] for i in indices], indices


def _by_index(results: Any) -> Dict[int, Optional[float]]:
    if isinstance(results, Mapping):
        return dict(results)
    mapping: Dict[int, Optional[float]] = {}
    for r in getattr(results, "results", results):
        if r.index in mapping:
            raise ValueError(f"O índice {r.index} aparece duas vezes nos resultados.")
        mapping[r.index] = r.score
    return mapping


# --------------------------------------------------------------------------- repeatability

@dataclass
class Repeatability:
    """How much the same judge's score of the same item moves from one repeat to the next.

    Per item (``indices``: the items scored in every repeat): its ``scores``, their
    ``ranges`` (max − min) and ``stds`` (population SD). Over items:
    ``share_changed`` (items whose score was not the same every time) and
    ``mean_abs_change``, the mean over items of the mean ``|s_i − s_j|`` over pairs
    of repeats, with its bootstrap interval.
    """

    repeats: int
    n_items: int
    n_incomplete: int
    indices: List[int]
    scores: List[List[float]]
    ranges: List[float]
    stds: List[float]
    n_changed: int
    mean_abs_change: Optional["Interval"]

    @property
    def share_changed(self) -> Optional[float]:
        return self.n_changed / self.n_items if self.n_items else None

    @property
    def max_range(self) -> Optional[float]:
        return max(self.ranges) if self.ranges else None

    def __str__(self) -> str:
        if not self.n_items:
            return f"{self.repeats} repetições: nenhum item teve nota em todas ({self.n_incomplete} incompletos)."
        share = format_decimal(100 * self.share_changed, 1)
        return (f"{self.repeats} repetições de {self.n_items} itens: a nota mudou em {self.n_changed} "
                f"({share} %); mudança média entre repetições {self.mean_abs_change} pontos; "
                f"maior amplitude {format_decimal(self.max_range, 0)} pontos; desvio padrão médio por item "
                f"{format_decimal(statistics.fmean(self.stds))}"
                + (f"; {self.n_incomplete} itens sem nota em alguma repetição ficaram de fora." if self.n_incomplete
                   else "."))


def repeatability(runs: Sequence[ScoreLike], confidence: float = DEFAULT_CONFIDENCE) -> Repeatability:
    """:class:`Repeatability` of ``runs``: k lists of scores of the same items, in the same order."""
    from ..stats import bootstrap_mean

    if len(runs) < 2:
        raise ValueError(f"Repetibilidade precisa de ao menos 2 execuções; recebi {len(runs)}.")
    columns = [score_values(run) for run in runs]
    for column in columns[1:]:
        _check_aligned(columns[0], column, "a repetibilidade")
    indices, scores = [], []
    for index, item in enumerate(zip(*columns)):
        if all(v is not None for v in item):
            indices.append(index)
            scores.append([float(v) for v in item])
    changes = [statistics.fmean(abs(x - y) for x, y in itertools.combinations(s, 2)) for s in scores]
    return Repeatability(
        repeats=len(runs), n_items=len(scores), n_incomplete=len(columns[0]) - len(scores),
        indices=indices, scores=scores,
        ranges=[max(s) - min(s) for s in scores],
        stds=[statistics.pstdev(s) for s in scores],
        n_changed=sum(len(set(s)) > 1 for s in scores),
        mean_abs_change=bootstrap_mean(changes, confidence) if changes else None,
    )


__all__ = ["ScoreSummary", "summarize_scores", "ScoreComparison", "compare_scores", "Agreement",
           "judge_agreement", "align_by_index", "Repeatability", "repeatability", "score_values"]
