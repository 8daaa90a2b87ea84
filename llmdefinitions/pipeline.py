"""The course's hands-on chain as steps: the one orchestrator of notebooks and command line.

Four steps, each reading what the previous one wrote in the run folder
(``<saida>/<perfil>/``, see :mod:`llmdefinitions.runs`):

============  =================================================================
``preparar``  download/validate/split the data; quality report + length histogram
``treinar``   finetune (resumes from the training checkpoint after an interruption)
``gerar``     answer the test set (saves progress per batch; resumes)
``avaliar``   score the answers (judge LLM)
============  =================================================================

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


def generate_test_responses(profile: Profile, paths: RunPaths, model, prepared: PreparedData,
                            progress: bool = True, fingerprint: str = "") -> list:
    """The model's answer to every test entry, saved as ``instruction-data-with-response.json``.

    Greedy, up to ``profile.max_new_tokens`` tokens, ``profile.generation_batch_size``
    prompts at a time. Each finished batch is appended to ``respostas-parciais.jsonl``;
    after an interruption the answers already there are kept (when ``fingerprint``, the
    model's identity, is unchanged) and only the rest is generated. The final file is
    the same as an uninterrupted run's.
    """
    from .generation import generate_responses, save_responses
    from .jsonl import append_jsonl, read_jsonl

    header = {"respostas_parciais": paths.responses.name, "modelo": fingerprint,
              "itens": len(prepared.test), "lote": profile.generation_batch_size,
              "max_new_tokens": profile.max_new_tokens}
    records = read_jsonl(paths.responses_partial)
    if records and records[0] != header:
        paths.responses_partial.unlink()               # another model or other settings
        records = []
    done = {int(r["index"]): r["model_response"] for r in records[1:]}
    if not records:
        append_jsonl(paths.responses_partial, header)

    def save_batch(answers: Dict[int, str]) -> None:
        for index, answer in answers.items():
            append_jsonl(paths.responses_partial, {"index": index, "model_response": answer})

    responses = generate_responses(model, prepared.tokenizer, prepared.test,
                                   max_new_tokens=profile.max_new_tokens,
                                   batch_size=profile.generation_batch_size, progress=progress,
                                   done=done, on_batch=save_batch)
    rows = save_responses(prepared.test, responses, paths.responses)
    paths.responses_partial.unlink(missing_ok=True)
    return rows


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

    server = FakeLLMServer(models=[model]).start()
    log(SIMULATED_JUDGE_WARNING)
    log(f"       Dublê de teste servindo em {server.url}.")
    return JudgeEndpoint(server.ollama_url, model, simulated=True, server=server)


def judge_responses(paths: RunPaths, endpoint: JudgeEndpoint, progress: bool = True,
                    max_workers: int = 4):
    """Score the saved responses with ``endpoint``; save scores, summary and histogram.

    ``pontuacoes.json`` holds one result per item (score or the reason there is none);
    ``pontuacoes-resumo.json`` the summary and which judge gave the scores;
    ``pontuacoes.png`` the histogram. Replies are cached (``juiz-cache.jsonl``) so an
    interrupted run does not ask again. Returns ``(results, summary_dict)``.
    """
    import dataclasses

    import matplotlib.pyplot as plt

    from .io import read_json, write_json_atomic
    from .judge import save_score_results, score_responses, summarize_scores
    from .plotting import plot_score_histogram

    entries = read_json(paths.responses)
    results = score_responses(entries, "model_response", endpoint.model, url=endpoint.url,
                              cache_path=endpoint.cache_path(paths), max_workers=max_workers,
                              progress=progress)
    save_score_results(results, paths.scores)
    summary = summarize_scores(results)
    record = {**dataclasses.asdict(summary), "n_missing": summary.n_missing,
              "judge_model": endpoint.model, "judge_url": endpoint.url,
              "simulated": endpoint.simulated, "responses": paths.responses.name,
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
    progress: bool = True
    parallel: ParallelOptions = ParallelOptions()   # under torchrun: DDP/FSDP, batch split


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


# gerar ---------------------------------------------------------------------------

def _require_model(run: Run) -> None:
    if not run.model_file.is_file():
        raise PipelineError(
            f"Modelo ajustado não encontrado em '{run.model_file}'. Treine-o antes:\n"
            f"  {run.command('treinar')}\n(ou rode tudo de uma vez: {run.command('tudo')})")


def _generate(run: Run) -> None:
    _require_model(run)
    model = load_finetuned(run.profile, run.paths, run.device)
    if run.options.redo:
        run.paths.responses_partial.unlink(missing_ok=True)
    rows = generate_test_responses(run.profile, run.paths, model, run.prepared(),
                                   progress=run.options.progress,
                                   fingerprint=_model_fingerprint(run.model_file))
    run.log(f"{len(rows)} respostas salvas em '{run.paths.responses}'.")
    if rows:
        first = rows[0]
        run.log(f"Exemplo — instrução: {first['instruction']!r}\n"
                f"          referência: {first['output']!r}\n"
                f"          modelo: {first['model_response']!r}")


# avaliar -------------------------------------------------------------------------

def _judge_choice(run: Run) -> Tuple[str, str, bool]:
    options, profile = run.options, run.profile
    return (options.judge_url or profile.judge_url, options.judge_model or profile.judge_model,
            options.judge_simulated)


def _require_responses(run: Run) -> None:
    if not run.paths.responses.is_file():
        raise PipelineError(
            f"Respostas do modelo não encontradas em '{run.paths.responses}'. Gere-as antes:\n"
            f"  {run.command('gerar')}")


def _judge_changed(run: Run) -> Optional[str]:
    """Reason to redo the scores when they came from another judge than the one asked for now."""
    from .io import read_json

    try:
        summary = read_json(run.paths.scores_summary)
        before = (summary["judge_url"], summary["judge_model"], bool(summary["simulated"]))
    except (OSError, ValueError, KeyError, TypeError):
        return "o resumo das notas está ilegível"
    url, model, simulated = _judge_choice(run)
    if before[2] != simulated:
        return ("as notas existentes são do juiz simulado" if before[2]
                else "as notas existentes são de um juiz de verdade, e agora foi pedido o simulado")
    if before[1] != model:
        return f"as notas existentes são do juiz '{before[1]}', e agora foi pedido '{model}'"
    if not simulated and before[0] != url:
        return f"as notas existentes vieram de {before[0]}, e agora foi pedido {url}"
    return None


def _judge_unreachable(run: Run, url: str, model: str, message: str) -> PipelineError:
    return PipelineError(
        f"O juiz não está disponível em {url} (modelo '{model}').\n  {message}\n"
        "O que fazer:\n"
        f"  - Ollama: instale (https://ollama.com), rode `ollama serve` em outro terminal e "
        f"`ollama pull {model}`; depois repita o comando.\n"
        "  - Outro servidor compatível com a OpenAI (llama.cpp, vLLM, LM Studio): "
        "--url http://localhost:8080/v1/chat/completions --modelo NOME\n"
        "  - Só para testar o encadeamento, sem juiz de verdade: --juiz-simulado "
        "(as notas vêm de um dublê de teste).\n"
        f"O que já foi feito está salvo em '{run.paths.run_dir}': "
        "rode o mesmo comando de novo para continuar dali.")


def _evaluate(run: Run) -> None:
    from .judge import JudgeError, check_server, summarize_scores

    _require_responses(run)
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
                raise _judge_unreachable(run, url, model, status.message)
            run.log(status.message)
        try:
            results, _ = judge_responses(paths, endpoint, progress=run.options.progress)
        except JudgeError as exc:                 # e.g. the server stopped in the middle
            raise PipelineError(
                f"O juiz falhou: {exc}\nAs respostas que ele já deu estão no cache "
                f"('{paths.run_dir}'): rode o mesmo comando de novo para continuar dali.") from None
    summary = summarize_scores(results)
    who = "DUBLÊ DE TESTE" if simulated else f"juiz {model}"
    run.log(f"{summary} ({who}).")
    failures = [r for r in results if r.score is None]
    if failures:
        run.log(f"{len(failures)} item(ns) sem nota; primeiro motivo: {failures[0].reason}")
    run.log(f"Notas salvas em '{paths.scores}'; resumo em '{paths.scores_summary.name}'; "
            f"histograma em '{paths.scores_png.name}'.")
    if simulated:
        run.log("Lembrete: notas do DUBLÊ DE TESTE, não de um juiz.")


STEPS: Dict[str, Step] = {step.name: step for step in (
    Step("preparar", "dados (download, validação, divisão, relatório de qualidade)",
         inputs=lambda run: [],
         outputs=lambda run: [run.paths.data_file, run.paths.quality_report, run.paths.lengths_png],
         run=_prepare),
    Step("treinar", "ajuste fino",
         inputs=lambda run: [run.paths.data_file],
         outputs=lambda run: [run.model_file, run.paths.losses_json, run.paths.losses_png],
         run=_train),
    Step("gerar", "respostas para o conjunto de teste",
         inputs=lambda run: [run.paths.data_file, run.model_file],
         outputs=lambda run: [run.paths.responses],
         run=_generate, require=_require_model),
    Step("avaliar", "notas do LLM juiz",
         inputs=lambda run: [run.paths.responses],
         outputs=lambda run: [run.paths.scores, run.paths.scores_summary, run.paths.scores_png],
         run=_evaluate, require=_require_responses, stale=_judge_changed),
)}
STEP_NAMES = tuple(STEPS)


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and check that a file can be written there (pt-BR error if not)."""
    from .io import describe_os_error

    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".teste-escrita-", dir=folder)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise PipelineError(
            f"Não é possível escrever na pasta de saída '{folder}': {describe_os_error(exc)}. "
            "Escolha outra pasta com --saida (ou corrija as permissões).") from None


def run_steps(run: Run, names: Sequence[str]) -> None:
    """Run the steps called ``names`` in order, skipping those already done (unless ``redo``)."""
    steps = [STEPS[name] for name in names]
    ensure_writable(run.paths.run_dir)
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
           "run_steps", "ensure_writable", "RunPaths", "run_paths"]
