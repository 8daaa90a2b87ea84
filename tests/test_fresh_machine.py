"""What a new user meets on a fresh machine: the installer's PyTorch choice, the training
console output, and the build times the scripts announce."""
import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest
import torch

from helpers import CharTokenizer, make_samples, new_model, padded_loader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import instalar  # noqa: E402  (tools/instalar.py)


# ------------------------------------------------------------------ tools/instalar.py
def test_linux_without_nvidia_gpu_gets_the_cpu_build_and_other_machines_pypis():
    command = instalar.torch_command("Linux", nvidia=False)
    assert command[command.index("--index-url") + 1] == instalar.CPU_INDEX == "https://download.pytorch.org/whl/cpu"
    assert command[-1] == "torch"
    for system, nvidia in (("Linux", True), ("Darwin", False), ("Windows", False)):
        assert instalar.torch_command(system, nvidia) is None, system


def _install(monkeypatch, torch_installed: bool, argv=()) -> list:
    """Run instalar.main with pip recorded instead of run; return the pip commands."""
    commands = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(instalar.importlib.util, "find_spec",
                        lambda name, *a: (object() if torch_installed else None) if name == "torch"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(instalar, "pip", lambda args, what: commands.append(args))
    monkeypatch.setattr(instalar, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(instalar.platform, "system", lambda: "Linux")
    monkeypatch.setattr(instalar, "installed_torch_build", lambda: "cpu")
    assert instalar.main(list(argv)) == 0
    return commands


def test_an_installed_torch_is_kept_as_on_colab(monkeypatch, capsys):
    commands = _install(monkeypatch, torch_installed=True, argv=["--dev"])
    assert commands == [[sys.executable, "-m", "pip", "install", "-e", f"{ROOT}[dev]"]]
    assert "mantido como está" in capsys.readouterr().out


def test_a_cpu_machine_installs_the_cpu_build_before_the_package(monkeypatch):
    commands = _install(monkeypatch, torch_installed=False)
    package = [sys.executable, "-m", "pip", "install", "-e", str(ROOT)]
    assert commands == [instalar.torch_command("Linux", False), package]


# ------------------------------------------------------------------ training output
def test_the_per_epoch_sample_is_on_its_own_line_not_after_the_bar(monkeypatch):
    """Bar (stderr) and sample (stdout) into one stream, as in a terminal or `2>&1 | tee`."""
    from llmdefinitions import trainer

    monkeypatch.setattr(trainer, "generate_and_print_sample", lambda *args: print("AMOSTRA-DA-EPOCA"))
    model, samples = new_model(), make_samples(8, seed=1)
    stream = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            trainer.train_model(model, padded_loader(samples, 4), padded_loader(samples, 4),
                                torch.optim.AdamW(model.parameters(), lr=1e-3), "cpu", num_epochs=1,
                                eval_freq=10, eval_iter=1, start_context="ab", tokenizer=CharTokenizer(),
                                progress=True, print_samples=True)
    finally:
        torch.set_num_threads(threads)
    text = stream.getvalue()
    assert "Treinando" in text and text.count("AMOSTRA-DA-EPOCA") == 1
    before = text[:text.index("AMOSTRA-DA-EPOCA")]
    assert before.endswith(("\r", "\n")), repr(before[-80:])        # the bar was cleared first


# ------------------------------------------------------------------ build times
@pytest.mark.parametrize("path", [".ci/run", "tools/start_llm_server.sh", "tests/conftest.py"])
def test_every_llama_cpp_build_time_is_the_measured_one(path):
    """Measured here: 242 s and 362 s on 2 cores; any other figure is a claim nobody measured."""
    text = (ROOT / path).read_text(encoding="utf-8")
    assert "242 s and 362 s" in text or "de 4 a 6 min" in text, path
    assert not re.search(r"~?\b(1[0-9]|[7-9])\s*min", text), path
