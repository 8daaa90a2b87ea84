"""Pretrained GPT-2 weights: download, read (TF checkpoint or safetensors), load, write.

Two routes fill the same ``params`` dict (the layout of OpenAI's checkpoint, as in the
book: ``params["wte"]``, ``params["blocks"][i]["attn"]["c_attn"]["w"]``, ...):

* :func:`download_and_load_gpt2` — OpenAI's original TensorFlow checkpoint
  (needs ``tensorflow``, imported only here);
* :func:`download_and_load_gpt2_safetensors` — Hugging Face ``model.safetensors`` of
  ``openai-community/gpt2*`` (no TensorFlow).

:func:`load_weights_into_gpt` copies ``params`` into a :class:`~llmdefinitions.model.GPTModel`,
checking every shape. The writers (:func:`write_gpt2_tf_checkpoint`,
:func:`write_gpt2_safetensors`) save a model in each format; tests and the ``teste``
profile use them to make small checkpoints that go through the real loaders.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from .config import DOWNLOADABLE_SIZES, HF_REPOS
from .downloads import GPT2_BACKUP_BASE_URL, GPT2_BASE_URL, DownloadError, download_file
from .io import atomic_write, write_json_atomic, write_text_atomic

PathLike = Union[str, os.PathLike]
Params = Dict[str, object]

TF_FILENAMES = (
    "checkpoint", "encoder.json", "hparams.json",
    "model.ckpt.data-00000-of-00001", "model.ckpt.index", "model.ckpt.meta", "vocab.bpe",
)
TF_CHECKPOINT_FILES = ("checkpoint", "hparams.json", "model.ckpt.data-00000-of-00001",
                       "model.ckpt.index")


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupted or does not fit the model (pt-BR)."""


