"""Weight loading: parity with Hugging Face's GPT-2 through both routes, and bad checkpoints."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmdefinitions.model import GPTModel
from llmdefinitions.weights import (CheckpointError, download_and_load_gpt2,
                                    download_and_load_gpt2_safetensors, load_gpt2_params_from_safetensors,
                                    load_weights_into_gpt, params_from_gpt, settings_from_cfg,
                                    write_gpt2_safetensors, write_gpt2_tf_checkpoint)

import transformers  # noqa: E402  (a test dependency: pip install -e .[dev])

N_LAYER, N_EMBD, N_HEAD, VOCAB, N_CTX = 2, 64, 4, 1000, 64
CFG = {"vocab_size": VOCAB, "context_length": N_CTX, "emb_dim": N_EMBD, "n_heads": N_HEAD,
       "n_layers": N_LAYER, "drop_rate": 0.0, "qkv_bias": True}


@pytest.fixture(scope="module")
def hf_model():
    """A random tiny GPT-2 of Hugging Face, every tensor perturbed so no mapping hides."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=N_CTX, n_embd=N_EMBD, n_layer=N_LAYER,
                                     n_head=N_HEAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     activation_function="gelu_new", layer_norm_epsilon=1e-5)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def hf_params(model):
    """OpenAI-layout params written straight from HF's state_dict (independent of our loader)."""
    sd = {k.removeprefix("transformer."): v.detach().numpy() for k, v in model.state_dict().items()}
    blocks = []
    for i in range(N_LAYER):
        g = lambda name: sd[f"h.{i}.{name}"]  # noqa: E731
        blocks.append({"attn": {"c_attn": {"w": g("attn.c_attn.weight"), "b": g("attn.c_attn.bias")},
                                "c_proj": {"w": g("attn.c_proj.weight"), "b": g("attn.c_proj.bias")}},
                       "mlp": {"c_fc": {"w": g("mlp.c_fc.weight"), "b": g("mlp.c_fc.bias")},
                               "c_proj": {"w": g("mlp.c_proj.weight"), "b": g("mlp.c_proj.bias")}},
                       "ln_1": {"g": g("ln_1.weight"), "b": g("ln_1.bias")},
                       "ln_2": {"g": g("ln_2.weight"), "b": g("ln_2.bias")}})
    return {"wte": sd["wte.weight"], "wpe": sd["wpe.weight"], "blocks": blocks,
            "g": sd["ln_f.weight"], "b": sd["ln_f.bias"]}


def max_logit_difference(hf_model, params) -> float:
    ours = load_weights_into_gpt(GPTModel(CFG), params).eval()
    x = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float((ours(x) - hf_model(x).logits).abs().max())


def test_safetensors_route_matches_hugging_face(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "hf-tiny", safe_serialization=True)
    settings, params = download_and_load_gpt2_safetensors("tiny", tmp_path)
    assert settings == {"n_vocab": VOCAB, "n_ctx": N_CTX, "n_embd": N_EMBD, "n_head": N_HEAD, "n_layer": N_LAYER}
    diff = max_logit_difference(hf_model, params)
    print(f"max |Δlogits| safetensors: {diff:.2e}")
    assert diff <= 1e-4


def test_tf_checkpoint_route_matches_hugging_face(hf_model, tmp_path):
    settings = settings_from_cfg(CFG)
    write_gpt2_tf_checkpoint(hf_params(hf_model), settings, tmp_path / "tiny")
    files = sorted(p.name for p in (tmp_path / "tiny").iterdir())
    assert files == ["checkpoint", "hparams.json", "model.ckpt.data-00000-of-00001",
                     "model.ckpt.index", "model.ckpt.meta"]
    loaded_settings, params = download_and_load_gpt2("tiny", tmp_path)
    assert loaded_settings == settings
    diff = max_logit_difference(hf_model, params)
    print(f"max |Δlogits| TF checkpoint: {diff:.2e}")
    assert diff <= 1e-4


