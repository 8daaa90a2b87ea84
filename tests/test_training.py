"""The book's loss functions and loop (llmdefinitions.training), checked against the book's formulas."""
import pytest
import torch

from helpers import CharTokenizer, make_samples, new_model, padded_loader
from llmdefinitions.data import custom_collate_fn
from llmdefinitions.training import calc_loss_batch, calc_loss_loader, evaluate_model, train_model_simple

pytestmark = pytest.mark.usefixtures("one_thread")


def test_calc_loss_batch_is_the_mean_over_targets():
    model = new_model()
    inputs, targets = custom_collate_fn(make_samples(4), pad_token_id=CharTokenizer.EOS)
    logits = model(inputs).flatten(0, 1)
    keep = targets.flatten() != -100
    by_hand = -torch.log_softmax(logits[keep], -1).gather(1, targets.flatten()[keep, None]).mean()
    torch.testing.assert_close(calc_loss_batch(inputs, targets, model, "cpu"), by_hand)


def test_calc_loss_loader_averages_batch_means_and_stops_at_num_batches():
    model = new_model()
    loader = padded_loader(make_samples(10), batch_size=4)
    with torch.no_grad():
        means = [calc_loss_batch(x, y, model, "cpu").item() for x, y in loader]
        assert calc_loss_loader(loader, model, "cpu") == pytest.approx(sum(means) / len(means))
        assert calc_loss_loader(loader, model, "cpu", num_batches=2) == pytest.approx(sum(means[:2]) / 2)
        assert calc_loss_loader(loader, model, "cpu", num_batches=99) == pytest.approx(sum(means) / len(means))
    assert calc_loss_loader([], model, "cpu") != calc_loss_loader([], model, "cpu")   # NaN, as in the book


def test_evaluate_model_restores_train_mode_and_keeps_no_gradients():
    model = new_model()
    model.train()
    loader = padded_loader(make_samples(8), batch_size=4)
    train_loss, val_loss = evaluate_model(model, loader, loader, "cpu", eval_iter=1)
    assert model.training and train_loss == val_loss
    assert all(p.grad is None for p in model.parameters())


def test_train_model_simple_returns_the_books_values_and_learns(capsys):
    torch.manual_seed(7)
    model = new_model()
    samples = make_samples(24, seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, padded_loader(samples, 4, shuffle=True), padded_loader(samples[:8], 4), optimizer, "cpu",
        num_epochs=2, eval_freq=2, eval_iter=1, start_context="ab", tokenizer=CharTokenizer())
    assert len(train_losses) == len(val_losses) == len(tokens_seen) == 6      # 12 steps, evaluated every 2
    assert tokens_seen == sorted(tokens_seen) and train_losses[-1] < train_losses[0]
    out = capsys.readouterr().out
    assert "Ep 1 (Step 000000): Train loss" in out and "Ep 2 (Step 000010)" in out
