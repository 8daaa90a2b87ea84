"""The course's hands-on chain as steps that notebooks and the command line share.

Each step reads what the previous one wrote in the run folder
(``<saida>/<perfil>/``), so a notebook (or ``python -m llmdefinitions``) can pick up
where another stopped, and an interrupted run resumes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader

from .config import get_config
from .data import InstructionDataset, custom_collate_fn, download_and_load_file, split_data
from .downloads import DATASET_URL
from .generation import load_model_weights, save_model, sft_model_filename
from .io import read_json, write_json_atomic
from .model import GPTModel
from .profiles import Profile, output_root
from .prompts import format_input
from .tokenizer import get_gpt2_tokenizer
from .weights import download_and_load_gpt2, load_weights_into_gpt, write_random_gpt2_checkpoint


@dataclass(frozen=True)
class RunPaths:
    """Where every step of a profile reads and writes."""

    root: Path
    profile: str

    @property
    def data_file(self) -> Path:
        return self.root / "instruction-data.json"

    @property
    def models_dir(self) -> Path:
        return self.root / "gpt2"

    @property
    def run_dir(self) -> Path:
        return self.root / self.profile

    def sft_model(self, model_name: str) -> Path:
        return self.run_dir / sft_model_filename(model_name)

    @property
    def train_checkpoint(self) -> Path:
        return self.run_dir / "treino-checkpoint.pt"

    @property
    def losses_json(self) -> Path:
        return self.run_dir / "perdas.json"

    @property
    def losses_png(self) -> Path:
        return self.run_dir / "perdas.png"

    @property
    def responses(self) -> Path:
        return self.run_dir / "instruction-data-with-response.json"

    @property
    def scores(self) -> Path:
        return self.run_dir / "pontuacoes.json"

    @property
    def judge_cache(self) -> Path:
        return self.run_dir / "juiz-cache.jsonl"

    @property
    def config_json(self) -> Path:
        return self.run_dir / "config.json"

    @property
    def quality_report(self) -> Path:
        return self.run_dir / "qualidade-dados.txt"

    @property
    def lengths_png(self) -> Path:
        return self.run_dir / "comprimentos.png"

    @property
    def scores_summary(self) -> Path:
        return self.run_dir / "pontuacoes-resumo.json"

    @property
    def scores_png(self) -> Path:
        return self.run_dir / "pontuacoes.png"

    @property
    def simulated_judge_cache(self) -> Path:
        """Replies of the test-double judge: kept apart so they never pass for a real judge's."""
        return self.run_dir / "juiz-cache-simulado.jsonl"


def run_paths(profile: Profile, root: Optional[Path] = None) -> RunPaths:
    """The folders of ``profile`` under ``root`` (default ``./saida`` or ``$LLMDEF_SAIDA``)."""
    return RunPaths(output_root(root), profile.name)


@dataclass
class PreparedData:
    """The three splits (the profile's share of each) and the tokenizer."""

    train: list
    val: list
    test: list
    tokenizer: object


def prepare_data(profile: Profile, paths: RunPaths, url: str = DATASET_URL) -> PreparedData:
    """Download (or reuse) the dataset, split it 85/10/5, keep the profile's share."""
    data = download_and_load_file(paths.data_file, url)
    train, test, val = split_data(data)
    train, val, test = profile.subset(train, val, test)
    return PreparedData(train, val, test, get_gpt2_tokenizer())


def make_loaders(profile: Profile, prepared: PreparedData, device, num_workers: int = 0):
    """Train / validation / test loaders as in the seed (train shuffled, drop_last)."""
    collate = partial(custom_collate_fn, device=device, allowed_max_length=profile.allowed_max_length)
    torch.manual_seed(profile.seed)
    loaders = []
    for items, train in ((prepared.train, True), (prepared.val, False), (prepared.test, False)):
        loaders.append(DataLoader(InstructionDataset(items, prepared.tokenizer),
                                  batch_size=profile.batch_size, collate_fn=collate,
                                  shuffle=train, drop_last=train, num_workers=num_workers))
    return tuple(loaders)


def ensure_checkpoint(profile: Profile, paths: RunPaths) -> None:
    """For the tiny test model: write its random checkpoint in OpenAI's format (once)."""
    target = paths.models_dir / "tiny"
    if profile.is_tiny and not (target / "model.ckpt.index").is_file():
        # Written in a private folder and moved into place whole, so that a reader
        # (another notebook running at the same time) never sees half a checkpoint.
        import shutil
        import tempfile

        paths.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=paths.models_dir))
        try:
            write_random_gpt2_checkpoint(get_config(profile.model_name), staging, seed=profile.seed)
            try:
                os.replace(staging, target)
            except OSError:                     # someone else finished first: keep theirs
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def load_pretrained(profile: Profile, paths: RunPaths, device) -> GPTModel:
    """GPT-2 of the profile with OpenAI's weights (downloaded once), in eval mode."""
    ensure_checkpoint(profile, paths)
    settings, params = download_and_load_gpt2(model_size=profile.model_size,
                                              models_dir=paths.models_dir)
    model = GPTModel(get_config(profile.model_name))
    load_weights_into_gpt(model, params)
    return model.to(device).eval()


