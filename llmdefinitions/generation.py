"""Text generation with a KV cache: one prompt (the book's ``generate``) or many at once.

* :func:`generate` keeps the book's signature and results, but computes only the new
  token at each step (the KV cache) instead of the whole sequence again;
* :func:`generate_batch` answers prompts of different lengths together: left padding,
  positions that start at each prompt's first token, a segment id that keeps the
  padding out of attention, a per-row stop at ``eos_id``, and finished rows removed
  from the batch;
* :func:`generate_responses` answers a whole test set, sorted by prompt length, with a
  progress bar; :func:`save_responses` writes ``instruction-data-with-response.json``.

Every Alpaca prompt starts with the same preamble ("Below is an instruction that
describes a task. ..."), about half of a test prompt's tokens. :func:`generate_responses`
computes its keys and values once (:func:`prefill_shared_prefix`) and copies them into
every batch, so each prompt's prefill computes only its own tokens. Greedy fp32
results stay those of the book's one-prompt-at-a-time loop (tested token for token).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

from .io import write_json_atomic
from .serialization import load_tensors, save_tensors
from .prompts import get_prompt_style
from .tokenizer import END_OF_TEXT_ID, encode_text

if TYPE_CHECKING:
    from .model import KVCache

PathLike = Union[str, os.PathLike]


def text_to_token_ids(text: str, tokenizer) -> torch.Tensor:
    """``(1, n)`` tensor of the token ids of ``text``, as in the book.

    One difference: the text is encoded with the course's one rule
    (:func:`llmdefinitions.tokenizer.encode_text`), so a literal ``<|endoftext|>`` in it
    is text, exactly as in training; the book's version turns it into the control token.
    """
    encoded = encode_text(tokenizer, text)
    return torch.tensor(encoded).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer) -> str:
    """Decode a ``(1, n)`` or ``(n,)`` tensor of ids, as in the book."""
    flat = token_ids.squeeze(0) if token_ids.dim() > 1 else token_ids
    return tokenizer.decode(flat.tolist())


def _next_token(logits: torch.Tensor, temperature: float, top_k: Optional[int]) -> torch.Tensor:
    """Pick the next token from the last-position logits ``(batch, vocab)`` (the book's rules)."""
    if top_k is not None:
        top_logits, _ = torch.topk(logits, top_k)
        min_val = top_logits[:, -1:]
        logits = torch.where(logits < min_val, torch.tensor(float("-inf"), device=logits.device), logits)
    if temperature > 0.0:
        probs = torch.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probs, num_samples=1)
    return torch.argmax(logits, dim=-1, keepdim=True)


def _last_logits(model, idx, **kwargs) -> torch.Tensor:
    """Logits of the last position only ``(batch, vocab)`` (the head on one row per sample)."""
    if hasattr(model, "hidden_states") and hasattr(model, "out_head"):
        return model.out_head(model.hidden_states(idx, **kwargs)[:, -1, :])
    return model(idx, **kwargs)[:, -1, :]


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, context_size: int,
             temperature: float = 0.0, top_k: Optional[int] = None,
             eos_id: Optional[int] = None, use_cache: bool = True) -> torch.Tensor:
    """Extend ``idx`` ``(batch, n)`` by up to ``max_new_tokens`` tokens (the book's function).

    Greedy when ``temperature == 0``; ``top_k`` keeps the k most likely tokens; stops
    when ``eos_id`` is produced (not appended). As in the book the model sees at most
    the last ``context_size`` tokens. With a batch of several rows, each row stops at
    its own ``eos_id`` and is padded with it until all have stopped.
    ``use_cache=False`` runs the book's loop (the whole window again at every step).
    """
    was_training = model.training
    model.eval()
    context_size = min(context_size, model.context_length) if hasattr(model, "context_length") else context_size
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    cache = None
    try:
        for _ in range(max_new_tokens):
            window = idx[:, -context_size:]
            if not use_cache:
                logits = model(window)[:, -1, :]       # the book's way: full logits every step
            elif cache is None or cache.length + 1 > context_size:
                # (Re)fill the cache; past the context the window slides, so positions change.
                cache = model.new_kv_cache()
                logits = _last_logits(model, window, kv_cache=cache)
            else:
                logits = _last_logits(model, idx[:, -1:], kv_cache=cache)
            idx_next = _next_token(logits, temperature, top_k)
            if eos_id is not None:
                if idx.shape[0] == 1:
                    if idx_next.item() == eos_id:
                        break
                else:
                    finished |= idx_next.squeeze(1) == eos_id
                    idx_next = torch.where(finished[:, None], torch.full_like(idx_next, eos_id), idx_next)
            idx = torch.cat((idx, idx_next), dim=1)
            if eos_id is not None and idx.shape[0] > 1 and bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return idx


