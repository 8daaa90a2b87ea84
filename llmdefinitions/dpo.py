"""Direct Preference Optimization (DPO): the loss, its pieces, and a training loop.

DPO (Rafailov et al., 2023, https://arxiv.org/abs/2305.18290) teaches a model to prefer
the ``chosen`` response over the ``rejected`` one for the same prompt, without a reward
model. With ``log π(y|x)`` the log-probability of a whole response, the loss of a pair is

    -log σ( β [ (log π(c|x) - log π_ref(c|x)) - (log π(r|x) - log π_ref(r|x)) ] )

where ``π`` is the model being trained (the *policy*) and ``π_ref`` the frozen model it
started from (the *reference*). ``β · (log π - log π_ref)`` is the response's implicit
*reward*; the loss is small when the chosen response's reward exceeds the rejected one's.

The functions keep the names and shapes of the book's bonus notebook
(``ch07/04_preference-tuning-with-dpo``); where the book's code is wrong or wasteful
ours differs, and says so in the docstring:

* log-probabilities are **summed** over the response tokens by default, as in the
  paper (the book averages them; ``average_log_probs=True`` gives that);
* the reference runs under ``torch.no_grad()`` (the book builds a graph through it);
* with a LoRA policy, ``reference_model=None`` uses **the same model with the adapters
  switched off** as the reference: no second copy of the weights in memory;
* rewards include ``β``, as the paper defines them (the book's rewards omit it: they
  are ours with ``average_log_probs=True``, divided by ``β``);
* the vocabulary head runs only at the scored positions (the response), and chosen
  and rejected go through the model as one batch;
* metrics also report the reward margin and the preference accuracy, and the sample
  printed after each epoch comes from the policy (the book's loop prints from a global
  ``model`` that only happens to be the policy).

Beside the book's loop, :func:`train_model_dpo` is the course's: the same steps and
metrics, plus a checkpoint (only the adapter of a LoRA policy) to resume from, and an
early stop (``max_steps``). The pipeline's step ``preferencia`` uses it.

The data side (dataset, collate, loaders) is in :mod:`llmdefinitions.dpo_data`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from .device import autocast, choose_precision, make_grad_scaler
from .lora import disable_lora, iter_lora_layers, lora_state_dict
from .serialization import checkpoint_mismatch, load_tensors, save_tensors
from .trainer import TrainState, _epoch_batches
from .training import generate_and_print_sample

METRICS = ("loss", "chosen_reward", "rejected_reward", "reward_margin", "accuracy")
_PLURAL = {"loss": "losses", "accuracy": "accuracies"}


def _tracking_key(split: str, metric: str) -> str:
    """``"train_losses"``, ``"val_accuracies"``...: the book's names in ``tracking``."""
    return f"{split}_{_PLURAL.get(metric, metric + 's')}"


def compute_logprobs(logits: torch.Tensor, labels: torch.Tensor,
                     selection_mask: Optional[torch.Tensor] = None,
                     average: bool = False) -> torch.Tensor:
    """Log-probability of each sequence in ``labels`` under ``logits``, shape ``(batch,)``.

    ``logits`` ``(B, T, V)`` come from the model run on ``labels`` ``(B, T)``: position
    ``t`` predicts token ``t + 1``. ``selection_mask`` ``(B, T)`` marks the tokens that
    count (the response); token 0 never counts, nothing predicts it.

    ``average=False`` (default) returns the **sum** over the selected tokens:
    ``log π(y|x) = Σ_t log π(y_t | x, y_<t)``, the log-probability of the whole response,
    which is what the DPO objective is written with. ``average=True`` divides by the
    number of selected tokens, as the book does: a length-normalized score, i.e. a
    different objective: it no longer favours short responses just for being short,
    but a pair's margin shrinks by the response length, so the same ``β`` acts far
    more weakly (it needs to be about "length" times larger for a similar effect).
    """
    token_logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(
        -1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = torch.ones_like(labels, dtype=torch.bool) if selection_mask is None else selection_mask
    return _reduce_logprobs(token_logprobs, mask[:, 1:], average)


def _reduce_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor, average: bool) -> torch.Tensor:
    mask = mask.to(token_logprobs.dtype)
    total = (token_logprobs * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1.0) if average else total


