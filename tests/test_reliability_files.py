"""Reliability of files, downloads and weights: each case of issue 20 replayed.

Every test makes the failure happen for real (a crafted file, a full disk simulated at
the write or fsync call, a tampered or missing mirror, a second process) and checks
two things: the pt-BR message names the file, and nothing was lost or left half-written.
"""
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_config
from llmdefinitions import downloads
from llmdefinitions.downloads import DATASET_URL, TOKENIZER_URLS, DownloadError, MirrorError, download_file
from llmdefinitions.io import FileWriteError, FolderLockedError, folder_lock, read_json, write_json_atomic
from llmdefinitions.model import GPTModel
from llmdefinitions.weights import (CheckpointError, ensure_tiny_checkpoint, load_gpt2_params,
                                    load_weights_into_gpt, params_from_gpt, settings_from_cfg,
                                    write_gpt2_safetensors)

REPO = Path(__file__).resolve().parents[1]
CFG = tiny_config(vocab_size=300, context_length=32, emb_dim=16, n_layers=3)
pytestmark = pytest.mark.usefixtures("one_thread")


def leftovers(folder: Path):
    """Temporary or partial files that an interrupted write would leave."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")) or p.name.startswith("."))


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class FillsUp(io.RawIOBase):
    """A file whose disk fills up after ``room`` bytes (the write that passes it fails)."""

    def __init__(self, raw, room: int):
        self.raw, self.room = raw, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.raw.write(data)

    def fileno(self):
        return self.raw.fileno()

    def close(self):
        self.raw.close()
        super().close()


def fill_disk_after(monkeypatch, room: int):
    """Make every binary file that ``atomic_write`` opens fill up after ``room`` bytes."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        if "b" not in mode:
            return real_fdopen(fd, mode, *args, **kwargs)
        return io.BufferedWriter(FillsUp(real_fdopen(fd, "wb", buffering=0), room), buffer_size=4096)

    monkeypatch.setattr(os, "fdopen", fdopen)


# --------------------------------------------------------------------------- JSON files
def test_json_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "dados.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"instruction": "Olá"}], ensure_ascii=False).encode())
    assert read_json(path) == [{"instruction": "Olá"}]


def test_deeply_nested_json_is_a_named_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "fundo.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="fundo.json.*profundidade") as info:
        read_json(path)
    assert not isinstance(info.value, RecursionError) and "\n" not in str(info.value)


def test_json_syntax_error_keeps_line_and_column(tmp_path):
    path = tmp_path / "ruim.json"
    path.write_text('[\n  {"a": 1,}\n]')
    with pytest.raises(ValueError, match=r"ruim.json.*linha 2, coluna 11"):
        read_json(path)


