"""LoRA (*Low-Rank Adaptation*) for :class:`~llmdefinitions.model.GPTModel`.

LoRA keeps a pretrained ``nn.Linear`` frozen and learns a low-rank update next to it::

    y = x W^T + b + scale * (x A B)        A: (in_dim, rank), B: (rank, out_dim)

Only ``A`` and ``B`` are trained: for GPT-2 medium with rank 16 on every linear layer
that is about 2% of the parameters. ``B`` starts at zero, so the adapted model is
exactly the pretrained one at step 0.

The classes keep the book's API (appendix E) (``LoRALayer(in_dim, out_dim, rank, alpha)`` with
attributes ``A``, ``B``, ``alpha``; ``LinearWithLoRA(linear, rank, alpha)`` with
``.linear`` and ``.lora``). Around them this module offers: choosing which layers get
LoRA, freezing the rest, counting parameters, switching the adapters off for a while
(:func:`disable_lora`), merging the update into the base weights (and back), and
saving/loading only the LoRA weights (an *adapter*).
"""
from __future__ import annotations

import fnmatch
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .serialization import load_tensors, save_tensors

PathLike = Union[str, os.PathLike]
Targets = Union[str, Sequence[str], Callable[[str, nn.Module], bool]]

SCALINGS = ("rank", "alpha")
ADAPTER_FORMAT = "llmdefinitions-lora"
ADAPTER_VERSION = 1

# Layer names inside a transformer block (the book's names), per preset.
_ATTENTION_SUFFIXES = ("att.W_query", "att.W_key", "att.W_value", "att.out_proj")
_HEAD_NAME = "out_head"


def _scale(alpha: float, rank: int, scaling: str) -> float:
    if scaling == "rank":
        return alpha / rank
    if scaling == "alpha":
        return float(alpha)
    raise ValueError(
        f"scaling deve ser um de {', '.join(repr(s) for s in SCALINGS)}; recebido {scaling!r}."
    )


class LoRALayer(nn.Module):
    """The low-rank update ``scale * (dropout(x) @ A @ B)``.

    ``scaling`` chooses ``scale``:

    * ``"rank"`` (default, as in the LoRA paper and Hugging Face PEFT): ``alpha / rank``.
      At the start of training the update grows with ``rank`` (``x A B`` sums ``rank``
      terms, and Adam moves every entry of ``B`` by about the learning rate); dividing
      by ``rank`` roughly cancels that — only roughly, and only for the first Adam steps:
      at large ranks ``alpha / rank`` shrinks the update and learning slows, which is why
      rsLoRA (Kalajdzievski 2023) scales by ``alpha / sqrt(rank)``.
    * ``"alpha"`` (the book's code): plain ``alpha``, so the update size grows with
      ``rank``. The book's ``alpha=16, rank=16`` equals ``"rank"`` scaling with
      ``alpha=256``: an update 16x larger than ``alpha=16`` with ``"rank"`` scaling,
      so the book's code needs a smaller learning rate.

    Initialization: ``B`` is zero (the layer adds nothing at step 0). ``A`` is drawn as
    PEFT draws ``lora_A.weight`` of shape ``(rank, in_dim)`` with
    ``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-1/sqrt(in_dim), 1/sqrt(in_dim))``; our
    ``A`` is the transpose, ``(in_dim, rank)``, so we initialize ``A.T`` (applying
    kaiming to ``A`` itself would take ``rank`` as the fan-in). The book's first version used
    ``randn / sqrt(rank)``, a much larger start for GPT-2's widths.

    ``dropout`` acts on the input of the LoRA branch only, and only in training mode.
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float,
                 dropout: float = 0.0, scaling: str = "rank",
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank deve ser um inteiro positivo; recebido {rank!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout deve estar em [0, 1); recebido {dropout!r}.")
        _scale(alpha, rank, scaling)  # validates `scaling`
        self.rank = rank
        self.alpha = alpha
        self.scaling = scaling
        self.A = nn.Parameter(torch.empty(in_dim, rank, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(rank, out_dim, device=device, dtype=dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @property
    def scale(self) -> float:
        """Factor applied to ``x @ A @ B`` (``alpha / rank`` or ``alpha``)."""
        return _scale(self.alpha, self.rank, self.scaling)

    def reset_parameters(self) -> None:
        """A as PEFT initializes it (on the transposed view), B zero."""
        nn.init.kaiming_uniform_(self.A.T, a=math.sqrt(5))  # fan-in = in_dim
        nn.init.zeros_(self.B)

    def delta_weight(self) -> torch.Tensor:
        """The update in ``nn.Linear.weight`` layout ``(out_dim, in_dim)``."""
        return (self.A @ self.B).T * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.dropout(x) @ self.A @ self.B) * self.scale

    def extra_repr(self) -> str:
        return (f"in_dim={self.A.shape[0]}, out_dim={self.B.shape[1]}, rank={self.rank}, "
                f"alpha={self.alpha}, scaling={self.scaling!r}")


def _lora_dtype(linear: nn.Module) -> torch.dtype:
    """Float dtype for the adapter: the base weight's, or the compute dtype of a quantized
    (e.g. 4-bit bitsandbytes, stored as uint8) layer, else float32."""
    if linear.weight.is_floating_point():
        return linear.weight.dtype
    return getattr(linear, "compute_dtype", None) or torch.float32


class LinearWithLoRA(nn.Module):
    """A frozen-able ``nn.Linear`` plus a :class:`LoRALayer`: ``linear(x) + lora(x)``.

    After :meth:`merge` the update lives inside ``linear.weight`` and ``forward`` is just
    ``linear(x)`` (faster inference); :meth:`unmerge` takes it out again. Do not train
    while merged: the LoRA branch is bypassed and receives no gradients.

    ``enabled = False`` switches the adapter off without touching its weights: ``forward``
    is then the base ``linear(x)`` alone, i.e. the model LoRA started from (see
    :func:`disable_lora`, which also refuses merged layers, where that would be wrong).
    """

    def __init__(self, linear: nn.Linear, rank: int, alpha: float,
                 dropout: float = 0.0, scaling: str = "rank"):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha,
                              dropout=dropout, scaling=scaling,
                              device=linear.weight.device, dtype=_lora_dtype(linear))
        self.merged = False
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged or not self.enabled:
            return self.linear(x)
        return self.linear(x) + self.lora(x)

    @torch.no_grad()
    def merge(self) -> None:
        """Add ``scale * (A B)^T`` to ``linear.weight`` (no-op when already merged)."""
        if not self.merged:
            self.linear.weight += self.lora.delta_weight().to(self.linear.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update again (no-op when not merged)."""
        if self.merged:
            self.linear.weight -= self.lora.delta_weight().to(self.linear.weight.dtype)
            self.merged = False