def _sequence_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, average: bool) -> torch.Tensor:
    """:func:`compute_logprobs` of ``model(ids)``, with the head run only where ``mask`` scores.

    The vocabulary head is GPT-2's largest layer, and most positions are prompt: a
    :class:`~llmdefinitions.model.GPTModel` runs it on the response tokens only (same
    numbers, less time and memory). Other models take the plain path.
    """
    if not (hasattr(model, "hidden_states") and hasattr(model, "out_head")):
        return compute_logprobs(model(ids), ids, mask, average)
    keep = mask[:, 1:]
    hidden = model.hidden_states(ids)[:, :-1][keep]
    token_logprobs = -F.cross_entropy(model.out_head(hidden).float(), ids[:, 1:][keep],
                                      reduction="none")
    dense = torch.zeros(keep.shape, dtype=token_logprobs.dtype, device=ids.device)
    return _reduce_logprobs(dense.masked_scatter(keep, token_logprobs), keep, average)


def compute_dpo_loss(
    model_chosen_logprobs: torch.Tensor,
    model_rejected_logprobs: torch.Tensor,
    reference_chosen_logprobs: torch.Tensor,
    reference_rejected_logprobs: torch.Tensor,
    beta: float = 0.1,
    *,
    reduction: str = "mean",
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, chosen_rewards, rejected_rewards)``: the book's triple, batch means by default.

    All inputs have shape ``(batch,)``. ``loss = -log σ(β · h)`` with ``h = (policy
    chosen - policy rejected) - (reference chosen - reference rejected)`` (eq. 7 of the
    paper); a reward is ``β · (policy - reference)`` log-probability of a response,
    detached. ``reduction="none"`` returns the per-pair values instead of their means.
    At the start of training (policy = reference) the loss is ``ln 2`` and the rewards 0.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction deve ser 'mean' ou 'none'; recebido {reduction!r}.")
    logits = ((model_chosen_logprobs - model_rejected_logprobs)
              - (reference_chosen_logprobs - reference_rejected_logprobs))
    losses = -F.logsigmoid(beta * logits)
    chosen_rewards = (beta * (model_chosen_logprobs - reference_chosen_logprobs)).detach()
    rejected_rewards = (beta * (model_rejected_logprobs - reference_rejected_logprobs)).detach()
    if reduction == "none":
        return losses, chosen_rewards, rejected_rewards
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


@contextmanager
def _eval_mode(model) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _reference(policy_model, reference_model) -> Iterator[torch.nn.Module]:
    """The reference, in eval mode and without gradients (the policy with adapters off if None)."""
    if reference_model is None and not any(True for _ in iter_lora_layers(policy_model)):
        raise ValueError("O modelo não tem camadas LoRA: não há adaptadores para desligar, então "
                         "reference_model=None não tem referência. Passe um reference_model "
                         "(por exemplo, uma cópia congelada do modelo).")
    model = policy_model if reference_model is None else reference_model
    with torch.no_grad(), _eval_mode(model):
        if reference_model is None:
            with disable_lora(policy_model):
                yield policy_model
        else:
            yield reference_model


