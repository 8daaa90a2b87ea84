"""Loss and the training loop (the seed's functions, with options for speed and safety).

``train_model_simple`` keeps the seed's signature and return values; its keyword
options add gradient clipping, warmup + cosine learning rate, gradient accumulation
normalized by target tokens, mixed precision (bf16/fp16), periodic checkpoints and
resuming. With the defaults it computes exactly what the seed computes.

A batch is ``(inputs, targets)`` or, for packed rows, ``(inputs, targets,
position_ids, segment_ids)``.
"""
from __future__ import annotations

import itertools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch

from .device import autocast, choose_precision, make_grad_scaler
from .generation import generate, text_to_token_ids, token_ids_to_text
from .io import atomic_write

PathLike = Union[str, os.PathLike]
IGNORE_INDEX = -100


def _unpack(batch):
    inputs, targets, *extra = batch
    position_ids = extra[0] if len(extra) > 0 else None
    segment_ids = extra[1] if len(extra) > 1 else None
    return inputs, targets, position_ids, segment_ids


def loss_sum_and_count(input_batch, target_batch, model, device, position_ids=None,
                       segment_ids=None) -> Tuple[torch.Tensor, int]:
    """Summed cross-entropy over target tokens, and how many there are."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    kwargs = {}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids.to(device)
    if segment_ids is not None:
        kwargs["segment_ids"] = segment_ids.to(device)
    targets = target_batch.flatten()
    if hasattr(model, "hidden_states") and hasattr(model, "out_head"):
        # Logits only where a target counts: the vocabulary head is the costliest layer.
        keep = targets != IGNORE_INDEX
        hidden = model.hidden_states(input_batch, **kwargs).flatten(0, 1)[keep]
        logits, targets = model.out_head(hidden), targets[keep]
    else:
        logits = model(input_batch, **kwargs).flatten(0, 1)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum",
                                             ignore_index=IGNORE_INDEX)
    return loss, int((target_batch != IGNORE_INDEX).sum())


def calc_loss_batch(input_batch, target_batch, model, device, position_ids=None,
                    segment_ids=None) -> torch.Tensor:
    """Mean cross-entropy over the batch's target tokens (as in the seed).

    A batch with no target token at all gives a loss of 0 (with a warning), never NaN.
    """
    loss, count = loss_sum_and_count(input_batch, target_batch, model, device,
                                     position_ids, segment_ids)
    if count == 0:
        warnings.warn("Lote sem nenhum token-alvo (todos -100): perda 0 usada no lugar de NaN.",
                      RuntimeWarning, stacklevel=2)
        return loss * 0.0
    return loss / count


def calc_loss_loader(data_loader, model, device, num_batches: Optional[int] = None,
                     token_weighted: bool = False) -> float:
    """Average loss over the first ``num_batches`` batches (all by default), as in the seed.

    The seed averages the per-batch means; ``token_weighted=True`` divides the summed
    loss by the total number of target tokens instead (every token counts the same).
    An empty loader gives NaN, as in the seed.
    """
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss, total_tokens = 0.0, 0
    for i, batch in enumerate(data_loader):
        if i >= num_batches:
            break
        inputs, targets, pos, seg = _unpack(batch)
        if token_weighted:
            loss, count = loss_sum_and_count(inputs, targets, model, device, pos, seg)
            total_loss += loss.item()
            total_tokens += count
        else:
            total_loss += calc_loss_batch(inputs, targets, model, device, pos, seg).item()
    if token_weighted:
        return total_loss / total_tokens if total_tokens else float("nan")
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter: int,
                   precision: str = "fp32") -> Tuple[float, float]:
    """Train and validation loss over ``eval_iter`` batches, in eval mode (as in the seed)."""
    model.eval()
    with torch.no_grad(), autocast(device, precision):
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context: str,
                              max_new_tokens: int = 50, eos_id: int = 50256) -> str:
    """Print (and return) the model's continuation of ``start_context``; stops at end-of-text."""
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    token_ids = generate(model, encoded, max_new_tokens=max_new_tokens,
                         context_size=context_size, eos_id=eos_id)
    decoded = token_ids_to_text(token_ids, tokenizer)
    print(decoded.replace("\n", " "))
    model.train()
    return decoded


