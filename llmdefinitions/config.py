"""Model configurations of GPT-2, in one place, as dicts in the book's format."""
from __future__ import annotations

from typing import Dict

BASE_CONFIG: Dict[str, object] = {
    "vocab_size": 50257,     # vocabulary size of the GPT-2 tokenizer
    "context_length": 1024,  # longest sequence the position embedding covers
    "drop_rate": 0.0,        # dropout rate
    "qkv_bias": True,        # GPT-2 has biases in the query/key/value projections
}

# The book's names -> the sizes that differ between them.
model_configs: Dict[str, Dict[str, int]] = {
    "gpt2-small (124M)": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},
    "gpt2-medium (355M)": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "gpt2-large (774M)": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "gpt2-xl (1558M)": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},
    # A tiny model for tests and the `teste` profile: same vocabulary as GPT-2,
    # so the real tokenizer works, but small enough to train on a CPU in seconds.
    "gpt2-tiny (test)": {"emb_dim": 64, "n_layers": 2, "n_heads": 4, "context_length": 256},
}

# Name of the checkpoint folder ("model size") of each configuration.
MODEL_SIZES: Dict[str, str] = {
    "gpt2-small (124M)": "124M",
    "gpt2-medium (355M)": "355M",
    "gpt2-large (774M)": "774M",
    "gpt2-xl (1558M)": "1558M",
    "gpt2-tiny (test)": "tiny",
}

# Sizes that OpenAI publishes (the tiny one only exists where the tests write it).
DOWNLOADABLE_SIZES = ("124M", "355M", "774M", "1558M")

# Hugging Face repositories holding `model.safetensors` for each size.
HF_REPOS: Dict[str, str] = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}


def get_config(name: str) -> Dict[str, object]:
    """Full config dict for a model name such as ``"gpt2-medium (355M)"``.

    Also accepts the size alone (``"355M"``) or the short name (``"gpt2-medium"``).
    """
    key = resolve_model_name(name)
    return {**BASE_CONFIG, **model_configs[key]}


def resolve_model_name(name: str) -> str:
    """Canonical name (``"gpt2-medium (355M)"``) from any accepted spelling."""
    if name in model_configs:
        return name
    for key, size in MODEL_SIZES.items():
        if name in (size, key.split(" ")[0]):
            return key
    raise ValueError(
        f"Modelo desconhecido: {name!r}. Modelos disponíveis: {', '.join(model_configs)}."
    )


def model_size_of(name: str) -> str:
    """Checkpoint size folder (``"355M"``) of a model name."""
    return MODEL_SIZES[resolve_model_name(name)]
