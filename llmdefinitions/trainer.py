"""The course's trainer: the book's loop plus what long runs need.

:func:`llmdefinitions.training.train_model_simple` is the book's loop, kept as the book
writes it. :func:`train_model` runs the same loop with options the pipeline uses:

* **resume** from a checkpoint written every ``checkpoint_every`` steps and after each
  epoch (model, optimizer, progress and random state: an interrupted run continues to
  the same result as an uninterrupted one);
* **gradient accumulation** (``grad_accum_steps``), the loss normalized by the number
  of target tokens of the accumulated batches;
* **learning-rate schedule** (linear warmup, then constant or cosine) and **gradient
  clipping**;
* **mixed precision** (``precision``: fp32, bf16, fp16 with a gradient scaler);
* **packed batches** (``inputs, targets, position_ids, segment_ids``, see
  :mod:`llmdefinitions.packing`) and logits computed only where a target counts;
* ``max_steps`` to stop early (quick profiles);
* **several processes** (``parallel``, a :class:`llmdefinitions.distributed.Distributed`
  under torchrun: DDP or FSDP2), with the same steps as one process.

With its default options it computes the book's losses on the same batches (tested).
Checkpoints hold only tensors and plain values, and load with ``weights_only=True``.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Tuple, Union

import torch

from .data import IGNORE_INDEX
from .device import autocast, choose_precision, make_grad_scaler
from .io import PathLike
from .serialization import checkpoint_mismatch, load_tensors, save_tensors
from .training import generate_and_print_sample

Log = Callable[[str], None]


# --------------------------------------------------------------------------- loss

def split_batch(batch):
    """``inputs, targets, position_ids, segment_ids`` of a padded (2 tensors) or packed (4) batch."""
    inputs, targets, *extra = batch
    position_ids = extra[0] if len(extra) > 0 else None
    segment_ids = extra[1] if len(extra) > 1 else None
    return inputs, targets, position_ids, segment_ids


def loss_sum_and_count(batch, model, device) -> Tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's target tokens, and how many there are.

    The vocabulary head (the costliest layer) runs only at positions whose target
    counts, when the model exposes ``hidden_states`` and ``out_head``.
    """
    inputs, targets, position_ids, segment_ids = split_batch(batch)
    inputs, targets = inputs.to(device), targets.to(device)
    kwargs = {}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids.to(device)
    if segment_ids is not None:
        kwargs["segment_ids"] = segment_ids.to(device)
    flat_targets = targets.flatten()
    if hasattr(model, "hidden_states") and hasattr(model, "out_head"):
        keep = flat_targets != IGNORE_INDEX
        hidden = model.hidden_states(inputs, **kwargs).flatten(0, 1)[keep]
        logits, flat_targets = model.out_head(hidden), flat_targets[keep]
    else:
        logits = model(inputs, **kwargs).flatten(0, 1)
    loss = torch.nn.functional.cross_entropy(logits.float(), flat_targets, reduction="sum",
                                             ignore_index=IGNORE_INDEX)
    return loss, int((targets != IGNORE_INDEX).sum())


def batch_loss(batch, model, device) -> torch.Tensor:
    """Mean loss of one batch over its target tokens; 0 (not NaN) when it has none."""
    loss, count = loss_sum_and_count(batch, model, device)
    return loss / count if count else loss * 0.0


def loader_loss(data_loader, model, device, num_batches: Optional[int] = None,
                precision: str = "fp32", pack: bool = False) -> float:
    """The book's ``calc_loss_loader`` (mean of batch means) for padded or packed batches.

    No autograd record, the training's precision, logits only at target tokens and, with
    ``pack``, padded batches packed first (same targets, no padding computed): the same
    losses, computed faster. ``inference_mode`` only in fp32: under autocast it turns off
    the cache of weights cast to bf16/fp16, so every batch would cast them again
    (measured: 3 casts per linear layer and batch instead of one per evaluation).
    """
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = torch.zeros((), dtype=torch.float64, device=device)
    no_autograd = torch.inference_mode if precision == "fp32" else torch.no_grad
    with no_autograd(), autocast(device, precision):
        for batch in itertools.islice(data_loader, num_batches):
            if pack and len(batch) == 2:
                batch = pack_padded_batch(*batch)
            total += batch_loss(batch, model, device)
    return total.item() / num_batches             # one device sync per loader, not one per batch


