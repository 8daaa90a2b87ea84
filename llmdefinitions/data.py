"""The instruction dataset: download, validation, split, tokenization and batching.

Rule for a literal ``<|endoftext|>`` written inside an entry: it is encoded as ordinary
text (``disallowed_special=()``), never as the control token 50256. The only 50256 in a
training sequence is the end-of-text that :func:`custom_collate_fn` appends; and the
collate decides where padding starts by **position** (the sequence length), so even a
50256 inside the content cannot move the loss mask.
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from .downloads import DATASET_URL, download_file
from .io import read_json
from .prompts import get_prompt_style
from .tokenizer import END_OF_TEXT_ID, encode_text

PathLike = Union[str, os.PathLike]
REQUIRED_FIELDS = ("instruction", "input", "output")
IGNORE_INDEX = -100   # targets with this value do not count in the loss (PyTorch's default)


class DatasetError(ValueError):
    """The dataset file or one of its entries is not valid (message in pt-BR)."""


def validate_entries(data, source: str = "dataset") -> list:
    """Check that ``data`` is a non-empty list of entries with the three text fields.

    Raises :class:`DatasetError` naming ``source``, the entry index and the field.
    """
    if not isinstance(data, list):
        raise DatasetError(f"'{source}' deve conter uma lista JSON de entradas, mas contém {type(data).__name__}.")
    if not data:
        raise DatasetError(f"'{source}' não contém nenhuma entrada (lista vazia).")
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DatasetError(f"Entrada {index} de '{source}': deve ser um objeto JSON, mas é {type(entry).__name__}.")
        for field in REQUIRED_FIELDS:
            if field not in entry:
                raise DatasetError(f"Entrada {index} de '{source}': falta o campo '{field}'.")
            if not isinstance(entry[field], str):
                raise DatasetError(
                    f"Entrada {index} de '{source}': o campo '{field}' deve ser texto (str), "
                    f"mas é {type(entry[field]).__name__}."
                )
    return data


def load_instruction_file(file_path: PathLike) -> list:
    """Read and validate a JSON file of instruction entries (UTF-8)."""
    data = read_json(file_path)
    return validate_entries(data, str(file_path))


def download_and_load_file(file_path: PathLike, url: str = DATASET_URL) -> list:
    """As in the seed: download ``url`` to ``file_path`` unless it exists, then load it.

    Goes through the shared downloader (offline mirror, progress, verification). A
    downloaded file that is not a valid dataset is not kept; an existing file is
    never overwritten.
    """
    file_path = Path(file_path)
    if not file_path.exists():
        tmp = file_path.with_name(file_path.name + ".download")
        download_file(url, tmp)
        try:
            load_instruction_file(tmp)
        except Exception:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, file_path)
    return load_instruction_file(file_path)


class DataSplit(NamedTuple):
    """Train / test / validation parts, in the seed's order of unpacking."""

    train: list
    test: list
    val: list


def split_data(data: Sequence, train_frac: float = 0.85, test_frac: float = 0.10,
               shuffle: bool = False, seed: int = 123) -> DataSplit:
    """The seed's 85/10/5 split: ``train_data, test_data, val_data = split_data(data)``.

    Sizes follow the seed exactly (``int(n*0.85)``, ``int(n*0.1)``, the rest).
    ``shuffle=True`` shuffles a copy first with ``random.Random(seed)``.
    """
    items = list(data)
    if shuffle:
        random.Random(seed).shuffle(items)
    train_portion = int(len(items) * train_frac)
    test_portion = int(len(items) * test_frac)
    return DataSplit(items[:train_portion],
                     items[train_portion:train_portion + test_portion],
                     items[train_portion + test_portion:])