def test_tf_checkpoint_uses_openais_variable_names_and_shapes(hf_model, tmp_path):
    import tensorflow as tf

    write_gpt2_tf_checkpoint(hf_params(hf_model), settings_from_cfg(CFG), tmp_path / "m")
    variables = dict(tf.train.list_variables(str(tmp_path / "m" / "model.ckpt")))
    assert variables["model/h0/attn/c_attn/w"] == [1, N_EMBD, 3 * N_EMBD]
    assert variables["model/h1/mlp/c_proj/w"] == [1, 4 * N_EMBD, N_EMBD]
    assert variables["model/wte"] == [VOCAB, N_EMBD] and variables["model/ln_f/g"] == [N_EMBD]


def test_writers_round_trip_a_model(tmp_path):
    torch.manual_seed(3)
    model = GPTModel(CFG).eval()
    model.out_head.weight = model.tok_emb.weight                      # GPT-2 ties them
    params = params_from_gpt(model)
    write_gpt2_safetensors(params, settings_from_cfg(CFG), tmp_path)
    again = load_weights_into_gpt(GPTModel(CFG), load_gpt2_params_from_safetensors(tmp_path / "model.safetensors"))
    x = torch.randint(0, VOCAB, (1, 12))
    torch.testing.assert_close(again.eval()(x), model(x))


def test_unknown_model_size_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        download_and_load_gpt2("999M", tmp_path)
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        download_and_load_gpt2_safetensors("999M", tmp_path)


def test_truncated_tf_checkpoint_names_the_file(hf_model, tmp_path):
    write_gpt2_tf_checkpoint(hf_params(hf_model), settings_from_cfg(CFG), tmp_path / "tiny")
    data = tmp_path / "tiny" / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="model.ckpt"):
        download_and_load_gpt2("tiny", tmp_path)


def test_corrupted_safetensors_names_the_file(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "hf-tiny", safe_serialization=True)
    path = tmp_path / "hf-tiny" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_gpt2_params_from_safetensors(path)


def test_unwritable_models_dir_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(Exception, match="pasta de modelos"):
        download_and_load_gpt2("124M", blocker / "models")


def test_shape_mismatch_names_the_tensor(hf_model):
    params = hf_params(hf_model)
    wrong = {**CFG, "emb_dim": 32, "n_heads": 4}
    with pytest.raises(CheckpointError, match="pos_emb.weight"):
        load_weights_into_gpt(GPTModel(wrong), params)
    params["blocks"][1]["mlp"]["c_fc"]["b"] = np.zeros(7, dtype=np.float32)
    with pytest.raises(CheckpointError, match=r"trf_blocks\.1\.ff\.layers\.0\.bias"):
        load_weights_into_gpt(GPTModel(CFG), params)


def test_layer_count_mismatch_is_explained(hf_model):
    with pytest.raises(CheckpointError, match="blocos"):
        load_weights_into_gpt(GPTModel({**CFG, "n_layers": 3}), hf_params(hf_model))


def test_missing_tensor_is_named(tmp_path, hf_model):
    params = hf_params(hf_model)
    del params["blocks"][0]["ln_2"]
    from safetensors.numpy import save_file
    tensors = {"wte.weight": params["wte"], "wpe.weight": params["wpe"], "ln_f.weight": params["g"],
               "ln_f.bias": params["b"], "h.0.attn.c_attn.weight": params["blocks"][0]["attn"]["c_attn"]["w"]}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"h\.0\.attn\.c_attn\.bias"):
        load_gpt2_params_from_safetensors(tmp_path / "model.safetensors")


def test_hparams_written_as_openai_does(tmp_path, hf_model):
    write_gpt2_tf_checkpoint(hf_params(hf_model), settings_from_cfg(CFG), tmp_path)
    assert json.loads((tmp_path / "hparams.json").read_text()) == {
        "n_vocab": VOCAB, "n_ctx": N_CTX, "n_embd": N_EMBD, "n_head": N_HEAD, "n_layer": N_LAYER}
    assert (tmp_path / "checkpoint").read_text().startswith('model_checkpoint_path: "model.ckpt"')


