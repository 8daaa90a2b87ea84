"""The instruction dataset: download, validation, split, tokenization and batching.

Text is encoded with the course's one rule (:func:`llmdefinitions.tokenizer.encode_text`):
a literal ``<|endoftext|>`` inside an entry is ordinary text, never the control token.
The only end-of-text in a training sequence is the one the collate appends as a target;
and padding is found by **position** (the sequence length), so even an end-of-text id
inside the content cannot move the loss mask.
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


def validate_entries(data, source: str = "dataset", fields: Sequence[str] = REQUIRED_FIELDS) -> list:
    """Check that ``data`` is a non-empty list of entries with the text ``fields``.

    ``fields`` defaults to the instruction dataset's three; the preference data of DPO
    passes its own (:func:`llmdefinitions.dpo_data.validate_preference_entries`).
    Raises :class:`DatasetError` naming ``source``, the entry index and the field.
    """
    if not isinstance(data, list):
        raise DatasetError(f"'{source}' deve conter uma lista JSON de entradas, mas contém {type(data).__name__}.")
    if not data:
        raise DatasetError(f"'{source}' não contém nenhuma entrada (lista vazia).")
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DatasetError(f"Entrada {index} de '{source}': deve ser um objeto JSON, mas é {type(entry).__name__}.")
        for field in fields:
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
    """As in the book: download ``url`` to ``file_path`` unless it exists, then load it.

    Goes through the shared downloader (offline mirror, progress, verification; it writes
    atomically, so errors name ``file_path`` itself). A downloaded file that is not a
    valid dataset is not kept; an existing file is never overwritten.
    """
    file_path = Path(file_path)
    if not file_path.exists():
        download_file(url, file_path)
        try:
            return load_instruction_file(file_path)
        except Exception:
            file_path.unlink(missing_ok=True)
            raise
    return load_instruction_file(file_path)


class DataSplit(NamedTuple):
    """Train / test / validation parts, in the book's order of unpacking."""

    train: list
    test: list
    val: list


