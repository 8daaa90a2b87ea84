"""The course's trainer: same losses as the book's loop by default, and options that really act."""
import os
import pickle
import warnings

import pytest
import torch

from helpers import CharTokenizer, make_samples, new_model, padded_loader
from llmdefinitions.data import custom_collate_fn
from llmdefinitions.serialization import UnsafeFileError
from llmdefinitions.trainer import (load_checkpoint, loss_sum_and_count, lr_at_step, save_checkpoint,
                                    train_model, TrainState)
from llmdefinitions.training import train_model_simple

pytestmark = pytest.mark.usefixtures("one_thread")
COMMON = dict(num_epochs=2, eval_freq=2, eval_iter=1, start_context="ab", tokenizer=CharTokenizer())


def run(model, samples, optimizer=None, **options):
    """Train on the same shuffled batches every time (seed 7), with ``options`` for train_model."""
    torch.manual_seed(7)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    options.setdefault("progress", False)
    options.setdefault("print_samples", False)
    return train_model(model, padded_loader(samples, 4, shuffle=True), padded_loader(samples[:8], 4),
                       optimizer, "cpu", **COMMON, **options)


def test_default_options_give_the_books_losses_and_weights(capsys):
    samples = make_samples(24, seed=2)
    book_model, our_model = new_model(), new_model()
    torch.manual_seed(7)
    book = train_model_simple(book_model, padded_loader(samples, 4, shuffle=True), padded_loader(samples[:8], 4),
                              torch.optim.AdamW(book_model.parameters(), lr=1e-3, weight_decay=0.1), "cpu", **COMMON)
    ours = run(our_model, samples)
    assert ours.train_losses == pytest.approx(book[0], rel=1e-5)
    assert ours.val_losses == pytest.approx(book[1], rel=1e-5)
    assert ours.track_tokens_seen == book[2]
    for p, q in zip(book_model.parameters(), our_model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_logits_only_at_targets_equal_full_logits():
    model = new_model()
    inputs, targets = custom_collate_fn(make_samples(4), pad_token_id=CharTokenizer.EOS)
    loss, count = loss_sum_and_count((inputs, targets), model, "cpu")
    full = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(), reduction="sum")
    torch.testing.assert_close(loss, full)
    assert count == int((targets != -100).sum())


def test_gradient_accumulation_normalizes_by_target_tokens():
    samples = make_samples(8, seed=1)
    one, two = new_model(), new_model()
    options = dict(num_epochs=1, eval_freq=100, eval_iter=1, start_context="a", tokenizer=CharTokenizer(),
                   progress=False, print_samples=False)
    train_model(one, padded_loader(samples, 8), padded_loader(samples, 8),
                torch.optim.SGD(one.parameters(), lr=1.0), "cpu", **options)
    train_model(two, padded_loader(samples, 4), padded_loader(samples, 4),
                torch.optim.SGD(two.parameters(), lr=1.0), "cpu", grad_accum_steps=2, **options)
    for p, q in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


def parameter_change(clip):
    """Norm of the change of all parameters after one SGD step (lr 1) with ``grad_clip=clip``."""
    model = new_model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    train_model(model, padded_loader(make_samples(4), 4), padded_loader(make_samples(4), 4),
                torch.optim.SGD(model.parameters(), lr=1.0), "cpu", num_epochs=1, eval_freq=100, eval_iter=1,
                start_context="a", tokenizer=CharTokenizer(), progress=False, print_samples=False, grad_clip=clip)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return float((after - before).norm())


def test_gradient_clipping_bounds_the_step():
    unclipped = parameter_change(None)
    assert unclipped > 0.1
    assert parameter_change(1e-3) == pytest.approx(1e-3, rel=1e-3)    # lr 1 x clipped norm


def test_the_learning_rate_schedule_is_applied_at_every_step():
    model = new_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    run(model, make_samples(24, seed=4), optimizer, warmup_steps=3, lr_schedule="cosine",
        on_step=lambda state: seen.append(optimizer.param_groups[0]["lr"]))
    expected = [lr_at_step(step, 12, 3, "cosine", 0.5) for step in range(12)]   # 2 epochs x 6 batches
    # the lr used at step s is set before the step; on_step sees it right after
    assert seen == pytest.approx(expected)
    assert seen[0] < seen[2] and seen[-1] < seen[3]


