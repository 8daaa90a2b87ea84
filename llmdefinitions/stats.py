"""Uncertainty of evaluation numbers: bootstrap intervals and paired comparisons.

A mean over 110 test items is an estimate, not a fact: with per-item standard
deviations of 30-45 points a judge's average moves by several points from one
sample of items to another. Every evaluation number the course reports comes with
a 95 % interval from here, and two models scored on the same items are compared
item by item (paired), which is far more sensitive than comparing two intervals.

The resampling itself is SciPy's (``scipy.stats.bootstrap`` and
``scipy.stats.permutation_test``); this module only fixes the choices (percentile
bootstrap, a fixed RNG seed so reports are reproducible, paired sign-flip
permutations) and names the results.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 123


@dataclass(frozen=True)
class Interval:
    """An estimate (the mean) with its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = DEFAULT_CONFIDENCE

    def __str__(self) -> str:
        percent = f"{self.confidence:.0%}".replace(".", ",")
        return (f"{format_decimal(self.estimate)} (IC {percent}: {format_decimal(self.low)} a "
                f"{format_decimal(self.high)}; n = {self.n})")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same items: mean difference A - B, its interval, p-value."""

    mean_a: float
    mean_b: float
    difference: Interval
    p_value: float            # two-sided paired permutation test (sign flips of the differences)
    n: int

    @property
    def significant(self) -> bool:
        """True when the interval of the difference excludes zero (at its confidence level)."""
        return not (self.difference.low <= 0.0 <= self.difference.high)

    def __str__(self) -> str:
        verdict = ("diferença significativa" if self.significant
                   else "sem diferença significativa")
        return (f"A - B = {self.difference}; p = {format_decimal(self.p_value, 4)} "
                f"(permutação pareada) → {verdict}")

    def to_dict(self) -> dict:
        return {"mean_a": self.mean_a, "mean_b": self.mean_b, "difference": self.difference.to_dict(),
                "p_value": self.p_value, "n": self.n, "significant": self.significant}


def format_decimal(value: float, digits: int = 2) -> str:
    """``12.345`` -> ``"12,35"``: pt-BR decimal comma for prose and tables."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}".replace(".", ",")


def format_thousands(value: int) -> str:
    """``406286336`` -> ``"406.286.336"``: pt-BR thousands separator for counts in prose and tables."""
    return f"{int(value):,}".replace(",", ".")


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray([float(v) for v in values], dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: é preciso ao menos um valor para calcular um intervalo.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: há valores ausentes ou infinitos; retire-os antes (e diga quantos).")
    return array


def bootstrap_mean(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE,
                   n_resamples: int = DEFAULT_RESAMPLES, seed: Optional[int] = DEFAULT_SEED) -> Interval:
    """The mean of ``values`` with a percentile bootstrap interval (items resampled with replacement).

    All values equal (or a single value) give a zero-width interval: resampling
    cannot move the mean.
    """
    from scipy import stats

    array = _as_array(values, "bootstrap_mean")
    mean = float(array.mean())
    if array.size == 1 or np.all(array == array[0]):
        return Interval(mean, mean, mean, int(array.size), confidence)
    result = stats.bootstrap((array,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                             method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    ci = result.confidence_interval
    return Interval(mean, float(ci.low), float(ci.high), int(array.size), confidence)


def paired_comparison(values_a: Sequence[float], values_b: Sequence[float],
                      confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                      seed: Optional[int] = DEFAULT_SEED) -> PairedComparison:
    """Compare two models scored on the same items (``values_a[i]`` and ``values_b[i]`` are item i).

    The difference of means gets a bootstrap interval over the per-item differences,
    and a two-sided p-value from a paired permutation test (under "no difference"
    each item's two scores are exchangeable, so the sign of its difference is random).
    """
    from scipy import stats

    a, b = _as_array(values_a, "modelo A"), _as_array(values_b, "modelo B")
    if a.size != b.size:
        raise ValueError(f"Comparação pareada: {a.size} notas para A e {b.size} para B; "
                         "as listas precisam ter um valor por item, na mesma ordem.")
    diff = a - b
    difference = bootstrap_mean(diff, confidence, n_resamples, seed)
    if np.all(diff == 0):
        p_value = 1.0
    else:
        result = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                                        permutation_type="samples", n_resamples=n_resamples,
                                        alternative="two-sided", vectorized=True,
                                        random_state=np.random.default_rng(seed))
        p_value = float(result.pvalue)
    return PairedComparison(float(a.mean()), float(b.mean()), difference, p_value, int(a.size))


__all__ = ["Interval", "PairedComparison", "bootstrap_mean", "paired_comparison", "format_decimal",
           "format_thousands",
           "DEFAULT_CONFIDENCE", "DEFAULT_RESAMPLES", "DEFAULT_SEED"]