def split_data(data: Sequence, train_frac: float = 0.85, test_frac: float = 0.10,
               shuffle: bool = False, seed: int = 123) -> DataSplit:
    """The book's 85/10/5 split: ``train_data, test_data, val_data = split_data(data)``.

    Sizes follow the book exactly (``int(n*0.85)``, ``int(n*0.1)``, the rest).
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


class Sample(NamedTuple):
    """One tokenized training sample: the prompt + response ids, and the prompt's length.

    The one item type of the course: :class:`InstructionDataset` gives ``Sample`` s when
    asked for prompt lengths (instruction masking), plain id lists otherwise (as in the
    book); every collate function accepts both, through :func:`as_sample`.
    """

    token_ids: List[int]
    prompt_length: Optional[int] = None     # tokens of instruction + input (masked with masking)


def as_sample(item) -> Sample:
    """``item`` as a :class:`Sample`: a ``Sample`` as is, a list of token ids with no prompt length."""
    if isinstance(item, Sample):
        return item
    if isinstance(item, torch.Tensor):
        item = item.tolist()
    if isinstance(item, (list, tuple)) and all(isinstance(t, int) for t in item[:1]):
        return Sample(list(item), None)
    raise TypeError(f"Item de lote inesperado ({type(item).__name__}): use uma lista de ids de tokens "
                    "ou um Sample(token_ids, prompt_length) de InstructionDataset.")


class InstructionDataset(Dataset):
    """Pre-tokenized prompt + response of every entry (as in the book).

    ``prompt_style`` picks the format (``"alpaca"`` or ``"phi3"``). With
    ``return_prompt_length=True`` each item is a :class:`Sample` ``(token_ids,
    prompt_length)``, which the collate uses for instruction masking; ``prompt_length``
    counts the tokens of the instruction and input (the response header is not masked).
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
            # book, generation starts from the prompt alone.
            prompt_ids = encode_text(tokenizer, self.style.prompt(entry))
            self.encoded_texts.append(full_ids)
            self.prompt_lengths.append(common_prefix_length(full_ids, prompt_ids))

    def __getitem__(self, index: int):
        if self.return_prompt_length:
            return Sample(self.encoded_texts[index], self.prompt_lengths[index])
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items ``a`` and ``b`` share.

    A prompt's length is counted this way on the tokenized *full* text (its common prefix
    with the tokenized prompt), so a token that BPE merges across the boundary counts as
    response, never silently as prompt.
    """
    return len(os.path.commonprefix([list(a), list(b)]))   # the same rule as generation.common_prefix


def sample_inputs_and_targets(item, pad_token_id: int = END_OF_TEXT_ID, ignore_index: int = IGNORE_INDEX,
                              max_length: Optional[int] = None,
                              mask_instruction: bool = False) -> Tuple[List[int], List[int]]:
    """The one rule that turns a sample into its inputs and targets (no padding).

    Inputs are the sample's ``L`` tokens; targets are the inputs shifted by one, with
    the end-of-text (``pad_token_id``) as the target of the last token. With
    ``mask_instruction`` the targets that predict prompt tokens are ``ignore_index``.
    A sample longer than ``max_length`` keeps its first ``max_length`` positions (as
    the book's ``allowed_max_length`` cuts a row). :func:`custom_collate_fn` pads these;
    :mod:`llmdefinitions.packing` places several of them in one row.
    """
    ids, prompt_length = as_sample(item)
    inputs = [int(t) for t in ids]
    if not inputs:
        raise ValueError("Uma amostra do lote está vazia (nenhum token).")
    targets = inputs[1:] + [pad_token_id]
    if mask_instruction:
        if prompt_length is None:
            raise ValueError("mask_instruction=True requer itens Sample(token_ids, prompt_length): "
                             "use InstructionDataset(..., return_prompt_length=True).")
        n = min(max(prompt_length - 1, 0), len(targets))
        targets[:n] = [ignore_index] * n
    if max_length is not None:
        inputs, targets = inputs[:max_length], targets[:max_length]
    return inputs, targets


def custom_collate_fn(
    batch,
    pad_token_id: int = END_OF_TEXT_ID,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: Optional[int] = None,
    device="cpu",
    mask_instruction: bool = False,
):
    """Pad, shift and mask a batch of samples (the book's function, edge cases fixed).

    Each row is :func:`sample_inputs_and_targets` of its sample, padded with
    ``pad_token_id`` (inputs) and ``ignore_index`` (targets) to the longest row. Padding
    is found by position, not by token value, so a ``pad_token_id`` inside the content
    keeps its target (the book's version masks it). A row left with no target is
    reported with a warning.
    """
    rows = [sample_inputs_and_targets(item, pad_token_id, ignore_index, allowed_max_length,
                                      mask_instruction) for item in batch]
    if not rows:
        raise ValueError("custom_collate_fn recebeu um lote vazio.")
    width = max(len(inputs) for inputs, _ in rows)       # = batch_max_length - 1 in the book
    inputs = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    targets = torch.full((len(rows), width), ignore_index, dtype=torch.long)
    for row, (row_inputs, row_targets) in enumerate(rows):
        inputs[row, :len(row_inputs)] = torch.tensor(row_inputs, dtype=torch.long)
        targets[row, :len(row_targets)] = torch.tensor(row_targets, dtype=torch.long)
    empty = (targets == ignore_index).all(dim=1).nonzero().flatten().tolist()
    if empty:
        warnings.warn(
            f"As amostras {empty} do lote ficaram sem nenhum token-alvo (tudo {ignore_index}), "
            "provavelmente porque o prompt é maior que allowed_max_length; elas não contribuem para a perda.",
            RuntimeWarning, stacklevel=2,
        )
    return inputs.to(device), targets.to(device)