def compute_dpo_loss_batch(batch: Dict[str, torch.Tensor], policy_model, reference_model,
                           beta: float, *, average_log_probs: bool = False,
                           reduction: str = "mean") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss and rewards of a batch from :func:`~llmdefinitions.dpo_data.preference_collate_fn`.

    ``reference_model=None`` with a LoRA policy: the reference is the policy with its
    adapters switched off (:func:`~llmdefinitions.lora.disable_lora`). The reference always runs in eval
    mode under ``torch.no_grad()``. ``average_log_probs`` and ``reduction`` as in
    :func:`compute_logprobs` and :func:`compute_dpo_loss`.
    """
    device = next(policy_model.parameters()).device
    ids = torch.cat([batch["chosen"], batch["rejected"]]).to(device)      # one forward pass
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]]).to(device)
    n = batch["chosen"].shape[0]
    policy = _sequence_logprobs(policy_model, ids, mask, average_log_probs)
    with _reference(policy_model, reference_model) as reference_net:
        reference = _sequence_logprobs(reference_net, ids, mask, average_log_probs)
    return compute_dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], beta,
                            reduction=reduction)


def compute_dpo_metrics_loader(data_loader, policy_model, reference_model, beta: float,
                               num_batches: Optional[int] = None, *,
                               average_log_probs: bool = False) -> Dict[str, float]:
    """Loss, rewards, reward margin and preference accuracy over the first ``num_batches``.

    Means over pairs (each pair weighs the same; the book averages batch means, which
    differs when the last batch is smaller). ``accuracy`` is the share of pairs whose
    chosen reward is strictly greater than the rejected one (0 while policy =
    reference). An empty loader gives NaN.
    """
    totals = dict.fromkeys(METRICS, 0.0)
    pairs = 0
    limit = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for i, batch in enumerate(data_loader):
        if i >= limit:
            break
        losses, chosen, rejected = compute_dpo_loss_batch(
            batch, policy_model, reference_model, beta,
            average_log_probs=average_log_probs, reduction="none")
        totals["loss"] += losses.sum().item()
        totals["chosen_reward"] += chosen.sum().item()
        totals["rejected_reward"] += rejected.sum().item()
        totals["reward_margin"] += (chosen - rejected).sum().item()
        totals["accuracy"] += (chosen > rejected).sum().item()
        pairs += losses.numel()
    return {key: value / pairs if pairs else math.nan for key, value in totals.items()}


def compute_dpo_loss_loader(data_loader, policy_model, reference_model, beta: float,
                            num_batches: Optional[int] = None, *,
                            average_log_probs: bool = False) -> Tuple[float, float, float]:
    """The book's ``(loss, chosen_reward, rejected_reward)`` over a loader (means over pairs)."""
    metrics = compute_dpo_metrics_loader(data_loader, policy_model, reference_model, beta,
                                         num_batches, average_log_probs=average_log_probs)
    return metrics["loss"], metrics["chosen_reward"], metrics["rejected_reward"]


def evaluate_dpo_loss_loader(policy_model, reference_model, train_loader, val_loader,
                             beta: float, eval_iter: Optional[int], *, average_log_probs: bool = False,
                             precision: str = "fp32") -> Dict[str, float]:
    """Metrics of :func:`compute_dpo_metrics_loader` on both loaders, in eval mode.

    Keys as in the book (``train_loss``, ``train_chosen_reward``, ``train_rejected_reward``,
    ``val_loss``, ...) plus ``{train,val}_reward_margin`` and ``{train,val}_accuracy``.
    """
    device = next(policy_model.parameters()).device
    results = {}
    with torch.no_grad(), _eval_mode(policy_model), autocast(device, precision):
        for split, loader in (("train", train_loader), ("val", val_loader)):
            metrics = compute_dpo_metrics_loader(loader, policy_model, reference_model, beta,
                                                 eval_iter, average_log_probs=average_log_probs)
            results.update({f"{split}_{key}": value for key, value in metrics.items()})
    return results


def _dpo_step(batch, policy_model, reference_model, optimizer, beta: float, *,
              average_log_probs: bool, device, precision: str, scaler) -> None:
    """One optimizer step on the DPO loss of ``batch`` (through the gradient scaler in fp16)."""
    optimizer.zero_grad()
    with autocast(device, precision):
        loss, _, _ = compute_dpo_loss_batch(batch, policy_model, reference_model, beta,
                                            average_log_probs=average_log_probs)
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _empty_tracking() -> Dict[str, list]:
    tracking = {_tracking_key(split, key): [] for split in ("train", "val") for key in METRICS}
    tracking["tokens_seen"] = []
    return tracking


