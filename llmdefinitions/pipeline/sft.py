"""The supervised finetuning chain: data, pretrained model, training, answers — and their steps."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

from ..profiles import Profile
from ..runs import RunPaths
from .run import PROG, Log, PipelineError, Run, _elapsed, _mtime

# --------------------------------------------------------------------------- data and model

@dataclass
class PreparedData:
    """The three splits (the profile's share of each), the tokenizer, and the full splits' sizes."""

    train: list
    val: list
    test: list
    tokenizer: object
    full_sizes: Tuple[int, int, int] = (0, 0, 0)   # train, validation, test before the profile's cut


def prepare_data(profile: Profile, paths: RunPaths) -> PreparedData:
    """Download (or reuse) the dataset, split it 85/10/5, keep the profile's share."""
    from ..data import download_and_load_file
    from ..downloads import DATASET_URL

    return split_for_profile(profile, download_and_load_file(paths.data_file, DATASET_URL))


def split_for_profile(profile: Profile, data: list) -> PreparedData:
    """The book's 85/10/5 split, then the profile's share of each part (full sizes kept for the report)."""
    from ..data import split_data
    from ..tokenizer import get_gpt2_tokenizer

    train, test, val = split_data(data)
    full_sizes = (len(train), len(val), len(test))
    train, val, test = profile.subset(train, val, test)
    return PreparedData(train, val, test, get_gpt2_tokenizer(), full_sizes)


def make_loaders(profile: Profile, prepared: PreparedData, device, num_workers: int = 0,
                 parallel=None):
    """Train / validation / test loaders: the book's, with the profile's training batches.

    The training loader follows ``profile.batching`` (``"random"`` is the book's shuffled
    padded batches; ``"packed"`` packs those same batches); validation and test are
    padded in order, as in the book. With ``parallel`` (a
    :class:`~llmdefinitions.distributed.Distributed`), training and validation loaders
    give this process's share of the same global batches.
    """
    from functools import partial

    import torch
    from torch.utils.data import DataLoader

    from ..batching import make_train_loader
    from ..data import InstructionDataset, custom_collate_fn

    torch.manual_seed(profile.seed)
    train_loader = make_train_loader(InstructionDataset(prepared.train, prepared.tokenizer),
                                     batch_size=profile.batch_size, batching=profile.batching,
                                     device=device, allowed_max_length=profile.allowed_max_length,
                                     num_workers=num_workers)
    collate = partial(custom_collate_fn, device=device, allowed_max_length=profile.allowed_max_length)
    val_loader, test_loader = (
        DataLoader(InstructionDataset(items, prepared.tokenizer), batch_size=profile.batch_size,
                   collate_fn=collate, shuffle=False, drop_last=False, num_workers=num_workers)
        for items in (prepared.val, prepared.test))
    if parallel is not None:
        train_loader, val_loader = parallel.shard_loaders(train_loader, val_loader, seed=profile.seed)
    return train_loader, val_loader, test_loader


def load_pretrained(profile: Profile, paths: RunPaths, device):
    """GPT-2 of the profile with its pretrained weights (downloaded once), in eval mode.

    The ``teste`` profile's tiny model is written once as a real checkpoint and read by
    the same loader.
    """
    from ..config import get_config
    from ..model import GPTModel
    from ..weights import ensure_tiny_checkpoint, load_gpt2_params, load_weights_into_gpt

    if profile.is_tiny:
        ensure_tiny_checkpoint(get_config(profile.model_name), paths.models_dir, seed=profile.seed)
    settings, params = load_gpt2_params(profile.model_size, paths.models_dir)
    model = GPTModel(get_config(profile.model_name))
    load_weights_into_gpt(model, params)
    return model.to(device).eval()


def finetune(profile: Profile, paths: RunPaths, model, prepared: PreparedData, loaders, device,
             resume: bool = True, progress: bool = True, checkpoint_every: int = 0,
             log: Log = print, on_step=None, parallel=None):
    """Finetune as the profile says (the book's numbers; its fast path unless ``book_way``).

    A checkpoint is written after each epoch (and every ``checkpoint_every`` steps if
    > 0); with ``resume=True`` an interrupted run continues from it. Saves the losses
    (``perdas.json``) and the model; returns the training history. With ``parallel``
    (under torchrun, see :mod:`llmdefinitions.distributed`) every process calls it with
    its loaders from :func:`make_loaders`; only rank 0 writes files.
    """
    import torch

    from ..io import write_json_atomic
    from ..generation import save_model
    from ..prompts import format_input
    from ..trainer import compile_model, make_optimizer, train_model

    train_loader, val_loader, _ = loaders
    torch.manual_seed(profile.seed)
    compile_model(model, enabled=profile.compile)
    if parallel is not None:
        model = parallel.prepare(model, profile.precision)   # DDP or FSDP: before the optimizer
    optimizer = make_optimizer(model, lr=profile.learning_rate, weight_decay=profile.weight_decay,
                               fused=profile.fused_optimizer)
    history = train_model(
        model, train_loader, val_loader, optimizer, device,
        num_epochs=profile.num_epochs, eval_freq=profile.eval_freq, eval_iter=profile.eval_iter,
        start_context=format_input(prepared.val[0]), tokenizer=prepared.tokenizer,
        precision=profile.precision, max_steps=profile.max_steps,
        grad_accum_steps=parallel.plan.grad_accum_steps if parallel else 1,
        checkpoint_path=paths.train_checkpoint, checkpoint_every=checkpoint_every,
        resume=resume, progress=progress, log=log, on_step=on_step, parallel=parallel)
    if parallel is None or parallel.is_main:
        write_json_atomic(paths.losses_json, {"train_losses": history.train_losses,
                                              "val_losses": history.val_losses,
                                              "tokens_seen": history.track_tokens_seen,
                                              "num_epochs": profile.num_epochs})
    if parallel is None:
        save_model(model, paths.sft_model(profile.model_name))
    else:
        parallel.save_model(model, paths.sft_model(profile.model_name))
    return history


def load_finetuned(profile: Profile, paths: RunPaths, device):
    """The model :func:`finetune` saved (notebook 05 or ``python -m llmdefinitions treinar``)."""
    from ..config import get_config
    from ..generation import load_model_weights
    from ..model import GPTModel

    path = paths.sft_model(profile.model_name)
    if not path.is_file():
        raise PipelineError(
            f"Modelo ajustado não encontrado em '{path}'. Rode antes o notebook 05 "
            f"(ou: {PROG} treinar --perfil {profile.name}).")
    model = GPTModel(get_config(profile.model_name))
    return load_model_weights(model, path, device).eval()


def load_losses(paths: RunPaths) -> dict:
    """The losses :func:`finetune` saved."""
    from ..io import read_json

    return read_json(paths.losses_json)


def save_run_config(profile: Profile, paths: RunPaths, device) -> Path:
    """Record the profile and the device of this run in ``config.json``."""
    from ..io import write_json_atomic

    return write_json_atomic(paths.config_json, {**profile.to_dict(), "device": str(device)})


def save_data_report(profile: Profile, paths: RunPaths, prepared: PreparedData,
                     prompt_style: str = "alpaca"):
    """Quality report of the profile's splits (text) and a histogram of their lengths (PNG).

    Lengths are counted against ``profile.allowed_max_length``, where the collate cuts.
    Returns the :class:`~llmdefinitions.data_quality.QualityReport`.
    """
    import matplotlib.pyplot as plt

    from ..data_quality import SPLIT_LABELS, plot_length_histogram, quality_report
    from ..io import write_text_atomic

    report = quality_report(prepared.train, prepared.val, prepared.test, prepared.tokenizer,
                            prompt_style=prompt_style, context_length=profile.allowed_max_length)
    write_text_atomic(paths.quality_report, report.to_table() + "\n")
    lengths = {SPLIT_LABELS[name]: report.splits[name].lengths.total_lengths
               for name in ("train", "val", "test")}
    fig = plot_length_histogram(lengths, save_path=paths.lengths_png, show=False,
                                context_length=profile.allowed_max_length,
                                title=f"Comprimento prompt + resposta (perfil {profile.name})")
    plt.close(fig)
    return report


def save_loss_plot(profile: Profile, paths: RunPaths, show: bool = False) -> Path:
    """Draw the losses :func:`finetune` saved into ``perdas.png`` (as the book plots them)."""
    import matplotlib.pyplot as plt
    import torch

    from ..plotting import plot_losses

    losses = load_losses(paths)
    epochs = torch.linspace(0, losses.get("num_epochs", profile.num_epochs),
                            len(losses["train_losses"])).tolist()
    fig = plot_losses(epochs, losses["tokens_seen"], losses["train_losses"], losses["val_losses"],
                      save_path=paths.losses_png, show=show)
    if not show:
        plt.close(fig)
    return paths.losses_png


def _model_fingerprint(path: Path) -> str:
    """Identifies a saved model file cheaply (size and modification time)."""
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def generate_and_save(profile: Profile, model, tokenizer, entries: list, out_path: Path, partial_path: Path,
                      progress: bool = True, fingerprint: str = "") -> list:
    """Answer ``entries`` with ``model`` and save them (with ``model_response``) to ``out_path``.

    Greedy, up to ``profile.max_new_tokens`` tokens, ``profile.generation_batch_size``
    prompts at a time. Each answer is appended to ``partial_path`` as it finishes; after an
    interruption the answers already there are kept (when ``fingerprint``, the model's
    identity, and the settings are unchanged) and only the rest is generated. The final
    file is the same as an uninterrupted run's.
    """
    from ..generation import generate_responses, save_responses
    from ..jsonl import append_jsonl, read_jsonl

    header = {"respostas_parciais": out_path.name, "modelo": fingerprint, "itens": len(entries),
              "lote": profile.generation_batch_size, "max_new_tokens": profile.max_new_tokens}
    records = read_jsonl(partial_path)
    if records and records[0] != header:
        partial_path.unlink()                          # another model or other settings
        records = []
    done = {int(r["index"]): r["model_response"] for r in records[1:]}
    if not records:
        append_jsonl(partial_path, header)

    def save_answers(answers: Dict[int, str]) -> None:
        for index, answer in answers.items():
            append_jsonl(partial_path, {"index": index, "model_response": answer})

    responses = generate_responses(model, tokenizer, entries, max_new_tokens=profile.max_new_tokens,
                                   batch_size=profile.generation_batch_size, progress=progress,
                                   done=done, on_batch=save_answers)
    rows = save_responses(entries, responses, out_path)
    partial_path.unlink(missing_ok=True)
    return rows


def generate_test_responses(profile: Profile, paths: RunPaths, model, prepared: PreparedData,
                            progress: bool = True, fingerprint: str = "") -> list:
    """The model's answer to every test entry, saved as ``instruction-data-with-response.json``."""
    return generate_and_save(profile, model, prepared.tokenizer, prepared.test, paths.responses,
                             paths.responses_partial, progress, fingerprint)


def generate_verifiable_responses(profile: Profile, paths: RunPaths, model, tokenizer,
                                  progress: bool = True, fingerprint: str = "") -> list:
    """The model's answers to the course's verifiable-instruction prompts (``respostas-verificaveis.json``)."""
    from ..verifiable import as_entries, load_prompts

    return generate_and_save(profile, model, tokenizer, as_entries(load_prompts()), paths.verifiable_responses,
                             paths.verifiable_partial, progress, fingerprint)


# preparar ------------------------------------------------------------------------

def _prepare(run: Run) -> None:
    paths, profile = run.paths, run.profile
    prepared = run.prepared()
    train, val, test = prepared.full_sizes
    run.log(f"{train + val + test} amostras válidas em '{paths.data_file}'. Divisão 85/10/5: treino "
            f"{train}, validação {val}, teste {test}; o perfil '{profile.name}' usa "
            f"{len(prepared.train)}/{len(prepared.val)}/{len(prepared.test)}.")
    report = save_data_report(profile, paths, prepared)
    run.log("\n" + report.to_table() + "\n")
    run.log(f"Relatório salvo em '{paths.quality_report}'; histograma de comprimentos em "
            f"'{paths.lengths_png}'.")


# treinar -------------------------------------------------------------------------

def _train(run: Run) -> None:
    """Finetune; under torchrun every process runs this, in one process group (see distributed)."""
    from ..distributed import DistributedSetupError, session

    try:
        with session(run.options.device, run.options.parallel) as parallel:
            _train_in(run, parallel)
    except DistributedSetupError as exc:
        raise PipelineError(str(exc)) from None


def _train_in(run: Run, parallel) -> None:
    from ..config import get_config
    from ..model import GPTModel
    from ..stats import format_decimal

    profile, paths, options = run.profile, run.paths, run.options
    main = parallel is None or parallel.is_main
    device = run.device if parallel is None else parallel.device
    first_per_machine = parallel.first_per_machine if parallel else contextlib.nullcontext
    trained = [run.model_file, paths.losses_json]
    done = (not options.redo and all(p.is_file() for p in trained) and paths.data_file.is_file()
            and _mtime(paths.data_file) <= min(_mtime(p) for p in trained))
    if parallel is not None:
        parallel.check_same(done, f"modelo treinado ('{run.model_file}')")
    if done:
        run.log(f"Modelo já treinado em '{run.model_file}': só redesenhando '{paths.losses_png.name}'.")
        if main:
            save_loss_plot(profile, paths)
        return
    with first_per_machine():                  # files made once, not by every process at once
        prepared = run.prepared()
    if main:
        _warn_overlength(run, prepared)
        save_run_config(profile, paths, device)
        if options.redo:
            paths.train_checkpoint.unlink(missing_ok=True)
    if parallel is not None:
        parallel.barrier()                     # the checkpoint is gone for everyone, or there for everyone
    resume = paths.train_checkpoint.is_file()
    if parallel is not None:
        parallel.check_same(resume, f"checkpoint '{paths.train_checkpoint}'")
    way = "como no livro" if profile.way == "livro" else "caminho otimizado"
    run.log(f"Modelo {profile.model_name}: {len(prepared.train)} exemplos de treino, "
            f"{profile.num_epochs} época(s)"
            + (f", no máximo {profile.max_steps} passos" if profile.max_steps else "")
            + f"; {way} (precisão {profile.precision}, lotes {profile.batching}).")
    if resume:
        # The checkpoint holds the weights: no need to read the pretrained checkpoint again.
        run.log(f"Checkpoint de um treino interrompido encontrado ('{paths.train_checkpoint.name}'): "
                "o treino continua de onde parou.")
        model = GPTModel(get_config(profile.model_name)).to(device)
    else:
        with first_per_machine():
            model = load_pretrained(profile, paths, device)
    loaders = make_loaders(profile, prepared, device, parallel=parallel)
    if parallel is not None:
        run.log(parallel.describe())
    start = time.perf_counter()
    finetune(profile, paths, model, prepared, loaders, device, resume=resume,
             progress=options.progress and main, checkpoint_every=options.checkpoint_every, log=run.log,
             on_step=run.on_train_step, parallel=parallel)
    if not main:
        return
    run.log(f"Treino concluído em {_elapsed(time.perf_counter() - start)}.")
    save_loss_plot(profile, paths)
    losses = load_losses(paths)
    if losses["val_losses"]:
        run.log(f"Perda final: treino {format_decimal(losses['train_losses'][-1], 3)}, "
                f"validação {format_decimal(losses['val_losses'][-1], 3)}.")
    run.log(f"Modelo salvo em '{run.model_file}'; perdas em '{paths.losses_json.name}' e "
            f"'{paths.losses_png.name}'.")
    # The checkpoint (weights + optimizer state: ~3x the model) only serves an interrupted run.
    if paths.train_checkpoint.is_file():
        paths.train_checkpoint.unlink()
        run.log(f"Checkpoint de retomada '{paths.train_checkpoint.name}' removido (o treino terminou).")


def _warn_overlength(run: Run, prepared: PreparedData) -> None:
    """Say which training samples are longer than the context the collate keeps (their end is cut)."""
    from ..data_quality import overlength_entries

    cut = overlength_entries(prepared.train, prepared.tokenizer, run.profile.allowed_max_length)
    if cut:
        shown = ", ".join(f"{index} ({length} tokens)" for index, length in cut[:10])
        more = f" e mais {len(cut) - 10}" if len(cut) > 10 else ""
        run.log(f"AVISO: {len(cut)} amostra(s) de treino passam de {run.profile.allowed_max_length} tokens e "
                f"terão o fim da resposta cortado, fora da perda: {shown}{more}.")


# gerar ---------------------------------------------------------------------------

def _require_model(run: Run) -> None:
    if not run.model_file.is_file():
        raise PipelineError(
            f"Modelo ajustado não encontrado em '{run.model_file}'. Treine-o antes:\n"
            f"  {run.command('treinar')}\n(ou rode tudo de uma vez: {run.command('tudo')})")


def _generate(run: Run) -> None:
    _require_model(run)
    paths = run.paths
    model = load_finetuned(run.profile, paths, run.device)
    if run.options.redo:
        paths.responses_partial.unlink(missing_ok=True)
        paths.verifiable_partial.unlink(missing_ok=True)
    fingerprint = _model_fingerprint(run.model_file)
    prepared = run.prepared()
    rows = generate_test_responses(run.profile, paths, model, prepared, progress=run.options.progress,
                                   fingerprint=fingerprint)
    run.log(f"{len(rows)} respostas do conjunto de teste salvas em '{paths.responses}'.")
    if rows:
        first = rows[0]
        run.log(f"Exemplo — instrução: {first['instruction']!r}\n"
                f"          referência: {first['output']!r}\n"
                f"          modelo: {first['model_response']!r}")
    verifiable = generate_verifiable_responses(run.profile, paths, model, prepared.tokenizer,
                                               progress=run.options.progress, fingerprint=fingerprint)
    run.log(f"{len(verifiable)} respostas às instruções verificáveis salvas em '{paths.verifiable_responses}'.")
