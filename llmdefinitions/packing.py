"""Packing: several samples in one row, and no sample ever sees another.

A batch padded to its longest sample wastes compute on the padding. Packing puts
whole samples one after another in a row instead, up to a length limit, and fills
only the tail of the row with padding. Done naively (concatenate, plain causal
attention, positions running on) it changes what the model computes: the second
sample attends to the first and sees positions it never has alone (see
:func:`naive_concatenation_leak`). Done here, it computes exactly what the
unpacked samples compute:

* **position ids** restart at 0 for every sample;
* **segment ids** (1, 2, ... per sample, 0 for the row's padding tail) make the
  model's attention block-diagonal: a token attends only to earlier tokens of its
  own sample (see :func:`llmdefinitions.model.build_attention_mask`);
* **targets** are those of :func:`llmdefinitions.data.custom_collate_fn` for each
  sample: the next tokens, the sample's own end-of-text target at its last
  position, and ``-100`` for the prompt when ``mask_instruction=True``; the
  padding tail has ``-100`` targets.

The loss of :func:`llmdefinitions.training.calc_loss_batch` is divided by the
number of target tokens, so a packed batch gives the same loss (and the same
gradients) as the same samples padded, up to float rounding.

Two ways to use it with a ``DataLoader``:

* ``collate_fn=packed_collate_fn`` — the usual batches of samples (e.g. the book's
  ``shuffle=True, batch_size=8``), each packed into as few rows as possible: the
  same training as the book, minus the padding;
* ``PackedDataset`` + ``collate_fn=collate_packed_rows`` — the whole dataset packed
  once into rows of up to ``max_length`` tokens; a batch is a number of rows.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from .data import IGNORE_INDEX, as_sample, sample_inputs_and_targets
from .tokenizer import END_OF_TEXT_ID

PACKING_METHODS = ("ffd", "greedy")


class PackedBatch(NamedTuple):
    """A packed batch; a tuple, so ``inputs, targets, position_ids, segment_ids = batch``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor


def pack_lengths(lengths: Sequence[int], max_length: int, method: str = "ffd") -> List[List[int]]:
    """Indices of the samples grouped into rows of at most ``max_length`` tokens each.

    ``method="ffd"`` (first-fit decreasing): longest samples first, each into the
    first row with room; few rows, little padding. ``method="greedy"``: samples in
    their order, a new row whenever the next one does not fit (keeps the order).
    """
    if method not in PACKING_METHODS:
        raise ValueError(f"Método de empacotamento desconhecido: {method!r}. Use {', '.join(PACKING_METHODS)}.")
    if max_length < 1:
        raise ValueError(f"max_length deve ser positivo, mas é {max_length}.")
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    if too_long:
        raise ValueError(f"As amostras {too_long[:10]} têm mais de {max_length} tokens: "
                         "corte-as antes (sample_inputs_and_targets(..., max_length=...)).")
    rows: List[List[int]] = []
    if method == "greedy":
        free = 0
        for i, n in enumerate(lengths):
            if not rows or n > free:
                rows.append([])
                free = max_length
            rows[-1].append(i)
            free -= n
        return rows
    free_space: List[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):   # stable: ties keep order
        n = lengths[i]
        for r, room in enumerate(free_space):
            if n <= room:
                rows[r].append(i)
                free_space[r] -= n
                break
        else:
            rows.append([i])
            free_space.append(max_length - n)
    return rows


