"""Tests of llmdefinitions.lora on the tiny GPT-2 (and parameter counts of the real sizes)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from helpers import tiny_gpt
from llmdefinitions.config import get_config
from llmdefinitions.lora import (
    LinearWithLoRA,
    LoRALayer,
    count_parameters,
    disable_lora,
    iter_lora_layers,
    load_lora_adapter,
    lora_state_dict,
    mark_only_lora_as_trainable,
    merge_lora,
    replace_linear_with_lora,
    save_lora_adapter,
    unmerge_lora,
)
from llmdefinitions.model import GPTModel

# The tiny GPT-2 with a small vocabulary: LoRA does not care, and the tests run faster.
TINY = {**get_config("gpt2-tiny (test)"), "vocab_size": 512}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0) -> GPTModel:
    return tiny_gpt(TINY, seed).eval()


def batch(seed: int = 1, b: int = 2, t: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (b, t), generator=g)


def train_steps(model: nn.Module, steps: int = 3, lr: float = 1e-2) -> None:
    """A few sign-SGD steps (Adam's first step, without importing an optimizer) on a
    next-token loss, so that B (and then A) move away from their initial values."""
    params = [p for p in model.parameters() if p.requires_grad]
    x = batch(seed=2)
    model.train()
    for _ in range(steps):
        logits = model(x[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g.sign())
    model.eval()


def lora_model(seed: int = 0, **kwargs) -> GPTModel:
    kwargs = {"rank": 4, "alpha": 8, "targets": "all_linear", "include_head": True, **kwargs}
    return replace_linear_with_lora(tiny_model(seed), **kwargs)


def test_model_is_unchanged_at_step_zero():
    model, x = tiny_model(), batch()
    with torch.no_grad():
        before = model(x)
        replace_linear_with_lora(model, rank=4, alpha=8, targets="all_linear", include_head=True)
        after = model(x)
    assert torch.equal(before, after)
    assert all(torch.count_nonzero(layer.lora.A) > 0 for _, layer in iter_lora_layers(model))


def test_targets_choose_layers():
    def names(**kwargs):
        return sorted(n for n, _ in iter_lora_layers(replace_linear_with_lora(
            tiny_model(), rank=2, alpha=2, **kwargs)))

    att = [f"trf_blocks.{i}.att.{w}" for i in range(2)
           for w in ("W_key", "W_query", "W_value", "out_proj")]
    ff = [f"trf_blocks.{i}.ff.layers.{j}" for i in range(2) for j in (0, 2)]
    assert names(targets="attention") == sorted(att)
    assert names(targets="all_linear") == sorted(att + ff)
    assert names(targets="all_linear", include_head=True) == sorted(att + ff + ["out_head"])
    assert names(targets=["*.att.W_query", "*.att.W_value"]) == sorted(
        n for n in att if n.endswith(("W_query", "W_value")))
    assert names(targets=lambda name, lin: lin.out_features > TINY["emb_dim"]) == sorted(
        n for n in ff if n.endswith("0"))
    # out_head follows include_head only, even when a pattern would match it.
    assert "out_head" not in names(targets=["*"])


def test_bad_targets_and_double_wrapping_raise_in_portuguese():
    with pytest.raises(ValueError, match="Nenhuma camada"):
        replace_linear_with_lora(tiny_model(), rank=2, alpha=2, targets=["*.nao_existe"])
    with pytest.raises(ValueError, match="targets deve ser"):
        replace_linear_with_lora(tiny_model(), rank=2, alpha=2, targets="attn")
    with pytest.raises(ValueError, match="já tem camadas LoRA"):
        replace_linear_with_lora(lora_model(), rank=2, alpha=2)
    with pytest.raises(ValueError, match="scaling deve ser"):
        LoRALayer(4, 4, rank=2, alpha=2, scaling="sqrt")


def test_only_lora_parameters_are_trainable():
    model = lora_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora.A", ".lora.B")) for n in trainable)
    assert len(trainable) == 2 * len(list(iter_lora_layers(model)))
    # Without freeze_base everything trains until mark_only_lora_as_trainable is called.
    model = lora_model(freeze_base=False)
    assert all(p.requires_grad for p in model.parameters())
    mark_only_lora_as_trainable(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


def test_gradients_reach_only_a_and_b():
    model = lora_model()
    train_steps(model, steps=1)  # after one step B != 0, so A gets a gradient too
    model.zero_grad(set_to_none=True)
    x = batch()
    model(x).sum().backward()
    for name, p in model.named_parameters():
        if name.endswith((".lora.A", ".lora.B")):
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
        else:
            assert p.grad is None, name


def test_merge_and_unmerge_keep_the_outputs():
    model = lora_model()
    train_steps(model)
    assert all(torch.count_nonzero(layer.lora.B) > 0 for _, layer in iter_lora_layers(model))
    x = batch()
    base_weight = model.trf_blocks[0].att.W_query.linear.weight.clone()
    with torch.no_grad():
        expected = model(x)
        merge_lora(model)
        assert all(layer.merged for _, layer in iter_lora_layers(model))
        assert not torch.allclose(model.trf_blocks[0].att.W_query.linear.weight, base_weight)
        merged = model(x)
        merge_lora(model)  # merging twice must not add the update twice
        torch.testing.assert_close(model(x), merged, rtol=0, atol=0)
        unmerge_lora(model)
        unmerged = model(x)
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(unmerged, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.trf_blocks[0].att.W_query.linear.weight, base_weight,
                               rtol=0, atol=1e-6)


def test_disable_lora_gives_the_base_model_and_restores_each_layer():
    base = tiny_model()
    model = replace_linear_with_lora(copy.deepcopy(base), rank=4, alpha=8, targets="all_linear",
                                     include_head=True)
    train_steps(model)
    x = batch()
    layers = [layer for _, layer in iter_lora_layers(model)]
    layers[0].enabled = False                      # one layer already off: it must stay off
    with torch.no_grad():
        partly_on = model(x)
        with disable_lora(model) as same:
            assert same is model and not any(layer.enabled for layer in layers)
            torch.testing.assert_close(model(x), base(x), rtol=0, atol=0)
        assert [layer.enabled for layer in layers] == [False] + [True] * (len(layers) - 1)
        torch.testing.assert_close(model(x), partly_on, rtol=0, atol=0)
        assert not torch.allclose(partly_on, base(x))          # the adapters do change the output
        with pytest.raises(RuntimeError, match="boom"):
            with disable_lora(model):
                raise RuntimeError("boom")
        assert [layer.enabled for layer in layers][1:] == [True] * (len(layers) - 1)


def test_disable_lora_refuses_a_model_without_lora_or_merged():
    with pytest.raises(ValueError, match="não tem camadas LoRA"):
        with disable_lora(tiny_model()):
            pass
    model = lora_model()
    merge_lora(model)
    with pytest.raises(ValueError, match="fundida"):
        with disable_lora(model):
            pass
    assert all(layer.enabled for _, layer in iter_lora_layers(model))


def test_merge_and_unload_gives_a_plain_gpt_model():
    model = lora_model()
    train_steps(model)
    x = batch()
    with torch.no_grad():
        expected = model(x)
        merge_lora(model, unload=True)
        got = model(x)
    assert not list(iter_lora_layers(model))
    assert set(model.state_dict()) == set(GPTModel(TINY).state_dict())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_adapter_round_trip(tmp_path):
    model = lora_model(targets="attention", include_head=False)
    train_steps(model)
    path = save_lora_adapter(model, tmp_path / "adaptador.pt")
    x = batch()
    with torch.no_grad():
        expected = model(x)

    payload = torch.load(path, weights_only=True)
    assert set(payload["state_dict"]) == set(lora_state_dict(model))
    assert payload["config"]["rank"] == 4 and payload["config"]["alpha"] == 8
    assert payload["config"]["scaling"] == "rank" and payload["config"]["targets"] == "attention"

    # Into the pretrained model without LoRA: the layers are created from the file.
    fresh = load_lora_adapter(tiny_model(), path)
    # Into a model that already has (differently initialized) LoRA layers of the same shape.
    other = load_lora_adapter(lora_model(seed=0, targets="attention", include_head=False,
                                         rank=4, alpha=8), path)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
        assert torch.equal(other(x), expected)
    assert count_parameters(fresh) == count_parameters(model)


def test_adapter_that_does_not_fit_raises_and_changes_nothing(tmp_path):
    path = save_lora_adapter(lora_model(rank=8), tmp_path / "r8.pt")
    model = lora_model(rank=4)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"r8\.pt.*'trf_blocks\.0\.att\.W_query\.lora\.A' tem forma"):
        load_lora_adapter(model, path)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # A base model of another size: nothing is wrapped.
    small_cfg = {**TINY, "emb_dim": 32}
    base = GPTModel(small_cfg)
    with pytest.raises(ValueError, match="r8.pt.*tem forma"):
        load_lora_adapter(base, path)
    assert not list(iter_lora_layers(base))

    # Same shapes but another alpha would silently change the outputs: refused as well.
    with pytest.raises(ValueError, match="alpha"):
        load_lora_adapter(lora_model(rank=8, alpha=16), path)

    with pytest.raises(FileNotFoundError, match="nao_existe.pt"):
        load_lora_adapter(tiny_model(), tmp_path / "nao_existe.pt")


def test_scaling_modes_differ_by_rank():
    torch.manual_seed(0)
    by_rank = LoRALayer(16, 8, rank=4, alpha=16, scaling="rank")
    plain = LoRALayer(16, 8, rank=4, alpha=16, scaling="alpha")
    with torch.no_grad():
        plain.A.copy_(by_rank.A)
        by_rank.B.normal_()
        plain.B.copy_(by_rank.B)
    x = torch.randn(3, 16)
    assert by_rank.scale == 4.0 and plain.scale == 16.0
    assert torch.equal(plain(x), by_rank(x) * 4)  # powers of two: exact


def test_a_is_initialized_like_peft():
    layer = LoRALayer(768, 16, rank=16, alpha=16)
    bound = 1 / 768 ** 0.5  # kaiming_uniform_(a=sqrt(5)) with fan-in = in_dim
    assert layer.A.abs().max() <= bound
    assert layer.A.abs().max() > 0.9 * bound  # not 1/sqrt(rank) = 0.25
    assert torch.count_nonzero(layer.B) == 0


def test_dropout_acts_only_on_the_lora_branch_in_training():
    torch.manual_seed(0)
    layer = LinearWithLoRA(nn.Linear(32, 16), rank=4, alpha=4, dropout=0.5)
    x = torch.randn(8, 32)
    layer.train()
    assert torch.equal(layer(x), layer.linear(x))  # B == 0: dropout cannot show
    with torch.no_grad():
        layer.lora.B.normal_()
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    layer.eval()
    exact = layer.linear(x) + (x @ layer.lora.A @ layer.lora.B) * layer.lora.scale
    assert torch.equal(layer(x), exact)
    assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize("name, head_and_all, attention_only, base_total", [
    ("gpt2-small (124M)", 3_470_608, 1_179_648, 163_037_184),
    ("gpt2-medium (355M)", 7_898_384, 3_145_728, 406_286_336),
])
def test_parameter_counts_of_gpt2(name, head_and_all, attention_only, base_total):
    """The book (exercise 7.4, GPT-2 medium, r=16, every nn.Linear): 7,898,384 trainable."""
    def build():
        with torch.device("meta"):  # shapes only, no memory
            return GPTModel(get_config(name))

    model = build()
    assert count_parameters(model) == (base_total, base_total)
    replace_linear_with_lora(model, rank=16, alpha=16, targets="all_linear", include_head=True)
    assert count_parameters(model) == (head_and_all, base_total + head_and_all)
    replace_linear_with_lora(model := build(), rank=16, alpha=16, targets="attention")
    assert count_parameters(model) == (attention_only, base_total + attention_only)
