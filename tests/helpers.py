"""Small models and data shared by the training, trainer and pipeline tests."""
import torch
from torch.utils.data import DataLoader

from llmdefinitions.data import custom_collate_fn
from llmdefinitions.model import GPTModel

VOCAB = 50


def tiny_config(**overrides) -> dict:
    """A GPT-2-shaped config small enough for a test (every test's tiny model starts here)."""
    return {"vocab_size": 50257, "context_length": 64, "emb_dim": 32, "n_heads": 2, "n_layers": 2,
            "drop_rate": 0.0, "qkv_bias": True, **overrides}


def tiny_gpt(cfg: dict, seed: int = 0) -> GPTModel:
    """``GPTModel(cfg)`` with weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return GPTModel(cfg)


CFG = tiny_config(vocab_size=VOCAB, context_length=32)


class CharTokenizer:
    """Enough of a tokenizer for generate_and_print_sample on the tiny vocabulary."""

    EOS = VOCAB - 1

    def encode(self, text, **kwargs):
        return [ord(c) % (VOCAB - 1) for c in text]

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def make_samples(n, seed=0):
    """``n`` random token-id lists of 3 to 19 tokens (never the end-of-text id)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB - 1, (int(k),), generator=g).tolist()
            for k in torch.randint(3, 20, (n,), generator=g)]


def padded_loader(samples, batch_size=4, shuffle=False):
    """The book's loader shape: padded batches, shuffled + drop_last for training."""
    collate = lambda b: custom_collate_fn(b, pad_token_id=CharTokenizer.EOS)  # noqa: E731
    return DataLoader(samples, batch_size=batch_size, collate_fn=collate, shuffle=shuffle, drop_last=shuffle)


def new_model(seed=0):
    return tiny_gpt(CFG, seed)
