"""Preference data for DPO: entries with a ``chosen`` and a ``rejected`` response.

The book's bonus notebook (``ch07/04_preference-tuning-with-dpo``) builds the same
pieces; ours differ where the book's code is wrong or fragile:

* **Which tokens count.** The book masks ``prompt.shape[0] + 2`` tokens ("the 2 newline
  tokens"): a hard-coded offset that holds only for the Alpaca template under GPT-2, and
  only because ``"\\n\\n"`` followed by ``"###"`` happens to split into two ``"\\n"`` tokens
  (alone, ``"\\n\\n"`` is ONE token, 628). It also leaves ``### Response:\\n`` counted as if
  it were part of the answer. We mask by the exact length of the prompt *as it is
  tokenized inside the full sequence* (prompt + response header), so only the response
  tokens count, whatever the prompt style or tokenizer.
* **Stopping.** The book pads with end-of-text but never scores one, so DPO never
  teaches the model where an answer ends. We append end-of-text to every response and
  score it as the response's last token.
"""
from __future__ import annotations

import os
import warnings
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset

from .data import common_prefix_length, download_and_load_file, validate_entries
from .downloads import PREFERENCE_DATASET_URL
from .prompts import get_prompt_style
from .tokenizer import END_OF_TEXT_ID, encode_text

PathLike = Union[str, os.PathLike]

PREFERENCE_FIELDS = ("instruction", "input", "chosen", "rejected")
RESPONSE_KEYS = ("chosen", "rejected")


def validate_preference_entries(data, source: str = "dataset") -> list:
    """Check that ``data`` is a non-empty list of entries with the four text fields.

    Raises :class:`~llmdefinitions.data.DatasetError` (pt-BR) naming ``source``, the
    entry index and the missing or ill-typed field.
    """
    return validate_entries(data, source, fields=PREFERENCE_FIELDS)


def download_and_load_preference_file(file_path: PathLike,
                                      url: str = PREFERENCE_DATASET_URL) -> list:
    """The book's preference file: downloaded unless present (offline mirror first), validated."""
    return validate_preference_entries(download_and_load_file(file_path, url), str(Path(file_path)))


class PreferenceDataset(Dataset):
    """Each entry tokenized once: the prompt, and prompt + response for both responses.

    An item is a dict with ``prompt`` (token ids of the prompt, as in the book),
    ``chosen`` and ``rejected`` (ids of prompt + response header + response) and
    ``chosen_prompt_length`` / ``rejected_prompt_length``: how many leading tokens of
    that sequence are prompt and response header. They are counted on the full
    sequence (its common prefix with the tokenized prompt + header), so a token that
    BPE merges across the boundary counts as response, never silently as prompt.
    """

    def __init__(self, data: Sequence[dict], tokenizer, prompt_style: str = "alpaca"):
        self.data = validate_preference_entries(list(data), "PreferenceDataset")
        style = get_prompt_style(prompt_style)
        self.encoded_texts: List[Dict[str, object]] = []
        for entry in self.data:
            header_ids = encode_text(tokenizer, style.generation_prompt(entry))
            item: Dict[str, object] = {"prompt": encode_text(tokenizer, style.prompt(entry))}
            for key in RESPONSE_KEYS:
                full_ids = encode_text(tokenizer, style.generation_prompt(entry) + entry[key])
                item[key] = full_ids
                item[f"{key}_prompt_length"] = common_prefix_length(full_ids, header_ids)
            self.encoded_texts.append(item)

    def __getitem__(self, index: int) -> Dict[str, object]:
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.encoded_texts)


def preference_collate_fn(
    batch,
    pad_token_id: int = END_OF_TEXT_ID,
    allowed_max_length: Optional[int] = None,
    mask_prompt_tokens: bool = True,
    device="cpu",
) -> Dict[str, object]:
    """Pad a batch of :class:`PreferenceDataset` items; the book's dict, masks made exact.

    Returns ``prompt`` (list of 1-D tensors), ``chosen`` and ``rejected`` (``(B, T)``,
    one common width so both can go through the model as one batch) and
    ``chosen_mask`` / ``rejected_mask`` (``True`` where a token is scored). Each
    response gets one end-of-text token (``pad_token_id``, as in
    :func:`~llmdefinitions.data.custom_collate_fn`), which is scored: the model learns to
    stop. With ``mask_prompt_tokens`` the prompt and the response header are not scored
    (they are the same in both responses, so they would only dilute a mean); padding
    never is. Masks are set by position, so an end-of-text id inside a text cannot
    move them. A row left with nothing scored (``allowed_max_length`` cut it) is
    reported with a warning.
    """
    if not batch:
        raise ValueError("preference_collate_fn recebeu um lote vazio.")
    width = max(len(item[key]) + 1 for item in batch for key in RESPONSE_KEYS)
    out: Dict[str, object] = {"prompt": [torch.as_tensor(item["prompt"], dtype=torch.long)
                                         for item in batch]}
    for key in RESPONSE_KEYS:
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, item in enumerate(batch):
            length = len(item[key])
            ids[row, :length] = torch.as_tensor(item[key], dtype=torch.long)
            first_scored = item[f"{key}_prompt_length"] if mask_prompt_tokens else 0
            mask[row, first_scored:length + 1] = True      # response + its end-of-text
        if allowed_max_length is not None:
            ids, mask = ids[:, :allowed_max_length], mask[:, :allowed_max_length]
        # Position 0 is never a label (nothing predicts it): a row needs a True after it.
        empty = (~mask[:, 1:].any(dim=1)).nonzero().flatten().tolist()
        if empty:
            warnings.warn(f"As amostras {empty} do lote ficaram sem nenhum token de resposta em "
                          f"'{key}' (provavelmente cortadas por allowed_max_length).",
                          RuntimeWarning, stacklevel=2)
        out[key], out[f"{key}_mask"] = ids.to(device), mask.to(device)
    return out


def make_preference_loader(data: Sequence[dict], tokenizer, batch_size: int = 8,
                           shuffle: bool = False, drop_last: bool = False, device="cpu",
                           allowed_max_length: Optional[int] = 1024,
                           mask_prompt_tokens: bool = True, prompt_style: str = "alpaca",
                           pad_token_id: int = END_OF_TEXT_ID, num_workers: int = 0) -> DataLoader:
    """``DataLoader`` of :class:`PreferenceDataset` batches, as the book builds its three loaders.

    The book uses ``batch_size=8``, ``shuffle=True, drop_last=True`` for training and
    ``allowed_max_length=1024`` (GPT-2's context).
    """
    collate = partial(preference_collate_fn, pad_token_id=pad_token_id, device=device,
                      allowed_max_length=allowed_max_length, mask_prompt_tokens=mask_prompt_tokens)
    return DataLoader(PreferenceDataset(data, tokenizer, prompt_style), batch_size=batch_size,
                      shuffle=shuffle, drop_last=drop_last, collate_fn=collate,
                      num_workers=num_workers)
