"""The fast paths give the book's results: batch sampler, loaders, optimizer, batched generation."""
import math
from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from llmdefinitions.batching import LengthGroupedBatchSampler, make_train_loader, sample_lengths
from llmdefinitions.data import InstructionDataset, custom_collate_fn, split_data
from llmdefinitions.generation import generate, generate_batch, generate_responses, extract_response
from llmdefinitions.prompts import get_prompt_style
from llmdefinitions.profiles import load_profile
from llmdefinitions.trainer import batch_loss, compile_model, make_optimizer, optimizer_kind, train_model
from llmdefinitions.training import calc_loss_batch
from helpers import tiny_config, tiny_gpt

CFG = tiny_config(context_length=256, emb_dim=16)
EOS = 50256


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_set(entries, gpt2_tokenizer):
    return InstructionDataset(split_data(entries).train[:120], gpt2_tokenizer)


def new_model(seed=0):
    return tiny_gpt(CFG, seed)


# --- the length-grouped batch sampler ----------------------------------------------------------

def padding_ratio(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths)


def test_sampler_covers_every_index_once_per_epoch_with_similar_lengths(train_set):
    lengths = sample_lengths(train_set)
    assert lengths == [len(ids) for ids in train_set.encoded_texts]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=1, bucket_size_multiplier=5)
    epochs = [list(sampler) for _ in range(3)]
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert len(batches) == len(sampler) == math.ceil(len(lengths) / 8)
        assert padding_ratio(batches, lengths) < 1.06          # the book's random batches: ~1.2
    assert epochs[0] != epochs[1]                              # a new shuffle every epoch
    random_batches = [list(range(i, i + 8)) for i in range(0, len(lengths), 8)]
    assert padding_ratio(epochs[0], lengths) < padding_ratio(random_batches, lengths)
    again = LengthGroupedBatchSampler(lengths, batch_size=8, seed=1, bucket_size_multiplier=5)
    assert list(again) == epochs[0]                            # reproducible from the RNG seed
    again.set_epoch(2)
    assert list(again) == epochs[2]


def test_sampler_drop_last_no_shuffle_and_torch_seed():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11]
    dropped = LengthGroupedBatchSampler(lengths, 4, drop_last=True, seed=0)
    assert len(dropped) == 2 and all(len(b) == 4 for b in dropped)
    ordered = list(LengthGroupedBatchSampler(lengths, 4, shuffle=False))
    assert [[lengths[i] for i in b] for b in ordered] == [[11, 10, 9, 8], [7, 6, 5, 4], [3, 2, 1]]
    unseeded = LengthGroupedBatchSampler(lengths, 4)           # drawn from torch's generator
    torch.manual_seed(5)
    first = list(unseeded)
    torch.manual_seed(5)
    assert list(unseeded) == first
    with pytest.raises(ValueError):
        LengthGroupedBatchSampler(lengths, 0)