def test_warmup_and_cosine_values():
    assert lr_at_step(0, 100, 10, "cosine", 1.0) == pytest.approx(0.1)
    assert lr_at_step(9, 100, 10, "cosine", 1.0) == pytest.approx(1.0)
    assert lr_at_step(100, 100, 10, "cosine", 1.0, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_at_step(55, 100, 10, None, 1.0) == 1.0
    with pytest.raises(ValueError, match="Agenda"):
        lr_at_step(0, 10, 0, "linear", 1.0)


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    samples = make_samples(24, seed=3)
    straight = new_model()
    expected = run(straight, samples)
    ckpt = tmp_path / "ckpt.pt"
    partial = run(new_model(), samples, checkpoint_path=ckpt, max_steps=4)      # stops in epoch 1
    assert len(partial.train_losses) == 2
    again = new_model(seed=99)                    # a fresh process starts from other weights
    result = run(again, samples, checkpoint_path=ckpt, resume=True)
    assert result.train_losses == pytest.approx(expected.train_losses, rel=1e-5)
    assert result.track_tokens_seen == expected.track_tokens_seen
    for p, q in zip(straight.parameters(), again.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]          # no temporary files left


def test_resuming_a_finished_max_steps_run_does_no_extra_step(tmp_path):
    samples = make_samples(24, seed=5)
    model, ckpt = new_model(), tmp_path / "ckpt.pt"
    run(model, samples, checkpoint_path=ckpt, max_steps=2)
    again = new_model(seed=1)
    result = run(again, samples, checkpoint_path=ckpt, resume=True, max_steps=2)
    assert torch.load(ckpt, weights_only=True)["state"]["global_step"] == 1
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    assert len(result.train_losses) == 1


def test_bf16_learns_close_to_fp32():
    samples = make_samples(24, seed=4)
    fp32 = run(new_model(), samples, grad_clip=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bf16 = run(new_model(), samples, grad_clip=1.0, precision="bf16")
    assert bf16.train_losses[-1] < bf16.train_losses[0]
    assert abs(bf16.train_losses[-1] - fp32.train_losses[-1]) / fp32.train_losses[-1] < 0.05


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="Precisão desconhecida"):
        run(new_model(), make_samples(8), precision="fp8")


class _CreatesAFile:
    """Unpickling this calls ``open(path, "w")``: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant_malicious_checkpoint(path, marker):
    """A checkpoint-shaped pickle whose loading would create ``marker``."""
    with open(path, "wb") as handle:
        pickle.dump({"model": {}, "optimizer": {}, "state": _CreatesAFile(str(marker))}, handle, protocol=2)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    ckpt, marker = tmp_path / "ckpt.pt", tmp_path / "pwned"
    plant_malicious_checkpoint(ckpt, marker)
    model = new_model()
    with pytest.raises(UnsafeFileError, match="recusado por segurança") as error:
        load_checkpoint(ckpt, model, torch.optim.SGD(model.parameters(), lr=0.1), "cpu")
    assert not marker.exists()
    assert "weights_only=False" not in str(error.value)


def test_a_real_checkpoint_holds_only_tensors_and_plain_values(tmp_path):
    model = new_model()
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    save_checkpoint(tmp_path / "c.pt", model, optimizer, TrainState(global_step=3, train_losses=[1.5]))
    state = load_checkpoint(tmp_path / "c.pt", new_model(1), torch.optim.AdamW(new_model(1).parameters()), "cpu")
    assert state.global_step == 3 and state.train_losses == [1.5]
    assert os.listdir(tmp_path) == ["c.pt"]


def test_a_checkpoint_of_another_model_is_one_line_that_says_what_to_do(tmp_path):
    model = new_model()
    save_checkpoint(tmp_path / "c.pt", model, torch.optim.AdamW(model.parameters()), TrainState(global_step=1))
    other = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match=r"checkpoint de treino '.*c\.pt' não corresponde .*--refazer") as error:
        load_checkpoint(tmp_path / "c.pt", other, torch.optim.AdamW(other.parameters()), "cpu")
    assert "\n" not in str(error.value)