@dataclass
class SharedPrefix:
    """Tokens that every prompt of a batch starts with, and their keys and values (one row)."""

    token_ids: List[int]
    cache: KVCache           # filled with ``token_ids``


def common_prefix(prompts: Sequence[Sequence[int]]) -> List[int]:
    """Longest run of tokens all ``prompts`` start with, leaving each prompt at least one token of its own."""
    if not prompts:
        return []
    shared = os.path.commonprefix([list(p) for p in prompts])   # works on any lists, not only strings
    return shared[:max(0, min(len(p) for p in prompts) - 1)]


@torch.no_grad()
def prefill_shared_prefix(model, token_ids: Sequence[int]) -> SharedPrefix:
    """Keys and values of ``token_ids`` computed once, to be copied into every batch that starts with them."""
    was_training = model.training
    model.eval()
    try:
        cache = model.new_kv_cache()
        ids = torch.tensor([list(token_ids)], device=_model_device(model))
        model.hidden_states(ids, kv_cache=cache)
    finally:
        model.train(was_training)
    cache.segment_ids = torch.ones_like(ids)       # the prefix belongs to each prompt's own segment
    return SharedPrefix(list(token_ids), cache)


@torch.no_grad()
def generate_batch(model, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   context_size: Optional[int] = None, temperature: float = 0.0,
                   top_k: Optional[int] = None, eos_id: Optional[int] = None,
                   pad_token_id: Optional[int] = None, prefix: Optional[SharedPrefix] = None,
                   batch_size: Optional[int] = None,
                   on_finish: Optional[Callable[[int, List[int]], None]] = None) -> List[List[int]]:
    """New token ids for each prompt (end-of-text not included), prompts decoded together.

    Greedy results equal :func:`generate` one prompt at a time (fp32). A prompt that
    would run past ``context_size`` goes through :func:`generate` alone, which slides
    the window exactly as the book does. At most ``batch_size`` prompts (all by default)
    are decoded at once; when one finishes, the next waiting prompt takes its row
    (continuous batching), so a long answer never decodes alone while prompts wait.
    ``prefix`` (from :func:`prefill_shared_prefix`) holds the keys and values of tokens
    every prompt starts with: they are copied, not computed again. ``on_finish(i, ids)``
    is called as soon as prompt ``i`` is done.
    """
    device = _model_device(model)
    context_size = min(context_size or model.context_length, model.context_length)
    if pad_token_id is None:         # its value never matters: padding is kept out of attention
        pad_token_id = eos_id if eos_id is not None else 0
    results: List[Optional[List[int]]] = [None] * len(prompts)

    def finish(i: int, ids: List[int]) -> None:
        results[i] = ids
        if on_finish is not None:
            on_finish(i, ids)

    batched = []
    for i, ids in enumerate(prompts):
        if len(ids) == 0:
            raise ValueError(f"generate_batch: o prompt {i} está vazio.")
        if len(ids) + max_new_tokens > context_size:
            out = generate(model, torch.tensor([list(ids)], device=device), max_new_tokens,
                           context_size, temperature, top_k, eos_id)
            finish(i, out[0, len(ids):].tolist())
        else:
            batched.append(i)
    if prefix is not None:
        shared = len(prefix.token_ids)
        wrong = [i for i in batched if len(prompts[i]) <= shared or list(prompts[i][:shared]) != prefix.token_ids]
        if wrong:
            raise ValueError(f"generate_batch: os prompts {wrong[:10]} não começam pelo prefixo comum "
                             f"({shared} tokens) ou não têm nenhum token além dele.")
    if batched and max_new_tokens > 0:
        was_training = model.training
        model.eval()
        try:
            decoder = _Decoder(model, prompts, max_new_tokens, temperature, top_k, eos_id, pad_token_id,
                               device, prefix, finish)
            decoder.run(batched, batch_size or len(batched))
        finally:
            model.train(was_training)
    for i in batched if max_new_tokens <= 0 else []:
        finish(i, [])
    return [r if r is not None else [] for r in results]


