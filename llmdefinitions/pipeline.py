"""The course's hands-on chain as steps: the one orchestrator of notebooks and command line.

Four steps, each reading what the previous one wrote in the run folder
(``<saida>/<perfil>/``, see :mod:`llmdefinitions.runs`):

============  =================================================================
``preparar``  download/validate/split the data; quality report + length histogram
``treinar``   finetune (resumes from the training checkpoint after an interruption)
``gerar``     answer the test set (saves progress per batch; resumes)
``avaliar``   score the answers (judge LLM)
============  =================================================================

After ``treinar``, the optional step ``preferencia`` tunes the finetuned model on the
book's preference pairs with DPO (LoRA adapters; not part of ``tudo``).

A step whose outputs exist and are newer than its inputs is skipped (``redo`` redoes
it), so after an interruption the same command continues from the first missing
output. :func:`run_steps` runs steps; the command line (:mod:`llmdefinitions.cli`) only
parses options into :class:`RunOptions` and prints. The step functions
(:func:`prepare_data`, :func:`load_pretrained`, :func:`finetune`, ...) are also what
notebooks call once they have written the mechanics themselves.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .distributed import ParallelOptions
from .profiles import Profile
from .runs import RunPaths, run_paths

PROG = "python -m llmdefinitions"
STAND_IN_MODEL = "dublê-de-teste"   # the model name the judge's test double answers to
DEFAULT_CHECKPOINT_EVERY = 50      # optimizer steps between training checkpoints
Log = Callable[[str], None]

SIMULATED_JUDGE_WARNING = (
    "AVISO: as notas vêm de um DUBLÊ DE TESTE (llmdefinitions.testing.fake_llm_server), que "
    "pontua por sobreposição de palavras.\n"
    "       Não são avaliações de um LLM juiz: servem só para testar o encadeamento; "
    "não as use como resultado."
)


class PipelineError(Exception):
    """An expected failure of a step; its pt-BR message says what to do."""


# --------------------------------------------------------------------------- data and model

@dataclass
class PreparedData:
    """The three splits (the profile's share of each) and the tokenizer."""

    train: list
    val: list
    test: list
    tokenizer: object


def prepare_data(profile: Profile, paths: RunPaths) -> PreparedData:
    """Download (or reuse) the dataset, split it 85/10/5, keep the profile's share."""
    from .data import download_and_load_file, split_data
    from .downloads import DATASET_URL
    from .tokenizer import get_gpt2_tokenizer

    data = download_and_load_file(paths.data_file, DATASET_URL)
    train, test, val = split_data(data)
    train, val, test = profile.subset(train, val, test)
    return PreparedData(train, val, test, get_gpt2_tokenizer())


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

    from .batching import make_train_loader
    from .data import InstructionDataset, custom_collate_fn

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
    from .config import get_config
    from .model import GPTModel
    from .weights import ensure_tiny_checkpoint, load_gpt2_params, load_weights_into_gpt

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

    from .io import write_json_atomic
    from .generation import save_model
    from .prompts import format_input
    from .trainer import compile_model, make_optimizer, train_model

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
    from .config import get_config
    from .generation import load_model_weights
    from .model import GPTModel

    path = paths.sft_model(profile.model_name)
    if not path.is_file():
        raise PipelineError(
            f"Modelo ajustado não encontrado em '{path}'. Rode antes o notebook 05 "
            f"(ou: {PROG} treinar --perfil {profile.name}).")
    model = GPTModel(get_config(profile.model_name))
    return load_model_weights(model, path, device).eval()


def load_losses(paths: RunPaths) -> dict:
    """The losses :func:`finetune` saved."""
    from .io import read_json

    return read_json(paths.losses_json)


def save_run_config(profile: Profile, paths: RunPaths, device) -> Path:
    """Record the profile and the device of this run in ``config.json``."""
    from .io import write_json_atomic

    return write_json_atomic(paths.config_json, {**profile.to_dict(), "device": str(device)})


def save_data_report(profile: Profile, paths: RunPaths, prepared: PreparedData,
                     prompt_style: str = "alpaca"):
    """Quality report of the profile's splits (text) and a histogram of their lengths (PNG).

    Lengths are counted against ``profile.allowed_max_length``, where the collate cuts.
    Returns the :class:`~llmdefinitions.data_quality.QualityReport`.
    """
    import matplotlib.pyplot as plt

    from .data_quality import SPLIT_LABELS, plot_length_histogram, quality_report
    from .io import write_text_atomic

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

    from .plotting import plot_losses

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
    prompts at a time. Each finished batch is appended to ``partial_path``; after an
    interruption the answers already there are kept (when ``fingerprint``, the model's
    identity, and the settings are unchanged) and only the rest is generated. The final
    file is the same as an uninterrupted run's.
    """
    from .generation import generate_responses, save_responses
    from .jsonl import append_jsonl, read_jsonl

    header = {"respostas_parciais": out_path.name, "modelo": fingerprint, "itens": len(entries),
              "lote": profile.generation_batch_size, "max_new_tokens": profile.max_new_tokens}
    records = read_jsonl(partial_path)
    if records and records[0] != header:
        partial_path.unlink()                          # another model or other settings
        records = []
    done = {int(r["index"]): r["model_response"] for r in records[1:]}
    if not records:
        append_jsonl(partial_path, header)

    def save_batch(answers: Dict[int, str]) -> None:
        for index, answer in answers.items():
            append_jsonl(partial_path, {"index": index, "model_response": answer})

    responses = generate_responses(model, tokenizer, entries, max_new_tokens=profile.max_new_tokens,
                                   batch_size=profile.generation_batch_size, progress=progress,
                                   done=done, on_batch=save_batch)
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
    from .verifiable import as_entries, load_prompts

    return generate_and_save(profile, model, tokenizer, as_entries(load_prompts()), paths.verifiable_responses,
                             paths.verifiable_partial, progress, fingerprint)


class JudgeEndpoint:
    """Where the judge answers: ``url``, ``model`` and whether it is the test double.

    ``with judge_endpoint(profile) as url:`` gives the URL and closes at the end; a
    notebook, where a ``with`` block cannot span cells, keeps the object and calls
    :meth:`close` in its last cell. Closing twice is harmless.
    """

    def __init__(self, url: str, model: str, simulated: bool = False, server=None):
        self.url = url
        self.model = model
        self.simulated = simulated
        self._server = server

    def cache_path(self, paths: RunPaths) -> Path:
        """The reply cache for this judge: the test double's is kept apart from a real judge's."""
        return paths.simulated_judge_cache if self.simulated else paths.judge_cache

    def close(self) -> None:
        """Stop the test double, if one was started (a real judge is left alone)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        who = "DUBLÊ DE TESTE" if self.simulated else "juiz"
        return f"JudgeEndpoint({who}, model={self.model!r}, url={self.url!r})"


def judge_endpoint(profile: Profile, url: Optional[str] = None, model: Optional[str] = None,
                   simulated: Optional[bool] = None, log: Log = print) -> JudgeEndpoint:
    """The judge to use: ``url``/``model`` or the profile's; the test double when ``simulated``.

    ``simulated`` defaults to ``profile.judge_stand_in`` (only the ``teste`` profile, where
    CI has no Ollama). The double (:mod:`llmdefinitions.testing.fake_llm_server`) starts on
    a free local port and its scores come from word overlap, not from a judge LLM — said
    loudly. Otherwise nothing is started.
    """
    model = model or profile.judge_model
    simulated = profile.judge_stand_in if simulated is None else simulated
    if not simulated:
        return JudgeEndpoint(url or profile.judge_url, model)
    from .testing.fake_llm_server import FakeLLMServer

    model = STAND_IN_MODEL                 # never shown as if a real judge's name
    server = FakeLLMServer(models=[model]).start()
    log(SIMULATED_JUDGE_WARNING)
    log(f"       Dublê de teste servindo em {server.url}.")
    return JudgeEndpoint(server.ollama_url, model, simulated=True, server=server)


def judge_responses(paths: RunPaths, endpoint: JudgeEndpoint, progress: bool = True,
                    max_workers: int = 4, responses_file: Optional[Path] = None, **client_kwargs):
    """Score the responses (the run's, or ``responses_file``) with ``endpoint``; save scores and summary.

    ``pontuacoes.json`` holds one result per item (score or the reason there is none);
    ``pontuacoes-resumo.json`` the summary (mean with its interval), which judge gave the
    scores and the run's report; ``pontuacoes.png`` the histogram. Replies are cached
    (``juiz-cache.jsonl``): a rerun asks only for the items without a reply.
    ``client_kwargs`` (``deadline``, ``timeout``, ``max_reply_bytes``) bound each request.
    Returns ``(results, summary_dict)``.
    """
    import dataclasses

    import matplotlib.pyplot as plt

    from .io import read_json, write_json_atomic
    from .judge import save_score_results, score_responses, summarize_scores
    from .plotting import plot_score_histogram

    source = responses_file or paths.responses
    entries = read_json(source)
    results = score_responses(entries, "model_response", endpoint.model, url=endpoint.url,
                              cache_path=endpoint.cache_path(paths), max_workers=max_workers,
                              progress=progress, **client_kwargs)
    save_score_results(results, paths.scores)
    summary = summarize_scores(results)
    record = {**dataclasses.asdict(summary), "n_missing": summary.n_missing,
              "judge_model": endpoint.model, "judge_url": endpoint.url,
              "simulated": endpoint.simulated, "responses": str(source),
              "report": results.report.to_dict(),
              "failures": [r.reason for r in results if r.score is None]}
    write_json_atomic(paths.scores_summary, record)
    who = "DUBLÊ DE TESTE (não é um juiz)" if endpoint.simulated else f"juiz {endpoint.model}"
    title = f"{who}: {summary.n_scored} de {summary.n_total} itens com nota"
    fig = plot_score_histogram(results, save_path=paths.scores_png, show=False, title=title)
    plt.close(fig)
    return results, record


def describe(paths: RunPaths) -> str:
    """A short listing of what the run folder holds (for the end of a notebook or run)."""
    if not paths.run_dir.is_dir():
        return f"'{paths.run_dir}' ainda não existe."
    lines = [f"Conteúdo de '{paths.run_dir}':"]
    for item in sorted(paths.run_dir.iterdir()):
        if item.name.startswith("."):
            continue
        lines.append(f"  {item.name:45s} {item.stat().st_size / 1e6:8.2f} MB")
    return "\n".join(lines)


# --------------------------------------------------------------------------- a run

@dataclass
class RunOptions:
    """What a run was asked to do (the command line's options)."""

    profile: Profile
    output: Optional[Path] = None          # default ./saida or $LLMDEF_SAIDA
    device: Optional[str] = None           # default: cuda > mps > cpu
    redo: bool = False
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    judge_url: Optional[str] = None
    judge_model: Optional[str] = None
    judge_simulated: bool = False
    judge_deadline: Optional[float] = None  # seconds per judge request (default: the judge's)
    responses_file: Optional[Path] = None   # avaliar: any responses file instead of the run's
    progress: bool = True
    parallel: ParallelOptions = ParallelOptions()   # under torchrun: DDP/FSDP, batch split

    @property
    def judge_requested(self) -> bool:
        """True when the user asked for a judge (URL, model or the test double): it must answer."""
        return bool(self.judge_url or self.judge_model or self.judge_simulated)


@dataclass
class Run:
    """One run: its options and folders; the device and the data are computed once, when needed."""

    options: RunOptions
    log: Log = print
    paths: RunPaths = field(init=False)
    _device: object = None
    _prepared: Optional[PreparedData] = None
    on_train_step: Optional[Callable] = None       # passed to the trainer (tests use it)

    def __post_init__(self):
        self.paths = run_paths(self.options.profile, self.options.output)

    @property
    def profile(self) -> Profile:
        return self.options.profile

    @property
    def device(self):
        if self._device is None:
            from .device import resolve_device
            self._device = resolve_device(self.options.device)
        return self._device

    def prepared(self) -> PreparedData:
        if self._prepared is None:
            self._prepared = prepare_data(self.profile, self.paths)
        return self._prepared

    def command(self, step: str) -> str:
        """The command line that runs ``step`` on this same run folder."""
        import shlex

        line = f"{PROG} {step} --perfil {self.profile.name}"
        if self.options.output:
            line += f" --saida {shlex.quote(str(self.options.output))}"
        return line

    @property
    def model_file(self) -> Path:
        return self.paths.sft_model(self.profile.model_name)


@dataclass(frozen=True)
class Step:
    """A step: what it reads and writes, how to run it, and when it must run again."""

    name: str
    title: str
    inputs: Callable[[Run], List[Path]]
    outputs: Callable[[Run], List[Path]]
    run: Callable[[Run], None]
    require: Callable[[Run], None] = lambda run: None        # fail fast when run alone
    stale: Callable[[Run], Optional[str]] = lambda run: None  # another reason to redo

    def status(self, run: Run) -> Tuple[bool, str]:
        """``(done, why not)``: done when every output exists and is newer than every input."""
        outputs = self.outputs(run)
        missing = [p for p in outputs if not p.is_file()]
        if missing:
            return False, f"falta {_short(missing[0], run)}"
        inputs = [p for p in self.inputs(run) if p.is_file()]
        if inputs:
            newest = max(inputs, key=_mtime)
            oldest = min(outputs, key=_mtime)
            if _mtime(newest) > _mtime(oldest):
                return False, f"{_short(newest, run)} é mais novo que {_short(oldest, run)}"
        reason = self.stale(run)
        return (False, reason) if reason else (True, "")


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _short(path: Path, run: Run) -> str:
    try:
        return str(path.relative_to(run.paths.root))
    except ValueError:
        return str(path)


def _elapsed(seconds: float) -> str:
    from .stats import format_decimal

    return f"{format_decimal(seconds, 1)} s" if seconds < 120 else f"{format_decimal(seconds / 60, 1)} min"


# preparar ------------------------------------------------------------------------

def _prepare(run: Run) -> None:
    from .data import load_instruction_file, split_data

    paths, profile = run.paths, run.profile
    prepared = run.prepared()
    full = split_data(load_instruction_file(paths.data_file))
    run.log(f"{sum(map(len, full))} entradas válidas em '{paths.data_file}'. Divisão 85/10/5: treino "
            f"{len(full.train)}, validação {len(full.val)}, teste {len(full.test)}; o perfil "
            f"'{profile.name}' usa {len(prepared.train)}/{len(prepared.val)}/{len(prepared.test)}.")
    report = save_data_report(profile, paths, prepared)
    run.log("\n" + report.to_table() + "\n")
    run.log(f"Relatório salvo em '{paths.quality_report}'; histograma de comprimentos em "
            f"'{paths.lengths_png}'.")


# treinar -------------------------------------------------------------------------

def _train(run: Run) -> None:
    """Finetune; under torchrun every process runs this, in one process group (see distributed)."""
    from .distributed import DistributedSetupError, session

    try:
        with session(run.options.device, run.options.parallel) as parallel:
            _train_in(run, parallel)
    except DistributedSetupError as exc:
        raise PipelineError(str(exc)) from None


def _train_in(run: Run, parallel) -> None:
    from .config import get_config
    from .model import GPTModel
    from .stats import format_decimal

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
    from .data_quality import overlength_entries

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


# avaliar -------------------------------------------------------------------------

def _judge_choice(run: Run) -> Tuple[str, str, bool]:
    """``(url, model, simulated)``: what the user asked for, else the profile's judge."""
    options, profile = run.options, run.profile
    simulated = options.judge_simulated or (profile.judge_stand_in and not (options.judge_url or
                                                                            options.judge_model))
    return (options.judge_url or profile.judge_url, options.judge_model or profile.judge_model, simulated)


def _responses_file(run: Run) -> Path:
    return run.options.responses_file or run.paths.responses


def _require_responses(run: Run) -> None:
    if not _responses_file(run).is_file():
        if run.options.responses_file:
            raise PipelineError(f"Arquivo de respostas não encontrado: '{run.options.responses_file}'.")
        raise PipelineError(
            f"Respostas do modelo não encontradas em '{run.paths.responses}'. Gere-as antes:\n"
            f"  {run.command('gerar')}\n(ou avalie outro arquivo: {PROG} avaliar --respostas ARQUIVO)")


def _evaluation_stale(run: Run) -> Optional[str]:
    """Reason to evaluate again: another file, another judge asked for, or a judge that failed before."""
    from .io import read_json

    try:
        before = read_json(run.paths.evaluation_json)
        judge = before["juiz"]
    except (OSError, ValueError, KeyError, TypeError):
        return "a avaliação anterior está ilegível"
    if before.get("respostas") != str(_responses_file(run)):
        return f"a avaliação anterior foi de '{before.get('respostas')}'"
    url, model, simulated = _judge_choice(run)
    if judge["status"] == "falhou":
        return "o juiz falhou na avaliação anterior"
    if judge["status"] == "pulado":
        return "pedido um juiz, e a avaliação anterior não teve juiz" if run.options.judge_requested else None
    if (judge["url"], judge["modelo"], bool(judge["simulado"])) != (url, model, simulated) and \
            (run.options.judge_requested or bool(judge["simulado"]) != simulated):
        return f"as notas existentes são de {judge['modelo']} em {judge['url']}"
    return None


def _judge_unreachable(run: Run, url: str, model: str, message: str) -> PipelineError:
    return PipelineError(
        f"O juiz não está disponível em {url} (modelo '{model}').\n  {message}\n"
        "O que fazer:\n"
        f"  - Ollama: instale (https://ollama.com), rode `ollama serve` em outro terminal e "
        f"`ollama pull {model}`; depois repita o comando.\n"
        "  - Outro servidor compatível com a OpenAI (llama.cpp, vLLM, LM Studio): "
        "--url http://localhost:8080/v1/chat/completions --modelo NOME\n"
        f"As métricas que não precisam de juiz já estão em '{run.paths.evaluation_json}'; "
        "rode o mesmo comando de novo quando o juiz estiver no ar.")


def _run_judge(run: Run):
    """Score with the judge; returns a :class:`~llmdefinitions.evaluation.JudgeOutcome`.

    A judge that was not asked for and does not answer is *skipped* (not an error);
    one that was asked for and does not answer, or never answers a single item, *fails*.
    """
    import dataclasses

    from .evaluation import FAILED, JUDGED, SKIPPED, JudgeOutcome
    from .judge import JudgeError, check_server

    url, model, simulated = _judge_choice(run)
    paths = run.paths
    with contextlib.ExitStack() as stack:
        endpoint = judge_endpoint(run.profile, url, model, simulated, log=run.log)
        stack.callback(endpoint.close)
        if run.options.redo and endpoint.cache_path(paths).is_file():
            endpoint.cache_path(paths).unlink()
            run.log(f"--refazer: cache de respostas do juiz '{endpoint.cache_path(paths).name}' apagado.")
        if not simulated:
            status = check_server(url, model, timeout=10.0)
            if not status.ok:
                if run.options.judge_requested:
                    return JudgeOutcome(FAILED, model, url, reason=status.message)
                hint = (f"sem juiz em {url} ({status.message.splitlines()[0]}). Para ter as notas de um LLM "
                        f"juiz: rode `ollama serve` e `ollama pull {model}`, ou passe --url/--modelo de um "
                        "servidor compatível com a OpenAI, e repita o comando.")
                return JudgeOutcome(SKIPPED, model, url, reason=hint)
            run.log(status.message)
        kwargs = {"deadline": run.options.judge_deadline} if run.options.judge_deadline else {}
        try:
            results, record = judge_responses(paths, endpoint, progress=run.options.progress,
                                              responses_file=_responses_file(run), **kwargs)
        except JudgeError as exc:                      # e.g. the server stopped in the middle
            return JudgeOutcome(FAILED, model, url, simulated, reason=str(exc))
    report = results.report
    summary = {key: record[key] for key in ("mean", "n_scored", "n_total", "interval") if key in record}
    outcome = JudgeOutcome(FAILED if report.judge_never_answered else JUDGED, model, url, simulated,
                           reason=str(report) if report.judge_never_answered else None,
                           summary=summary, report=report.to_dict())
    run.log(f"Juiz ({'DUBLÊ DE TESTE' if simulated else model}): {report}")
    if report.n_with_score:
        from .judge import summarize_scores
        run.log(f"Nota média: {summarize_scores(results)}")
    return outcome


def _evaluate(run: Run) -> None:
    from .evaluation import FAILED, SKIPPED, Evaluation, save_evaluation, score_verifiable
    from .metrics import load_responses, reference_metrics

    _require_responses(run)
    paths, source = run.paths, _responses_file(run)
    entries = load_responses(source)
    evaluation = Evaluation(str(source), len(entries), reference_metrics(entries))
    if run.options.responses_file:
        evaluation.verifiable_note = "só para as respostas do próprio modelo (gerar), não para --respostas"
    elif paths.verifiable_responses.is_file():
        evaluation.verifiable = score_verifiable(paths.verifiable_responses)
    else:
        evaluation.verifiable_note = f"'{paths.verifiable_responses.name}' ainda não existe (rode gerar)"
    evaluation.judge = _run_judge(run)
    save_evaluation(evaluation, paths.evaluation_json, paths.evaluation_png)
    run.log(evaluation.to_text())
    judge = evaluation.judge
    if judge.status == SKIPPED:
        run.log(f"Juiz pulado: {judge.reason}")
    run.log(f"Avaliação salva em '{paths.evaluation_json}' e '{paths.evaluation_png.name}'.")
    if judge.simulated:
        run.log("Lembrete: notas do DUBLÊ DE TESTE, não de um juiz.")
    if judge.status == FAILED:
        url, model, _ = _judge_choice(run)
        raise _judge_unreachable(run, url, model, judge.reason or "")


STEPS: Dict[str, Step] = {step.name: step for step in (
    Step("preparar", "dados (download, validação, divisão, relatório de qualidade)",
         inputs=lambda run: [],
         outputs=lambda run: [run.paths.data_file, run.paths.quality_report, run.paths.lengths_png],
         run=_prepare),
    Step("treinar", "ajuste fino",
         inputs=lambda run: [run.paths.data_file],
         outputs=lambda run: [run.model_file, run.paths.losses_json, run.paths.losses_png],
         run=_train),
    Step("gerar", "respostas para o conjunto de teste e as instruções verificáveis",
         inputs=lambda run: [run.paths.data_file, run.model_file],
         outputs=lambda run: [run.paths.responses, run.paths.verifiable_responses],
         run=_generate, require=_require_model),
    Step("avaliar", "métricas, instruções verificáveis e LLM juiz",
         inputs=lambda run: [_responses_file(run), run.paths.verifiable_responses],
         outputs=lambda run: [run.paths.evaluation_json, run.paths.evaluation_png],
         run=_evaluate, require=_require_responses, stale=_evaluation_stale),
)}
STEP_NAMES = tuple(STEPS)


# --------------------------------------------------------------------------- preferencia (DPO)
# Optional, after `treinar`. Registered after STEP_NAMES on purpose: `tudo` runs STEP_NAMES
# (the chain that answers and scores the SFT model); DPO changes none of their inputs.

DPO_LORA_TARGETS = "all_linear"    # every nn.Linear, the head included (the book's LoRA appendix)


def prepare_preference_data(profile: Profile, paths: RunPaths) -> PreparedData:
    """Download (or reuse) the book's preference pairs, split them 85/10/5, keep the profile's share."""
    from .data import split_data
    from .downloads import PREFERENCE_DATASET_URL
    from .dpo_data import download_and_load_preference_file
    from .tokenizer import get_gpt2_tokenizer

    data = download_and_load_preference_file(paths.preference_data_file, PREFERENCE_DATASET_URL)
    train, test, val = split_data(data)
    train, val, test = profile.subset(train, val, test)
    return PreparedData(train, val, test, get_gpt2_tokenizer())


def make_preference_loaders(profile: Profile, prepared: PreparedData, device):
    """Train (shuffled, incomplete last batch dropped) and validation loaders, as the book's."""
    import torch

    from .dpo_data import make_preference_loader

    torch.manual_seed(profile.seed)
    common = dict(batch_size=profile.dpo_batch_size, device=device,
                  allowed_max_length=profile.allowed_max_length)
    return (make_preference_loader(prepared.train, prepared.tokenizer, shuffle=True, drop_last=True,
                                   **common),
            make_preference_loader(prepared.val, prepared.tokenizer, **common))


def add_dpo_adapters(profile: Profile, model):
    """LoRA adapters (the profile's rank and alpha) on every linear layer; the rest frozen."""
    import torch

    from .lora import replace_linear_with_lora

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
    from .dpo import train_model_dpo
    from .io import write_json_atomic
    from .lora import save_lora_adapter
    from .prompts import format_input
    from .trainer import make_optimizer

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

    from .plotting import finish_figure

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

    from .io import read_json

    fig = plot_dpo_metrics(read_json(paths.dpo_metrics), save_path=paths.dpo_png, show=show)
    if not show:
        plt.close(fig)
    return paths.dpo_png


def compare_dpo_responses(profile: Profile, paths: RunPaths, model, prepared: PreparedData) -> list:
    """Answers to the first validation prompts before DPO (adapters off: the SFT model) and after.

    Saved as ``dpo-respostas.json`` with the book's names: ``reference_response`` and
    ``policy_response``. Greedy, up to ``profile.max_new_tokens`` tokens.
    """
    from .generation import generate_responses
    from .io import write_json_atomic
    from .lora import disable_lora

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
    from .stats import format_decimal

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


STEPS["preferencia"] = Step(
    "preferencia", "ajuste fino por preferência (DPO com adaptadores LoRA)",
    inputs=lambda run: [run.model_file, run.paths.preference_data_file],
    outputs=lambda run: [run.paths.dpo_adapter(run.profile.model_name), run.paths.dpo_metrics,
                         run.paths.dpo_png, run.paths.dpo_responses],
    run=_preference, require=_require_model)


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and check that a file can be written there (pt-BR error if not)."""
    from .io import os_error_pt

    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".teste-escrita-", dir=folder)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise PipelineError(
            f"Não é possível escrever na pasta de saída '{folder}': {os_error_pt(exc)}. "
            "Escolha outra pasta com --saida (ou corrija as permissões).") from None


def run_steps(run: Run, names: Sequence[str]) -> None:
    """Run the steps called ``names`` in order, skipping those already done (unless ``redo``).

    The run folder is locked for the whole run (by process 0 under torchrun): a second run on
    the same folder stops at once with a pt-BR message instead of doing the work twice.
    """
    from .distributed import is_main_process
    from .io import FolderLockedError, folder_lock

    steps = [STEPS[name] for name in names]
    ensure_writable(run.paths.run_dir)
    with contextlib.ExitStack() as stack:
        try:
            if is_main_process():              # under torchrun, the run is one: process 0 holds the lock
                stack.enter_context(folder_lock(run.paths.run_dir))
        except FolderLockedError as exc:
            raise PipelineError(str(exc)) from None
        if len(steps) == 1 and not run.options.redo and not steps[0].status(run)[0]:
            steps[0].require(run)
        for number, step in enumerate(steps, start=1):
            label = f"[{number}/{len(steps)}] {step.name}"
            if run.options.redo:
                why = "--refazer"
            else:
                done, why = step.status(run)
                if done:
                    names_done = ", ".join(_short(p, run) for p in step.outputs(run))
                    run.log(f"{label}: já feito ({names_done}) — pulando. Use --refazer para refazer.")
                    continue
            run.log(f"{label}: {step.title} — executando ({why})")
            start = time.perf_counter()
            step.run(run)
            run.log(f"{label}: concluído em {_elapsed(time.perf_counter() - start)}.")


__all__ = ["PROG", "PipelineError", "PreparedData", "prepare_data", "make_loaders", "load_pretrained",
           "finetune", "load_finetuned", "load_losses", "save_run_config", "save_data_report",
           "save_loss_plot", "generate_test_responses", "JudgeEndpoint", "judge_endpoint",
           "judge_responses", "describe", "RunOptions", "Run", "Step", "STEPS", "STEP_NAMES",
           "run_steps", "ensure_writable", "RunPaths", "run_paths",
           "prepare_preference_data", "make_preference_loaders", "add_dpo_adapters",
           "preference_finetune", "plot_dpo_metrics", "save_dpo_plot", "compare_dpo_responses"]
