"""llmdefinitions — the package behind the course *Ajuste Fino de Instruções*.

The book's public names are available here (``from llmdefinitions import GPTModel``), beside
what the course adds under its own names; they are loaded on first use, so
``import llmdefinitions`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "GPTModel": "model",
    "KVCache": "model",
    "BASE_CONFIG": "config",
    "model_configs": "config",
    "get_config": "config",
    "format_input": "prompts",
    "format_input_phi3": "prompts",
    "get_prompt_style": "prompts",
    "download_file": "downloads",
    "get_gpt2_tokenizer": "tokenizer",
    "download_and_load_gpt2": "weights",
    "load_gpt2_params_from_tf_ckpt": "weights",
    "load_gpt2_params_from_safetensors": "weights",
    "load_weights_into_gpt": "weights",
    "download_and_load_file": "data",
    "split_data": "data",
    "InstructionDataset": "data",
    "custom_collate_fn": "data",
    "Sample": "data",
    "calc_loss_batch": "training",
    "calc_loss_loader": "training",
    "evaluate_model": "training",
    "train_model_simple": "training",
    "generate_and_print_sample": "training",
    "train_model": "trainer",
    "make_optimizer": "trainer",
    "generate": "generation",
    "text_to_token_ids": "generation",
    "token_ids_to_text": "generation",
    "generate_batch": "generation",
    "generate_responses": "generation",
    "save_responses": "generation",
    "plot_losses": "plotting",
    "plot_score_histogram": "plotting",
    "check_if_running": "judge",
    "check_server": "judge",
    "query_model": "judge",
    "generate_model_scores": "judge",
    "score_responses": "judge",
    "parse_score": "judge",
    "judge_agreement": "judge",
    "LoRALayer": "lora",
    "LinearWithLoRA": "lora",
    "replace_linear_with_lora": "lora",
    "disable_lora": "lora",
    "PreferenceDataset": "dpo_data",
    "preference_collate_fn": "dpo_data",
    "compute_logprobs": "dpo",
    "compute_dpo_loss": "dpo",
    "compute_dpo_loss_batch": "dpo",
    "compute_dpo_loss_loader": "dpo",
    "evaluate_dpo_loss_loader": "dpo",
    "train_model_dpo_simple": "dpo",
    "train_model_dpo": "dpo",
    "load_gpt2_params": "weights",
    "ensure_tiny_checkpoint": "weights",
    "overlength_entries": "data_quality",
    "folder_lock": "io",
    "generate_dataset": "datagen",
    "reference_metrics": "metrics",
    "load_responses": "metrics",
    "bootstrap_mean": "stats",
    "paired_comparison": "stats",
    "load_profile": "profiles",
    "run_paths": "runs",
    "choose_device": "device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmdefinitions' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