class _Decoder:
    """Decoding of many prompts with one KV cache: rows that finish take the next waiting prompt.

    Each cache row holds one prompt (``slots``). Prompts are prefilled left-padded, after
    the copied shared prefix, with positions that start at each prompt's first token and
    segment ids that keep padding out of attention; every step then feeds each row its
    last token at its own position.
    """

    def __init__(self, model, prompts, max_new_tokens, temperature, top_k, eos_id, pad_token_id, device,
                 prefix, finish):
        self.model, self.prompts, self.max_new_tokens = model, prompts, max_new_tokens
        self.temperature, self.top_k, self.eos_id = temperature, top_k, eos_id
        self.pad_token_id, self.device, self.prefix, self.finish = pad_token_id, device, prefix, finish
        self.outputs: Dict[int, List[int]] = {}

    def prefill(self, indices: List[int]):
        """A new cache with ``indices`` prompts, and the logits of their last tokens."""
        shared = len(self.prefix.token_ids) if self.prefix is not None else 0
        rests = [list(self.prompts[i])[shared:] for i in indices]
        lengths = torch.tensor([len(p) for p in rests], device=self.device)
        width = int(lengths.max())
        idx = torch.full((len(rests), width), self.pad_token_id, dtype=torch.long, device=self.device)
        for row, ids in enumerate(rests):
            idx[row, width - len(ids):] = torch.as_tensor(ids, device=self.device)
        pad = (width - lengths)[:, None]
        columns = torch.arange(width, device=self.device)[None]
        positions = shared + (columns - pad).clamp(min=0)
        segments = (columns >= pad).long()             # 0 = padding, 1 = prompt and answer
        cache = (self.model.new_kv_cache() if self.prefix is None
                 else self.prefix.cache.repeated(len(rests), room=width))
        logits = _last_logits(self.model, idx, position_ids=positions, segment_ids=segments, kv_cache=cache)
        return cache, logits

    def take(self, slots: List[int], rows: List[int], logits: torch.Tensor) -> List[int]:
        """Choose the next token of ``rows`` (logits in that order); return the rows that finished."""
        done = []
        for row, token in zip(rows, _next_token(logits, self.temperature, self.top_k).squeeze(1).tolist()):
            i = slots[row]
            if self.eos_id is not None and token == self.eos_id:
                done.append(row)
                continue
            self.outputs[i].append(token)
            if len(self.outputs[i]) == self.max_new_tokens:
                done.append(row)
        for row in done:
            self.finish(slots[row], self.outputs[slots[row]])
        return done

    def run(self, order: List[int], batch_size: int) -> None:
        waiting = list(reversed(order))                # pop() takes them in order
        slots = [waiting.pop() for _ in range(min(batch_size, len(waiting)))]
        for i in slots:
            self.outputs[i] = []
        cache, logits = self.prefill(slots)
        done = self.take(slots, list(range(len(slots))), logits)
        while True:
            while done and waiting:                    # finished rows take waiting prompts
                rows = done[:len(waiting)]
                new = [waiting.pop() for _ in rows]
                for row, i in zip(rows, new):
                    slots[row], self.outputs[i] = i, []
                new_cache, new_logits = self.prefill(new)
                cache.replace_rows(rows, new_cache)
                done = done[len(rows):] + self.take(slots, rows, new_logits)
            if done:                                   # nothing waits: the batch shrinks
                keep = [row for row in range(len(slots)) if row not in set(done)]
                if not keep:
                    return
                cache.select_rows(torch.tensor(keep, device=self.device))
                slots = [slots[row] for row in keep]
            last = torch.tensor([[self.outputs[i][-1]] for i in slots], device=self.device)
            positions = torch.tensor([[len(self.prompts[i]) + len(self.outputs[i]) - 1] for i in slots],
                                     device=self.device)
            logits = _last_logits(self.model, last, position_ids=positions,
                                  segment_ids=torch.ones_like(last), kv_cache=cache)
            done = self.take(slots, list(range(len(slots))), logits)


