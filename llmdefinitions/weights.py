"""Pretrained GPT-2 weights: download, check, read (safetensors or TF checkpoint), load, write.

Two routes fill the same ``params`` dict (the layout of OpenAI's checkpoint, as in the
book: ``params["wte"]``, ``params["blocks"][i]["attn"]["c_attn"]["w"]``, ...):

* **safetensors** (the main route, no TensorFlow): Hugging Face's ``model.safetensors``
  + ``config.json`` of ``openai-community/gpt2*``, in ``<models_dir>/hf-<size>/``;
* **tf**: OpenAI's original TensorFlow checkpoint, in ``<models_dir>/<size>/``, read by
  the book's :func:`download_and_load_gpt2` (``tensorflow`` is imported only there).

:func:`load_gpt2_params` is the one entry point. A model folder is checked whole
before use: every expected file present, complete (a safetensors header says how long
its file must be) and verified where its size or sha256 is known; bad files of a
downloaded model are fetched again. :func:`ensure_tiny_checkpoint` writes the ``teste``
profile's tiny random model as safetensors, in a private folder moved into place
whole, and rebuilds it when it is incomplete. :func:`load_weights_into_gpt` copies
``params`` into a :class:`~llmdefinitions.model.GPTModel`, checking every shape.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .config import DOWNLOADABLE_SIZES, HF_REPOS
from .downloads import (GPT2_BACKUP_BASE_URL, GPT2_BASE_URL, KNOWN_SHA256, KNOWN_SIZES, DownloadError,
                        MirrorError, check_file, describe_tried, download_file, hf_url, mirror_hint)
from .io import FileWriteError, atomic_write, read_json, write_error, write_json_atomic, write_text_atomic

PathLike = Union[str, os.PathLike]
Params = Dict[str, object]

SOURCES = ("safetensors", "tf")
TINY_SIZE = "tiny"
HF_FILENAMES = ("config.json", "model.safetensors")
TF_FILENAMES = (
    "checkpoint", "encoder.json", "hparams.json",
    "model.ckpt.data-00000-of-00001", "model.ckpt.index", "model.ckpt.meta", "vocab.bpe",
)
TF_CHECKPOINT_FILES = ("checkpoint", "hparams.json", "model.ckpt.data-00000-of-00001",
                       "model.ckpt.index")
SEED_METADATA_KEY = "llmdefinitions_seed"   # in the tiny model's safetensors header


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupted or does not fit the model (pt-BR)."""


def _import_tensorflow():
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(
            "Para ler o checkpoint original da OpenAI (rota 'tf') é preciso o TensorFlow: "
            'pip install -e ".[tf]" na pasta do projeto (ou pip install tensorflow-cpu). '
            "A rota principal, safetensors, não precisa dele."
        ) from exc
    return tf


def _ensure_writable_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"Não foi possível criar a pasta de modelos '{folder}': {exc.strerror or exc}. "
            "Escolha uma pasta com permissão de escrita (argumento models_dir)."
        ) from exc
    if not os.access(folder, os.W_OK):
        raise DownloadError(
            f"Sem permissão de escrita na pasta de modelos '{folder}'. "
            "Escolha outra pasta (argumento models_dir)."
        )


def _unknown_size(model_size: str) -> ValueError:
    return ValueError(
        f"Tamanho de modelo desconhecido: {model_size!r}. "
        f"Tamanhos permitidos: {', '.join(DOWNLOADABLE_SIZES)} "
        f"(o {TINY_SIZE!r} dos testes é criado por ensure_tiny_checkpoint)."
    )


# --------------------------------------------------------------------------- the entry point
def load_gpt2_params(model_size: str, models_dir: PathLike,
                     source: str = "safetensors") -> Tuple[dict, Params]:
    """``(settings, params)`` of GPT-2 ``model_size``, downloaded once and checked whole.

    ``source="safetensors"`` (default) reads ``<models_dir>/hf-<size>/`` (Hugging Face
    files; ``"tiny"`` is the folder :func:`ensure_tiny_checkpoint` writes);
    ``source="tf"`` is the book's :func:`download_and_load_gpt2` (OpenAI's checkpoint).
    """
    if source == "tf":
        return download_and_load_gpt2(model_size, models_dir)
    if source != "safetensors":
        raise ValueError(f"Origem de pesos desconhecida: {source!r}. Use uma de: {', '.join(SOURCES)}.")
    model_dir = hf_model_dir(models_dir, model_size)
    if model_size in HF_REPOS:
        _fetch_model_files(f"GPT-2 {model_size} ({HF_REPOS[model_size]})", model_dir,
                           {name: hf_url(HF_REPOS[model_size], name) for name in HF_FILENAMES})
    elif not model_dir.is_dir():
        raise _unknown_size(model_size)
    problems = hf_folder_problems(model_dir)
    if problems:
        raise CheckpointError(
            f"A pasta do modelo '{model_dir}' está incompleta ou corrompida: "
            f"{_join_problems(problems)}. Apague a pasta "
            + ("e rode de novo (o modelo dos testes é recriado)." if model_size == TINY_SIZE else
               "e baixe de novo.")
        )
    settings = settings_from_hf_config(model_dir / "config.json")
    return settings, load_gpt2_params_from_safetensors(model_dir / "model.safetensors", settings)


