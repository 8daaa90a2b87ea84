"""The optional step ``preferencia`` (DPO) through the command line, ``teste`` profile, offline.

The SFT model the step starts from is written in-process (the tiny pretrained checkpoint
saved where ``treinar`` saves its model: the step only needs a model file there). Then,
in subprocesses as a student runs it: once without interruption; once stopped with
SIGINT right after the checkpoint of step 1 (sent by the process itself from the step
callback, deterministic) and run again, which must resume and end with the same
metrics and adapter as the uninterrupted run.
"""
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from llmdefinitions import cli
from llmdefinitions.config import get_config
from llmdefinitions.generation import save_model
from llmdefinitions.lora import iter_lora_layers, load_lora_adapter
from llmdefinitions.model import GPTModel
from llmdefinitions.pipeline import STEP_NAMES, load_pretrained
from llmdefinitions.profiles import load_profile
from llmdefinitions.runs import run_paths
from test_cli import INTERRUPTING_CLI as SFT_INTERRUPTING_CLI
from test_cli import Cli, _env

PROFILE = load_profile("teste")

# test_cli's self-interrupting CLI (SIGINT ignored on entry, so the CLI must install its own
# handler), interrupting after DPO step 1 once the resume checkpoint of that step is on disk.
_SFT_CONDITION = "if run.paths.train_checkpoint.is_file():"
assert _SFT_CONDITION in SFT_INTERRUPTING_CLI
INTERRUPTING_CLI = SFT_INTERRUPTING_CLI.replace(
    _SFT_CONDITION, "if state.global_step == 1 and run.paths.dpo_checkpoint.is_file():")


def _with_sft_model(saida):
    """``saida/teste`` holding an SFT model file (the tiny pretrained weights)."""
    paths = run_paths(PROFILE, saida)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(PROFILE.seed)
    save_model(load_pretrained(PROFILE, paths, "cpu"), paths.sft_model(PROFILE.model_name))
    return paths


@pytest.fixture(autouse=True)
def _headless(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def dpo_runs(tmp_path_factory, shared_data):
    """One uninterrupted run, and one interrupted after step 1 then resumed."""
    runner = Cli(tmp_path_factory.mktemp("dpo-cli"))
    whole = _with_sft_model(runner.workdir / "inteiro")
    parts = run_paths(PROFILE, runner.workdir / "interrompido")
    parts.run_dir.mkdir(parents=True)
    shutil.copy2(whole.sft_model(PROFILE.model_name), parts.sft_model(PROFILE.model_name))

    def args(paths):
        return ("preferencia", "--perfil", "teste", "--saida", paths.root)

    completed = runner.run(*args(whole))
    interrupted = subprocess.run([sys.executable, "-c", INTERRUPTING_CLI, *map(str, args(parts)),
                                  "--salvar-a-cada", "1"], cwd=runner.workdir,
                                 env=_env(runner.tiktoken_cache), capture_output=True, text=True,
                                 encoding="utf-8", timeout=300)
    after_interrupt = {"checkpoint": parts.dpo_checkpoint.is_file(),
                       "adapter": parts.dpo_adapter(PROFILE.model_name).is_file()}
    resumed = runner.run(*args(parts))
    again = runner.run(*args(parts))
    return {"runner": runner, "whole": whole, "parts": parts, "completed": completed,
            "interrupted": interrupted, "after_interrupt": after_interrupt, "resumed": resumed,
            "again": again}


def _ok(result):
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_the_step_writes_adapter_metrics_plot_and_answers(dpo_runs):
    _ok(dpo_runs["completed"])
    paths, out = dpo_runs["whole"], dpo_runs["completed"].stdout
    assert "[1/1] preferencia" in out and "referência = o mesmo modelo com os adaptadores desligados" in out
    metrics = json.loads(paths.dpo_metrics.read_text(encoding="utf-8"))
    assert metrics["steps"] == [0, 2] and metrics["beta"] == PROFILE.dpo_beta     # 4 steps, eval every 2
    for key in ("losses", "chosen_rewards", "rejected_rewards", "reward_margins", "accuracies"):
        assert len(metrics[f"train_{key}"]) == len(metrics[f"val_{key}"]) == 2
    assert all(abs(v - math.log(2)) < 0.1 for v in metrics["val_losses"])   # near ln 2: few steps
    assert paths.dpo_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(paths.dpo_responses.read_text(encoding="utf-8"))
    val = json.loads((paths.root / "instruction-data-with-preference.json").read_text(encoding="utf-8"))
    assert [r["instruction"] for r in rows] == [e["instruction"] for e in val[1045:1048]]   # val[:3]
    assert all(isinstance(r["reference_response"], str) and isinstance(r["policy_response"], str)
               for r in rows)
    model = load_lora_adapter(GPTModel(get_config(PROFILE.model_name)),
                              paths.dpo_adapter(PROFILE.model_name))
    layers = dict(iter_lora_layers(model))
    assert "out_head" in layers and layers["out_head"].lora.rank == PROFILE.dpo_lora_rank
    assert any(layer.lora.B.abs().sum() > 0 for layer in layers.values())     # trained
    assert not paths.dpo_checkpoint.exists()
    assert "preferencia" not in STEP_NAMES                  # `tudo` leaves it out


@pytest.mark.slow
def test_interrupted_dpo_resumes_to_the_same_metrics_and_adapter(dpo_runs):
    interrupted = dpo_runs["interrupted"]
    assert interrupted.returncode == cli.EXIT_INTERRUPTED, (interrupted.stdout[-2000:],
                                                            interrupted.stderr[-2000:])
    assert dpo_runs["after_interrupt"] == {"checkpoint": True, "adapter": False}
    _ok(dpo_runs["resumed"])
    assert "o treino continua de onde parou" in dpo_runs["resumed"].stdout
    assert "passo 2" in dpo_runs["resumed"].stdout                           # "Retomando ... passo 2"
    whole, parts = dpo_runs["whole"], dpo_runs["parts"]
    assert (json.loads(parts.dpo_metrics.read_text(encoding="utf-8"))
            == json.loads(whole.dpo_metrics.read_text(encoding="utf-8")))
    ours = torch.load(parts.dpo_adapter(PROFILE.model_name), weights_only=True)["state_dict"]
    theirs = torch.load(whole.dpo_adapter(PROFILE.model_name), weights_only=True)["state_dict"]
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    _ok(dpo_runs["again"])
    assert "preferencia: já feito" in dpo_runs["again"].stdout


def test_missing_sft_model_is_a_ptbr_error_naming_the_file_and_the_fix(tmp_path, capsys):
    assert cli.main(["preferencia", "--perfil", "teste", "--saida", str(tmp_path)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    model_file = run_paths(PROFILE, tmp_path).sft_model(PROFILE.model_name)
    assert f"Modelo ajustado não encontrado em '{model_file}'" in err
    assert f"python -m llmdefinitions treinar --perfil teste --saida {tmp_path}" in err
    assert not (tmp_path / "instruction-data-with-preference.json").exists()   # nothing ran


def test_preferencia_takes_the_common_options_and_a_checkpoint_interval(capsys):
    assert cli.main(["preferencia", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--salvar-a-cada" in text and "--refazer" in text and "DPO" in text
