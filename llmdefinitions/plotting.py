"""Plots of the course: loss curves (and, from the judge, score histograms)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import matplotlib

PathLike = Union[str, Path]


def _pyplot():
    import matplotlib.pyplot as plt
    return plt


def finish_figure(fig, save_path: Optional[PathLike] = None, show: bool = True):
    """Tight layout, optional atomic save (format from the extension), optional show; returns ``fig``."""
    from .io import atomic_write

    fig.tight_layout()
    if save_path is not None:
        fmt = Path(save_path).suffix.lstrip(".") or "png"
        atomic_write(save_path, lambda f: fig.savefig(f, format=fmt), mode="wb")
    if show:
        _pyplot().show()
    return fig


def plot_losses(
    epochs_seen: Sequence[float],
    tokens_seen: Sequence[int],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
    save_path: Optional[PathLike] = None,
    show: bool = True,
):
    """Training and validation loss against epochs, with tokens seen on a second x-axis.

    As in the book, with labels in Portuguese; ``save_path`` also writes the figure (PNG,
    PDF or SVG by extension). Returns the matplotlib figure.
    """
    plt = _pyplot()
    epochs_seen = [float(e) for e in epochs_seen]
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_losses, label="Perda de treino")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="Perda de validação")
    ax1.set_xlabel("Épocas")
    ax1.set_ylabel("Perda")
    ax1.legend(loc="upper right")
    ax1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    # A second x-axis with the number of tokens seen; invisible plot aligns the ticks.
    ax2 = ax1.twiny()
    ax2.plot(list(tokens_seen), train_losses, alpha=0)
    ax2.set_xlabel("Tokens vistos")
    return finish_figure(fig, save_path, show)


def plot_score_histogram(
    scores: Sequence,
    save_path: Optional[PathLike] = None,
    show: bool = True,
    bins: Optional[Sequence[float]] = None,
    title: Optional[str] = None,
):
    """Histogram of the judge's scores, with a dashed line at the mean.

    ``scores`` holds ints (``None`` = item without a score, left out and counted
    in the title) or ``judge.ScoreResult`` objects, or is a ``judge.ScoreList``.
    Bins default to 0–100 in steps of 10, or one bar per value for a 1–5 rubric.
    Returns the matplotlib figure.
    """
    items = getattr(scores, "results", scores)
    values = [getattr(s, "score", s) for s in items]
    present = [float(v) for v in values if v is not None]
    if bins is None:
        small_scale = bool(present) and min(present) >= 1 and max(present) <= 5
        bins = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] if small_scale else list(range(0, 101, 10))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(present, bins=bins, edgecolor="white")
    if present:
        mean = sum(present) / len(present)
        ax.axvline(mean, color="black", linestyle="--", label=f"média {mean:.1f}".replace(".", ","))
        ax.legend(loc="upper left")
    ax.set_xlabel("Nota do juiz")
    ax.set_ylabel("Itens")
    missing = len(values) - len(present)
    ax.set_title(title or f"{len(present)} de {len(values)} itens com nota"
                 + (f" ({missing} sem nota)" if missing else ""))
    return finish_figure(fig, save_path, show)