def lr_at_step(step: int, total_steps: int, warmup_steps: int, schedule: Optional[str],
               base_lr: float, min_lr_ratio: float = 0.1) -> float:
    """Learning rate for ``step``: linear warmup, then constant or cosine decay."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
    return base_lr


@dataclass
class TrainState:
    """What a checkpoint keeps so training can resume where it stopped."""

    epoch: int = 0                 # epoch in progress
    batch_in_epoch: int = 0        # optimizer-steps' batches already done in this epoch
    global_step: int = -1          # the seed counts from -1
    tokens_seen: int = 0
    train_losses: List[float] = field(default_factory=list)
    val_losses: List[float] = field(default_factory=list)
    track_tokens_seen: List[int] = field(default_factory=list)
    epoch_rng_state: Optional[torch.Tensor] = None
    rng_state: Optional[torch.Tensor] = None      # at the moment the checkpoint was written


def save_checkpoint(path: PathLike, model, optimizer, state: TrainState, scaler=None) -> Path:
    """Model, optimizer and progress in one file, written atomically."""
    state.rng_state = torch.get_rng_state()
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "state": state.__dict__, "scaler": scaler.state_dict() if scaler else None}
    return atomic_write(path, lambda f: torch.save(payload, f), mode="wb")


def load_checkpoint(path: PathLike, model, optimizer, device, scaler=None) -> TrainState:
    """Restore what :func:`save_checkpoint` wrote; returns the training state."""
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except Exception as exc:
        raise ValueError(f"Não foi possível retomar do checkpoint '{path}': {exc}") from exc
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    return TrainState(**payload["state"])


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs: int,
                       eval_freq: int, eval_iter: int, start_context: str, tokenizer, *,
                       grad_clip: Optional[float] = None, warmup_steps: int = 0,
                       lr_schedule: Optional[str] = None, min_lr_ratio: float = 0.1,
                       grad_accum_steps: int = 1, precision: str = "fp32",
                       checkpoint_path: Optional[PathLike] = None, checkpoint_every: int = 0,
                       resume: bool = False, progress: bool = True, print_samples: bool = True,
                       max_steps: Optional[int] = None):
    """Finetune ``model``; returns ``train_losses, val_losses, track_tokens_seen`` (the seed's).

    Every ``eval_freq`` optimizer steps the train/validation losses over ``eval_iter``
    batches are recorded and printed; after each epoch a sample answer to
    ``start_context`` is printed. Options (all off by default, so the seed's run is
    reproduced): ``grad_clip`` (max gradient norm), ``warmup_steps`` and
    ``lr_schedule="cosine"``, ``grad_accum_steps`` (the loss of the accumulated batches
    is divided by their total number of target tokens), ``precision``
    (``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"``), ``checkpoint_path`` (saved after each
    epoch and every ``checkpoint_every`` steps; ``resume=True`` continues from it),
    ``max_steps`` (stop early, e.g. for a quick profile).
    """
    from tqdm.auto import tqdm

    precision = choose_precision(device, precision)
    scaler = make_grad_scaler(device, precision)
    state = TrainState()
    if resume and checkpoint_path and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path, model, optimizer, device, scaler)
        print(f"Retomando do checkpoint '{checkpoint_path}': época {state.epoch + 1}, "
              f"passo {state.global_step + 1}.")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    steps_per_epoch = len(train_loader) // grad_accum_steps
    total_steps = steps_per_epoch * num_epochs
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)

    bar = tqdm(total=total_steps, initial=state.global_step + 1, desc="Treinando",
               disable=not progress, unit="passo")
    model.train()
    try:
        for epoch in range(state.epoch, num_epochs):
            if max_steps is not None and state.global_step + 1 >= max_steps:
                break                                  # resumed from a run that already ended
            resuming = state.epoch_rng_state is not None and epoch == state.epoch and state.batch_in_epoch
            if resuming:
                torch.set_rng_state(state.epoch_rng_state)   # same shuffle as before the stop
            else:
                state.epoch_rng_state, state.batch_in_epoch = torch.get_rng_state(), 0
            # The sampler draws its shuffle seed when the first batch is taken: take it now.
            batches = iter(train_loader)
            first = next(batches, None)
            batches = itertools.chain([] if first is None else [first], batches)
            if resuming and state.rng_state is not None:
                torch.set_rng_state(state.rng_state)         # and the random stream where it was
            state.epoch = epoch
            skip = state.batch_in_epoch
            group: list = []
            for batch_index, batch in enumerate(batches):
                if batch_index < skip:
                    continue
                group.append(batch)
                if len(group) < grad_accum_steps:
                    continue
                step = state.global_step + 1
                if warmup_steps or lr_schedule:
                    for pg, base in zip(optimizer.param_groups, base_lrs):
                        pg["lr"] = lr_at_step(step, total_steps, warmup_steps, lr_schedule, base, min_lr_ratio)
                _optimizer_step(model, optimizer, group, device, precision, scaler, grad_clip)
                state.tokens_seen += sum(b[0].numel() for b in group)
                state.global_step = step
                state.batch_in_epoch = batch_index + 1
                group = []
                bar.update(1)
                if state.global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device,
                                                          eval_iter, precision)
                    state.train_losses.append(train_loss)
                    state.val_losses.append(val_loss)
                    state.track_tokens_seen.append(state.tokens_seen)
                    bar.write(f"Ep {epoch + 1} (Step {state.global_step:06d}): "
                              f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
                if checkpoint_path and checkpoint_every and state.global_step % checkpoint_every == 0:
                    save_checkpoint(checkpoint_path, model, optimizer, state, scaler)
                if max_steps is not None and state.global_step + 1 >= max_steps:
                    break
            finished_epoch = state.batch_in_epoch >= steps_per_epoch * grad_accum_steps
            if print_samples:
                generate_and_print_sample(model, tokenizer, device, start_context)
            if finished_epoch:
                state.epoch, state.batch_in_epoch, state.epoch_rng_state = epoch + 1, 0, None
            if checkpoint_path:
                save_checkpoint(checkpoint_path, model, optimizer, state, scaler)
            if not finished_epoch:                     # stopped by max_steps in mid-epoch
                break
    finally:
        bar.close()
    return state.train_losses, state.val_losses, state.track_tokens_seen


def _optimizer_step(model, optimizer, group, device, precision, scaler, grad_clip) -> None:
    """One optimizer step over the accumulated batches, normalized by their target tokens."""
    optimizer.zero_grad()
    total = sum(int((b[1] != IGNORE_INDEX).sum()) for b in group)
    for batch in group:
        inputs, targets, pos, seg = _unpack(batch)
        with autocast(device, precision):
            loss, _ = loss_sum_and_count(inputs, targets, model, device, pos, seg)
        loss = loss / max(total, 1)
        (scaler.scale(loss) if scaler else loss).backward()
    if total == 0:
        warnings.warn("Passo sem nenhum token-alvo: gradiente zero.", RuntimeWarning, stacklevel=3)
    if scaler:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def make_optimizer(model, lr: float = 5e-5, weight_decay: float = 0.1,
                   fused: Union[bool, str] = "auto") -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters (the seed's ``lr`` and ``weight_decay`` by default).

    ``fused="auto"`` takes the fused kernel (one pass over each parameter) where torch
    has it for the parameters' device (CUDA, and the CPU since torch 2.4), else the
    multi-tensor ``foreach`` version on GPUs, else torch's default; ``fused=False`` is
    torch's default, i.e. the seed's optimizer; ``fused=True`` insists on the fused one.
    For GPT-2 small on a 2-core CPU the fused step took 0.14-0.2 s, the default 1.4-2.1 s
    (``benchmarks/bench_speed.py``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if fused is False:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if fused is True:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if fused != "auto":
        raise ValueError(f"fused deve ser 'auto', True ou False, mas é {fused!r}.")
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        # Not on this device or torch version. foreach helps on GPUs; on a CPU it is slower.
        on_gpu = any(p.device.type in ("cuda", "mps", "xpu") for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=on_gpu or None)


def optimizer_kind(optimizer) -> str:
    """``"fused"``, ``"foreach"`` or ``"for-loop"``: which AdamW implementation runs."""
    defaults = optimizer.defaults
    if defaults.get("fused"):
        return "fused"
    return "foreach" if defaults.get("foreach") else "for-loop"


def compile_model(model, enabled: bool = True, **compile_kwargs):
    """Compile each transformer block with ``torch.compile`` in place; returns ``model``.

    Blocks are compiled (not the whole model) so ``hidden_states`` (the loss at target
    tokens, generation) runs compiled too and ``state_dict`` names stay the book's.
    ``dynamic=True`` by default: batches change length. Where torch cannot compile
    (no C++ compiler, old torch), the model stays as it is, with a warning.
    """
    if not enabled:
        return model
    compile_kwargs.setdefault("dynamic", True)
    blocks = getattr(model, "trf_blocks", None)
    try:
        if blocks is None:
            model.compile(**compile_kwargs)
        else:
            for block in blocks:
                block.compile(**compile_kwargs)
    except Exception as exc:  # pragma: no cover - depends on the installation
        warnings.warn(f"torch.compile indisponível ({exc}); o modelo segue sem compilar.",
                      RuntimeWarning, stacklevel=2)
    return model
