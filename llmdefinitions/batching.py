"""How training batches are formed.

* :class:`LengthGroupedBatchSampler` — batches of samples of similar length (less
  padding), in random order, every sample once per epoch; use it as
  ``DataLoader(dataset, batch_sampler=..., collate_fn=custom_collate_fn)``;
* :func:`make_train_loader` — the training ``DataLoader`` for a batching mode:
  ``"random"`` (the book's: shuffled batches padded to their longest sample),
  ``"grouped"`` (the sampler above) or ``"packed"`` (the book's shuffled batches,
  each packed by :func:`llmdefinitions.packing.packed_collate_fn`: the same
  training, without the padding);

Which mode a run uses is a field of :class:`llmdefinitions.profiles.Profile` (``batching``).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Iterator, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from .tokenizer import END_OF_TEXT_ID

BATCHING_MODES = ("random", "grouped", "packed")


class LengthGroupedBatchSampler(Sampler[List[int]]):
    """Batches of indices whose samples have similar lengths, for ``DataLoader(batch_sampler=...)``.

    Each epoch (``shuffle=True``): shuffle all indices, cut them into buckets of
    ``batch_size * bucket_size_multiplier``, sort each bucket by length, cut the
    buckets into batches and shuffle the order of the batches. Every index appears
    exactly once per epoch (the last batch may be smaller unless ``drop_last``).
    A smaller multiplier keeps more randomness, a larger one less padding.
    ``shuffle=False``: all indices sorted by length, longest first (e.g. evaluation).

    ``seed=None`` draws the epoch's shuffle from torch's global generator when
    iteration starts (like ``RandomSampler``), so ``torch.manual_seed`` and the
    exact resume of ``trainer.train_model`` apply; an int ``seed`` gives epoch ``e``
    the shuffle of ``seed + e`` (the epoch advances on each pass, or ``set_epoch``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True,
                 seed: Optional[int] = None, bucket_size_multiplier: int = 50,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size deve ser positivo, mas é {batch_size}.")
        if bucket_size_multiplier < 1:
            raise ValueError(f"bucket_size_multiplier deve ser positivo, mas é {bucket_size_multiplier}.")
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_size_multiplier = bucket_size_multiplier
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` on the next pass (only with an int ``seed``)."""
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        generator = torch.Generator()
        if self.seed is None:
            generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        else:
            generator.manual_seed(self.seed + self.epoch)
            self.epoch += 1
        return generator

    def batches(self) -> List[List[int]]:
        """The batches of one epoch (draws the shuffle, as iterating does)."""
        n = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -self.lengths[i])
            batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        else:
            generator = self._generator()
            order = torch.randperm(n, generator=generator).tolist()
            bucket = self.batch_size * self.bucket_size_multiplier
            order = [i for start in range(0, n, bucket)
                     for i in sorted(order[start:start + bucket], key=lambda i: -self.lengths[i])]
            batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def sample_lengths(dataset) -> List[int]:
    """Token count of every sample of ``dataset`` (items ``ids`` or ``(ids, prompt_length)``)."""
    from .data import as_sample

    encoded = getattr(dataset, "encoded_texts", None)
    if encoded is not None and len(encoded) == len(dataset):
        return [len(ids) for ids in encoded]
    return [len(as_sample(dataset[i]).token_ids) for i in range(len(dataset))]


def make_train_loader(dataset, batch_size: int = 8, batching: str = "packed", device="cpu",
                      allowed_max_length: Optional[int] = 1024, mask_instruction: bool = False,
                      shuffle: bool = True, drop_last: bool = True, seed: Optional[int] = None,
                      bucket_size_multiplier: int = 50, pad_token_id: int = END_OF_TEXT_ID,
                      num_workers: int = 0) -> DataLoader:
    """The training ``DataLoader`` for ``batching`` (one of ``"random"``, ``"grouped"``, ``"packed"``).

    ``"random"`` is the book's loader exactly (``shuffle=True, drop_last=True``,
    ``custom_collate_fn``): same batches for the same ``torch.manual_seed``.
    ``"packed"`` takes those same batches and packs each into rows of at most
    ``allowed_max_length`` tokens (1024 if None): batches of 4 tensors. ``"grouped"``
    pads like the book but batches samples of similar length
    (:class:`LengthGroupedBatchSampler`, shuffle drawn from torch's generator
    unless ``seed``).
    """
    from .data import custom_collate_fn
    from .packing import packed_collate_fn

    if batching not in BATCHING_MODES:
        raise ValueError(f"Modo de lotes desconhecido: {batching!r}. Use {', '.join(BATCHING_MODES)}.")
    if batching == "packed":
        collate = partial(packed_collate_fn, max_length=allowed_max_length or 1024,
                          pad_token_id=pad_token_id, mask_instruction=mask_instruction, device=device)
    else:
        collate = partial(custom_collate_fn, pad_token_id=pad_token_id, device=device,
                          allowed_max_length=allowed_max_length, mask_instruction=mask_instruction)
    if batching == "grouped":
        sampler = LengthGroupedBatchSampler(sample_lengths(dataset), batch_size, shuffle=shuffle,
                                            seed=seed, bucket_size_multiplier=bucket_size_multiplier,
                                            drop_last=drop_last)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      collate_fn=collate, num_workers=num_workers)


__all__ = ["LengthGroupedBatchSampler", "sample_lengths", "make_train_loader", "BATCHING_MODES"]