# --------------------------------------------------------------------------- disk full
def test_disk_full_at_fsync_keeps_the_old_file_and_names_the_new_one(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_json_atomic(path, {"versão": 1})
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(FileWriteError) as info:
        write_json_atomic(path, {"versão": 2})
    assert str(info.value).startswith(f"não há espaço no disco para gravar '{path}'")
    assert info.value.errno == errno.ENOSPC
    assert json.loads(path.read_text(encoding="utf-8")) == {"versão": 1}
    assert leftovers(tmp_path) == []


def test_disk_full_inside_torch_save_is_one_line_without_torch_internals(tmp_path, monkeypatch):
    from llmdefinitions.trainer import TrainState, save_checkpoint

    model = GPTModel(CFG)
    optimizer = torch.optim.AdamW(model.parameters())
    fill_disk_after(monkeypatch, room=20_000)          # torch's zip writer fails mid-file
    path = tmp_path / "checkpoint.pth"
    with pytest.raises(FileWriteError) as info:
        save_checkpoint(path, model, optimizer, TrainState())
    message = str(info.value)
    assert message.startswith(f"não há espaço no disco para gravar '{path}'")
    assert "inline_container" not in message and "unexpected pos" not in message and "\n" not in message
    assert isinstance(info.value.__cause__, RuntimeError)    # what torch raised, kept for --depurar
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_the_tiny_model_names_its_real_place(tmp_path, monkeypatch):
    fill_disk_after(monkeypatch, room=1_000)
    with pytest.raises(FileWriteError) as info:
        ensure_tiny_checkpoint(CFG, tmp_path / "modelos")
    assert str(info.value).startswith(
        f"não há espaço no disco para gravar '{tmp_path / 'modelos' / 'hf-tiny' / 'model.safetensors'}'")
    assert list((tmp_path / "modelos").iterdir()) == []      # no staging folder, no half model


def test_disk_full_during_a_download_names_the_destination(tmp_path, monkeypatch):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "200000")
            self.end_headers()
            self.wfile.write(b"x" * 200_000)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("LLMDEF_MIRROR", raising=False)
    real_open = open

    def open_full(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "b" in mode and str(path).endswith(".part"):
            handle.write = disk_full
        return handle

    monkeypatch.setattr(downloads, "open", open_full, raising=False)
    destination = tmp_path / "dados.json"
    try:
        with pytest.raises(FileWriteError) as info:
            download_file(f"http://127.0.0.1:{server.server_address[1]}/dados.json", destination,
                          progress=False, backoff=0)
    finally:
        server.shutdown()
        server.server_close()
    assert str(info.value).startswith(f"não há espaço no disco para gravar '{destination}'")
    assert ".part" not in str(info.value)
    assert not destination.exists()


# --------------------------------------------------------------------------- the mirror
def make_mirror(tmp_path: Path, source: Path) -> Path:
    mirror = tmp_path / "espelho"
    (mirror / "gpt2-tokenizer").mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(source / "gpt2-tokenizer" / name, mirror / "gpt2-tokenizer" / name)
    shutil.copyfile(source / "instruction-data.json", mirror / "instruction-data.json")
    return mirror


def test_tampered_tokenizer_file_in_the_mirror_names_it(shared_data, tmp_path, monkeypatch):
    from llmdefinitions.tokenizer import get_gpt2_tokenizer

    mirror = make_mirror(tmp_path, shared_data)
    encoder = mirror / "gpt2-tokenizer" / "encoder.json"
    data = bytearray(encoder.read_bytes())
    data[100] = ord("X") if data[100] != ord("X") else ord("Y")    # same size, other content
    encoder.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLMDEF_MIRROR", str(mirror))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    with pytest.raises(MirrorError, match=rf"espelho offline '{encoder}' não confere \(sha256"):
        get_gpt2_tokenizer()
    encoder_url = TOKENIZER_URLS["encoder.json"]
    assert not (cache / hashlib.sha1(encoder_url.encode()).hexdigest()).exists()   # nothing tampered kept
    assert leftovers(cache) == []


def test_mirror_files_with_a_known_hash_are_verified_the_others_reported(shared_data, tmp_path, monkeypatch, capsys):
    mirror = make_mirror(tmp_path, shared_data)
    (mirror / "notas.txt").write_text("sem hash conhecido", encoding="utf-8")
    os.symlink(mirror / "notas.txt", mirror / "atalho.txt")
    monkeypatch.setenv("LLMDEF_MIRROR", str(mirror))
    download_file(DATASET_URL, tmp_path / "out" / "instruction-data.json")
    download_file("https://example.org/x/notas.txt", tmp_path / "out" / "notas.txt")
    download_file("https://example.org/x/atalho.txt", tmp_path / "out" / "atalho.txt")
    err = capsys.readouterr().err
    assert "instruction-data.json" not in err          # verified against its known sha256: nothing to report
    assert f"'{mirror / 'notas.txt'}' -> '{tmp_path / 'out' / 'notas.txt'}' — não verificado" in err
    assert f"'{mirror / 'atalho.txt'}' (link para '{(mirror / 'notas.txt').resolve()}')" in err
    assert (tmp_path / "out" / "atalho.txt").read_text(encoding="utf-8") == "sem hash conhecido"


def test_broken_link_in_the_mirror_is_named(tmp_path, monkeypatch):
    mirror = tmp_path / "espelho"
    mirror.mkdir()
    os.symlink(tmp_path / "sumiu.json", mirror / "instruction-data.json")
    monkeypatch.setenv("LLMDEF_MIRROR", str(mirror))
    with pytest.raises(MirrorError, match="link para .*sumiu.json.*não existe"):
        download_file(DATASET_URL, tmp_path / "instruction-data.json")


def test_a_mirror_that_does_not_exist_is_an_error_saying_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMDEF_MIRROR", "nao/existe")
    with pytest.raises(MirrorError) as info:
        download_file(DATASET_URL, tmp_path / "instruction-data.json")
    message = str(info.value)
    assert "LLMDEF_MIRROR='nao/existe' não é uma pasta existente" in message
    assert str(tmp_path / "nao" / "existe") in message            # relative to the current folder
    assert str(REPO / "nao" / "existe") in message                # and to the project's root
    assert not (tmp_path / "instruction-data.json").exists()


RESOLVE = "from llmdefinitions.downloads import mirror_dir; print(mirror_dir())"


def run_python(code: str, cwd: Path, mirror: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMDEF_MIRROR": mirror, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)


def test_relative_mirror_means_the_same_folder_from_root_notebooks_and_elsewhere(tmp_path):
    project = tmp_path / "projeto"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "llmdefinitions"\n', encoding="utf-8")
    mirror = tmp_path / f"espelho-{tmp_path.name}"          # a name no other folder has
    mirror.mkdir()
    relative = f"../{mirror.name}"
    for cwd in (project, project / "notebooks"):            # the repository's root, a kernel's folder
        result = run_python(RESOLVE, cwd, relative)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(mirror), cwd
    cli = run_python("from llmdefinitions.cli import main; from llmdefinitions.downloads import mirror_dir; "
                     "print(mirror_dir())", project / "notebooks", relative)
    assert cli.stdout.strip() == str(mirror), cli.stderr
    elsewhere = tmp_path / "outra" / "pasta"                 # not inside the project: not found, and said so
    elsewhere.mkdir(parents=True)
    lost = run_python(RESOLVE, elsewhere, relative)
    assert lost.returncode != 0 and "não é uma pasta existente" in lost.stderr
    assert str(tmp_path / "outra" / mirror.name) in lost.stderr


def test_unreachable_server_error_names_the_destination_not_the_part_file(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMDEF_MIRROR", raising=False)
    with pytest.raises(DownloadError) as info:
        download_file("http://127.0.0.1:9/dados.json", tmp_path / "dados.json", retries=1, backoff=0,
                      timeout=2, progress=False)
    message = str(info.value)
    assert f"'{tmp_path / 'dados.json'}'" in message and ".part" not in message
    assert "http://127.0.0.1:9/dados.json (" in message            # the server and its error


def test_missing_weights_offline_say_what_the_mirror_needs(tmp_path, monkeypatch):
    mirror = tmp_path / "espelho"
    mirror.mkdir()
    monkeypatch.setenv("LLMDEF_MIRROR", str(mirror))

    def offline(request, *args, **kwargs):
        raise urllib.error.URLError("sem conexão com a internet")

    monkeypatch.setattr(downloads.urllib.request, "urlopen", offline)
    monkeypatch.setattr(downloads.time, "sleep", lambda seconds: None)
    with pytest.raises(DownloadError) as info:
        load_gpt2_params("355M", tmp_path / "modelos")
    message = str(info.value)
    assert "https://huggingface.co/openai-community/gpt2-medium/resolve/main/config.json" in message
    assert "sem conexão com a internet" in message
    assert f"'{mirror}/hf/openai-community/gpt2-medium/model.safetensors' (cerca de 1,52 GB)" in message
    assert f"'{mirror}/hf/openai-community/gpt2-medium/config.json'" in message
    assert not any((tmp_path / "modelos").rglob("model.safetensors"))


# --------------------------------------------------------------------------- the tiny model
def test_incomplete_tiny_folder_is_reported_then_rebuilt(tmp_path):
    models = tmp_path / "modelos"
    folder = ensure_tiny_checkpoint(CFG, models, seed=5)
    settings, params = load_gpt2_params("tiny", models)
    assert settings == settings_from_cfg(CFG)
    for broken in ("delete config", "delete weights", "truncate weights"):
        if broken == "delete config":
            (folder / "config.json").unlink()
        elif broken == "delete weights":
            (folder / "model.safetensors").unlink()
        else:
            data = (folder / "model.safetensors").read_bytes()
            (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="está incompleta ou corrompida") as info:
            load_gpt2_params("tiny", models)
        assert str(folder) in str(info.value)
        assert ensure_tiny_checkpoint(CFG, models, seed=5) == folder
        _, again = load_gpt2_params("tiny", models)
        np.testing.assert_array_equal(again["blocks"][2]["mlp"]["c_fc"]["w"],
                                      params["blocks"][2]["mlp"]["c_fc"]["w"])
    assert sorted(p.name for p in models.iterdir()) == ["hf-tiny"]        # nothing left beside it


def test_complete_tiny_folder_is_kept_and_another_seed_rebuilds_it(tmp_path):
    folder = ensure_tiny_checkpoint(CFG, tmp_path, seed=1)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_checkpoint(CFG, tmp_path, seed=1) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    _, first = load_gpt2_params("tiny", tmp_path)
    ensure_tiny_checkpoint(CFG, tmp_path, seed=2)
    _, second = load_gpt2_params("tiny", tmp_path)
    assert not np.array_equal(first["wte"], second["wte"])


def test_safetensors_route_and_tiny_model_work_without_tensorflow(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow"] = None            # `import tensorflow` now fails
        import torch
        from llmdefinitions.model import GPTModel
        from llmdefinitions.weights import (ensure_tiny_checkpoint, load_gpt2_params,
                                            load_weights_into_gpt, download_and_load_gpt2)
        cfg = {CFG!r}
        ensure_tiny_checkpoint(cfg, {str(tmp_path)!r})
        settings, params = load_gpt2_params("tiny", {str(tmp_path)!r})
        model = load_weights_into_gpt(GPTModel(cfg), params).eval()
        print("logits", tuple(model(torch.zeros(1, 4, dtype=torch.long)).shape))
        try:
            load_gpt2_params("tiny", {str(tmp_path)!r}, source="tf")
        except Exception as exc:
            print(type(exc).__name__, exc)
        try:
            from llmdefinitions.weights import load_gpt2_params_from_tf_ckpt
            load_gpt2_params_from_tf_ckpt("x", settings)
        except ImportError as exc:
            print("ImportError", exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "logits (1, 4, 300)" in result.stdout
    assert "ValueError Tamanho de modelo desconhecido: 'tiny'" in result.stdout   # no TF checkpoint there
    assert 'ImportError Para ler o checkpoint original da OpenAI' in result.stdout
    assert 'pip install -e ".[tf]"' in result.stdout


def write_params(tmp_path: Path, params) -> Path:
    write_gpt2_safetensors(params, settings_from_cfg(CFG), tmp_path / "hf-tiny")
    return tmp_path / "hf-tiny" / "model.safetensors"


@pytest.fixture()
def params():
    torch.manual_seed(0)
    return params_from_gpt(GPTModel(CFG))


def test_c_attn_width_not_divisible_by_three_names_file_and_tensor(tmp_path, params):
    params["blocks"][1]["attn"]["c_attn"]["w"] = params["blocks"][1]["attn"]["c_attn"]["w"][:, :-1]
    path = write_params(tmp_path, params)
    with pytest.raises(CheckpointError) as info:
        load_gpt2_params("tiny", tmp_path)
    assert str(info.value) == (f"O checkpoint '{path}': o tensor 'h.1.attn.c_attn.weight' tem formato "
                               "(16, 47), esperado (16, 48) (n_embd=16).")
    raw = params_from_gpt(GPTModel(CFG))                     # the same check when params come in directly
    raw["blocks"][0]["attn"]["c_attn"]["b"] = raw["blocks"][0]["attn"]["c_attn"]["b"][:-1]
    with pytest.raises(CheckpointError, match=r"'h0/attn/c_attn/b' tem formato \(47,\)"):
        load_weights_into_gpt(GPTModel(CFG), raw)


def test_missing_middle_layer_names_file_and_layer(tmp_path, params):
    from safetensors.numpy import load_file, save_file

    path = write_params(tmp_path, params)
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("h.1.")}
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as info:
        load_gpt2_params("tiny", tmp_path)
    assert str(info.value).startswith(f"O checkpoint '{path}' não tem a camada h.1 ")


def test_wrong_shape_names_file_and_tensor(tmp_path, params):
    params["wpe"] = params["wpe"][:10]
    path = write_params(tmp_path, params)
    with pytest.raises(CheckpointError, match=rf"'{path}': o tensor 'wpe.weight' tem formato \(10, 16\), "
                                              r"esperado \(32, 16\)"):
        load_gpt2_params("tiny", tmp_path)


# --------------------------------------------------------------------------- the folder lock
HOLD = textwrap.dedent("""
    import sys, time
    from llmdefinitions.io import folder_lock
    with folder_lock(sys.argv[1]):
        print("tenho a trava", flush=True)
        sys.stdin.readline()                # hold it until the parent says so (or kills us)
""")


def start_holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "tenho a trava"
    return holder


@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")
def test_a_second_run_on_the_same_folder_is_refused_and_a_crashed_one_does_not_block(tmp_path):
    folder = tmp_path / "saida"
    (folder / "resultado.json").parent.mkdir()
    (folder / "resultado.json").write_text("{}", encoding="utf-8")
    holder = start_holder(folder)
    try:
        with pytest.raises(FolderLockedError) as info:
            with folder_lock(folder):
                pytest.fail("the lock was taken twice")
        assert f"'{folder}'" in str(info.value) and f"processo {holder.pid}" in str(info.value)
    finally:
        holder.send_signal(signal.SIGKILL)           # a crash: no cleanup runs in the holder
        holder.wait()
    assert (folder / ".lock").exists()               # the stale file is still there ...
    with folder_lock(folder):                        # ... and does not block the next run
        assert (folder / ".lock").read_text() == str(os.getpid())
    assert (folder / "resultado.json").read_text(encoding="utf-8") == "{}"


def test_the_lock_is_released_when_the_block_ends(tmp_path):
    with folder_lock(tmp_path):
        pass
    holder = start_holder(tmp_path)                   # another process can take it now
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait() == 0


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl is Unix only")
def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with pytest.warns(RuntimeWarning, match="não aceita travas"):
        with folder_lock(tmp_path):
            ran.append(True)
    assert ran == [True]