class InstructionDataset(Dataset):
    """Pre-tokenized prompt + response of every entry (as in the seed).

    ``prompt_style`` picks the format (``"alpaca"`` or ``"phi3"``). With
    ``return_prompt_length=True`` each item is ``(token_ids, prompt_length)``, which
    :func:`custom_collate_fn` uses for instruction masking; ``prompt_length`` counts
    the tokens of the instruction and input (the response header is not masked).
    """

    def __init__(self, data: Sequence[dict], tokenizer, prompt_style: str = "alpaca",
                 return_prompt_length: bool = False):
        self.data = data
        self.style = get_prompt_style(prompt_style)
        self.return_prompt_length = return_prompt_length
        self.encoded_texts: List[List[int]] = []
        self.prompt_lengths: List[int] = []
        for entry in data:
            full_ids = encode_text(tokenizer, self.style.full_text(entry))
            # Masking covers the instruction (and input) only: the response header is
            # trained, so a model trained with masking still writes it when, as in the
            # seed, generation starts from the prompt alone.
            prompt_ids = encode_text(tokenizer, self.style.prompt(entry))
            self.encoded_texts.append(full_ids)
            self.prompt_lengths.append(_common_prefix_length(full_ids, prompt_ids))

    def __getitem__(self, index: int):
        if self.return_prompt_length:
            return self.encoded_texts[index], self.prompt_lengths[index]
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _split_item(item) -> Tuple[Sequence[int], Optional[int]]:
    if (isinstance(item, tuple) and len(item) == 2 and not isinstance(item[0], int)
            and isinstance(item[1], int)):
        return item[0], item[1]
    return item, None


def custom_collate_fn(
    batch,
    pad_token_id: int = 50256,
    ignore_index: int = -100,
    allowed_max_length: Optional[int] = None,
    device="cpu",
    mask_instruction: bool = False,
):
    """Pad, shift and mask a batch of token-id lists (the seed's function, edge cases fixed).

    For an item of length ``L`` the inputs are the ``L`` tokens then padding; the
    targets are the inputs shifted by one, the end-of-text (``pad_token_id``) at
    position ``L - 1``, and ``ignore_index`` after it. Padding is found by position,
    so a ``pad_token_id`` inside the content keeps its target. With
    ``mask_instruction=True`` (items ``(ids, prompt_length)``), the targets that
    predict prompt tokens are ``ignore_index`` too. A row left with no target is
    reported with a warning.
    """
    items = [_split_item(item) for item in batch]
    if not items:
        raise ValueError("custom_collate_fn recebeu um lote vazio.")
    width = max(len(ids) for ids, _ in items)       # = batch_max_length - 1 in the seed
    inputs = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    targets = torch.full((len(items), width), ignore_index, dtype=torch.long)
    for row, (ids, prompt_length) in enumerate(items):
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        length = len(ids)
        if length == 0:
            raise ValueError(f"custom_collate_fn: a amostra {row} do lote está vazia.")
        inputs[row, :length] = ids
        targets[row, :length - 1] = ids[1:]
        targets[row, length - 1] = pad_token_id      # the one end-of-text target
        if mask_instruction:
            if prompt_length is None:
                raise ValueError("mask_instruction=True requer itens (ids, prompt_length): "
                                 "use InstructionDataset(..., return_prompt_length=True).")
            targets[row, :max(prompt_length - 1, 0)] = ignore_index
    if allowed_max_length is not None:
        inputs = inputs[:, :allowed_max_length]
        targets = targets[:, :allowed_max_length]
    empty = (targets == ignore_index).all(dim=1).nonzero().flatten().tolist()
    if empty:
        warnings.warn(
            f"As amostras {empty} do lote ficaram sem nenhum token-alvo (tudo {ignore_index}), "
            "provavelmente porque o prompt é maior que allowed_max_length; elas não contribuem para a perda.",
            RuntimeWarning, stacklevel=2,
        )
    return inputs.to(device), targets.to(device)


def target_token_count(targets: torch.Tensor, ignore_index: int = -100) -> int:
    """Number of positions that count in the loss."""
    return int((targets != ignore_index).sum())
