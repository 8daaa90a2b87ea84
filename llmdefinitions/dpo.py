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
  are ours divided by ``β``);
* the vocabulary head runs only at the scored positions (the response), and chosen
  and rejected go through the model as one batch;
* metrics also report the reward margin and the preference accuracy, and the sample
  printed after each epoch comes from the policy (the book's loop prints from a global
  ``model`` that only happens to be the policy).

The data side (dataset, collate, loaders) is in :mod:`llmdefinitions.dpo_data`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from .device import autocast, choose_precision, make_grad_scaler
from .lora import iter_lora_layers
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
def lora_disabled(model) -> Iterator[torch.nn.Module]:
    """Run ``model`` with its LoRA adapters switched off: the frozen base model.

    Inside the block each :class:`~llmdefinitions.lora.LinearWithLoRA` computes only its
    base ``linear(x)``; the adapters' weights are not touched and come back on exit
    (even on an error). The base weights are exactly the model LoRA started from, so
    this *is* DPO's reference model, without a second copy in memory. A merged adapter
    lives inside the base weights, so a merged model is refused.
    """
    layers = list(iter_lora_layers(model))
    if not layers:
        raise ValueError("O modelo não tem camadas LoRA: não há adaptadores para desligar. "
                         "Passe um reference_model (por exemplo, uma cópia congelada do modelo).")
    merged = [name for name, layer in layers if layer.merged]
    if merged:
        raise ValueError(f"A camada LoRA '{merged[0]}' está fundida aos pesos base; "
                         "chame unmerge_lora(model) antes de usá-la como referência.")
    for _, layer in layers:
        layer.forward = layer.linear.__call__    # instance attribute: the base layer only
    try:
        yield model
    finally:
        for _, layer in layers:
            del layer.forward


@contextmanager
def _reference(policy_model, reference_model) -> Iterator[torch.nn.Module]:
    """The reference, in eval mode and without gradients (the policy with adapters off if None)."""
    model = policy_model if reference_model is None else reference_model
    with torch.no_grad(), _eval_mode(model):
        if reference_model is None:
            with lora_disabled(policy_model):
                yield policy_model
        else:
            yield reference_model


def compute_dpo_loss_batch(batch: Dict[str, torch.Tensor], policy_model, reference_model,
                           beta: float, *, average_log_probs: bool = False,
                           reduction: str = "mean") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss and rewards of a batch from :func:`~llmdefinitions.dpo_data.preference_collate_fn`.

    ``reference_model=None`` with a LoRA policy: the reference is the policy with its
    adapters switched off (:func:`lora_disabled`). The reference always runs in eval
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
    """
    device = next(policy_model.parameters()).device
    precision = choose_precision(device, precision)
    scaler = make_grad_scaler(device, precision)
    tracking = {_tracking_key(split, key): [] for split in ("train", "val") for key in METRICS}
    tracking["tokens_seen"] = []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        policy_model.train()
        for batch in train_loader:
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
            tokens_seen += batch["chosen"].numel()
            global_step += 1
            if global_step % eval_freq == 0:
                res = evaluate_dpo_loss_loader(policy_model, reference_model, train_loader,
                                               val_loader, beta, eval_iter, precision=precision,
                                               average_log_probs=average_log_probs)
                for split in ("train", "val"):
                    for key in METRICS:
                        tracking[_tracking_key(split, key)].append(res[f"{split}_{key}"])
                tracking["tokens_seen"].append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                      f"Train loss {res['train_loss']:.3f}, Val loss {res['val_loss']:.3f}, "
                      f"Train reward margins {res['train_reward_margin']:.3f}, "
                      f"Val reward margins {res['val_reward_margin']:.3f}, "
                      f"Val accuracy {res['val_accuracy']:.0%}")
        if print_samples:
            generate_and_print_sample(policy_model, tokenizer, device, start_context)
    return tracking