def hf_model_dir(models_dir: PathLike, model_size: str) -> Path:
    """Folder of the safetensors route for ``model_size``: ``<models_dir>/hf-<size>``."""
    return Path(models_dir) / f"hf-{model_size}"


def download_and_load_gpt2_safetensors(model_size: str, models_dir: PathLike) -> Tuple[dict, Params]:
    """Download (or reuse) ``model.safetensors`` of ``openai-community/gpt2*``; no TensorFlow."""
    return load_gpt2_params(model_size, models_dir, source="safetensors")


def _fetch_model_files(what: str, model_dir: Path, urls: Mapping[str, str],
                       backups: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """Make every file of ``urls`` present and intact in ``model_dir`` (mirror, then network).

    A file that fails its check (size, sha256, structure) is removed and fetched again.
    A file that passed is recorded in ``.verificado.json`` (size and modification
    time), so the next load does not hash gigabytes again unless the file changed.
    When a file cannot be fetched, the error names the primary URL, every server tried
    with its error, and each file the mirror needs (with its size).
    """
    _ensure_writable_dir(model_dir)
    stamps = _read_stamps(model_dir)
    good: Dict[str, dict] = {}
    for name, url in urls.items():
        path = model_dir / name
        if stamps.get(name) is not None and stamps[name] == _stamp(path):
            good[name] = stamps[name]
        elif path.exists() and _file_problem(path, url) is None:
            good[name] = _stamp(path)
        elif path.exists():
            path.unlink()
    for name, url in urls.items():
        if name in good:
            continue
        try:
            download_file(url, model_dir / name, backup_urls=(backups or {}).get(name, ()))
        except (MirrorError, FileWriteError):
            raise
        except DownloadError as exc:
            if not exc.tried:                   # not a network failure (e.g. a folder problem)
                raise
            missing = [u for n, u in urls.items() if not (model_dir / n).is_file()]
            raise DownloadError(
                f"Não foi possível obter os pesos do {what} para '{model_dir}': o arquivo "
                f"'{name}' não veio de {exc.url or url}. Servidores tentados: "
                f"{describe_tried(exc.tried)}. {mirror_hint(missing)}",
                url=exc.url, tried=exc.tried) from exc
        problem = _file_problem(model_dir / name, None)     # download_file checked size and sha256
        if problem is not None:
            raise CheckpointError(f"O arquivo baixado '{model_dir / name}' está corrompido: {problem}.")
        good[name] = _stamp(model_dir / name)
    if good != stamps:
        write_json_atomic(model_dir / STAMPS_NAME, good, indent=2)


STAMPS_NAME = ".verificado.json"


def _stamp(path: Path) -> Optional[dict]:
    try:
        info = path.stat()
    except OSError:
        return None
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _read_stamps(model_dir: Path) -> dict:
    try:
        stamps = read_json(model_dir / STAMPS_NAME)
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _file_problem(path: Path, url: Optional[str]) -> Optional[str]:
    """Why ``path`` cannot be used (size/sha256 where known for ``url``, structure), or ``None``."""
    problem = check_file(path, KNOWN_SHA256.get(url), KNOWN_SIZES.get(url))
    if problem is None and path.suffix == ".safetensors":
        problem = safetensors_problem(path)
    if problem is None and path.name == "config.json":
        try:
            settings_from_hf_config(path)
        except CheckpointError as exc:
            problem = str(exc)
    return problem


def _join_problems(problems: Mapping[str, str]) -> str:
    return "; ".join(f"{name}: {why}" for name, why in problems.items())


def hf_folder_problems(model_dir: PathLike) -> Dict[str, str]:
    """``{file: problem}`` for a safetensors model folder; empty when it is whole."""
    model_dir = Path(model_dir)
    return {name: problem for name in HF_FILENAMES
            if (problem := _file_problem(model_dir / name, None)) is not None}


def settings_from_hf_config(path: PathLike) -> dict:
    """The book's ``settings`` (``n_vocab``, ``n_ctx``, ...) from a Hugging Face ``config.json``."""
    try:
        config = read_json(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Não foi possível ler '{path}': {exc}") from exc
    keys = {"n_vocab": ("vocab_size",), "n_ctx": ("n_positions", "n_ctx"), "n_embd": ("n_embd",),
            "n_head": ("n_head",), "n_layer": ("n_layer",)}
    settings, missing = {}, []
    for ours, theirs in keys.items():
        value = next((config[k] for k in theirs if isinstance(config, dict) and config.get(k) is not None), None)
        if not isinstance(value, int):
            missing.append(theirs[0])
        settings[ours] = value
    if missing:
        raise CheckpointError(f"'{path}' não tem as chaves (números inteiros) {', '.join(missing)}.")
    return settings


# --------------------------------------------------------------------------- safetensors
def read_safetensors_header(path: PathLike) -> dict:
    """The JSON header of a safetensors file, checked against the file's length.

    A safetensors file is an 8-byte length, a JSON header, then the tensors' bytes;
    the header gives each tensor's byte range, so a cut or padded file is found
    without reading the tensors.
    """
    path = Path(path)
    problem = None
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if length < 2 or 8 + length > size:
                problem = "cabeçalho ausente ou cortado"
            else:
                header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as exc:
        raise CheckpointError(f"Não foi possível ler '{path}': {exc.strerror or exc}.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError):
        problem = "cabeçalho ilegível"
    if problem is None:
        try:
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                      default=0)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            problem = "cabeçalho sem as posições dos tensores"
        else:
            if size != 8 + length + end:
                problem = f"tamanho {size} bytes, o cabeçalho indica {8 + length + end}"
    if problem is not None:
        raise CheckpointError(f"O arquivo '{path}' está incompleto ou corrompido ({problem}).")
    return header


def safetensors_problem(path: PathLike) -> Optional[str]:
    """``None`` if ``path`` is a complete safetensors file, else why not (pt-BR)."""
    try:
        read_safetensors_header(path)
    except CheckpointError as exc:
        return str(exc)
    return None


_HF_TO_PARAMS = {
    "ln_1.weight": ("ln_1", "g"), "ln_1.bias": ("ln_1", "b"),
    "ln_2.weight": ("ln_2", "g"), "ln_2.bias": ("ln_2", "b"),
    "attn.c_attn.weight": ("attn", "c_attn", "w"), "attn.c_attn.bias": ("attn", "c_attn", "b"),
    "attn.c_proj.weight": ("attn", "c_proj", "w"), "attn.c_proj.bias": ("attn", "c_proj", "b"),
    "mlp.c_fc.weight": ("mlp", "c_fc", "w"), "mlp.c_fc.bias": ("mlp", "c_fc", "b"),
    "mlp.c_proj.weight": ("mlp", "c_proj", "w"), "mlp.c_proj.bias": ("mlp", "c_proj", "b"),
}
_PARAMS_TO_HF = {route: key for key, route in _HF_TO_PARAMS.items()}
_TOP_TO_HF = {"wte": "wte.weight", "wpe": "wpe.weight", "g": "ln_f.weight", "b": "ln_f.bias"}


def _hf_name(layer: Optional[int], route: Tuple[str, ...]) -> str:
    return _TOP_TO_HF[route[0]] if layer is None else f"h.{layer}.{_PARAMS_TO_HF[route]}"


def _tf_name(layer: Optional[int], route: Tuple[str, ...]) -> str:
    top = {"g": ("ln_f", "g"), "b": ("ln_f", "b")}.get(route[0], route) if layer is None else route
    return "model/" + ("" if layer is None else f"h{layer}/") + "/".join(top)


def load_gpt2_params_from_safetensors(path: PathLike, settings: Optional[Mapping] = None) -> Params:
    """Read a Hugging Face GPT-2 ``model.safetensors`` into the same ``params`` dict.

    Hugging Face's ``Conv1D`` stores weights as ``(in, out)``, like OpenAI's checkpoint,
    so no transpose is needed here. Keys may carry a ``transformer.`` prefix. Every
    tensor is checked (present, right shape for ``settings``, else for the sizes the
    embeddings imply); a problem is one pt-BR line naming the file and the tensor.
    """
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise ImportError("Para ler model.safetensors instale: pip install safetensors") from exc
    path = Path(path)
    read_safetensors_header(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"O arquivo '{path}' está incompleto ou corrompido: {exc}. Apague-o e baixe de novo."
        ) from exc
    tensors = {k[len("transformer."):] if k.startswith("transformer.") else k: v
               for k, v in tensors.items()}
    params: Params = {}
    blocks: Dict[int, dict] = {}
    for key, array in tensors.items():
        top = {v: k for k, v in _TOP_TO_HF.items()}.get(key)
        if top is not None:
            params[top] = np.asarray(array, dtype=np.float32)
            continue
        parts = key.split(".", 2)
        if parts[0] != "h" or len(parts) < 3 or not parts[1].isdigit():
            continue                                # e.g. lm_head.weight (tied to wte)
        route = _HF_TO_PARAMS.get(parts[2])
        if route is None:                           # e.g. the attn.bias mask buffer
            continue
        node = blocks.setdefault(int(parts[1]), {})
        for part in route[:-1]:
            node = node.setdefault(part, {})
        node[route[-1]] = np.asarray(array, dtype=np.float32)
    params["blocks"] = _blocks_in_order(blocks, settings, str(path), "h.{}")
    check_params(params, settings, str(path), _hf_name)
    return params


def _blocks_in_order(blocks: Mapping[int, dict], settings: Optional[Mapping], source: str,
                     pattern: str) -> List[dict]:
    """Blocks ``0..n_layer-1`` as a list; a missing or extra layer is a named error."""
    count = settings["n_layer"] if settings else (max(blocks) + 1 if blocks else 0)
    missing = [i for i in range(count) if i not in blocks]
    extra = sorted(i for i in blocks if i >= count)
    if missing:
        raise CheckpointError(
            f"O checkpoint '{source}' não tem a camada {pattern.format(missing[0])} "
            f"(nenhum tensor {pattern.format(missing[0])}.*; esperadas {count} camadas)."
        )
    if extra:
        raise CheckpointError(
            f"O checkpoint '{source}' tem a camada {pattern.format(extra[0])} a mais "
            f"(a configuração diz {count} camadas)."
        )
    return [blocks[i] for i in range(count)]


def _expected_shapes(settings: Mapping) -> Dict[Tuple[Optional[int], Tuple[str, ...]], tuple]:
    e, v, c = settings["n_embd"], settings["n_vocab"], settings["n_ctx"]
    shapes = {(None, ("wte",)): (v, e), (None, ("wpe",)): (c, e), (None, ("g",)): (e,), (None, ("b",)): (e,)}
    per_block = {("attn", "c_attn", "w"): (e, 3 * e), ("attn", "c_attn", "b"): (3 * e,),
                 ("attn", "c_proj", "w"): (e, e), ("attn", "c_proj", "b"): (e,),
                 ("mlp", "c_fc", "w"): (e, 4 * e), ("mlp", "c_fc", "b"): (4 * e,),
                 ("mlp", "c_proj", "w"): (4 * e, e), ("mlp", "c_proj", "b"): (e,),
                 ("ln_1", "g"): (e,), ("ln_1", "b"): (e,), ("ln_2", "g"): (e,), ("ln_2", "b"): (e,)}
    for layer in range(settings["n_layer"]):
        shapes.update({(layer, route): shape for route, shape in per_block.items()})
    return shapes


def check_params(params: Params, settings: Optional[Mapping], source: str,
                 name: Callable[[Optional[int], Tuple[str, ...]], str] = _tf_name) -> None:
    """Every tensor of ``params`` present and of the shape ``settings`` implies (pt-BR error).

    Without ``settings`` the sizes come from the embeddings (``wte``, ``wpe``) and the
    number of blocks. ``name(layer, route)`` spells a tensor as its file does.
    """
    for top in ("wte", "wpe"):
        if getattr(params.get(top), "ndim", 0) != 2:
            raise CheckpointError(f"O checkpoint '{source}' não tem o tensor '{name(None, (top,))}' "
                                  "(ou ele não é uma matriz).")
    if settings is None:
        settings = {"n_vocab": params["wte"].shape[0], "n_ctx": params["wpe"].shape[0],
                    "n_embd": params["wte"].shape[1], "n_layer": len(params["blocks"])}
    if len(params["blocks"]) != settings["n_layer"]:
        raise CheckpointError(f"O checkpoint '{source}' tem {len(params['blocks'])} camadas; "
                              f"a configuração diz {settings['n_layer']}.")
    for (layer, route), shape in _expected_shapes(settings).items():
        node = params if layer is None else params["blocks"][layer]
        for key in route:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            raise CheckpointError(f"O checkpoint '{source}' não tem o tensor '{name(layer, route)}'.")
        if tuple(np.shape(node)) != shape:
            raise CheckpointError(
                f"O checkpoint '{source}': o tensor '{name(layer, route)}' tem formato "
                f"{tuple(np.shape(node))}, esperado {shape} (n_embd={settings['n_embd']})."
            )


# --------------------------------------------------------------------------- the tiny model
def ensure_tiny_checkpoint(cfg: Mapping, models_dir: PathLike, seed: int = 123) -> Path:
    """The ``teste`` profile's random model of ``cfg`` as safetensors, whole; return its folder.

    Kept if complete (both files intact, same configuration and ``seed``); otherwise
    written into a private folder beside it and moved into place whole, so another
    notebook reading at the same time never sees half a model. Readable by
    ``load_gpt2_params("tiny", models_dir)``.
    """
    models_dir = Path(models_dir)
    target = hf_model_dir(models_dir, TINY_SIZE)
    settings = settings_from_cfg(cfg)
    if not _tiny_problems(target, settings, seed):
        return target
    _ensure_writable_dir(models_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=models_dir))
    try:
        try:
            write_random_gpt2_checkpoint(cfg, staging, seed=seed, fmt="safetensors")
        except FileWriteError as exc:           # name the real destination, not the staging folder
            raise write_error(target / exc.path.name, exc) from exc
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    problems = _tiny_problems(target, settings, seed)
    if problems:                                # someone else's copy won the race and differs
        raise CheckpointError(f"A pasta do modelo '{target}' não ficou completa: {_join_problems(problems)}.")
    return target


def _tiny_problems(folder: Path, settings: Mapping, seed: int) -> Dict[str, str]:
    problems = hf_folder_problems(folder)
    if problems:
        return problems
    if settings_from_hf_config(folder / "config.json") != dict(settings):
        return {"config.json": "configuração diferente da pedida"}
    written = (read_safetensors_header(folder / "model.safetensors").get("__metadata__") or {})
    if written.get(SEED_METADATA_KEY) != str(seed):
        return {"model.safetensors": f"gravado com outra semente ({written.get(SEED_METADATA_KEY)})"}
    return {}


def _move_into_place(staging: Path, target: Path) -> None:
    """Replace ``target`` (a folder, maybe incomplete) by ``staging`` in two renames."""
    if target.exists():
        old = target.with_name(f".{target.name}-velho-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(target, old)
        except FileNotFoundError:               # another process moved it first
            pass
        else:
            shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:                             # another process put its copy in place first
        pass


# --------------------------------------------------------------------------- TF route (the book's)
def download_and_load_gpt2(model_size: str, models_dir: PathLike) -> Tuple[dict, Params]:
    """Download (or reuse) OpenAI's GPT-2 checkpoint of ``model_size`` and read its params.

    As in the book: returns ``(settings, params)``. ``model_size`` is one of
    ``124M, 355M, 774M, 1558M``; a folder ``models_dir/<size>`` that already holds a
    complete checkpoint (e.g. one a test wrote) is read as is. Needs TensorFlow.
    """
    model_dir = Path(models_dir) / str(model_size)
    if model_size in DOWNLOADABLE_SIZES:
        _fetch_model_files(
            f"GPT-2 {model_size} (checkpoint da OpenAI)", model_dir,
            {name: f"{GPT2_BASE_URL}/models/{model_size}/{name}" for name in TF_FILENAMES},
            backups={name: [f"{GPT2_BACKUP_BASE_URL}/{model_size}/{name}"] for name in TF_FILENAMES})
    else:
        present = [f for f in TF_CHECKPOINT_FILES if (model_dir / f).is_file()]
        if not present:
            raise _unknown_size(model_size)
        if len(present) < len(TF_CHECKPOINT_FILES):
            missing = [f for f in TF_CHECKPOINT_FILES if f not in present]
            raise CheckpointError(
                f"A pasta do checkpoint '{model_dir}' está incompleta: faltam {', '.join(missing)}. "
                "Apague a pasta e grave o checkpoint de novo."
            )
    settings = read_hparams(model_dir / "hparams.json")
    return settings, load_gpt2_params_from_tf_ckpt(str(model_dir / "model.ckpt"), settings)


def read_hparams(path: Path) -> dict:
    """``hparams.json`` of OpenAI's checkpoint (the book's ``settings``)."""
    try:
        settings = read_json(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Não foi possível ler '{path}': {exc}") from exc
    missing = [k for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
               if not isinstance(settings, dict) or k not in settings]
    if missing:
        raise CheckpointError(f"'{path}' não tem as chaves {', '.join(missing)}.")
    return settings


def load_gpt2_params_from_tf_ckpt(ckpt_path: str, settings: Mapping) -> Params:
    """Read every variable of a GPT-2 TF checkpoint into the nested ``params`` dict."""
    tf = _import_tensorflow()
    ckpt_path = str(ckpt_path)
    if os.path.isdir(ckpt_path):
        ckpt_path = tf.train.latest_checkpoint(ckpt_path) or os.path.join(ckpt_path, "model.ckpt")
    params: Params = {}
    blocks: Dict[int, dict] = {}
    try:
        for name, _ in tf.train.list_variables(ckpt_path):
            array = np.squeeze(tf.train.load_variable(ckpt_path, name))
            parts = name.split("/")[1:]          # skip the 'model/' prefix
            target = params                      # 'ln_f/g' -> params["g"], as in the book
            if parts[0].startswith("h") and parts[0][1:].isdigit():
                target = blocks.setdefault(int(parts[0][1:]), {})
            for key in parts[1:-1]:
                target = target.setdefault(key, {})
            target[parts[-1]] = array
    except (tf.errors.OpError, ValueError, IndexError) as exc:
        raise CheckpointError(
            f"O checkpoint '{ckpt_path}' está incompleto ou corrompido "
            f"(arquivos {ckpt_path}.index / .data-00000-of-00001): {str(exc).splitlines()[0]} "
            "Apague a pasta do modelo e baixe de novo."
        ) from exc
    params["blocks"] = _blocks_in_order(blocks, settings, ckpt_path, "model/h{}")
    check_params(params, settings, ckpt_path, _tf_name)
    return params


# ------------------------------------------------------------------ params -> model
def _copy(param: torch.Tensor, value, name: str) -> None:
    value = torch.as_tensor(np.asarray(value), dtype=param.dtype)
    if tuple(param.shape) != tuple(value.shape):
        raise CheckpointError(
            f"Formato incompatível em '{name}': o modelo espera {tuple(param.shape)}, "
            f"o checkpoint tem {tuple(value.shape)}. A configuração do modelo "
            "(emb_dim, n_layers, n_heads, context_length, vocab_size) corresponde ao checkpoint?"
        )
    with torch.no_grad():
        param.copy_(value)


def _split_qkv(value, name: str):
    """Query, key, value parts of GPT-2's fused ``c_attn`` (last axis = 3 x emb_dim)."""
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[-1] % 3:
        raise CheckpointError(
            f"O tensor '{name}' tem formato {tuple(value.shape)}: a última dimensão deveria ser "
            "3 x emb_dim (consulta, chave e valor juntos)."
        )
    return np.split(value, 3, axis=-1)


def load_weights_into_gpt(gpt: torch.nn.Module, params: Params) -> torch.nn.Module:
    """Copy OpenAI-layout ``params`` into ``gpt`` (a GPTModel), checking every shape."""
    blocks = params["blocks"]
    if len(blocks) != len(gpt.trf_blocks):
        raise CheckpointError(
            f"O checkpoint tem {len(blocks)} blocos transformer, o modelo tem "
            f"{len(gpt.trf_blocks)} (n_layers)."
        )
    _copy(gpt.pos_emb.weight, params["wpe"], "pos_emb.weight")
    _copy(gpt.tok_emb.weight, params["wte"], "tok_emb.weight")
    for b, (block, p) in enumerate(zip(gpt.trf_blocks, blocks)):
        pre = f"trf_blocks.{b}"
        att, ff = block.att, block.ff
        q_w, k_w, v_w = _split_qkv(p["attn"]["c_attn"]["w"], f"h{b}/attn/c_attn/w")
        q_b, k_b, v_b = _split_qkv(p["attn"]["c_attn"]["b"], f"h{b}/attn/c_attn/b")
        for lin, w, bias, nm in ((att.W_query, q_w, q_b, "W_query"), (att.W_key, k_w, k_b, "W_key"),
                                 (att.W_value, v_w, v_b, "W_value")):
            _copy(lin.weight, w.T, f"{pre}.att.{nm}.weight")
            if lin.bias is None:
                raise CheckpointError(f"'{pre}.att.{nm}' não tem bias: use qkv_bias=True para o GPT-2.")
            _copy(lin.bias, bias, f"{pre}.att.{nm}.bias")
        _copy(att.out_proj.weight, p["attn"]["c_proj"]["w"].T, f"{pre}.att.out_proj.weight")
        _copy(att.out_proj.bias, p["attn"]["c_proj"]["b"], f"{pre}.att.out_proj.bias")
        _copy(ff.layers[0].weight, p["mlp"]["c_fc"]["w"].T, f"{pre}.ff.layers.0.weight")
        _copy(ff.layers[0].bias, p["mlp"]["c_fc"]["b"], f"{pre}.ff.layers.0.bias")
        _copy(ff.layers[2].weight, p["mlp"]["c_proj"]["w"].T, f"{pre}.ff.layers.2.weight")
        _copy(ff.layers[2].bias, p["mlp"]["c_proj"]["b"], f"{pre}.ff.layers.2.bias")
        _copy(block.norm1.scale, p["ln_1"]["g"], f"{pre}.norm1.scale")
        _copy(block.norm1.shift, p["ln_1"]["b"], f"{pre}.norm1.shift")
        _copy(block.norm2.scale, p["ln_2"]["g"], f"{pre}.norm2.scale")
        _copy(block.norm2.shift, p["ln_2"]["b"], f"{pre}.norm2.shift")
    _copy(gpt.final_norm.scale, params["g"], "final_norm.scale")
    _copy(gpt.final_norm.shift, params["b"], "final_norm.shift")
    _copy(gpt.out_head.weight, params["wte"], "out_head.weight")   # GPT-2 ties the head to wte
    return gpt


# ------------------------------------------------------------------ model -> files
def params_from_gpt(gpt: torch.nn.Module) -> Params:
    """The inverse of :func:`load_weights_into_gpt`: a model's weights as ``params``."""
    def np_(t):
        return t.detach().float().cpu().numpy().copy()

    blocks = []
    for block in gpt.trf_blocks:
        att, ff = block.att, block.ff
        c_attn_w = np.concatenate([np_(att.W_query.weight).T, np_(att.W_key.weight).T,
                                   np_(att.W_value.weight).T], axis=-1)
        c_attn_b = np.concatenate([np_(att.W_query.bias), np_(att.W_key.bias), np_(att.W_value.bias)])
        blocks.append({
            "attn": {"c_attn": {"w": c_attn_w, "b": c_attn_b},
                     "c_proj": {"w": np_(att.out_proj.weight).T, "b": np_(att.out_proj.bias)}},
            "mlp": {"c_fc": {"w": np_(ff.layers[0].weight).T, "b": np_(ff.layers[0].bias)},
                    "c_proj": {"w": np_(ff.layers[2].weight).T, "b": np_(ff.layers[2].bias)}},
            "ln_1": {"g": np_(block.norm1.scale), "b": np_(block.norm1.shift)},
            "ln_2": {"g": np_(block.norm2.scale), "b": np_(block.norm2.shift)},
        })
    return {"wte": np_(gpt.tok_emb.weight), "wpe": np_(gpt.pos_emb.weight), "blocks": blocks,
            "g": np_(gpt.final_norm.scale), "b": np_(gpt.final_norm.shift)}


def settings_from_cfg(cfg: Mapping) -> dict:
    """``hparams.json`` content for a config dict of the book."""
    return {"n_vocab": cfg["vocab_size"], "n_ctx": cfg["context_length"], "n_embd": cfg["emb_dim"],
            "n_head": cfg["n_heads"], "n_layer": cfg["n_layers"]}


def _flat_tf_variables(params: Params) -> Dict[str, np.ndarray]:
    """Variable names and arrays exactly as in OpenAI's checkpoint (conv weights are 1 x in x out)."""
    flat = {"model/wte": params["wte"], "model/wpe": params["wpe"],
            "model/ln_f/g": params["g"], "model/ln_f/b": params["b"]}
    for i, block in enumerate(params["blocks"]):
        for group, sub in (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj")):
            flat[f"model/h{i}/{group}/{sub}/w"] = block[group][sub]["w"][None]
            flat[f"model/h{i}/{group}/{sub}/b"] = block[group][sub]["b"]
        for ln in ("ln_1", "ln_2"):
            flat[f"model/h{i}/{ln}/g"] = block[ln]["g"]
            flat[f"model/h{i}/{ln}/b"] = block[ln]["b"]
    return flat


def write_gpt2_tf_checkpoint(params: Params, settings: Mapping, model_dir: PathLike,
                             tokenizer_dir: Optional[PathLike] = None) -> Path:
    """Save ``params`` as an OpenAI-layout TF checkpoint in ``model_dir``.

    Writes ``checkpoint``, ``hparams.json``, ``model.ckpt.{data-00000-of-00001,index,meta}``
    (through ``tf.compat.v1.train.Saver``, as OpenAI did) and, when ``tokenizer_dir`` holds
    them, ``encoder.json`` and ``vocab.bpe``.
    """
    tf = _import_tensorflow()
    model_dir = Path(model_dir)
    _ensure_writable_dir(model_dir)
    flat = _flat_tf_variables(params)
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.compat.v1.get_variable(name, shape=arr.shape, dtype=tf.float32,
                                                     initializer=tf.compat.v1.zeros_initializer())
                     for name, arr in flat.items()}
        saver = tf.compat.v1.train.Saver(list(variables.values()))
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for name, var in variables.items():
                # A placeholder keeps the arrays out of the saved graph (model.ckpt.meta).
                value = tf.compat.v1.placeholder(tf.float32, shape=flat[name].shape)
                sess.run(var.assign(value), {value: np.asarray(flat[name], dtype=np.float32)})
            saver.save(sess, str(model_dir / "model.ckpt"), write_meta_graph=True,
                       write_state=False)
    write_text_atomic(model_dir / "checkpoint",
                      'model_checkpoint_path: "model.ckpt"\n'
                      'all_model_checkpoint_paths: "model.ckpt"\n')
    write_json_atomic(model_dir / "hparams.json", dict(settings), indent=2)
    if tokenizer_dir is not None:
        for name in ("encoder.json", "vocab.bpe"):
            source = Path(tokenizer_dir) / name
            if source.is_file():
                atomic_write(model_dir / name, lambda f, s=source: f.write(s.read_bytes()), mode="wb")
    return model_dir


def write_gpt2_safetensors(params: Params, settings: Mapping, model_dir: PathLike,
                           metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Save ``params`` as a Hugging Face GPT-2 ``model.safetensors`` + ``config.json``.

    ``metadata`` (text values) goes into the safetensors header beside ``format``.
    """
    from safetensors.numpy import save

    model_dir = Path(model_dir)
    _ensure_writable_dir(model_dir)
    tensors = {"wte.weight": params["wte"], "wpe.weight": params["wpe"],
               "ln_f.weight": params["g"], "ln_f.bias": params["b"]}
    for i, block in enumerate(params["blocks"]):
        for hf_key, route in _HF_TO_PARAMS.items():
            node = block
            for part in route:
                node = node[part]
            tensors[f"h.{i}.{hf_key}"] = node
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    blob = save(tensors, metadata={"format": "pt", **(metadata or {})})
    atomic_write(model_dir / "model.safetensors", lambda f: f.write(blob), mode="wb")
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
              "vocab_size": settings["n_vocab"], "n_positions": settings["n_ctx"],
              "n_ctx": settings["n_ctx"], "n_embd": settings["n_embd"],
              "n_head": settings["n_head"], "n_layer": settings["n_layer"],
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    write_json_atomic(model_dir / "config.json", config, indent=2)
    return model_dir


def write_random_gpt2_checkpoint(cfg: Mapping, model_dir: PathLike, seed: int = 123,
                                 fmt: str = "tf") -> Path:
    """Write a randomly initialized GPTModel of ``cfg`` as a checkpoint (``"tf"`` or ``"safetensors"``).

    A small model that then loads through the real loader (tests, the ``teste``
    profile through :func:`ensure_tiny_checkpoint`). The safetensors header records ``seed``.
    """
    from .model import GPTModel

    if fmt not in ("tf", "safetensors"):
        raise ValueError(f"Formato desconhecido: {fmt!r}. Use 'tf' ou 'safetensors'.")
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    with torch.no_grad():                       # GPT-2's initialization: N(0, 0.02), zero biases
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, 0.02)
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.zero_()
    params = params_from_gpt(model)
    settings = settings_from_cfg(cfg)
    if fmt == "tf":
        return write_gpt2_tf_checkpoint(params, settings, model_dir)
    return write_gpt2_safetensors(params, settings, model_dir, metadata={SEED_METADATA_KEY: str(seed)})
