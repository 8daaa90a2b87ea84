"""The optional ``preferencia`` step: DPO on the finetuned model, with LoRA adapters as the reference."""
from __future__ import annotations

import time
from pathlib import Path

from ..profiles import Profile
from ..runs import RunPaths
from .run import Log, Run, _elapsed, _mtime
from .sft import PreparedData, _require_model, load_finetuned

# --------------------------------------------------------------------------- preferencia (DPO)
# Optional, after `treinar`. Registered after STEP_NAMES on purpose: `tudo` runs STEP_NAMES
# (the chain that answers and scores the SFT model); DPO changes none of their inputs.

DPO_LORA_TARGETS = "all_linear"    # every nn.Linear, the head included (the book's LoRA appendix)


def prepare_preference_data(profile: Profile, paths: RunPaths) -> PreparedData:
    """Download (or reuse) the book's preference pairs, split them 85/10/5, keep the profile's share."""
    from ..data import split_data
    from ..downloads import PREFERENCE_DATASET_URL
    from ..dpo_data import download_and_load_preference_file
    from ..tokenizer import get_gpt2_tokenizer

    data = download_and_load_preference_file(paths.preference_data_file, PREFERENCE_DATASET_URL)
    train, test, val = split_data(data)
    full_sizes = (len(train), len(val), len(test))
    train, val, test = profile.subset(train, val, test)
    return PreparedData(train, val, test, get_gpt2_tokenizer(), full_sizes)


def make_preference_loaders(profile: Profile, prepared: PreparedData, device):
    """Train (shuffled, incomplete last batch dropped) and validation loaders, as the book's."""
    import torch

    from ..dpo_data import make_preference_loader

    torch.manual_seed(profile.seed)
    common = dict(batch_size=profile.dpo_batch_size, device=device,
                  allowed_max_length=profile.allowed_max_length)
    return (make_preference_loader(prepared.train, prepared.tokenizer, shuffle=True, drop_last=True,
                                   **common),
            make_preference_loader(prepared.val, prepared.tokenizer, **common))


def add_dpo_adapters(profile: Profile, model):
    """LoRA adapters (the profile's rank and alpha) on every linear layer; the rest frozen."""
    import torch

    from ..lora import replace_linear_with_lora

    torch.manual_seed(profile.seed)
    return replace_linear_with_lora(model, rank=profile.dpo_lora_rank, alpha=profile.dpo_lora_alpha,
                                    targets=DPO_LORA_TARGETS, include_head=True)


def preference_finetune(profile: Profile, paths: RunPaths, model, prepared: PreparedData, loaders,
                        device, resume: bool = True, progress: bool = True, checkpoint_every: int = 0,
                        log: Log = print, on_step=None) -> dict:
    """DPO on the adapters of ``model`` (:func:`add_dpo_adapters`), reference = adapters off.

    The profile's ``dpo_*`` numbers; resumable from ``dpo-checkpoint.pt`` (adapter,
    optimizer, progress), which is deleted once the adapter and ``dpo-metricas.json`` are
    saved. Returns ``tracking``.
    """
    from ..dpo import train_model_dpo
    from ..io import write_json_atomic
    from ..lora import save_lora_adapter
    from ..prompts import format_input
    from ..trainer import make_optimizer

    train_loader, val_loader = loaders
    optimizer = make_optimizer(model, lr=profile.dpo_learning_rate,
                               weight_decay=profile.dpo_weight_decay, fused=profile.fused_optimizer)
    tracking = train_model_dpo(
        model, None, train_loader, val_loader, optimizer, num_epochs=profile.dpo_num_epochs,
        beta=profile.dpo_beta, eval_freq=profile.eval_freq, eval_iter=profile.eval_iter,
        start_context=format_input(prepared.val[0]), tokenizer=prepared.tokenizer,
        precision=profile.precision, max_steps=profile.dpo_max_steps,
        checkpoint_path=paths.dpo_checkpoint, checkpoint_every=checkpoint_every, resume=resume,
        progress=progress, log=log, on_step=on_step)
    write_json_atomic(paths.dpo_metrics, {
        **tracking, "steps": [i * profile.eval_freq for i in range(len(tracking["val_losses"]))],
        "beta": profile.dpo_beta, "learning_rate": profile.dpo_learning_rate,
        "lora_rank": profile.dpo_lora_rank, "lora_alpha": profile.dpo_lora_alpha,
        "train_pairs": len(prepared.train), "val_pairs": len(prepared.val)})
    save_lora_adapter(model, paths.dpo_adapter(profile.model_name))
    paths.dpo_checkpoint.unlink(missing_ok=True)      # it only serves an interrupted run
    return tracking


