"""Saving and loading PyTorch files safely: atomic writes, and loads that cannot run code.

``torch.load`` unpickles, and a pickle can call any Python function: a crafted
``.pth`` or checkpoint could run commands when loaded. Every file the course
writes (models, training checkpoints, LoRA adapters) holds only tensors and plain
values (numbers, strings, lists, dicts), so every load here uses
``weights_only=True``, which refuses anything else. A refusal is reported in pt-BR,
without PyTorch's suggestion to retry unsafely.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .io import PathLike, atomic_write


class UnsafeFileError(ValueError):
    """A file holds Python objects other than tensors and plain values: refused, never run."""


def save_tensors(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (a temporary file renamed when complete)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle), mode="wb")


def load_tensors(path: PathLike, map_location="cpu", what: str = "arquivo") -> Any:
    """``torch.load(path, weights_only=True)`` with pt-BR errors naming ``what`` and the file.

    Raises :class:`FileNotFoundError` when missing, :class:`UnsafeFileError` when the file
    would need code to be unpickled, and :class:`ValueError` when it is truncated or not
    a PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what.capitalize()} não encontrado: '{path}'.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafeFileError(
            f"{what.capitalize()} '{path}' recusado por segurança: ele contém objetos Python além de "
            "tensores e números, e carregá-lo poderia executar código. Os arquivos que o curso grava "
            "nunca têm isso; apague-o (ou use --refazer) e gere-o de novo."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{what.capitalize()} '{path}' está corrompido ou incompleto ({first_line}). "
                         "Apague-o e gere-o de novo.") from None


__all__ = ["UnsafeFileError", "save_tensors", "load_tensors"]


def checkpoint_mismatch(path: PathLike, what: str, exc: BaseException) -> ValueError:
    """The one-line pt-BR error for a checkpoint that does not fit this model or run (``what``: "de treino"…)."""
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ValueError(f"O checkpoint {what} '{path}' não corresponde a este modelo/treino "
                      f"({first_line}). Apague-o (ou use --refazer) para recomeçar.")