# --------------------------------------------------------------------------- the safetensors route
def test_downloaded_model_folder_is_checked_whole_and_bad_files_fetched_again(tmp_path, monkeypatch, capsys):
    """A folder of the safetensors route with a cut or missing file gets it again (here: from the mirror)."""
    from llmdefinitions import downloads
    from llmdefinitions.weights import load_gpt2_params

    url = downloads.hf_url("openai-community/gpt2", "model.safetensors")
    monkeypatch.delitem(downloads.KNOWN_SHA256, url)     # the mirror holds a small stand-in model
    torch.manual_seed(4)
    model = GPTModel(CFG)
    mirror = tmp_path / "espelho"
    write_gpt2_safetensors(params_from_gpt(model), settings_from_cfg(CFG), mirror / "hf" / "openai-community" / "gpt2")
    monkeypatch.setenv("LLMDEF_MIRROR", str(mirror))
    models = tmp_path / "modelos"
    settings, params = load_gpt2_params("124M", models)
    folder = models / "hf-124M"
    assert sorted(p.name for p in folder.iterdir()) == [".verificado.json", "config.json", "model.safetensors"]
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])           # cut short
    (folder / "config.json").write_text("{", encoding="utf-8")  # not JSON any more
    capsys.readouterr()
    _, again = load_gpt2_params("124M", models)
    err = capsys.readouterr().err
    assert "config.json" in err and "model.safetensors" in err  # both copied again from the mirror
    np.testing.assert_array_equal(again["wte"], params["wte"])
    weights.unlink()
    load_gpt2_params("124M", models)
    assert weights.is_file()


def test_load_gpt2_params_routes_and_rejects_an_unknown_source(tmp_path, hf_model):
    from llmdefinitions.weights import load_gpt2_params

    write_gpt2_tf_checkpoint(hf_params(hf_model), settings_from_cfg(CFG), tmp_path / "tiny")
    settings, params = load_gpt2_params("tiny", tmp_path, source="tf")
    assert settings["n_layer"] == N_LAYER and max_logit_difference(hf_model, params) <= 1e-4
    with pytest.raises(ValueError, match="Origem de pesos desconhecida: 'pt'"):
        load_gpt2_params("tiny", tmp_path, source="pt")


def test_tiny_checkpoint_holds_the_model_its_seed_makes(tmp_path):
    from llmdefinitions.weights import ensure_tiny_checkpoint, load_gpt2_params, write_random_gpt2_checkpoint

    ensure_tiny_checkpoint(CFG, tmp_path / "a", seed=9)
    write_random_gpt2_checkpoint(CFG, tmp_path / "b", seed=9, fmt="safetensors")   # the same recipe, by hand
    _, ours = load_gpt2_params("tiny", tmp_path / "a")
    by_hand = load_gpt2_params_from_safetensors(tmp_path / "b" / "model.safetensors")
    x = torch.randint(0, VOCAB, (1, 8))
    torch.testing.assert_close(load_weights_into_gpt(GPTModel(CFG), ours).eval()(x),
                               load_weights_into_gpt(GPTModel(CFG), by_hand).eval()(x), rtol=0, atol=0)


def test_a_verified_model_is_not_hashed_again_until_a_file_changes(tmp_path, monkeypatch):
    from llmdefinitions import downloads
    from llmdefinitions.weights import load_gpt2_params

    url = downloads.hf_url("openai-community/gpt2", "model.safetensors")
    torch.manual_seed(4)
    mirror = tmp_path / "espelho" / "hf" / "openai-community" / "gpt2"
    write_gpt2_safetensors(params_from_gpt(GPTModel(CFG)), settings_from_cfg(CFG), mirror)
    monkeypatch.setitem(downloads.KNOWN_SHA256, url, downloads.sha256_of(mirror / "model.safetensors"))
    monkeypatch.setenv("LLMDEF_MIRROR", str(tmp_path / "espelho"))
    hashed = []
    real_sha256_of = downloads.sha256_of
    monkeypatch.setattr(downloads, "sha256_of", lambda path: hashed.append(Path(path).name) or real_sha256_of(path))
    load_gpt2_params("124M", tmp_path / "modelos")
    assert hashed == ["model.safetensors"]                  # the mirror copy, verified once
    load_gpt2_params("124M", tmp_path / "modelos")
    assert hashed == ["model.safetensors"]                  # unchanged since: not hashed again
    weights = tmp_path / "modelos" / "hf-124M" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1                                            # same size, one bit flipped
    weights.write_bytes(bytes(data))
    load_gpt2_params("124M", tmp_path / "modelos")           # found, removed, copied again
    assert hashed.count("model.safetensors") == 3
    assert downloads.sha256_of(weights) == downloads.KNOWN_SHA256[url]
