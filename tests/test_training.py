"""Loss functions and train_model_simple: seed defaults, options, accumulation, resuming."""
import copy
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from llmdefinitions.data import custom_collate_fn
from llmdefinitions.model import GPTModel
from llmdefinitions.training import (calc_loss_batch, calc_loss_loader, loss_sum_and_count, lr_at_step,
                                     train_model_simple)

VOCAB = 50
CFG = {"vocab_size": VOCAB, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": True}
EOS = VOCAB - 1


class CharTokenizer:
    """Enough of a tokenizer for generate_and_print_sample."""

    def encode(self, text, **kwargs):
        return [ord(c) % (VOCAB - 1) for c in text]

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def make_samples(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB - 1, (int(k),), generator=g).tolist()
            for k in torch.randint(3, 20, (n,), generator=g)]


def loader(samples, batch_size=4, shuffle=False):
    collate = lambda b: custom_collate_fn(b, pad_token_id=EOS)  # noqa: E731
    return DataLoader(samples, batch_size=batch_size, collate_fn=collate, shuffle=shuffle, drop_last=shuffle)


def new_model(seed=0):
    torch.manual_seed(seed)
    return GPTModel(CFG)


def test_calc_loss_batch_is_the_seeds_mean_over_targets():
    model = new_model()
    inputs, targets = custom_collate_fn(make_samples(4), pad_token_id=EOS)
    seed_loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
    torch.testing.assert_close(calc_loss_batch(inputs, targets, model, "cpu"), seed_loss)


def test_calc_loss_loader_seed_mean_and_token_weighted():
    model = new_model()
    dl = loader(make_samples(10))
    with torch.no_grad():
        per_batch = [(calc_loss_batch(x, y, model, "cpu").item(), int((y != -100).sum())) for x, y in dl]
        assert calc_loss_loader(dl, model, "cpu") == pytest.approx(sum(l for l, _ in per_batch) / 3)
        assert calc_loss_loader(dl, model, "cpu", num_batches=2) == pytest.approx((per_batch[0][0] + per_batch[1][0]) / 2)
        weighted = sum(l * n for l, n in per_batch) / sum(n for _, n in per_batch)
        assert calc_loss_loader(dl, model, "cpu", token_weighted=True) == pytest.approx(weighted, rel=1e-5)
    assert calc_loss_loader([], model, "cpu") != calc_loss_loader([], model, "cpu")   # NaN, as in the seed


def test_batch_without_targets_gives_zero_not_nan():
    model = new_model()
    x = torch.zeros(2, 4, dtype=torch.long)
    y = torch.full((2, 4), -100)
    with pytest.warns(RuntimeWarning, match="nenhum token-alvo"):
        loss = calc_loss_batch(x, y, model, "cpu")
    assert loss.item() == 0.0


def test_logits_only_at_targets_equals_full_logits():
    model = new_model()
    inputs, targets = custom_collate_fn(make_samples(4), pad_token_id=EOS)
    loss, count = loss_sum_and_count(inputs, targets, model, "cpu")
    full = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(), reduction="sum")
    torch.testing.assert_close(loss, full)
    assert count == int((targets != -100).sum())


def test_gradient_accumulation_normalizes_by_target_tokens():
    samples = make_samples(8, seed=1)
    one, two = new_model(), new_model()
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=1.0)  # noqa: E731
    kwargs = dict(num_epochs=1, eval_freq=100, eval_iter=1, start_context="a", tokenizer=CharTokenizer(),
                  progress=False, print_samples=False)
    train_model_simple(one, loader(samples, 8), loader(samples, 8), sgd(one), "cpu", **kwargs)
    train_model_simple(two, loader(samples, 4), loader(samples, 4), sgd(two), "cpu", grad_accum_steps=2, **kwargs)
    for p, q in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


def run(model, samples, **kwargs):
    torch.manual_seed(7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    return train_model_simple(model, loader(samples, 4, shuffle=True), loader(samples[:8], 4), optimizer, "cpu",
                              num_epochs=2, eval_freq=2, eval_iter=1, start_context="ab",
                              tokenizer=CharTokenizer(), progress=False, **kwargs)


def test_seed_return_values_and_learning(capsys):
    samples = make_samples(24, seed=2)
    model = new_model()
    train_losses, val_losses, tokens_seen = run(model, samples)
    assert len(train_losses) == len(val_losses) == len(tokens_seen) == 6       # 12 steps, eval every 2
    assert tokens_seen == sorted(tokens_seen) and train_losses[-1] < train_losses[0]
    out = capsys.readouterr().out
    assert "Ep 1 (Step 000000): Train loss" in out and "Ep 2 (Step 000010)" in out


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    samples = make_samples(24, seed=3)
    straight = new_model()
    expected = run(straight, samples, print_samples=False)

    resumed = new_model()
    ckpt = tmp_path / "ckpt.pt"
    partial = run(resumed, samples, print_samples=False, checkpoint_path=ckpt, max_steps=4)   # stops mid-epoch 1
    assert len(partial[0]) == 2
    again = new_model(seed=99)                                   # a fresh process would start from scratch
    result = run(again, samples, print_samples=False, checkpoint_path=ckpt, resume=True)
    assert result[0] == pytest.approx(expected[0], rel=1e-5) and result[2] == expected[2]
    for p, q in zip(straight.parameters(), again.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]         # no temp files left


def test_warmup_and_cosine_schedule():
    assert lr_at_step(0, 100, 10, "cosine", 1.0) == pytest.approx(0.1)
    assert lr_at_step(9, 100, 10, "cosine", 1.0) == pytest.approx(1.0)
    assert lr_at_step(10, 100, 10, "cosine", 1.0) == pytest.approx(1.0)
    assert lr_at_step(100, 100, 10, "cosine", 1.0, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_at_step(55, 100, 10, None, 1.0) == 1.0


def test_clipping_and_bf16_options_run_and_learn():
    samples = make_samples(24, seed=4)
    fp32 = run(new_model(), samples, print_samples=False, grad_clip=1.0, warmup_steps=2, lr_schedule="cosine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bf16 = run(new_model(), samples, print_samples=False, grad_clip=1.0, warmup_steps=2, lr_schedule="cosine",
                   precision="bf16")
    assert bf16[0][-1] < bf16[0][0]
    assert abs(bf16[0][-1] - fp32[0][-1]) / fp32[0][-1] < 0.05


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="Precisão desconhecida"):
        run(new_model(), make_samples(8), precision="fp8")


def test_model_is_not_copied_by_training():
    model = new_model()
    before = copy.deepcopy(model.state_dict())
    run(model, make_samples(8), print_samples=False)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_resuming_a_finished_max_steps_run_does_no_extra_step(tmp_path):
    samples = make_samples(24, seed=5)
    model = new_model()
    ckpt = tmp_path / "ckpt.pt"
    run(model, samples, print_samples=False, checkpoint_path=ckpt, max_steps=2)
    again = new_model(seed=1)
    result = run(again, samples, print_samples=False, checkpoint_path=ckpt, resume=True, max_steps=2)
    assert torch.load(ckpt, weights_only=False)["state"]["global_step"] == 1
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    assert len(result[0]) == 1
