"""GPTModel: the book's parameter names, SDPA attention, KV cache, positions and segments."""
import pytest
import torch
import torch.nn as nn

from llmdefinitions.config import get_config
from llmdefinitions.generation import generate
from llmdefinitions.model import GPTModel
from helpers import tiny_gpt

CFG = {**get_config("gpt2-tiny (test)"), "vocab_size": 97, "context_length": 64}


@pytest.fixture(scope="module")
def model():
    return tiny_gpt(CFG).eval()


class BookMultiHeadAttention(nn.Module):
    """The book's attention (explicit causal mask buffer), used as an independent reference."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, n, _ = x.shape
        k = self.W_key(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        q = self.W_query(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(2, 3)
        scores.masked_fill_(self.mask.bool()[:n, :n], -torch.inf)
        w = torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1)
        ctx = (w @ v).transpose(1, 2).contiguous().view(b, n, self.d_out)
        return self.out_proj(ctx)


def test_parameter_names_are_the_books(model):
    names = set(model.state_dict())
    for expected in ("tok_emb.weight", "pos_emb.weight", "final_norm.scale", "final_norm.shift",
                     "out_head.weight", "trf_blocks.0.att.W_query.weight", "trf_blocks.0.att.W_key.bias",
                     "trf_blocks.1.att.out_proj.weight", "trf_blocks.1.ff.layers.0.weight",
                     "trf_blocks.1.ff.layers.2.bias", "trf_blocks.0.norm1.scale", "trf_blocks.0.norm2.shift"):
        assert expected in names


def test_book_state_dict_with_mask_buffers_loads_and_attention_matches(model):
    """A state_dict saved by the book's code (it has `att.mask` buffers) loads; outputs agree."""
    state = dict(model.state_dict())
    for i in range(CFG["n_layers"]):
        state[f"trf_blocks.{i}.att.mask"] = torch.triu(torch.ones(64, 64), diagonal=1)
    fresh = GPTModel(CFG).eval()
    fresh.load_state_dict(state)                      # strict: would fail on unknown keys
    x = torch.randint(0, CFG["vocab_size"], (2, 11))
    torch.testing.assert_close(fresh(x), model(x))

    book = BookMultiHeadAttention(64, 64, 64, 0.0, 4, qkv_bias=True)
    att = model.trf_blocks[0].att
    book.load_state_dict({**att.state_dict(), "mask": book.mask})
    h = torch.randn(2, 11, 64)
    torch.testing.assert_close(att(h), book(h), atol=1e-5, rtol=1e-5)


def test_config_names_accept_short_forms_and_unknown_ones_are_refused():
    assert get_config("355M") == get_config("gpt2-medium") == get_config("gpt2-medium (355M)")
    with pytest.raises(ValueError, match="Modelos disponíveis"):
        get_config("gpt2-huge")


def test_medium_has_the_books_parameter_count():
    with torch.device("meta"):
        medium = GPTModel(get_config("gpt2-medium (355M)"))
    assert sum(p.numel() for p in medium.parameters()) == 406_286_336


def test_kv_cache_gives_the_same_logits_as_a_full_pass(model):
    x = torch.randint(0, CFG["vocab_size"], (3, 20))
    full = model(x)
    cache = model.new_kv_cache()
    parts = [model(x[:, :7], kv_cache=cache)] + [model(x[:, i:i + 1], kv_cache=cache) for i in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cached_greedy_generation_equals_uncached_token_for_token(model):
    torch.manual_seed(1)
    for length in (1, 5, 30, 70):                    # 70 > context: the window slides
        idx = torch.randint(0, CFG["vocab_size"], (1, length))
        cached = generate(model, idx, max_new_tokens=25, context_size=64)
        plain = generate(model, idx, max_new_tokens=25, context_size=64, use_cache=False)
        assert torch.equal(cached, plain), length


def test_segments_keep_packed_samples_apart(model):
    a = torch.randint(0, CFG["vocab_size"], (1, 9))
    b = torch.randint(0, CFG["vocab_size"], (1, 6))
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(9), torch.arange(6)])[None]
    segments = torch.tensor([[0] * 9 + [1] * 6])
    out = model(packed, position_ids=positions, segment_ids=segments)
    torch.testing.assert_close(out[:, :9], model(a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 9:], model(b), atol=1e-5, rtol=1e-5)
    leaky = model(packed)                             # plain causal attention crosses the boundary
    assert (leaky[:, 9:] - model(b)).abs().max() > 1e-3


