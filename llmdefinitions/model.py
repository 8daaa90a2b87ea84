"""GPT-2 in one file, with the parameter names of *Build a Large Language Model From Scratch*.

A ``state_dict`` saved by the book's code loads into :class:`GPTModel` (names such as
``tok_emb``, ``pos_emb``, ``trf_blocks.0.att.W_query``, ``final_norm``, ``out_head``).

Beyond the book's model, ``forward`` optionally takes:

* ``position_ids`` — explicit positions per token, e.g. restarting at 0 for each
  sample packed into one row, or starting after the left padding of a prompt;
* ``segment_ids`` — an id per token; a token attends only to earlier tokens of its
  own segment. Packed samples get different ids, so attention never crosses a
  sample boundary; left padding gets its own id, so it never leaks into a prompt;
* ``kv_cache`` — a :class:`KVCache` that keeps keys and values of earlier tokens,
  so generation computes only the new token at each step.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (SDPA),
which picks a fused kernel (flash / memory-efficient) where the hardware has one.
In a packed row (samples one after another, each its own segment) attention runs
sample by sample (:class:`SegmentSpans`) instead of over the whole row with a
block-diagonal mask: a row of 8 samples of ~50 tokens does ~8x less attention work.
"""
from __future__ import annotations

from functools import partial
from typing import List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


class KVCache:
    """Keys and values of the tokens seen so far, one pair of buffers per layer.

    The buffers grow by doubling, so appending a token costs O(1) amortized.
    ``segment_ids`` (when used) are kept for the cached tokens as well.
    """

    def __init__(self, n_layers: int):
        self.keys: List[Optional[torch.Tensor]] = [None] * n_layers
        self.values: List[Optional[torch.Tensor]] = [None] * n_layers
        self.length = 0                      # tokens already stored
        self.segment_ids: Optional[torch.Tensor] = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the new keys/values of ``layer`` after the cached ones; return all of them."""
        start, new = self.length, k.shape[2]
        buf_k = self.keys[layer]
        if buf_k is None or buf_k.shape[2] < start + new:
            capacity = max(16, 2 * (start + new))
            grown_k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            grown_v = v.new_empty(grown_k.shape)
            if buf_k is not None and start:
                grown_k[:, :, :start] = buf_k[:, :, :start]
                grown_v[:, :, :start] = self.values[layer][:, :, :start]
            self.keys[layer], self.values[layer] = grown_k, grown_v
        self.keys[layer][:, :, start:start + new] = k
        self.values[layer][:, :, start:start + new] = v
        return self.keys[layer][:, :, :start + new], self.values[layer][:, :, :start + new]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows in ``rows`` (e.g. drop sequences that have finished)."""
        self.keys = [None if k is None else k[rows] for k in self.keys]
        self.values = [None if v is None else v[rows] for v in self.values]
        if self.segment_ids is not None:
            self.segment_ids = self.segment_ids[rows]

    def replace_rows(self, rows: List[int], other: "KVCache") -> None:
        """Put ``other``'s rows (a new prompt each, prefilled) in place of ``rows`` (finished ones).

        Used by continuous batching: a finished sequence's row takes the next waiting
        prompt instead of the batch shrinking. The new keys and values go at the start
        of the row and the rest of the row is zeroed with segment id 0, so attention never
        sees it; the cache grows first if the new prompt is longer than what it holds.
        """
        if other.length > self.length:
            self._grow(other.length)
        index = torch.tensor(rows, device=self.segment_ids.device)
        for layer in range(len(self.keys)):
            for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
                mine[layer][index, :, :self.length] = 0
                mine[layer][index, :, :other.length] = theirs[layer][:, :, :other.length]
        self.segment_ids[index] = 0
        self.segment_ids[index, :other.length] = other.segment_ids

    def _grow(self, length: int) -> None:
        """Extend every row to ``length`` tokens with zeros of segment id 0 (never attended)."""
        for layer in range(len(self.keys)):
            k, v = self.keys[layer], self.values[layer]
            if k.shape[2] < length:
                bigger = k.new_empty(k.shape[0], k.shape[1], 2 * length, k.shape[3])
                self.keys[layer], self.values[layer] = bigger, torch.empty_like(bigger)
                self.keys[layer][:, :, :self.length] = k[:, :, :self.length]
                self.values[layer][:, :, :self.length] = v[:, :, :self.length]
            self.keys[layer][:, :, self.length:length] = 0
            self.values[layer][:, :, self.length:length] = 0
        pad = self.segment_ids.new_zeros(self.segment_ids.shape[0], length - self.length)
        self.segment_ids = torch.cat([self.segment_ids, pad], dim=1)
        self.length = length

    def repeated(self, batch: int, room: int = 0) -> "KVCache":
        """A new cache holding this one-row cache ``batch`` times, with space for ``room`` more tokens.

        Tokens every prompt starts with are computed once, then copied to each row of a
        batch: copying keys and values is far cheaper than computing them again.
        """
        copy = KVCache(len(self.keys))
        copy.length = self.length
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is None:
                continue
            if k.shape[0] != 1:
                raise ValueError(f"repeated: o cache tem {k.shape[0]} linhas; esperava 1.")
            shape = (batch, k.shape[1], max(16, self.length + room), k.shape[3])
            copy.keys[layer], copy.values[layer] = k.new_empty(shape), v.new_empty(shape)
            copy.keys[layer][:, :, :self.length] = k[:, :, :self.length]
            copy.values[layer][:, :, :self.length] = v[:, :, :self.length]
        if self.segment_ids is not None:
            copy.segment_ids = self.segment_ids.expand(batch, -1).clone()
        return copy


