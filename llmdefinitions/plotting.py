"""Plots of the course: loss curves (and, from the judge, score histograms)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import matplotlib

PathLike = Union[str, Path]


def _pyplot():
    import matplotlib.pyplot as plt
    return plt


def plot_losses(
    epochs_seen: Sequence[float],
    tokens_seen: Sequence[int],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
    save_path: Optional[PathLike] = None,
    show: bool = True,
):
    """Training and validation loss against epochs, with tokens seen on a second x-axis.

    As in the seed; ``save_path`` also writes the figure (PNG, PDF or SVG by extension).
    Returns the matplotlib figure.
    """
    plt = _pyplot()
    epochs_seen = [float(e) for e in epochs_seen]
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_losses, label="Training loss")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    # A second x-axis with the number of tokens seen; invisible plot aligns the ticks.
    ax2 = ax1.twiny()
    ax2.plot(list(tokens_seen), train_losses, alpha=0)
    ax2.set_xlabel("Tokens seen")
    fig.tight_layout()
    if save_path is not None:
        from .io import atomic_write
        fmt = Path(save_path).suffix.lstrip(".") or "png"
        atomic_write(save_path, lambda f: fig.savefig(f, format=fmt), mode="wb")
    if show:
        plt.show()
    return fig