def _record_evaluation(tracking: Dict[str, list], res: Dict[str, float], tokens_seen: int,
                       epoch: int, global_step: int) -> str:
    """Append an evaluation to ``tracking``; returns the log line (the book's, plus accuracy)."""
    for split in ("train", "val"):
        for key in METRICS:
            tracking[_tracking_key(split, key)].append(res[f"{split}_{key}"])
    tracking["tokens_seen"].append(tokens_seen)
    return (f"Ep {epoch + 1} (Step {global_step:06d}): "
            f"Train loss {res['train_loss']:.3f}, Val loss {res['val_loss']:.3f}, "
            f"Train reward margins {res['train_reward_margin']:.3f}, "
            f"Val reward margins {res['val_reward_margin']:.3f}, "
            f"Val accuracy {res['val_accuracy']:.0%}")


def train_model_dpo_simple(policy_model, reference_model, train_loader, val_loader, optimizer,
                           num_epochs: int, beta: float, eval_freq: int, eval_iter: int,
                           start_context: str, tokenizer, *, average_log_probs: bool = False,
                           precision: str = "fp32", print_samples: bool = True) -> Dict[str, list]:
    """Train ``policy_model`` with DPO; returns the book's ``tracking`` dict of lists.

    Every ``eval_freq`` steps it records, over ``eval_iter`` batches of each loader, the
    train/val ``losses``, ``chosen_rewards``, ``rejected_rewards`` and ``tokens_seen`` (the
    book's keys) and also ``reward_margins`` and ``accuracies`` (preference accuracy);
    after each epoch it prints a sample answer to ``start_context``. Pass
    ``reference_model=None`` for a LoRA policy to use it with adapters off as the
    reference. ``precision``: ``"fp32"`` (default), ``"bf16"``, ``"fp16"`` or ``"auto"``.
    :func:`train_model_dpo` is the same loop with resume and an early stop.
    """
    device = next(policy_model.parameters()).device
    precision = choose_precision(device, precision)
    scaler = make_grad_scaler(device, precision)
    tracking = _empty_tracking()
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        policy_model.train()
        for batch in train_loader:
            _dpo_step(batch, policy_model, reference_model, optimizer, beta,
                      average_log_probs=average_log_probs, device=device, precision=precision,
                      scaler=scaler)
            tokens_seen += batch["chosen"].numel()
            global_step += 1
            if global_step % eval_freq == 0:
                res = evaluate_dpo_loss_loader(policy_model, reference_model, train_loader,
                                               val_loader, beta, eval_iter, precision=precision,
                                               average_log_probs=average_log_probs)
                print(_record_evaluation(tracking, res, tokens_seen, epoch, global_step))
        if print_samples:
            generate_and_print_sample(policy_model, tokenizer, device, start_context)
    return tracking


# --------------------------------------------------------------------------- resumable training

def _checkpoint_weights(model) -> Tuple[Dict[str, torch.Tensor], bool]:
    """What a checkpoint keeps of ``model``: the LoRA weights if it has LoRA, else everything."""
    lora = lora_state_dict(model)
    return (lora, True) if lora else (model.state_dict(), False)


def save_dpo_checkpoint(path, model, optimizer, state: TrainState, tracking: Dict[str, list],
                        scaler=None) -> Path:
    """Trained weights (only the adapter of a LoRA policy), optimizer, progress and metrics.

    Tensors and plain values only, written atomically: it loads with ``weights_only=True``.
    The random state is saved too, so a resumed run draws the same batches.
    """
    state.rng_state = torch.get_rng_state()
    weights, lora = _checkpoint_weights(model)
    payload = {"weights": {k: v.detach().cpu().clone() for k, v in weights.items()}, "lora": lora,
               "optimizer": optimizer.state_dict(), "state": dict(state.__dict__),
               "tracking": tracking, "scaler": scaler.state_dict() if scaler else None}
    return save_tensors(payload, path)


def load_dpo_checkpoint(path, model, optimizer, device, scaler=None) -> Tuple[TrainState, Dict[str, list]]:
    """Restore what :func:`save_dpo_checkpoint` wrote; returns ``(progress, tracking)``."""
    payload = load_tensors(path, map_location=device, what="checkpoint de DPO")
    try:
        own, lora = _checkpoint_weights(model)
        if payload["lora"] != lora or set(payload["weights"]) != set(own):
            raise ValueError("as camadas treinadas são outras")
        model.load_state_dict(payload["weights"], strict=not lora)
        optimizer.load_state_dict(payload["optimizer"])
        state = TrainState(**payload["state"])
        tracking = {key: list(payload["tracking"][key]) for key in _empty_tracking()}
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise checkpoint_mismatch(path, "de DPO", exc) from None
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    return state, tracking