def plot_dpo_metrics(metrics: dict, save_path=None, show: bool = True):
    """DPO's curves side by side: loss (ln 2 at the start), reward margin, preference accuracy.

    ``metrics`` is ``dpo-metricas.json`` (the tracking dict plus ``steps``). Returns the figure.
    """
    import math

    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from ..plotting import finish_figure

    comma = FuncFormatter(lambda value, _: f"{value:.4g}".replace(".", ","))     # pt-BR ticks
    percent = FuncFormatter(lambda value, _: f"{100 * value:.0f} %")
    steps = metrics["steps"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    panels = (("losses", "Perda DPO", math.log(2), "ln 2 (início)"),
              ("reward_margins", "Margem de recompensa", 0.0, None),
              ("accuracies", "Acurácia de preferência", None, None))
    for ax, (key, title, line, line_label) in zip(axes, panels):
        ax.plot(steps, metrics[f"train_{key}"], marker="o", label="Treino")
        ax.plot(steps, metrics[f"val_{key}"], marker="s", linestyle="-.", label="Validação")
        if line is not None:
            ax.axhline(line, color="gray", linestyle=":", linewidth=1, label=line_label)
        ax.set_title(title)
        ax.set_xlabel("Passo")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(comma)
        ax.legend(loc="best", fontsize="small")
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].yaxis.set_major_formatter(percent)
    return finish_figure(fig, save_path, show)


def save_dpo_plot(paths: RunPaths, show: bool = False) -> Path:
    """Draw ``dpo-metricas.json`` into ``dpo.png``."""
    import matplotlib.pyplot as plt

    from ..io import read_json

    fig = plot_dpo_metrics(read_json(paths.dpo_metrics), save_path=paths.dpo_png, show=show)
    if not show:
        plt.close(fig)
    return paths.dpo_png


def compare_dpo_responses(profile: Profile, paths: RunPaths, model, prepared: PreparedData) -> list:
    """Answers to the first validation prompts before DPO (adapters off: the SFT model) and after.

    Saved as ``dpo-respostas.json`` with the book's names: ``reference_response`` and
    ``policy_response``. Greedy, up to ``profile.max_new_tokens`` tokens.
    """
    from ..generation import generate_responses
    from ..io import write_json_atomic
    from ..lora import disable_lora

    entries = prepared.val[:profile.dpo_compare_items]
    settings = dict(max_new_tokens=profile.max_new_tokens,
                    batch_size=profile.generation_batch_size, progress=False)
    with disable_lora(model):
        before = generate_responses(model, prepared.tokenizer, entries, **settings)
    after = generate_responses(model, prepared.tokenizer, entries, **settings)
    rows = [{**entry, "reference_response": b, "policy_response": a}
            for entry, b, a in zip(entries, before, after)]
    write_json_atomic(paths.dpo_responses, rows, indent=4)
    return rows


def _preference(run: Run) -> None:
    from ..stats import format_decimal

    profile, paths, options = run.profile, run.paths, run.options
    _require_model(run)
    prepared = prepare_preference_data(profile, paths)
    checkpoint = paths.dpo_checkpoint
    if checkpoint.is_file() and (options.redo or _mtime(checkpoint) < _mtime(run.model_file)):
        checkpoint.unlink()                            # --refazer, or a newer SFT model under it
    run.log(f"DPO sobre '{run.model_file.name}': {len(prepared.train)} pares de treino, "
            f"{len(prepared.val)} de validação; β = {format_decimal(profile.dpo_beta, 2)}, taxa de "
            f"aprendizado {profile.dpo_learning_rate:g}, {profile.dpo_num_epochs} época(s)"
            + (f", no máximo {profile.dpo_max_steps} passos" if profile.dpo_max_steps else "")
            + f"; LoRA posto {profile.dpo_lora_rank}, alpha {profile.dpo_lora_alpha:g}; "
              "referência = o mesmo modelo com os adaptadores desligados.")
    model = add_dpo_adapters(profile, load_finetuned(profile, paths, run.device))
    resume = checkpoint.is_file()
    if resume:
        run.log(f"Checkpoint de um DPO interrompido encontrado ('{checkpoint.name}'): "
                "o treino continua de onde parou.")
    loaders = make_preference_loaders(profile, prepared, run.device)
    start = time.perf_counter()
    tracking = preference_finetune(profile, paths, model, prepared, loaders, run.device,
                                   resume=resume, progress=options.progress,
                                   checkpoint_every=options.checkpoint_every, log=run.log,
                                   on_step=run.on_train_step)
    run.log(f"DPO concluído em {_elapsed(time.perf_counter() - start)}.")
    if tracking["val_losses"]:
        run.log(f"Validação na última avaliação: perda {format_decimal(tracking['val_losses'][-1], 3)} "
                f"(ln 2 = 0,693 no início), margem de recompensa "
                f"{format_decimal(tracking['val_reward_margins'][-1], 3)}, acurácia de preferência "
                f"{format_decimal(100 * tracking['val_accuracies'][-1], 0)} %.")
    save_dpo_plot(paths)
    rows = compare_dpo_responses(profile, paths, model, prepared)
    if rows:
        run.log(f"Exemplo — instrução: {rows[0]['instruction']!r}\n"
                f"          antes do DPO: {rows[0]['reference_response']!r}\n"
                f"          depois do DPO: {rows[0]['policy_response']!r}")
    run.log(f"Adaptador salvo em '{paths.dpo_adapter(profile.model_name)}'; métricas em "
            f"'{paths.dpo_metrics.name}' e '{paths.dpo_png.name}'; respostas antes/depois em "
            f"'{paths.dpo_responses.name}'.")