def test_too_long_input_is_refused_with_a_clear_message(model):
    with pytest.raises(ValueError, match="excede o contexto"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_missing_config_key_is_named():
    cfg = dict(CFG)
    del cfg["n_heads"]
    with pytest.raises(ValueError, match="n_heads"):
        GPTModel(cfg)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_packed_attention_sample_by_sample_equals_the_block_diagonal_mask(model, precision):
    """Attention run per sample (the spans; in bf16 on CPU written out, not SDPA) gives the mask's
    results, forward and backward."""
    from llmdefinitions.device import autocast
    from llmdefinitions.model import SegmentSpans

    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, CFG["vocab_size"], (2, 20), generator=g)
    segments = torch.tensor([[1] * 7 + [2] * 9 + [0] * 4, [1] * 12 + [2] * 8])
    positions = torch.cat([torch.cat([torch.arange(n) for n in row]) for row in ([7, 9, 4], [12, 8])]).view(2, 20)
    assert SegmentSpans.of(segments).spans == [[(0, 7), (7, 16), (16, 20)], [(0, 12), (12, 20)]]
    assert SegmentSpans.of(torch.tensor([[1, 1, 2, 1]])) is None     # an id in two runs: the mask instead
    results = []
    for split in (True, False):
        model.split_packed_attention = split
        model.zero_grad(set_to_none=True)
        with autocast("cpu", precision):
            out = model(x, position_ids=positions, segment_ids=segments).float()
        out.square().mean().backward()
        results.append((out.detach(), model.trf_blocks[0].att.W_query.weight.grad.clone()))
    model.split_packed_attention = True
    model.zero_grad(set_to_none=True)
    tolerance = {"atol": 1e-5, "rtol": 1e-4} if precision == "fp32" else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(results[0][0], results[1][0], **tolerance)
    torch.testing.assert_close(results[0][1], results[1][1], **tolerance)
    # and each sample equals itself alone
    with autocast("cpu", precision):
        alone = model(x[1:, 12:]).float().detach()
    torch.testing.assert_close(results[0][0][1:, 12:], alone, **tolerance)


def test_a_one_row_cache_repeated_into_a_batch(model):
    prefix = torch.randint(0, CFG["vocab_size"], (1, 6))
    cache = model.new_kv_cache()
    model(prefix, kv_cache=cache)
    batch = cache.repeated(3, room=10)
    assert batch.length == 6 and batch.keys[0].shape[0] == 3 and batch.keys[0].shape[2] >= 16
    for layer in range(CFG["n_layers"]):
        for row in range(3):
            assert torch.equal(batch.keys[layer][row, :, :6], cache.keys[layer][0, :, :6])
            assert torch.equal(batch.values[layer][row, :, :6], cache.values[layer][0, :, :6])
    batch.keys[0][0].zero_()                          # rows are copies, not views of one another
    assert not torch.equal(batch.keys[0][1, :, :6], batch.keys[0][0, :, :6])
    rest = torch.randint(0, CFG["vocab_size"], (3, 4))
    continued = model(rest, kv_cache=batch)[:, -1]
    full = model(torch.cat([prefix.expand(3, -1), rest], dim=1))[:, -1]
    torch.testing.assert_close(continued[1:], full[1:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="esperava 1"):
        batch.repeated(2)