def test_grouped_loader_batches_similar_lengths(train_set):
    torch.manual_seed(0)
    loader = make_train_loader(train_set, batch_size=8, batching="grouped")
    seen = sum(int(b[0].shape[0]) for b in loader)
    assert seen == len(loader) * 8 == (len(train_set) // 8) * 8   # drop_last as the book


# --- the book's way, as one setting of the profile -------------------------------------------

def test_book_way_reproduces_the_books_loader_and_loss_exactly(train_set):
    fast, book = load_profile("completo"), load_profile("completo").book_way()
    assert fast.way == "otimizado" and book.way == "livro"
    model = new_model()
    torch.manual_seed(123)
    book_loader = DataLoader(train_set, batch_size=8, shuffle=True, drop_last=True,
                             collate_fn=partial(custom_collate_fn, device="cpu", allowed_max_length=1024))
    expected = [(x, y) for x, y in book_loader][:2]
    torch.manual_seed(123)
    ours = list(make_train_loader(train_set, batch_size=8, batching=book.batching))[:2]
    with torch.no_grad():
        for (x, y), (a, b) in zip(expected, ours):
            assert torch.equal(x, a) and torch.equal(y, b)
    # the fast default packs those same batches: same loss up to float rounding
    torch.manual_seed(123)
    packed = list(make_train_loader(train_set, batch_size=8, batching=fast.batching))[:2]
    with torch.no_grad():
        for (x, y), batch in zip(expected, packed):
            assert len(batch) == 4 and int((batch[1] != -100).sum()) == int((y != -100).sum())
            assert batch_loss(batch, model, "cpu").item() == pytest.approx(
                calc_loss_batch(x, y, model, "cpu").item(), abs=1e-5)
    with pytest.raises(ValueError):
        make_train_loader([], batching="sorted")


def test_packed_batches_train_like_padded_ones(train_set):
    """One SGD step on the book's batch, padded or packed, lands on the same weights."""
    torch.manual_seed(7)
    padded = next(iter(make_train_loader(train_set, batch_size=4, batching="random")))
    torch.manual_seed(7)
    packed = next(iter(make_train_loader(train_set, batch_size=4, batching="packed")))
    results = []
    for batch in (padded, packed):
        model = new_model(3)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        train_model(model, [batch], [batch], optimizer, "cpu", num_epochs=1, eval_freq=1,
                    eval_iter=1, start_context="", tokenizer=None, progress=False, print_samples=False)
        results.append(torch.nn.utils.parameters_to_vector(model.parameters()))
    assert (results[0] - results[1]).abs().max().item() <= 1e-5


# --- optimizer factory and compile helper ------------------------------------------------------

def test_make_optimizer_fused_where_available_and_the_books_default():
    model = new_model()
    book_opt = make_optimizer(model, fused=False)
    assert optimizer_kind(book_opt) == "for-loop"
    assert book_opt.defaults["lr"] == 5e-5 and book_opt.defaults["weight_decay"] == 0.1
    auto = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    cpu_fused = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 4)
    assert optimizer_kind(auto) == ("fused" if cpu_fused else "for-loop")   # torch < 2.4: the fallback
    if not cpu_fused:
        return
    # fused and for-loop AdamW take the same step
    x = torch.randint(0, 50257, (2, 12))
    steps = []
    for fused in (False, True):
        m = new_model()
        opt = make_optimizer(m, lr=1e-3, fused=fused)
        for _ in range(2):
            opt.zero_grad()
            calc_loss_batch(x, x, m, "cpu").backward()
            opt.step()
        steps.append(torch.nn.utils.parameters_to_vector(m.parameters()))
    # Same math, other rounding: where a gradient is ~0, Adam's g / sqrt(v) magnifies it.
    diff = (steps[0] - steps[1]).abs()
    assert diff.max().item() <= 0.05 * 1e-3 and (diff > 1e-7).float().mean().item() < 1e-3
    with pytest.raises(ValueError):
        make_optimizer(model, fused="yes")


def test_compile_model_off_is_a_no_op():
    model = new_model()
    assert compile_model(model, enabled=False) is model
    assert not hasattr(model.trf_blocks[0], "_compiled_call_impl") or model.trf_blocks[0]._compiled_call_impl is None


# --- batched generation with a KV cache == one prompt at a time --------------------------------