# ---------------------------------------------------------------------------
# Choosing layers, freezing, counting


def iter_lora_layers(model: nn.Module) -> Iterator[Tuple[str, LinearWithLoRA]]:
    """``(name, layer)`` for every :class:`LinearWithLoRA` in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, LinearWithLoRA):
            yield name, module


def _target_predicate(targets: Targets) -> Callable[[str, nn.Module], bool]:
    if callable(targets):
        return targets
    if targets == "attention":
        return lambda name, _: any(name == s or name.endswith("." + s)
                                   for s in _ATTENTION_SUFFIXES)
    if targets == "all_linear":
        return lambda name, _: True
    if isinstance(targets, str):
        raise ValueError(
            f"targets deve ser 'attention', 'all_linear', uma lista de padrões de nomes "
            f"ou uma função; recebido {targets!r}."
        )
    patterns = list(targets)
    return lambda name, _: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def replace_linear_with_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    targets: Targets = "attention",
    include_head: bool = False,
    dropout: float = 0.0,
    scaling: str = "rank",
    freeze_base: bool = True,
) -> nn.Module:
    """Wrap the chosen ``nn.Linear`` layers of ``model`` in :class:`LinearWithLoRA`, in place.

    ``targets``:

    * ``"attention"``: ``W_query``, ``W_key``, ``W_value`` and ``out_proj`` of each block
      (the layers of the LoRA paper);
    * ``"all_linear"``: every ``nn.Linear`` (attention plus ``ff.layers.0`` / ``.2``);
    * a list of ``fnmatch`` patterns on the full module name, e.g. ``["*.att.W_query"]``;
    * a function ``(name, linear) -> bool``.

    ``out_head`` gets LoRA only when ``include_head`` is true, whatever ``targets`` says.
    The book's reference code (which wraps every ``nn.Linear``) is
    ``targets="all_linear", include_head=True``.

    With ``freeze_base`` (default) only the LoRA weights stay trainable afterwards
    (:func:`mark_only_lora_as_trainable`). Returns ``model``.
    """
    if any(True for _ in iter_lora_layers(model)):
        raise ValueError(
            "O modelo já tem camadas LoRA. Use um modelo sem LoRA ou remova as camadas antes "
            "(por exemplo, merge_lora(model, unload=True))."
        )
    wants = _target_predicate(targets)
    chosen = [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and (include_head if name == _HEAD_NAME else wants(name, module))
    ]
    if not chosen:
        raise ValueError(f"Nenhuma camada nn.Linear do modelo corresponde a targets={targets!r}.")
    for name in chosen:
        _set_submodule(model, name, LinearWithLoRA(model.get_submodule(name), rank, alpha,
                                                   dropout=dropout, scaling=scaling))
    # Remembered for save_lora_adapter; only plain values, so the file loads with weights_only.
    model.lora_config = {
        "rank": rank, "alpha": alpha, "scaling": scaling, "dropout": dropout,
        "targets": targets if isinstance(targets, str) else None,
        "include_head": include_head,
    }
    if freeze_base:
        mark_only_lora_as_trainable(model)
    return model


@contextmanager
def disable_lora(model: nn.Module) -> Iterator[nn.Module]:
    """``with disable_lora(model):`` runs ``model`` with every LoRA adapter switched off.

    Inside the block each :class:`LinearWithLoRA` computes only its base ``linear(x)``:
    the frozen model LoRA started from (PEFT's ``disable_adapter()``). The adapters'
    weights are not touched, and each layer's previous ``enabled`` comes back on exit,
    even after an error. Used as DPO's reference model, it saves a second copy of the
    weights. A merged adapter lives inside the base weights, so switching it off would
    not give the base model: a merged layer is refused, as is a model without LoRA.
    """
    layers = list(iter_lora_layers(model))
    if not layers:
        raise ValueError("O modelo não tem camadas LoRA: não há adaptadores para desligar.")
    merged = [name for name, layer in layers if layer.merged]
    if merged:
        raise ValueError(f"A camada LoRA '{merged[0]}' está fundida aos pesos base; "
                         "chame unmerge_lora(model) antes de desligar os adaptadores.")
    before = [layer.enabled for _, layer in layers]
    for _, layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for (_, layer), enabled in zip(layers, before):
            layer.enabled = enabled


def mark_only_lora_as_trainable(model: nn.Module) -> nn.Module:
    """Freeze every parameter except the LoRA ``A`` and ``B`` matrices. Returns ``model``."""
    lora_params = {id(p) for _, layer in iter_lora_layers(model) for p in layer.lora.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in lora_params)
    return model


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """``(trainable, total)`` parameter counts (shared tensors counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return trainable, total


# ---------------------------------------------------------------------------
# Merging


def merge_lora(model: nn.Module, unload: bool = False) -> nn.Module:
    """Fold each LoRA update into its base weight (``W += scale * (A B)^T``). Returns ``model``.

    The merged model computes the same outputs (up to rounding) without the extra
    matrix products. By default the LoRA layers stay in place, so :func:`unmerge_lora`
    can undo the merge. With ``unload=True`` each :class:`LinearWithLoRA` is replaced by
    its merged ``nn.Linear``: the ``state_dict`` then has the plain GPTModel keys (for
    sharing a finetuned model), and the step cannot be undone.
    """
    for name, layer in list(iter_lora_layers(model)):
        layer.merge()
        if unload:
            _set_submodule(model, name, layer.linear)
    if unload and hasattr(model, "lora_config"):
        del model.lora_config
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take the LoRA updates out of the base weights again (after :func:`merge_lora`)."""
    for _, layer in iter_lora_layers(model):
        layer.unmerge()
    return model


# ---------------------------------------------------------------------------
# Adapters: only the LoRA weights, plus what is needed to rebuild the layers


def lora_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The LoRA weights only, with the model's keys (``"trf_blocks.0.att.W_query.lora.A"``)."""
    state = {}
    for name, layer in iter_lora_layers(model):
        state[f"{name}.lora.A"] = layer.lora.A.detach()
        state[f"{name}.lora.B"] = layer.lora.B.detach()
    return state


def _layer_config(layer: LinearWithLoRA) -> Dict[str, object]:
    dropout = layer.lora.dropout.p if isinstance(layer.lora.dropout, nn.Dropout) else 0.0
    return {"rank": layer.lora.rank, "alpha": layer.lora.alpha,
            "scaling": layer.lora.scaling, "dropout": dropout}


def save_lora_adapter(model: nn.Module, path: PathLike) -> Path:
    """Write the LoRA weights and their configuration to ``path`` (atomically).

    The file holds ``{"format", "version", "config", "state_dict"}``, where ``config``
    has ``rank``, ``alpha``, ``scaling``, ``dropout``, ``targets``, ``include_head`` and
    per-layer ``modules`` (name -> rank/alpha/scaling/dropout). Tensors are saved on
    the CPU; the file loads with ``torch.load(..., weights_only=True)``.
    """
    layers = list(iter_lora_layers(model))
    if not layers:
        raise ValueError("O modelo não tem camadas LoRA; não há adaptador para salvar.")
    modules = {name: _layer_config(layer) for name, layer in layers}
    first = next(iter(modules.values()))
    extra = getattr(model, "lora_config", {})
    config = {
        **first,
        "targets": extra.get("targets"),
        "include_head": _HEAD_NAME in modules,
        "modules": modules,
    }
    payload = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "config": config,
        "state_dict": {k: v.cpu().clone() for k, v in lora_state_dict(model).items()},
    }
    return save_tensors(payload, path)


def read_lora_adapter(path: PathLike) -> Dict[str, object]:
    """The contents of an adapter file (``config`` and ``state_dict``), on the CPU."""
    path = Path(path)
    payload = load_tensors(path, map_location="cpu", what="adaptador LoRA")
    if not isinstance(payload, dict) or payload.get("format") != ADAPTER_FORMAT:
        raise ValueError(
            f"O arquivo '{path}' não é um adaptador LoRA do llmdefinitions "
            "(salve-o com save_lora_adapter)."
        )
    return payload


def _first_mismatch(model: nn.Module, config: Dict[str, object],
                    state: Dict[str, torch.Tensor]) -> Optional[str]:
    """Why the adapter does not fit ``model`` (first mismatching key), or ``None``."""
    modules: Dict[str, Dict[str, object]] = config["modules"]
    present = dict(iter_lora_layers(model))
    if present and set(present) != set(modules):
        missing = sorted(set(modules) - set(present))
        if missing:
            return f"'{missing[0]}' tem LoRA no arquivo, mas não no modelo"
        return f"'{sorted(set(present) - set(modules))[0]}' tem LoRA no modelo, mas não no arquivo"
    for name, cfg in modules.items():
        for key in (f"{name}.lora.A", f"{name}.lora.B"):
            if key not in state:
                return f"'{key}' falta no arquivo"
        if present:
            layer = present[name]
            if layer.merged:
                return f"'{name}' está com o LoRA fundido; chame unmerge_lora(model) antes"
            target_shapes = (tuple(layer.lora.A.shape), tuple(layer.lora.B.shape))
            own = _layer_config(layer)
            for field in ("alpha", "scaling"):
                if own[field] != cfg[field]:
                    return (f"'{name}': {field} = {cfg[field]!r} no arquivo, "
                            f"{own[field]!r} no modelo")
        else:
            try:
                linear = model.get_submodule(name)
            except AttributeError:
                return f"'{name}' não existe no modelo"
            if not isinstance(linear, nn.Linear):
                return f"'{name}' não é uma camada nn.Linear no modelo"
            rank = cfg["rank"]
            target_shapes = ((linear.in_features, rank), (rank, linear.out_features))
        for key, expected in zip((f"{name}.lora.A", f"{name}.lora.B"), target_shapes):
            got = tuple(state[key].shape)
            if got != expected:
                return f"'{key}' tem forma {got} no arquivo, {expected} no modelo"
    extra = sorted(set(state) - {f"{n}.lora.{m}" for n in modules for m in "AB"})
    if extra:
        return f"'{extra[0]}' no arquivo não corresponde a nenhuma camada LoRA"
    return None


def load_lora_adapter(model: nn.Module, path: PathLike, freeze_base: bool = True) -> nn.Module:
    """Load an adapter written by :func:`save_lora_adapter` into ``model``. Returns ``model``.

    A model without LoRA layers (e.g. the pretrained GPT-2) gets them first, as the file
    describes; a model that already has them must have the same layers, ranks, ``alpha``
    and ``scaling``. When the adapter does not fit, a ``ValueError`` names the file and the
    first mismatching key, and the model is left unchanged.
    """
    payload = read_lora_adapter(path)
    config, state = payload["config"], payload["state_dict"]
    problem = _first_mismatch(model, config, state)
    if problem is not None:
        raise ValueError(f"O adaptador LoRA '{path}' não serve para este modelo: {problem}.")
    if not any(True for _ in iter_lora_layers(model)):
        for name, cfg in config["modules"].items():
            layer = LinearWithLoRA(model.get_submodule(name), cfg["rank"], cfg["alpha"],
                                   dropout=cfg["dropout"], scaling=cfg["scaling"])
            _set_submodule(model, name, layer)
        model.lora_config = {k: config[k] for k in
                             ("rank", "alpha", "scaling", "dropout", "targets", "include_head")}
    with torch.no_grad():
        for name, layer in iter_lora_layers(model):
            layer.lora.A.copy_(state[f"{name}.lora.A"])
            layer.lora.B.copy_(state[f"{name}.lora.B"])
    if freeze_base:
        mark_only_lora_as_trainable(model)
    return model