def extract_response(generated_text: str, prompt_style: str = "alpaca") -> str:
    """Answer text from what the model wrote after the prompt (response header removed)."""
    marker = get_prompt_style(prompt_style).response_prefix.strip()
    text = generated_text.lstrip()
    if text.startswith(marker):
        text = text[len(marker):]
    return text.strip()


def generate_responses(model, tokenizer, entries: Sequence[dict], max_new_tokens: int = 256,
                       batch_size: int = 8, prompt_style: str = "alpaca",
                       context_size: Optional[int] = None, eos_id: int = END_OF_TEXT_ID,
                       temperature: float = 0.0, top_k: Optional[int] = None,
                       progress: bool = True, done: Optional[Mapping[int, str]] = None,
                       on_batch: Optional[Callable[[Dict[int, str]], None]] = None,
                       share_prefix: bool = True) -> List[str]:
    """The model's answer to every entry, ``batch_size`` prompts decoded together.

    The prompt is the entry's prompt without the response header, as in the book; the
    answer is the text of the tokens generated after it, with the header removed.
    Prompts go in order of length (little padding); a finished prompt's place goes to
    the next one at once (continuous batching, :func:`generate_batch`).

    Resuming: ``done`` maps entry indices to answers already generated; those entries
    are not generated again. ``on_batch(answers)`` receives the answers (index -> answer)
    as they finish, e.g. to save progress. Greedy answers do not depend on which prompts
    share a batch, so a resumed run gives the same answers as an uninterrupted one.

    ``share_prefix``: the tokens all prompts start with (the prompt style's preamble) are
    computed once and reused by every batch (:func:`prefill_shared_prefix`); same answers.
    """
    from tqdm.auto import tqdm

    style = get_prompt_style(prompt_style)
    prompts = [encode_text(tokenizer, style.prompt(e)) for e in entries]
    done = done or {}
    answers: List[Optional[str]] = [done.get(i) for i in range(len(prompts))]
    todo = sorted((i for i in range(len(prompts)) if i not in done), key=lambda i: len(prompts[i]))
    shared = common_prefix([prompts[i] for i in todo]) if share_prefix and hasattr(model, "new_kv_cache") else []
    with tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="Gerando respostas",
              disable=not progress) as bar:
        if todo:
            prefix = prefill_shared_prefix(model, shared) if shared else None

            def finished(k: int, ids: List[int]) -> None:
                i = todo[k]
                answers[i] = extract_response(tokenizer.decode(ids), prompt_style)
                if on_batch is not None:
                    on_batch({i: answers[i]})
                bar.update(1)

            generate_batch(model, [prompts[i] for i in todo], max_new_tokens, context_size, temperature,
                           top_k, eos_id, prefix=prefix, batch_size=batch_size, on_finish=finished)
    return [a if a is not None else "" for a in answers]


def save_responses(entries: Sequence[dict], responses: Sequence[str],
                   path: PathLike = "instruction-data-with-response.json",
                   key: str = "model_response") -> List[dict]:
    """Write the entries with their answers under ``key`` (UTF-8, atomic); return them."""
    if len(entries) != len(responses):
        raise ValueError(f"{len(entries)} entradas mas {len(responses)} respostas: nada foi salvo.")
    rows = [{**entry, key: response} for entry, response in zip(entries, responses)]
    write_json_atomic(path, rows, indent=4)
    return rows


def save_model(model: torch.nn.Module, path: PathLike) -> Path:
    """Save ``model.state_dict()`` atomically."""
    return save_tensors(model.state_dict(), path)


def load_model_weights(model: torch.nn.Module, path: PathLike, device="cpu") -> torch.nn.Module:
    """Load a saved ``state_dict`` (``weights_only=True``, ``map_location=device``) into ``model``."""
    path = Path(path)
    state = load_tensors(path, map_location=device, what="arquivo de modelo")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"Os pesos em '{path}' não correspondem a este modelo: {str(exc).splitlines()[0]}"
        ) from exc
    return model.to(device)
