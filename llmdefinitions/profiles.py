"""Notebook and pipeline profiles: the same code with bigger or smaller numbers.

The profile is read from the environment variable ``LLMDEF_PERFIL`` (unset: ``completo``
where a GPU is available, ``rapido`` on a CPU-only machine):

* ``completo`` — the book's setup: GPT-2 medium (355M), all 1,100 entries,
  batch 8, AdamW lr 5e-5 / weight decay 0.1, 2 epochs, answers of up to 256 tokens;
* ``rapido`` — a CPU laptop: GPT-2 small (124M), a subset of the data, fewer steps;
* ``teste`` — CI: a tiny GPT written as a real checkpoint (safetensors, the Hugging Face
  layout) and loaded through the real loader, a few entries, a few steps.

A profile is also the one home of *how* a run computes (as TRL's ``SFTConfig`` holds every
training knob): precision, batching, optimizer kernel, ``torch.compile``, generation batch.
The default is the course's fast path; :meth:`Profile.book_way` gives the book's way
exactly (fp32, shuffled padded batches, PyTorch's default AdamW, one prompt at a time).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Union

# The judge's defaults are written once, in judge.defaults; the command line takes them from here.
from .judge.defaults import DEFAULT_DEADLINE as DEFAULT_JUDGE_DEADLINE  # noqa: F401
from .judge.defaults import DEFAULT_MODEL as DEFAULT_JUDGE_MODEL
from .judge.defaults import DEFAULT_URL as DEFAULT_JUDGE_URL

PROFILE_ENV = "LLMDEF_PERFIL"
OUTPUT_ENV = "LLMDEF_SAIDA"
JUDGE_URL_ENV = "LLMDEF_JUIZ_URL"     # where the judge answers when no --url is given (e.g. a remote Ollama)
FAST_WAY, BOOK_WAY = "otimizado", "livro"


@dataclass(frozen=True)
class Profile:
    """Every number that differs between profiles."""

    name: str
    model_name: str                  # a key of config.model_configs
    train_items: Optional[int]       # None = the whole split
    val_items: Optional[int]
    test_items: Optional[int]
    batch_size: int = 8
    num_epochs: int = 2
    max_steps: Optional[int] = None  # stop training early (None = all epochs)
    eval_freq: int = 5
    eval_iter: int = 5
    allowed_max_length: int = 1024
    max_new_tokens: int = 256
    learning_rate: float = 5e-5
    weight_decay: float = 0.1
    # How the run computes: the course's fast path, or the book's way (see book_way()).
    way: str = FAST_WAY
    precision: str = "auto"          # see llmdefinitions.device.choose_precision
    batching: str = "packed"         # see llmdefinitions.batching.make_train_loader
    fused_optimizer: Union[bool, str] = "auto"   # see llmdefinitions.trainer.make_optimizer
    compile: bool = False            # torch.compile of the blocks (see trainer.compile_model)
    generation_batch_size: int = 32  # prompts answered together (1 = the book's one at a time)
    judge_model: str = DEFAULT_JUDGE_MODEL
    judge_url: str = DEFAULT_JUDGE_URL
    # True only in `teste`: the judge is the stand-in server of llmdefinitions.testing
    # (a test double that gives deterministic scores), because CI has no Ollama.
    judge_stand_in: bool = False
    seed: int = 123
    # Preference tuning (DPO, step `preferencia`, notebook 10): the book's bonus notebook
    # (beta 0.1, AdamW lr 5e-6 / weight decay 0.01, 1 epoch, batch 8), on LoRA adapters
    # whose reference is the same model with the adapters off. The data is split 85/10/5
    # and cut to the profile's share like the instruction data.
    dpo_beta: float = 0.1
    dpo_learning_rate: float = 5e-6
    dpo_weight_decay: float = 0.01
    dpo_num_epochs: int = 1
    dpo_batch_size: int = 8
    dpo_max_steps: Optional[int] = None
    dpo_lora_rank: int = 16
    dpo_lora_alpha: float = 16
    dpo_compare_items: int = 3       # validation prompts answered before and after DPO

    @property
    def model_size(self) -> str:
        from .config import model_size_of
        return model_size_of(self.model_name)

    @property
    def is_tiny(self) -> bool:
        return self.model_size == "tiny"

    def subset(self, train: list, val: list, test: list):
        """The profile's share of each split (the first items, order kept)."""
        cut = lambda items, n: items if n is None else items[:n]  # noqa: E731
        return cut(train, self.train_items), cut(val, self.val_items), cut(test, self.test_items)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line in pt-BR: the model, the data, the training and how it computes."""
        from .config import resolve_model_name

        items = "/".join("todas" if n is None else str(n)
                         for n in (self.train_items, self.val_items, self.test_items))
        steps = f", no máximo {self.max_steps} passos" if self.max_steps else ""
        way = "como no livro" if self.way == BOOK_WAY else "caminho otimizado"
        epochs = "época" if self.num_epochs == 1 else "épocas"
        return (f"Perfil {self.name}: {resolve_model_name(self.model_name)}; amostras de treino/validação/"
                f"teste: {items}; {self.num_epochs} {epochs}{steps}, lote {self.batch_size}; {way}")

    def book_way(self) -> "Profile":
        """The same profile computed exactly as the book does: fp32, shuffled batches padded to
        their longest sample, PyTorch's default AdamW, no compile, one prompt at a time."""
        return replace(self, way=BOOK_WAY, precision="fp32", batching="random", fused_optimizer=False,
                       compile=False, generation_batch_size=1)