class SegmentSpans(NamedTuple):
    """Where each segment of each row lies: ``spans[row] = [(start, end), ...]``, covering the row.

    Built only when every segment id of a row occupies one contiguous run (packed rows:
    samples one after another, the padding tail last), so attention can run causally
    inside each run, which is exactly the block-diagonal causal mask.
    """

    spans: List[List[Tuple[int, int]]]

    @classmethod
    def of(cls, segment_ids: torch.Tensor) -> Optional["SegmentSpans"]:
        """The spans of ``segment_ids`` ``(batch, seq_len)``, or ``None`` if an id is split in two runs."""
        rows = []
        for row in segment_ids.tolist():
            cuts = [i for i in range(1, len(row)) if row[i] != row[i - 1]]
            starts, ends = [0] + cuts, cuts + [len(row)]
            if len({row[i] for i in starts}) != len(starts):
                return None
            rows.append(list(zip(starts, ends)))
        return cls(rows)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        """Causal attention inside each span, the pieces joined back into ``(batch, heads, seq_len, dim)``.

        SDPA, except for bf16/fp16 on a CPU: there, for samples this short, the plain
        product-softmax-product (the book's own attention) runs 2-3x faster than SDPA's
        kernel, forward and backward (measured with torch 2.13, 64 to 512 tokens).
        """
        plain = q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
        attend = _plain_causal_attention if plain else partial(F.scaled_dot_product_attention, is_causal=True)
        return torch.cat([
            torch.cat([attend(q[r:r + 1, :, a:b], k[r:r + 1, :, a:b], v[r:r + 1, :, a:b], dropout_p=dropout_p)
                       for a, b in row], dim=2)
            for r, row in enumerate(self.spans)], dim=0)


def _plain_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + causal mask) v, written out (what SDPA computes)."""
    n = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    weights = F.dropout(torch.softmax(scores, dim=-1), dropout_p)
    return weights.to(v.dtype) @ v


def build_attention_mask(
    q_len: int,
    past_len: int,
    segment_ids_q: Optional[torch.Tensor],
    segment_ids_k: Optional[torch.Tensor],
    device: torch.device,
) -> Optional[torch.Tensor]:
    """Boolean mask (True = may attend) of shape ``(B or 1, 1, q_len, past_len + q_len)``.

    Causal: query ``i`` (absolute index ``past_len + i``) sees keys ``0..past_len + i``.
    With segment ids, a query also sees only keys of its own segment. Every query
    always sees itself, so no row of the mask is empty (SDPA would return NaN).
    Returns ``None`` when plain causal attention from position 0 suffices.
    """
    if segment_ids_q is None and past_len == 0:
        return None
    q_pos = torch.arange(past_len, past_len + q_len, device=device)
    k_pos = torch.arange(past_len + q_len, device=device)
    mask = (k_pos[None, :] <= q_pos[:, None])[None, None]          # (1, 1, q, k)
    if segment_ids_q is not None:
        same = segment_ids_q[:, :, None] == segment_ids_k[:, None, :]  # (B, q, k)
        mask = mask & same[:, None]
    return mask


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention (the book's layout, SDPA inside)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) precisa ser divisível por num_heads ({num_heads}).")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = dropout
        # The book keeps a causal `mask` buffer in the state_dict; SDPA builds the mask
        # itself, so we drop that key when loading a book checkpoint (see the hook).
        self._register_load_state_dict_pre_hook(self._drop_book_mask)

    @staticmethod
    def _drop_book_mask(state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "mask", None)

    def forward(self, x: torch.Tensor, attn_mask: Union[torch.Tensor, SegmentSpans, None] = None,
                kv_cache: Optional[KVCache] = None, layer_idx: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        # (b, t, d_out) -> (b, heads, t, head_dim)
        q = self.W_query(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.W_key(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)
        dropout_p = self.dropout if self.training else 0.0
        if isinstance(attn_mask, SegmentSpans):
            ctx = attn_mask.attention(q, k, v, dropout_p)
        elif attn_mask is None:
            # Plain causal attention; a single new token against a cache sees everything.
            ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p,
                                                 is_causal=t > 1)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                 dropout_p=dropout_p)
        ctx = ctx.transpose(1, 2).reshape(b, t, self.d_out)
        return self.out_proj(ctx)


class LayerNorm(nn.Module):
    """Layer normalization with the book's parameter names (``scale``, ``shift``)."""

    def __init__(self, emb_dim: int):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU with the tanh approximation that GPT-2 was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Position-wise MLP: expand 4x, GELU, project back."""

    def __init__(self, cfg: Mapping):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: attention and MLP, each with a residual connection."""

    def __init__(self, cfg: Mapping):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"], d_out=cfg["emb_dim"], context_length=cfg["context_length"],
            num_heads=cfg["n_heads"], dropout=cfg["drop_rate"], qkv_bias=cfg["qkv_bias"],
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x, attn_mask=None, kv_cache=None, layer_idx=0):
        x = x + self.drop_shortcut(self.att(self.norm1(x), attn_mask, kv_cache, layer_idx))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