def pack_padded_batch(inputs: torch.Tensor, targets: torch.Tensor, max_length: int = 1024):
    """A padded batch (the book's collate) as a packed one: the same samples and targets, no padding.

    A row's sample ends at its last counted target (its end-of-text target); a row with
    no counted target adds nothing to the loss, so it is left out.
    """
    from .packing import build_packed_batch, pack_lengths

    counted = targets != IGNORE_INDEX
    lengths = torch.where(counted.any(dim=1), counted.shape[1] - counted.flip(1).int().argmax(dim=1), 0)
    samples = [(inputs[r, :n].tolist(), targets[r, :n].tolist()) for r, n in enumerate(lengths.tolist()) if n]
    if not samples:
        return inputs, targets
    groups = pack_lengths([len(ids) for ids, _ in samples], max(max_length, inputs.shape[1]))
    return build_packed_batch([[samples[i] for i in group] for group in groups], device=inputs.device)


def evaluate(model, train_loader, val_loader, device, eval_iter: int,
             precision: str = "fp32", pack: Optional[bool] = None) -> Tuple[float, float]:
    """Train and validation loss over ``eval_iter`` batches, in eval mode (the book's ``evaluate_model``).

    ``pack=None``: validation batches are packed when the training batches are (the
    course's default), and left as they are when training is padded (the book's way).
    One precision context for both loaders, so the weights are cast once per evaluation.
    """
    model.eval()
    try:
        train_batches = list(itertools.islice(train_loader, eval_iter))
        if pack is None:
            pack = any(len(batch) == 4 for batch in train_batches)
        with autocast(device, precision):
            train_loss = loader_loss(train_batches, model, device, eval_iter, precision, pack)
            val_loss = loader_loss(val_loader, model, device, eval_iter, precision, pack)
        return train_loss, val_loss
    finally:
        model.train()


# --------------------------------------------------------------------------- schedule

def lr_at_step(step: int, total_steps: int, warmup_steps: int, schedule: Optional[str],
               base_lr: float, min_lr_ratio: float = 0.1) -> float:
    """Learning rate for ``step``: linear warmup, then constant (``None``) or ``"cosine"`` decay."""
    if schedule not in (None, "cosine"):
        raise ValueError(f"Agenda de taxa de aprendizado desconhecida: {schedule!r}. Use None ou 'cosine'.")
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * cosine)
    return base_lr


# --------------------------------------------------------------------------- checkpoints

@dataclass
class TrainState:
    """What a checkpoint keeps so that training resumes where it stopped."""

    epoch: int = 0                 # epoch in progress
    batch_in_epoch: int = 0        # batches of this epoch already used by optimizer steps
    global_step: int = -1          # the book counts from -1
    tokens_seen: int = 0
    train_losses: List[float] = field(default_factory=list)
    val_losses: List[float] = field(default_factory=list)
    track_tokens_seen: List[int] = field(default_factory=list)
    epoch_rng_state: Optional[torch.Tensor] = None   # RNG at the start of the epoch (its shuffle)
    rng_state: Optional[torch.Tensor] = None         # RNG when the checkpoint was written


def save_checkpoint(path: PathLike, model, optimizer, state: TrainState, scaler=None,
                    parallel=None) -> Path:
    """Model, optimizer and progress in one file (tensors and plain values only), written atomically.

    With ``parallel`` every process must call it: the full state is gathered, rank 0
    writes, and all return once the file is complete.
    """
    state.rng_state = torch.get_rng_state()
    if parallel is None:
        model_state, optimizer_state = model.state_dict(), optimizer.state_dict()
    else:
        model_state, optimizer_state = parallel.state_dicts(model, optimizer)
    payload = {"model": model_state, "optimizer": optimizer_state,
               "state": dict(state.__dict__), "scaler": scaler.state_dict() if scaler else None}
    if parallel is not None:
        payload["layout"] = parallel.layout()
        if parallel.is_main:
            save_tensors(payload, path)
        parallel.barrier()
        return Path(path)
    return save_tensors(payload, path)


