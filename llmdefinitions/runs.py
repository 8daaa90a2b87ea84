"""Where a run reads and writes: the files of ``<saida>/<perfil>/`` (no torch needed).

Notebooks and the command line share these names, so a notebook can pick up what the
command line wrote, and an interrupted run finds what it already finished.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .profiles import Profile, output_root


def sft_model_filename(model_name: str) -> str:
    """``"gpt2-medium (355M)"`` -> ``"gpt2-medium355M-sft.pth"`` (the book's naming)."""
    return f"{re.sub(r'[ ()]', '', model_name)}-sft.pth"


def dpo_adapter_filename(model_name: str) -> str:
    """``"gpt2-medium (355M)"`` -> ``"gpt2-medium355M-dpo-lora.pth"``: the DPO adapter (LoRA weights)."""
    return sft_model_filename(model_name).replace("-sft.pth", "-dpo-lora.pth")


@dataclass(frozen=True)
class RunPaths:
    """Every file of one profile's run; the dataset and the downloaded models are shared."""

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

    def _file(self, name: str) -> Path:
        return self.run_dir / name

    config_json = property(lambda self: self._file("config.json"))
    quality_report = property(lambda self: self._file("qualidade-dados.txt"))
    lengths_png = property(lambda self: self._file("comprimentos.png"))
    train_checkpoint = property(lambda self: self._file("treino-checkpoint.pt"))
    losses_json = property(lambda self: self._file("perdas.json"))
    losses_png = property(lambda self: self._file("perdas.png"))
    responses = property(lambda self: self._file("instruction-data-with-response.json"))
    responses_partial = property(lambda self: self._file("respostas-parciais.jsonl"))
    verifiable_responses = property(lambda self: self._file("respostas-verificaveis.json"))
    verifiable_partial = property(lambda self: self._file("respostas-verificaveis-parciais.jsonl"))
    evaluation_json = property(lambda self: self._file("avaliacao.json"))
    evaluation_png = property(lambda self: self._file("avaliacao.png"))
    scores = property(lambda self: self._file("pontuacoes.json"))
    scores_summary = property(lambda self: self._file("pontuacoes-resumo.json"))
    scores_png = property(lambda self: self._file("pontuacoes.png"))
    judge_cache = property(lambda self: self._file("juiz-cache.jsonl"))
    # Replies of the test-double judge: kept apart so they never pass for a real judge's.
    simulated_judge_cache = property(lambda self: self._file("juiz-cache-simulado.jsonl"))

    # Preference tuning (DPO, step `preferencia`): the preference data is shared like the dataset.
    @property
    def preference_data_file(self) -> Path:
        return self.root / "instruction-data-with-preference.json"

    def dpo_adapter(self, model_name: str) -> Path:
        return self.run_dir / dpo_adapter_filename(model_name)

    dpo_checkpoint = property(lambda self: self._file("dpo-checkpoint.pt"))
    dpo_metrics = property(lambda self: self._file("dpo-metricas.json"))
    dpo_png = property(lambda self: self._file("dpo.png"))
    dpo_responses = property(lambda self: self._file("dpo-respostas.json"))


def run_paths(profile: Profile, root: Optional[Path] = None) -> RunPaths:
    """The files of ``profile`` under ``root`` (default ``./saida`` or ``$LLMDEF_SAIDA``)."""
    return RunPaths(output_root(root), profile.name)


__all__ = ["RunPaths", "run_paths", "sft_model_filename", "dpo_adapter_filename"]