REQUIRED_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers",
                 "drop_rate", "qkv_bias")


class GPTModel(nn.Module):
    """GPT-2 from the book's config dict.

    ``cfg`` has ``vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate,
    qkv_bias`` (see :mod:`llmdefinitions.config`).
    """

    def __init__(self, cfg: Mapping):
        super().__init__()
        missing = [k for k in REQUIRED_KEYS if k not in cfg]
        if missing:
            raise ValueError(f"Configuração do modelo sem as chaves: {', '.join(missing)}.")
        self.cfg = dict(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        # Packed rows: attention sample by sample (see SegmentSpans). Compiled blocks
        # take the one-tensor mask instead: spans change every batch and would recompile.
        self.split_packed_attention = True

    @property
    def context_length(self) -> int:
        return self.pos_emb.num_embeddings

    def new_kv_cache(self) -> KVCache:
        """An empty cache for this model (pass it to ``forward`` as ``kv_cache``)."""
        return KVCache(len(self.trf_blocks))

    def forward(
        self,
        in_idx: torch.Tensor,
        position_ids: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
        kv_cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Logits ``(batch, seq_len, vocab_size)`` for token ids ``in_idx`` ``(batch, seq_len)``."""
        return self.out_head(self.hidden_states(in_idx, position_ids, segment_ids, kv_cache))

    def hidden_states(
        self,
        in_idx: torch.Tensor,
        position_ids: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
        kv_cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Final-normalized hidden states ``(batch, seq_len, emb_dim)``, before the output head.

        The head (``emb_dim x vocab_size``) is the most expensive layer of a small GPT;
        callers that need logits at a few positions only (the loss at target tokens,
        the last token in generation) apply ``out_head`` to just those rows.
        """
        b, t = in_idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if position_ids is None:
            if past + t > self.context_length:
                raise ValueError(
                    f"Sequência de {past + t} tokens excede o contexto do modelo "
                    f"({self.context_length} tokens)."
                )
            position_ids = torch.arange(past, past + t, device=in_idx.device)[None]
        x = self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(position_ids))

        segment_ids_k = segment_ids
        if kv_cache is not None and segment_ids is not None:
            if kv_cache.segment_ids is not None:
                segment_ids_k = torch.cat([kv_cache.segment_ids, segment_ids], dim=1)
            kv_cache.segment_ids = segment_ids_k
        attn_mask = None
        if segment_ids is not None and kv_cache is None and self.split_packed_attention:
            attn_mask = SegmentSpans.of(segment_ids)   # packed rows: attention sample by sample
        if attn_mask is None:
            attn_mask = build_attention_mask(t, past, segment_ids, segment_ids_k, in_idx.device)

        for i, block in enumerate(self.trf_blocks):
            x = block(x, attn_mask, kv_cache, i)
        if kv_cache is not None:
            kv_cache.length += t
        return self.final_norm(x)