def load_checkpoint(path: PathLike, model, optimizer, device, scaler=None, parallel=None) -> TrainState:
    """Restore what :func:`save_checkpoint` wrote (``weights_only=True``); returns the progress."""
    payload = load_tensors(path, map_location="cpu" if parallel else device, what="checkpoint de treino")
    layout = parallel.layout() if parallel is not None else None
    saved = payload.get("layout") if isinstance(payload, dict) else None
    if saved != layout:
        raise ValueError(f"O checkpoint de treino '{path}' é de um treino com outra divisão dos dados "
                         f"({saved or 'um processo só'}; agora: {layout or 'um processo só'}). "
                         "Retome do mesmo jeito que começou, ou use --refazer para recomeçar.")
    try:
        if parallel is None:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
        else:
            parallel.load_state_dicts(model, optimizer, payload["model"], payload["optimizer"])
        state = TrainState(**payload["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise checkpoint_mismatch(path, "de treino", exc) from None
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    return state


# --------------------------------------------------------------------------- the loop

class TrainHistory(NamedTuple):
    """The book's return values: ``train_losses, val_losses, track_tokens_seen = history``."""

    train_losses: List[float]
    val_losses: List[float]
    track_tokens_seen: List[int]


def train_model(model, train_loader, val_loader, optimizer, device, num_epochs: int,
                eval_freq: int, eval_iter: int, start_context: str, tokenizer, *,
                grad_clip: Optional[float] = None, warmup_steps: int = 0,
                lr_schedule: Optional[str] = None, min_lr_ratio: float = 0.1,
                grad_accum_steps: int = 1, precision: str = "fp32",
                checkpoint_path: Optional[PathLike] = None, checkpoint_every: int = 0,
                resume: bool = False, max_steps: Optional[int] = None,
                print_samples: bool = True, progress: bool = True,
                log: Log = print, on_step: Optional[Callable[[TrainState], None]] = None,
                parallel=None) -> TrainHistory:
    """The book's ``train_model_simple`` with the options of this module's docstring.

    Every ``eval_freq`` optimizer steps the losses over ``eval_iter`` batches are recorded
    and logged in the book's format; after each epoch a sample answer to ``start_context``
    is printed (``print_samples``). ``on_step(state)`` is called after every optimizer step.
    With ``parallel`` (see :mod:`llmdefinitions.distributed`) the model has been prepared
    by it, the loaders are this process's shares, and ``grad_accum_steps`` counts this
    process's batches.
    """
    from tqdm.auto import tqdm

    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps deve ser >= 1, mas é {grad_accum_steps}.")
    precision = choose_precision(device, precision)
    scaler = make_grad_scaler(device, precision)
    state = TrainState()
    if resume and checkpoint_path and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path, model, optimizer, device, scaler, parallel)
        log(f"Retomando do checkpoint '{checkpoint_path}': época {state.epoch + 1}, "
            f"passo {state.global_step + 1}.")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    steps_per_epoch = len(train_loader) // grad_accum_steps
    total_steps = steps_per_epoch * num_epochs
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)

    def reached_max_steps() -> bool:
        return max_steps is not None and state.global_step + 1 >= max_steps

    bar = tqdm(total=total_steps, initial=state.global_step + 1, desc="Treinando",
               disable=not progress, unit="passo")
    write = bar.write if progress else log
    model.train()
    try:
        for epoch in range(state.epoch, num_epochs):
            if reached_max_steps():
                break                                  # resumed from a run that already ended
            batches = _epoch_batches(train_loader, state, epoch)
            group: list = []
            for batch_index, batch in batches:
                group.append(batch)
                if len(group) < grad_accum_steps:
                    continue
                step = state.global_step + 1
                if warmup_steps or lr_schedule:
                    for param_group, base in zip(optimizer.param_groups, base_lrs):
                        param_group["lr"] = lr_at_step(step, total_steps, warmup_steps, lr_schedule,
                                                       base, min_lr_ratio)
                state.tokens_seen += _optimizer_step(model, optimizer, group, device, precision, scaler,
                                                     grad_clip, parallel)
                state.global_step, state.batch_in_epoch, group = step, batch_index + 1, []
                bar.update(1)
                if state.global_step % eval_freq == 0:
                    train_loss, val_loss = (parallel.evaluate if parallel else evaluate)(
                        model, train_loader, val_loader, device, eval_iter, precision)
                    state.train_losses.append(train_loss)
                    state.val_losses.append(val_loss)
                    state.track_tokens_seen.append(state.tokens_seen)
                    write(f"Ep {epoch + 1} (Step {state.global_step:06d}): "
                          f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
                if checkpoint_path and checkpoint_every and state.global_step % checkpoint_every == 0:
                    save_checkpoint(checkpoint_path, model, optimizer, state, scaler, parallel)
                if on_step is not None:
                    on_step(state)
                if reached_max_steps():
                    break
            finished_epoch = state.batch_in_epoch >= steps_per_epoch * grad_accum_steps
            if print_samples:
                with tqdm.external_write_mode():        # the sample on its own line, not glued to the bar
                    generate_and_print_sample(model, tokenizer, device, start_context)
            if finished_epoch:
                state.epoch, state.batch_in_epoch, state.epoch_rng_state = epoch + 1, 0, None
            if checkpoint_path:
                save_checkpoint(checkpoint_path, model, optimizer, state, scaler, parallel)
            if not finished_epoch:                     # stopped by max_steps in mid-epoch
                break
    finally:
        bar.close()
    return TrainHistory(state.train_losses, state.val_losses, state.track_tokens_seen)


def _epoch_batches(train_loader, state: TrainState, epoch: int):
    """``(index, batch)`` of ``epoch``, skipping the batches a resumed run already used.

    The loader's shuffle is drawn from torch's RNG when its first batch is taken, so the
    RNG state at the start of the epoch is saved (and restored on resume) to replay the
    same order; then the RNG continues from where the checkpoint left it. A sampler with
    ``set_epoch`` (``DistributedSampler``) is told the epoch: its shuffle comes from it.
    """
    set_epoch = getattr(getattr(train_loader, "sampler", None), "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    resuming = state.epoch_rng_state is not None and epoch == state.epoch and state.batch_in_epoch
    if resuming:
        torch.set_rng_state(state.epoch_rng_state)
    else:
        state.epoch_rng_state, state.batch_in_epoch = torch.get_rng_state(), 0
    iterator = iter(train_loader)
    first = next(iterator, None)                       # draws the epoch's shuffle now
    if resuming and state.rng_state is not None:
        torch.set_rng_state(state.rng_state)
    state.epoch = epoch
    batches = itertools.chain([] if first is None else [first], iterator)
    return itertools.islice(enumerate(batches), state.batch_in_epoch if resuming else 0, None)


def _optimizer_step(model, optimizer, group, device, precision, scaler, grad_clip, parallel=None) -> int:
    """One optimizer step over the accumulated batches, normalized by their target tokens.

    With ``parallel``, by the target tokens of every process's batches; returns the
    input tokens of the step (all processes).
    """
    optimizer.zero_grad()
    total = sum(int((b[1] != IGNORE_INDEX).sum()) for b in group)
    tokens = sum(b[0].numel() for b in group)
    loss_model, scale = model, 1.0
    if parallel is not None:
        total, tokens = (int(x) for x in parallel.sum(total, tokens))
        loss_model, scale = parallel.loss_model(model), parallel.loss_scale
    if total == 0:
        warnings.warn("Passo sem nenhum token-alvo (todos -100): gradiente zero.", RuntimeWarning,
                      stacklevel=3)
    for index, batch in enumerate(group):
        last = index == len(group) - 1
        with (parallel.gradient_sync(model, last) if parallel else contextlib.nullcontext()):
            with autocast(device, precision):
                loss, _ = loss_sum_and_count(batch, loss_model, device)
            loss = loss * scale / max(total, 1)
            (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return tokens


# --------------------------------------------------------------------------- optimizer, compile

def make_optimizer(model, lr: float = 5e-5, weight_decay: float = 0.1,
                   fused: Union[bool, str] = "auto") -> torch.optim.AdamW:
    """AdamW over the trainable parameters (the book's ``lr`` and ``weight_decay`` by default).

    ``fused="auto"`` takes the fused kernel (one pass over each parameter) where torch has
    it for the parameters' device (CUDA, and the CPU since torch 2.4), else the
    multi-tensor ``foreach`` version on GPUs, else torch's default; ``fused=False`` is
    torch's default, i.e. the book's optimizer; ``fused=True`` insists on the fused one.
    Same mathematics in every case.
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
    ``dynamic=True`` by default: batches change length. Where torch cannot compile (no
    C++ compiler, old torch), the model stays as it is, with a warning.
    """
    if not enabled:
        return model
    compile_kwargs.setdefault("dynamic", True)
    blocks = getattr(model, "trf_blocks", None)
    if hasattr(model, "split_packed_attention"):
        model.split_packed_attention = False   # one mask tensor, not spans that change every batch
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


__all__ = ["split_batch", "loss_sum_and_count", "batch_loss", "loader_loss", "evaluate", "lr_at_step",
           "TrainState", "save_checkpoint", "load_checkpoint", "TrainHistory", "train_model",
           "make_optimizer", "optimizer_kind", "compile_model"]
