"""The course's hands-on chain as steps that notebooks and the command line share.

Each step reads what the previous one wrote in the run folder
(``<saida>/<perfil>/``), so a notebook (or ``python -m llmdefinitions``) can pick up
where another stopped, and an interrupted run resumes.
"""
from __future__ import annotations

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
    if profile.is_tiny and not (paths.models_dir / "tiny" / "model.ckpt.index").is_file():
        write_random_gpt2_checkpoint(get_config(profile.model_name), paths.models_dir / "tiny",
                                     seed=profile.seed)


def load_pretrained(profile: Profile, paths: RunPaths, device) -> GPTModel:
    """GPT-2 of the profile with OpenAI's weights (downloaded once), in eval mode."""
    ensure_checkpoint(profile, paths)
    settings, params = download_and_load_gpt2(model_size=profile.model_size,
                                              models_dir=paths.models_dir)
    model = GPTModel(get_config(profile.model_name))
    load_weights_into_gpt(model, params)
    return model.to(device).eval()


def finetune(profile: Profile, paths: RunPaths, model, prepared: PreparedData, loaders, device,
             resume: bool = True, progress: bool = True):
    """Train as in the seed (AdamW, the profile's epochs); save losses and the model."""
    from .training import train_model_simple

    train_loader, val_loader, _ = loaders
    torch.manual_seed(profile.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.learning_rate,
                                  weight_decay=profile.weight_decay)
    history = train_model_simple(
        model, train_loader, val_loader, optimizer, device,
        num_epochs=profile.num_epochs, eval_freq=profile.eval_freq, eval_iter=profile.eval_iter,
        start_context=format_input(prepared.val[0]), tokenizer=prepared.tokenizer,
        precision=profile.precision, max_steps=profile.max_steps,
        checkpoint_path=paths.train_checkpoint, resume=resume, progress=progress)
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
           "save_run_config", "describe"]