def finetune(profile: Profile, paths: RunPaths, model, prepared: PreparedData, loaders, device,
             resume: bool = True, progress: bool = True, checkpoint_every: int = 0):
    """Train as in the seed (AdamW, the profile's epochs); save losses and the model.

    A checkpoint is written after each epoch (and every ``checkpoint_every`` steps if
    > 0); with ``resume=True`` an interrupted run continues from it.
    """
    from .training import make_optimizer, train_model_simple

    train_loader, val_loader, _ = loaders
    torch.manual_seed(profile.seed)
    optimizer = make_optimizer(model, lr=profile.learning_rate, weight_decay=profile.weight_decay)
    history = train_model_simple(
        model, train_loader, val_loader, optimizer, device,
        num_epochs=profile.num_epochs, eval_freq=profile.eval_freq, eval_iter=profile.eval_iter,
        start_context=format_input(prepared.val[0]), tokenizer=prepared.tokenizer,
        precision=profile.precision, max_steps=profile.max_steps,
        checkpoint_path=paths.train_checkpoint, checkpoint_every=checkpoint_every,
        resume=resume, progress=progress)
    train_losses, val_losses, tokens_seen = history
    write_json_atomic(paths.losses_json, {"train_losses": train_losses, "val_losses": val_losses,
                                          "tokens_seen": tokens_seen,
                                          "num_epochs": profile.num_epochs})
    save_model(model, paths.sft_model(profile.model_name))
    return history


def load_finetuned(profile: Profile, paths: RunPaths, device) -> GPTModel:
    """The model finetuned by :func:`finetune` (notebook 05 or ``python -m llmdefinitions treinar``)."""
    path = paths.sft_model(profile.model_name)
    if not path.is_file():
        raise FileNotFoundError(
            f"Modelo ajustado não encontrado em '{path}'. Rode antes o notebook 05 "
            f"(ou: python -m llmdefinitions treinar --perfil {profile.name})."
        )
    model = GPTModel(get_config(profile.model_name))
    return load_model_weights(model, path, device).eval()


def load_losses(paths: RunPaths) -> dict:
    """The losses :func:`finetune` saved."""
    return read_json(paths.losses_json)


def save_run_config(profile: Profile, paths: RunPaths, device) -> Path:
    """Record the profile and the device of this run in ``config.json``."""
    return write_json_atomic(paths.config_json, {**profile.to_dict(), "device": str(device)})


