"""Packing: rows, masks, loss and gradients equal to the unpacked samples, no leak across samples."""
import pytest
import torch
from torch.utils.data import DataLoader

from llmdefinitions.data import InstructionDataset, Sample, custom_collate_fn, sample_inputs_and_targets
from helpers import tiny_config, tiny_gpt
from llmdefinitions.packing import (PackedDataset, build_packed_batch, collate_packed_rows,
                                    naive_concatenation_leak, pack_lengths, packed_collate_fn)
from llmdefinitions.trainer import batch_loss, loss_sum_and_count

CFG = tiny_config(context_length=256, emb_dim=16)
EOS = 50256


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(entries, gpt2_tokenizer):
    """Real samples of very different lengths: the 4 shortest and the 4 longest entries, and 2 others."""
    full = InstructionDataset(entries, gpt2_tokenizer, return_prompt_length=True)
    order = sorted(range(len(full)), key=lambda i: len(full.encoded_texts[i]))
    picked = order[:4] + order[-4:] + order[500:502]
    return [full[i] for i in picked]


def new_model(seed=0):
    return tiny_gpt(CFG, seed)


def unpacked_reference(model, items, mask_instruction=False, max_length=None):
    """Sum of per-token cross-entropy over all samples / total targets, one sample at a time."""
    total, count = 0.0, 0
    for item in items:
        inputs, targets = sample_inputs_and_targets(item, EOS, -100, max_length, mask_instruction)
        logits = model(torch.tensor([inputs]))[0]
        targets = torch.tensor(targets)
        total = total + torch.nn.functional.cross_entropy(logits, targets, reduction="sum", ignore_index=-100)
        count += int((targets != -100).sum())
    return total / count


def grads_of(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("mask_instruction, max_length", [(False, 1024), (True, 1024), (False, 88), (True, 200)])
def test_packed_loss_and_gradients_equal_the_unpacked_samples(dataset, mask_instruction, max_length):
    model = new_model()
    reference = unpacked_reference(model, dataset, mask_instruction, max_length)
    expected = grads_of(model, reference)
    packed = packed_collate_fn(dataset, max_length=max_length, mask_instruction=mask_instruction)
    assert packed.inputs.shape[0] < len(dataset)                       # really packed
    loss = batch_loss(packed, model, "cpu")
    got = grads_of(model, loss)
    assert abs(loss.item() - reference.item()) <= 1e-5
    for name in expected:
        assert (got[name] - expected[name]).abs().max().item() <= 1e-5, name
    # ... and equal to the book's padded batch of the same samples
    padded = custom_collate_fn(dataset, allowed_max_length=max_length, mask_instruction=mask_instruction)
    assert abs(batch_loss(padded, model, "cpu").item() - reference.item()) <= 1e-5
    assert int((padded[1] != -100).sum()) == int((packed.targets != -100).sum())


def test_row_layout_positions_segments_targets_and_tail():
    items = [[10, 11, 12], [20, 21], [30, 31, 32, 33]]
    batch = packed_collate_fn(items, max_length=6, method="greedy")
    # greedy keeps the order: [s0 s1] [s2], rows padded to the longest (5 tokens)
    assert batch.inputs.tolist() == [[10, 11, 12, 20, 21], [30, 31, 32, 33, EOS]]
    assert batch.targets.tolist() == [[11, 12, EOS, 21, EOS], [31, 32, 33, EOS, -100]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch.segment_ids.tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]]
    inputs, targets, position_ids, segment_ids = batch                 # a plain 4-tuple too
    assert inputs is batch.inputs


@pytest.mark.filterwarnings("ignore:As amostras")
def test_instruction_masking_and_truncation_match_custom_collate():
    items = [Sample([1, 2, 3, 4, 5], 3), Sample([6, 7, 8], 1), Sample([9, 10, 11, 12, 13, 14, 15], 9)]
    for mask in (False, True):
        for limit in (4, 7, 50):
            padded_inputs, padded_targets = custom_collate_fn(items, allowed_max_length=limit,
                                                              mask_instruction=mask)
            for row, item in enumerate(items):
                inputs, targets = sample_inputs_and_targets(item, max_length=limit, mask_instruction=mask)
                n = len(inputs)
                assert padded_inputs[row, :n].tolist() == inputs
                assert padded_targets[row, :n].tolist() == targets
                assert (padded_targets[row, n:] == -100).all()


def test_pack_lengths_every_index_once_within_the_limit():
    lengths = torch.randint(1, 90, (300,), generator=torch.Generator().manual_seed(0)).tolist()
    for method in ("ffd", "greedy"):
        rows = pack_lengths(lengths, 128, method)
        assert sorted(i for row in rows for i in row) == list(range(300))
        assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert [i for row in pack_lengths(lengths, 128, "greedy") for i in row] == list(range(300))
    assert len(pack_lengths(lengths, 128, "ffd")) <= len(pack_lengths(lengths, 128, "greedy"))
    with pytest.raises(ValueError, match="mais de 128"):
        pack_lengths([129], 128)
    with pytest.raises(ValueError, match="desconhecido"):
        pack_lengths([1], 128, "best")


def test_errors_are_clear():
    with pytest.raises(ValueError, match="vazia"):
        packed_collate_fn([[1, 2], []])
    with pytest.raises(ValueError, match="prompt_length"):
        packed_collate_fn([[1, 2, 3]], mask_instruction=True)
    with pytest.raises(ValueError, match="menor"):
        build_packed_batch([[([1, 2, 3], [2, 3, EOS])]], width=2)


def test_packed_dataset_with_a_dataloader_gives_the_unpacked_loss(dataset):
    model = new_model(1)
    packed = PackedDataset(dataset, max_length=256)
    assert sorted(i for row in packed.rows for i in row) == list(range(len(dataset)))
    assert len(packed) < len(dataset) and 0 < packed.fill_ratio <= 1
    loader = DataLoader(packed, batch_size=2, collate_fn=collate_packed_rows)
    batches = list(loader)
    assert all(len(b) == 4 for b in batches)
    with torch.no_grad():
        sums = [loss_sum_and_count(b, model, "cpu") for b in batches]
        got = sum(loss.item() for loss, _ in sums) / sum(count for _, count in sums)   # every token counts the same
        assert got == pytest.approx(unpacked_reference(model, dataset).item(), abs=1e-5)
    with pytest.raises(ValueError, match="max_length"):
        collate_packed_rows([dataset], max_length=100)
    assert sum(count for _, count in sums) == sum(len(ids) for ids, _ in dataset)


def test_naive_concatenation_leaks_and_segments_do_not(dataset):
    model = new_model(2)
    first = list(dataset[0][0])
    changed = [(t + 1) % 50000 for t in first]
    report = naive_concatenation_leak(model, first, changed, list(dataset[1][0]))
    assert report.naive > 1e-3            # sample 2 sees sample 1 through plain causal attention
    assert report.segmented <= 1e-6       # with segment ids it does not ...
    assert report.segmented_vs_alone <= 1e-5   # ... and it computes what sample 2 alone computes
    with pytest.raises(ValueError):
        naive_concatenation_leak(model, first, first[:-1], first)