def build_packed_batch(rows: Sequence[Sequence[Tuple[Sequence[int], Sequence[int]]]],
                       pad_token_id: int = END_OF_TEXT_ID, ignore_index: int = IGNORE_INDEX,
                       width: Optional[int] = None, device="cpu") -> PackedBatch:
    """Tensors for ``rows``, each a list of ``(inputs, targets)`` samples placed one after another.

    The batch is as wide as its longest row (or ``width``). Sample ``s`` of a row
    (counting from 1) has segment id ``s`` and positions ``0, 1, ...``; the padding
    tail has segment id 0, its own positions from 0, token ``pad_token_id`` and
    targets ``ignore_index``.
    """
    if not rows:
        raise ValueError("Empacotamento: o lote está vazio.")
    used = [sum(len(inp) for inp, _ in row) for row in rows]
    longest = max(used)
    width = longest if width is None else width
    if width < longest:
        raise ValueError(f"width={width} é menor que a linha mais longa ({longest} tokens).")
    inputs = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    targets = torch.full((len(rows), width), ignore_index, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for s, (inp, tgt) in enumerate(row, start=1):
            end = start + len(inp)
            inputs[r, start:end] = torch.as_tensor(inp, dtype=torch.long)
            targets[r, start:end] = torch.as_tensor(tgt, dtype=torch.long)
            positions[r, start:end] = torch.arange(len(inp))
            segments[r, start:end] = s
            start = end
        positions[r, start:] = torch.arange(width - start)    # the tail: its own segment 0
    return PackedBatch(inputs.to(device), targets.to(device), positions.to(device), segments.to(device))


def packed_collate_fn(batch, max_length: int = 1024, pad_token_id: int = END_OF_TEXT_ID,
                      ignore_index: int = IGNORE_INDEX, mask_instruction: bool = False,
                      method: str = "ffd", device="cpu", width: Optional[int] = None) -> PackedBatch:
    """``collate_fn`` that packs a batch of samples into as few rows of ``<= max_length`` tokens as it can.

    The same samples, targets and masks as ``custom_collate_fn(batch,
    allowed_max_length=max_length, mask_instruction=...)``, without its padding.
    ``width`` pads every batch to that fixed width (e.g. for ``torch.compile``).
    """
    samples = [sample_inputs_and_targets(item, pad_token_id, ignore_index, max_length, mask_instruction)
               for item in batch]
    if not samples:
        raise ValueError("packed_collate_fn recebeu um lote vazio.")
    groups = pack_lengths([len(inp) for inp, _ in samples], max_length, method)
    return build_packed_batch([[samples[i] for i in g] for g in groups], pad_token_id, ignore_index,
                              width, device)


class PackedDataset(Dataset):
    """The samples of ``dataset`` packed once into rows of at most ``max_length`` tokens.

    Item ``i`` is the list of samples of row ``i`` (as ``dataset`` gives them);
    batch rows with ``collate_fn=collate_packed_rows`` (same ``max_length``).
    ``rows`` holds the dataset indices of each row.
    """

    def __init__(self, dataset, max_length: int = 1024, method: str = "ffd"):
        self.dataset = dataset
        self.max_length = max_length
        lengths = [min(len(as_sample(dataset[i]).token_ids), max_length) for i in range(len(dataset))]
        self.rows: List[List[int]] = pack_lengths(lengths, max_length, method)
        self.num_tokens = sum(lengths)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> list:
        return [self.dataset[i] for i in self.rows[index]]

    @property
    def fill_ratio(self) -> float:
        """Share of the rows' ``max_length`` slots that hold sample tokens (1.0 = no padding)."""
        return self.num_tokens / (len(self.rows) * self.max_length) if self.rows else 0.0


def collate_packed_rows(rows, max_length: int = 1024, pad_token_id: int = END_OF_TEXT_ID,
                        ignore_index: int = IGNORE_INDEX, mask_instruction: bool = False,
                        device="cpu", width: Optional[int] = None) -> PackedBatch:
    """``collate_fn`` for :class:`PackedDataset`: one batch row per item (a list of samples)."""
    built = [[sample_inputs_and_targets(item, pad_token_id, ignore_index, max_length, mask_instruction)
              for item in row] for row in rows]
    too_long = [r for r, row in enumerate(built) if sum(len(inp) for inp, _ in row) > max_length]
    if too_long:
        raise ValueError(f"As linhas {too_long} do lote passam de {max_length} tokens: "
                         "use o mesmo max_length do PackedDataset.")
    return build_packed_batch(built, pad_token_id, ignore_index, width, device)


class LeakReport(NamedTuple):
    """Largest change of the second sample's logits (see :func:`naive_concatenation_leak`)."""

    naive: float          # plain causal attention over the concatenation: the first sample leaks in
    segmented: float      # segment ids + positions from 0: nothing leaks (0.0)
    segmented_vs_alone: float  # segmented row vs the second sample run on its own


@torch.no_grad()
def naive_concatenation_leak(model, first: Sequence[int], first_changed: Sequence[int],
                             second: Sequence[int]) -> LeakReport:
    """Show that naive concatenation lets one sample contaminate the next, and packing does not.

    ``first`` and ``first_changed`` (same length) are put before ``second`` in one
    row. Naively (plain causal attention, positions running on) the logits of
    ``second`` change when the first sample changes; with segment ids and
    positions restarting at 0 they do not, and they equal ``second`` alone.
    """
    if len(first) != len(first_changed):
        raise ValueError("first e first_changed devem ter o mesmo comprimento.")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        n1, n2 = len(first), len(second)

        def row(a):
            return torch.tensor([list(a) + list(second)], device=device)

        segments = torch.tensor([[1] * n1 + [2] * n2], device=device)
        positions = torch.tensor([list(range(n1)) + list(range(n2))], device=device)
        naive_a, naive_b = model(row(first))[0, n1:], model(row(first_changed))[0, n1:]
        seg_a = model(row(first), position_ids=positions, segment_ids=segments)[0, n1:]
        seg_b = model(row(first_changed), position_ids=positions, segment_ids=segments)[0, n1:]
        alone = model(torch.tensor([list(second)], device=device))[0]
    finally:
        model.train(was_training)
    return LeakReport(float((naive_a - naive_b).abs().max()), float((seg_a - seg_b).abs().max()),
                      float((seg_a - alone).abs().max()))


__all__ = ["PackedBatch", "pack_lengths", "build_packed_batch",
           "packed_collate_fn", "PackedDataset", "collate_packed_rows", "LeakReport",
           "naive_concatenation_leak", "PACKING_METHODS"]