PROFILES = {
    "completo": Profile("completo", "gpt2-medium (355M)", None, None, None),
    "rapido": Profile("rapido", "gpt2-small (124M)", 200, 20, 20, num_epochs=1,
                      max_new_tokens=128, allowed_max_length=512),
    "teste": Profile("teste", "gpt2-tiny (test)", 24, 4, 4, batch_size=4, num_epochs=1,
                     max_steps=4, eval_freq=2, eval_iter=1, allowed_max_length=128,
                     max_new_tokens=12, learning_rate=5e-4, generation_batch_size=4,
                     judge_stand_in=True, dpo_batch_size=4, dpo_max_steps=4, dpo_learning_rate=5e-4),
}


def default_profile_name() -> str:
    """``completo`` where a GPU (CUDA or Apple's MPS) is available, ``rapido`` on a CPU-only machine.

    The book's full run takes minutes on a GPU and hours on a laptop CPU; a student who
    sets nothing should get the run that fits the machine.
    """
    import torch

    mps = getattr(torch.backends, "mps", None)
    gpu = torch.cuda.is_available() or (mps is not None and mps.is_available())
    return "completo" if gpu else "rapido"


def load_profile(name: Optional[str] = None, **overrides) -> Profile:
    """The profile called ``name``, else ``$LLMDEF_PERFIL``, else :func:`default_profile_name`.

    ``overrides`` replace single fields (e.g. ``load_profile("rapido", num_epochs=2)``).
    """
    name = (name or os.environ.get(PROFILE_ENV) or default_profile_name()).strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"Perfil desconhecido: {name!r} (variável {PROFILE_ENV}). "
            f"Use um destes: {', '.join(PROFILES)}."
        )
    profile = PROFILES[name]
    if os.environ.get(JUDGE_URL_ENV):
        profile = replace(profile, judge_url=os.environ[JUDGE_URL_ENV].strip())
    return replace(profile, **overrides) if overrides else profile


def output_root(base: Optional[os.PathLike] = None) -> Path:
    """Folder where notebooks and the pipeline write: ``$LLMDEF_SAIDA`` or ``./saida``."""
    return Path(base or os.environ.get(OUTPUT_ENV) or "saida")