def save_data_report(profile: Profile, paths: RunPaths, prepared: PreparedData,
                     prompt_style: str = "alpaca"):
    """Quality report of the profile's splits (text file) and a histogram of their lengths (PNG).

    Lengths are counted against ``profile.allowed_max_length``, where the collate
    function cuts. Returns the :class:`~llmdefinitions.data_quality.QualityReport`.
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
    """Draw the losses :func:`finetune` saved into ``perdas.png`` (as the seed plots them)."""
    import matplotlib.pyplot as plt

    from .plotting import plot_losses

    losses = load_losses(paths)
    epochs = torch.linspace(0, losses.get("num_epochs", profile.num_epochs),
                            len(losses["train_losses"])).tolist()
    fig = plot_losses(epochs, losses["tokens_seen"], losses["train_losses"], losses["val_losses"],
                      save_path=paths.losses_png, show=show)
    if not show:
        plt.close(fig)
    return paths.losses_png


def generate_test_responses(profile: Profile, paths: RunPaths, model, prepared: PreparedData,
                            progress: bool = True) -> list:
    """The model's answer to every test entry, saved as ``instruction-data-with-response.json``.

    Greedy, up to ``profile.max_new_tokens`` tokens, in batches of
    ``profile.generation_batch_size``; each entry gets the key ``model_response``.
    """
    from .generation import generate_responses, save_responses

    responses = generate_responses(model, prepared.tokenizer, prepared.test,
                                   max_new_tokens=profile.max_new_tokens,
                                   batch_size=profile.generation_batch_size, progress=progress)
    return save_responses(prepared.test, responses, paths.responses)


def judge_responses(profile: Profile, paths: RunPaths, url: Optional[str] = None,
                    model: Optional[str] = None, simulated: bool = False,
                    progress: bool = True, max_workers: int = 4):
    """Score the saved responses with the judge at ``url``; save scores, summary and histogram.

    ``pontuacoes.json`` holds one result per item (score or the reason there is
    none); ``pontuacoes-resumo.json`` the summary and which judge gave the scores;
    ``pontuacoes.png`` the histogram. Replies are cached (``juiz-cache.jsonl``) so an
    interrupted run does not ask again. ``simulated=True`` marks scores from the test
    double (``llmdefinitions.testing.fake_llm_server``) and uses a separate cache.
    Returns ``(results, summary_dict)``.
    """
    import dataclasses

    import matplotlib.pyplot as plt

    from .judge import DEFAULT_URL, save_score_results, score_responses, summarize_scores
    from .plotting import plot_score_histogram

    url = url or DEFAULT_URL
    model = model or profile.judge_model
    if not paths.responses.is_file():
        raise FileNotFoundError(
            f"Respostas do modelo não encontradas em '{paths.responses}'. Gere-as antes "
            f"(python -m llmdefinitions gerar --perfil {profile.name})."
        )
    entries = read_json(paths.responses)
    cache = paths.simulated_judge_cache if simulated else paths.judge_cache
    results = score_responses(entries, "model_response", model, url=url, cache_path=cache,
                              max_workers=max_workers, progress=progress)
    save_score_results(results, paths.scores)
    summary = summarize_scores(results)
    record = {**dataclasses.asdict(summary), "n_missing": summary.n_missing,
              "judge_model": model, "judge_url": url, "simulated": simulated,
              "responses": paths.responses.name,
              "failures": [r.reason for r in results if r.score is None]}
    write_json_atomic(paths.scores_summary, record)
    who = "DUBLÊ DE TESTE (não é um juiz)" if simulated else f"juiz {model}"
    title = f"{who}: {summary.n_scored} de {summary.n_total} itens com nota"
    fig = plot_score_histogram(results, save_path=paths.scores_png, show=False, title=title)
    plt.close(fig)
    return results, record


def describe(paths: RunPaths) -> str:
    """A short listing of what the run folder holds (for the end of a notebook)."""
    if not paths.run_dir.is_dir():
        return f"'{paths.run_dir}' ainda não existe."
    lines = [f"Conteúdo de '{paths.run_dir}':"]
    for item in sorted(paths.run_dir.iterdir()):
        lines.append(f"  {item.name:45s} {item.stat().st_size / 1e6:8.2f} MB")
    return "\n".join(lines)


__all__ = ["RunPaths", "run_paths", "PreparedData", "prepare_data", "make_loaders",
           "ensure_checkpoint", "load_pretrained", "finetune", "load_finetuned", "load_losses",
           "save_run_config", "describe", "save_data_report", "save_loss_plot",
           "generate_test_responses", "judge_responses"]


class JudgeEndpoint:
    """Where the judge answers (see :func:`judge_endpoint`): ``url``, ``model`` and ``simulated``.

    ``with judge_endpoint(profile) as url:`` gives the URL and closes at the end;
    a notebook, where a ``with`` block cannot span cells, keeps the object and
    calls :meth:`close` in its last cell. Closing twice is harmless.
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


def judge_endpoint(profile: Profile) -> JudgeEndpoint:
    """The judge to use for ``profile``: its ``judge_url``, or the test double in ``teste``.

    With ``profile.judge_stand_in`` (only the ``teste`` profile, where CI has no
    Ollama) this starts ``llmdefinitions.testing.fake_llm_server.FakeLLMServer`` on a
    free local port and points at its Ollama chat route, saying loudly that its
    scores come from a test double (word overlap), not from a judge LLM. Otherwise
    ``profile.judge_url`` is returned unchanged and nothing is started.
    Use as ``with judge_endpoint(profile) as url:`` or keep the returned object and
    call ``.close()``.
    """
    if not profile.judge_stand_in:
        return JudgeEndpoint(profile.judge_url, profile.judge_model)
    from .testing.fake_llm_server import FakeLLMServer

    server = FakeLLMServer(models=[profile.judge_model]).start()
    print(f"AVISO: perfil '{profile.name}': o juiz é um DUBLÊ DE TESTE "
          f"(llmdefinitions.testing.fake_llm_server), servindo em {server.url}.\n"
          "       As notas vêm de uma conta de sobreposição de palavras, NÃO de um LLM juiz: "
          "servem só para testar o fluxo; não as use como resultado.")
    return JudgeEndpoint(server.ollama_url, profile.judge_model, simulated=True, server=server)