def _import_tensorflow():
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(
            "Para ler o checkpoint original da OpenAI é preciso o TensorFlow: "
            "pip install tensorflow-cpu (ou use download_and_load_gpt2_safetensors, que não precisa dele)."
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


# --------------------------------------------------------------------------- TF route
def download_and_load_gpt2(model_size: str, models_dir: PathLike) -> Tuple[dict, Params]:
    """Download (or reuse) OpenAI's GPT-2 checkpoint of ``model_size`` and read its params.

    As in the seed: returns ``(settings, params)``. ``model_size`` is one of
    ``124M, 355M, 774M, 1558M``; a folder ``models_dir/<size>`` that already holds a
    complete checkpoint (e.g. the tiny one the ``teste`` profile writes) is read as is.
    """
    model_dir = Path(models_dir) / str(model_size)
    local = all((model_dir / f).is_file() for f in TF_CHECKPOINT_FILES)
    if model_size not in DOWNLOADABLE_SIZES and not local:
        raise ValueError(
            f"Tamanho de modelo desconhecido: {model_size!r}. "
            f"Tamanhos permitidos: {', '.join(DOWNLOADABLE_SIZES)}."
        )
    _ensure_writable_dir(model_dir)
    if model_size in DOWNLOADABLE_SIZES:
        for filename in TF_FILENAMES:
            download_file(
                f"{GPT2_BASE_URL}/models/{model_size}/{filename}", model_dir / filename,
                backup_urls=[f"{GPT2_BACKUP_BASE_URL}/{model_size}/{filename}"],
            )
    settings = read_hparams(model_dir / "hparams.json")
    return settings, load_gpt2_params_from_tf_ckpt(str(model_dir / "model.ckpt"), settings)


def read_hparams(path: Path) -> dict:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            settings = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"Não foi possível ler '{path}': {exc}.") from exc
    missing = [k for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer") if k not in settings]
    if missing:
        raise CheckpointError(f"'{path}' não tem as chaves {', '.join(missing)}.")
    return settings


def load_gpt2_params_from_tf_ckpt(ckpt_path: str, settings: Mapping) -> Params:
    """Read every variable of a GPT-2 TF checkpoint into the nested ``params`` dict."""
    tf = _import_tensorflow()
    ckpt_path = str(ckpt_path)
    if os.path.isdir(ckpt_path):
        ckpt_path = tf.train.latest_checkpoint(ckpt_path) or os.path.join(ckpt_path, "model.ckpt")
    params: Params = {"blocks": [{} for _ in range(settings["n_layer"])]}
    try:
        names = tf.train.list_variables(ckpt_path)
        for name, _ in names:
            array = np.squeeze(tf.train.load_variable(ckpt_path, name))
            parts = name.split("/")[1:]          # skip the 'model/' prefix
            target = params
            if parts[0].startswith("h") and parts[0][1:].isdigit():
                target = params["blocks"][int(parts[0][1:])]
            for key in parts[1:-1]:
                target = target.setdefault(key, {})
            target[parts[-1]] = array
    except (tf.errors.OpError, ValueError, IndexError) as exc:
        raise CheckpointError(
            f"O checkpoint '{ckpt_path}' está incompleto ou corrompido "
            f"(arquivos {ckpt_path}.index / .data-00000-of-00001): {str(exc).splitlines()[0]} "
            "Apague a pasta do modelo e baixe de novo."
        ) from exc
    _check_params_complete(params, ckpt_path)
    return params


def _check_params_complete(params: Params, source: str) -> None:
    needed = ["wte", "wpe", "g", "b"]
    missing = [k for k in needed if k not in params]
    for i, block in enumerate(params["blocks"]):
        for path in ("attn/c_attn/w", "attn/c_attn/b", "attn/c_proj/w", "attn/c_proj/b",
                     "mlp/c_fc/w", "mlp/c_fc/b", "mlp/c_proj/w", "mlp/c_proj/b",
                     "ln_1/g", "ln_1/b", "ln_2/g", "ln_2/b"):
            node = block
            for key in path.split("/"):
                node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                missing.append(f"h{i}/{path}")
    if missing:
        raise CheckpointError(
            f"O checkpoint '{source}' não tem os tensores: {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}."
        )


# ----------------------------------------------------------------- safetensors route
_HF_TO_PARAMS = {
    "ln_1.weight": ("ln_1", "g"), "ln_1.bias": ("ln_1", "b"),
    "ln_2.weight": ("ln_2", "g"), "ln_2.bias": ("ln_2", "b"),
    "attn.c_attn.weight": ("attn", "c_attn", "w"), "attn.c_attn.bias": ("attn", "c_attn", "b"),
    "attn.c_proj.weight": ("attn", "c_proj", "w"), "attn.c_proj.bias": ("attn", "c_proj", "b"),
    "mlp.c_fc.weight": ("mlp", "c_fc", "w"), "mlp.c_fc.bias": ("mlp", "c_fc", "b"),
    "mlp.c_proj.weight": ("mlp", "c_proj", "w"), "mlp.c_proj.bias": ("mlp", "c_proj", "b"),
}


def load_gpt2_params_from_safetensors(path: PathLike) -> Params:
    """Read a Hugging Face GPT-2 ``model.safetensors`` into the same ``params`` dict.

    Hugging Face's ``Conv1D`` stores weights as ``(in, out)``, like OpenAI's checkpoint,
    so no transpose is needed here. Keys may carry a ``transformer.`` prefix.
    """
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise ImportError("Para ler model.safetensors instale: pip install safetensors") from exc
    path = Path(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"O arquivo '{path}' está incompleto ou corrompido: {exc}. Apague-o e baixe de novo."
        ) from exc
    tensors = {k[len("transformer."):] if k.startswith("transformer.") else k: v
               for k, v in tensors.items()}
    layers = sorted({int(k.split(".")[1]) for k in tensors if k.startswith("h.")})
    params: Params = {"blocks": [{} for _ in layers]}
    for key, array in tensors.items():
        array = np.asarray(array, dtype=np.float32)
        if key in ("wte.weight", "wpe.weight"):
            params[key.split(".")[0]] = array
        elif key == "ln_f.weight":
            params["g"] = array
        elif key == "ln_f.bias":
            params["b"] = array
        elif key.startswith("h."):
            _, idx, rest = key.split(".", 2)
            route = _HF_TO_PARAMS.get(rest)
            if route is None:                       # e.g. the attn.bias mask buffer
                continue
            node = params["blocks"][int(idx)]
            for part in route[:-1]:
                node = node.setdefault(part, {})
            node[route[-1]] = array
    _check_params_complete(params, str(path))
    return params


def download_and_load_gpt2_safetensors(model_size: str, models_dir: PathLike) -> Tuple[dict, Params]:
    """Download (or reuse) ``model.safetensors`` of ``openai-community/gpt2*``; no TensorFlow."""
    if model_size not in HF_REPOS and not (Path(models_dir) / f"hf-{model_size}" / "model.safetensors").is_file():
        raise ValueError(
            f"Tamanho de modelo desconhecido: {model_size!r}. "
            f"Tamanhos permitidos: {', '.join(DOWNLOADABLE_SIZES)}."
        )
    model_dir = Path(models_dir) / f"hf-{model_size}"
    _ensure_writable_dir(model_dir)
    if model_size in HF_REPOS:
        base = f"https://huggingface.co/{HF_REPOS[model_size]}/resolve/main"
        for name in ("config.json", "model.safetensors"):
            download_file(f"{base}/{name}", model_dir / name)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    settings = {"n_vocab": config["vocab_size"], "n_ctx": config.get("n_positions", config.get("n_ctx")),
                "n_embd": config["n_embd"], "n_head": config["n_head"], "n_layer": config["n_layer"]}
    return settings, load_gpt2_params_from_safetensors(model_dir / "model.safetensors")


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
        q_w, k_w, v_w = np.split(p["attn"]["c_attn"]["w"], 3, axis=-1)
        q_b, k_b, v_b = np.split(p["attn"]["c_attn"]["b"], 3, axis=-1)
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


def write_gpt2_safetensors(params: Params, settings: Mapping, model_dir: PathLike) -> Path:
    """Save ``params`` as a Hugging Face GPT-2 ``model.safetensors`` + ``config.json``."""
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
    blob = save(tensors, metadata={"format": "pt"})
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

    Used by the ``teste`` profile: a small model that then loads through the real loader.
    """
    from .model import GPTModel

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
    if fmt == "safetensors":
        return write_gpt2_safetensors(params, settings, model_dir)
    raise ValueError(f"Formato desconhecido: {fmt!r}. Use 'tf' ou 'safetensors'.")


# ------------------------------------------------------------------ the pipeline's entry points
# (interim: the reliability work replaces these with whole-folder checks and repair)
def load_gpt2_params(model_size: str, models_dir: PathLike, source: str = "safetensors") -> Tuple[dict, Params]:
    """``(settings, params)`` of GPT-2 ``model_size``: Hugging Face safetensors by default, or OpenAI's TF."""
    if source == "tf":
        return download_and_load_gpt2(model_size, models_dir)
    return download_and_load_gpt2_safetensors(model_size, models_dir)


def ensure_tiny_checkpoint(cfg: Mapping, models_dir: PathLike, seed: int = 123) -> Path:
    """Write the tiny random model of the ``teste`` profile as safetensors, once."""
    import shutil
    import tempfile

    target = Path(models_dir) / "hf-tiny"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=models_dir))
    try:
        write_random_gpt2_checkpoint(cfg, staging, seed=seed, fmt="safetensors")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
