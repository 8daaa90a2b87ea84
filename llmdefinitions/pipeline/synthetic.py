"""Making instruction data with a local LLM (Self-Instruct or Magpie): the ``gerar-dados`` command's work."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..datagen import METHODS, RESPONSE_MODES, TEMPLATES
from ..profiles import Profile
from ..runs import run_paths
from .run import Log


def generate_synthetic_data(profile: Profile, method: str, n: int, *, output: Optional[Path] = None,
                            url: Optional[str] = None, model: Optional[str] = None,
                            template: Optional[str] = None, response_mode: str = "chat",
                            system: Optional[str] = None, seed_tasks_file: Optional[Path] = None,
                            seed: int = 123, redo: bool = False, log: Log = print):
    """Generate ``n`` items with ``method`` into ``<saida>/<perfil>/``; returns the datagen result.

    The server and model default to the profile's judge (Ollama's ``llama3``); the seed tasks
    of Self-Instruct and the pool the duplicate filters compare against default to the
    course's dataset (downloaded once, or from the offline mirror).
    """
    from ..data import download_and_load_file, load_instruction_file
    from ..datagen import generate_dataset

    paths = run_paths(profile, output)
    seeds = load_instruction_file(seed_tasks_file) if seed_tasks_file else download_and_load_file(paths.data_file)
    url, model = url or profile.judge_url, model or profile.judge_model
    log(f"llmdefinitions gerar-dados — {method}, {n} itens, modelo {model} em {url}")
    return generate_dataset(method, n, model=model, url=url, seed_tasks=seeds, template=template,
                            response_mode=response_mode, system=system, seed=seed,
                            output_dir=paths.run_dir, redo=redo)


__all__ = ["generate_synthetic_data", "METHODS", "RESPONSE_MODES", "TEMPLATES"]