def train_model_dpo(policy_model, reference_model, train_loader, val_loader, optimizer,
                    num_epochs: int, beta: float, eval_freq: int, eval_iter: int,
                    start_context: str, tokenizer, *, average_log_probs: bool = False,
                    precision: str = "fp32", max_steps: Optional[int] = None,
                    checkpoint_path=None, checkpoint_every: int = 0, resume: bool = False,
                    print_samples: bool = True, progress: bool = True, log: Callable[[str], None] = print,
                    on_step: Optional[Callable[[TrainState], None]] = None) -> Dict[str, list]:
    """:func:`train_model_dpo_simple`'s loop and ``tracking``, resumable and with an early stop.

    A checkpoint (:func:`save_dpo_checkpoint`) is written every ``checkpoint_every`` steps
    (if > 0) and after each epoch; with ``resume=True`` training continues from it, and
    ends with the same metrics as an uninterrupted run (same batches, same random state:
    the trainer's :class:`~llmdefinitions.trainer.TrainState`). ``max_steps`` stops early
    (quick profiles). ``on_step(state)`` is called after every optimizer step.
    """
    from tqdm.auto import tqdm

    device = next(policy_model.parameters()).device
    precision = choose_precision(device, precision)
    scaler = make_grad_scaler(device, precision)
    state, tracking = TrainState(), _empty_tracking()
    if resume and checkpoint_path and Path(checkpoint_path).is_file():
        state, tracking = load_dpo_checkpoint(checkpoint_path, policy_model, optimizer, device, scaler)
        log(f"Retomando do checkpoint '{checkpoint_path}': época {state.epoch + 1}, "
            f"passo {state.global_step + 1}.")
    total_steps = len(train_loader) * num_epochs
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)

    def reached_max_steps() -> bool:
        return max_steps is not None and state.global_step + 1 >= max_steps

    def checkpoint() -> None:
        save_dpo_checkpoint(checkpoint_path, policy_model, optimizer, state, tracking, scaler)

    bar = tqdm(total=total_steps, initial=state.global_step + 1, desc="DPO", unit="passo",
               disable=not progress)
    write = bar.write if progress else log
    try:
        for epoch in range(state.epoch, num_epochs):
            if reached_max_steps():
                break                                  # resumed from a run that already ended
            policy_model.train()
            for batch_index, batch in _epoch_batches(train_loader, state, epoch):
                _dpo_step(batch, policy_model, reference_model, optimizer, beta,
                          average_log_probs=average_log_probs, device=device, precision=precision,
                          scaler=scaler)
                state.tokens_seen += batch["chosen"].numel()
                state.global_step, state.batch_in_epoch = state.global_step + 1, batch_index + 1
                bar.update(1)
                if state.global_step % eval_freq == 0:
                    res = evaluate_dpo_loss_loader(policy_model, reference_model, train_loader,
                                                   val_loader, beta, eval_iter, precision=precision,
                                                   average_log_probs=average_log_probs)
                    write(_record_evaluation(tracking, res, state.tokens_seen, epoch, state.global_step))
                if checkpoint_path and checkpoint_every and state.global_step % checkpoint_every == 0:
                    checkpoint()
                if on_step is not None:
                    on_step(state)
                if reached_max_steps():
                    break
            finished_epoch = state.batch_in_epoch >= len(train_loader)
            if print_samples:
                with tqdm.external_write_mode():
                    generate_and_print_sample(policy_model, tokenizer, device, start_context)
            if finished_epoch:
                state.epoch, state.batch_in_epoch, state.epoch_rng_state = epoch + 1, 0, None
            if checkpoint_path:
                checkpoint()
            if not finished_epoch:                     # stopped by max_steps in mid-epoch
                break
    finally:
        bar.close()
    return tracking