@pytest.fixture(scope="module")
def prompts(entries, gpt2_tokenizer):
    """Real prompts of very different lengths (4 to ~250 tokens), one with an end-of-text inside."""
    style = get_prompt_style("alpaca")
    encoded = [gpt2_tokenizer.encode(style.prompt(e), allowed_special={"<|endoftext|>"}) for e in entries]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    shortest, longest, middle = encoded[order[0]], encoded[order[-1]], encoded[order[len(order) // 2]]
    with_eos = middle[:10] + [EOS] + middle[10:]
    very_long = (longest + middle + shortest)[:220]
    return [shortest, very_long, middle[-4:], with_eos, longest, middle]


def one_at_a_time(model, prompts, max_new_tokens, eos_id=None, use_cache=False):
    out = []
    for p in prompts:
        ids = generate(model, torch.tensor([p]), max_new_tokens, 256, eos_id=eos_id, use_cache=use_cache)
        out.append(ids[0, len(p):].tolist())
    return out


def test_batched_generation_equals_one_at_a_time(prompts):
    model = new_model(4).eval()
    singles = one_at_a_time(model, prompts, 12)                       # the book's way, no cache
    assert one_at_a_time(model, prompts, 12, use_cache=True) == singles
    assert generate_batch(model, prompts, 12) == singles
    # an end-of-text in the middle: the row that produces it stops there, the others go on
    eos = singles[3][5]
    expected = [row[:row.index(eos)] if eos in row else row for row in singles]
    assert any(len(row) < 12 for row in expected) and any(len(row) == 12 for row in expected)
    assert one_at_a_time(model, prompts, 12, eos_id=eos) == expected
    assert generate_batch(model, prompts, 12, eos_id=eos) == expected
    for size in (1, 2, 4):                                             # any grouping of rows
        got = []
        for start in range(0, len(prompts), size):
            got += generate_batch(model, prompts[start:start + size], 12, eos_id=eos)
        assert got == expected
    # continuous batching: a finished row takes the next prompt (longer or shorter than the rows in
    # the cache), each prompt reported once, as soon as it is done
    for size in (1, 2, 3):
        finished = []
        assert generate_batch(model, prompts, 12, eos_id=eos, batch_size=size,
                              on_finish=lambda i, ids: finished.append((i, ids))) == expected
        assert sorted(finished) == sorted(enumerate(expected))


def test_generate_responses_on_the_test_set_equals_the_books_loop(entries, gpt2_tokenizer):
    model = new_model(5).eval()
    test = split_data(entries).test[:10]
    style = get_prompt_style("alpaca")
    expected = []
    for entry in test:                                  # the book: one entry at a time, no cache
        ids = torch.tensor([gpt2_tokenizer.encode(style.prompt(entry), allowed_special={"<|endoftext|>"})])
        out = generate(model, ids, 8, 256, eos_id=EOS, use_cache=False)
        expected.append(extract_response(gpt2_tokenizer.decode(out[0, ids.shape[1]:].tolist())))
    for batch_size in (3, 8):
        got = generate_responses(model, gpt2_tokenizer, test, max_new_tokens=8, batch_size=batch_size,
                                 context_size=256, progress=False)
        assert got == expected


# --- the shared prompt prefix: computed once, same answers ---------------------------------------

def test_alpaca_prompts_share_their_preamble_and_batches_reuse_it(entries, gpt2_tokenizer):
    from llmdefinitions.generation import common_prefix, prefill_shared_prefix

    style = get_prompt_style("alpaca")
    test = split_data(entries).test
    prompts = [gpt2_tokenizer.encode(style.prompt(e), allowed_special={"<|endoftext|>"}) for e in test]
    shared = common_prefix(prompts)
    assert gpt2_tokenizer.decode(shared).startswith("Below is an instruction that describes a task.")
    assert len(shared) >= 0.4 * sum(map(len, prompts)) / len(prompts)       # ~half of each prompt
    assert common_prefix([[1, 2, 3], [1, 2]]) == [1]                        # each keeps a token of its own
    model = new_model(6).eval()
    prefix = prefill_shared_prefix(model, shared)
    chosen = sorted(prompts, key=len)[::11]
    singles = one_at_a_time(model, chosen, 10)                              # the book's loop, no cache
    eos = singles[1][3]                                                     # rows end at different steps
    expected = [row[:row.index(eos)] if eos in row else row for row in singles]
    assert generate_batch(model, chosen, 10, eos_id=eos, prefix=prefix) == expected
    assert generate_batch(model, chosen, 10, prefix=prefix) == singles
    with pytest.raises(ValueError, match="prefixo comum"):
        generate_batch(model, [chosen[0], [7] + chosen[1]], 5, prefix=prefix)


def test_generate_responses_with_and_without_the_shared_prefix(entries, gpt2_tokenizer):
    model = new_model(7).eval()
    test = split_data(entries).test[:12]
    kwargs = dict(max_new_tokens=6, batch_size=5, context_size=256, progress=False)
    assert (generate_responses(model, gpt2_tokenizer, test, **kwargs)
            == generate_responses(model, gpt2_tokenizer, test, share_prefix=False, **kwargs))


# --- evaluation: packed, no autograd, the training's precision ------------------------------------

def test_a_padded_batch_packed_keeps_every_target(train_set):
    from llmdefinitions.trainer import pack_padded_batch

    inputs, targets = custom_collate_fn([train_set[i] for i in range(8)], allowed_max_length=1024)
    packed = pack_padded_batch(inputs, targets)
    assert len(packed) == 4 and packed[0].numel() < inputs.numel()
    assert sorted(packed[1][packed[1] != -100].tolist()) == sorted(targets[targets != -100].tolist())
    model = new_model(2)
    with torch.no_grad():
        assert batch_loss(packed, model, "cpu").item() == pytest.approx(
            batch_loss((inputs, targets), model, "cpu").item(), abs=1e-5)
    targets[3] = -100                                  # a row with no target adds nothing: left out
    assert pack_padded_batch(inputs, targets)[1].ne(-100).sum() == targets.ne(-100).sum()


def test_evaluation_packs_validation_when_training_is_packed(train_set, monkeypatch):
    from llmdefinitions import trainer
    from llmdefinitions.trainer import evaluate, loader_loss

    model = new_model(8)
    val = DataLoader(train_set, batch_size=4, collate_fn=custom_collate_fn)     # padded, as the pipeline's
    torch.manual_seed(1)
    packed_train = list(make_train_loader(train_set, batch_size=4, batching="packed"))[:2]
    torch.manual_seed(1)
    padded_train = list(make_train_loader(train_set, batch_size=4, batching="random"))[:2]
    calls, original = [], trainer.pack_padded_batch
    monkeypatch.setattr(trainer, "pack_padded_batch", lambda *a, **k: calls.append(1) or original(*a, **k))
    ours = evaluate(model, packed_train, val, "cpu", eval_iter=2)
    assert len(calls) == 2                             # the 2 validation batches were packed
    book = evaluate(model, padded_train, val, "cpu", eval_iter=2)
    assert len(calls) == 2                             # padded training: padded validation, as the book
    assert ours == pytest.approx(book, rel=1e-5)
    assert model.training                              # back in training mode
    assert math.isnan(loader_loss([], model, "cpu"))   # an empty loader, as the book: nan


def test_bf16_evaluation_and_training_losses_within_two_percent_of_fp32(train_set):
    """The tolerance the course states for bf16 autocast: 2 % of the fp32 loss."""
    from llmdefinitions.trainer import loader_loss, loss_sum_and_count
    from llmdefinitions.device import autocast

    model = new_model(9)
    torch.manual_seed(2)
    batches = list(make_train_loader(train_set, batch_size=8, batching="packed"))[:3]
    fp32, bf16 = (loader_loss(batches, model, "cpu", precision=p) for p in ("fp32", "bf16"))
    assert abs(bf16 - fp32) / fp32 < 0.02
    with autocast("cpu", "bf16"):
        loss, count = loss_sum_and_count(batches[0], model, "cpu")
    assert loss.dtype == torch.float32                  # the cross-entropy itself in fp32
    reference, _ = loss_sum_and_count(batches[0], model, "cpu")
    assert abs(loss.item() - reference.item()) / reference.item() < 0.02


# --- the bf16 rule on CPUs ------------------------------------------------------------------------

def test_bf16_only_where_the_cpu_has_bf16_instructions():
    from llmdefinitions.device import bf16_matmuls_are_native

    zen4 = "fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni"
    assert bf16_matmuls_are_native(zen4)
    assert bf16_matmuls_are_native("avx512f amx_bf16 amx_tile")                # Sapphire Rapids
    assert not bf16_matmuls_are_native("fpu avx2 fma")                          # AVX2 only: emulated, slower
    assert not bf16_matmuls_are_native("avx512f avx512bw avx512_vnni")          # AVX-512 without bf16
    assert not bf16_matmuls_are_native(zen4, isa_cap="AVX512_CORE")            # oneDNN told not to use it
    assert bf16_matmuls_are_native(zen4, isa_cap="avx512_core_bf16")
    assert not bf16_matmuls_are_native(zen4, onednn=False)                      # torch without oneDNN


def test_allocator_tuning_applies_on_linux():
    import platform
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from llmdefinitions.device import tune_cpu_allocator; "
                           "print(tune_cpu_allocator())"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(platform.system() == "Linux")
