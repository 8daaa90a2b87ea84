"""The command line (``python -m llmdefinitions``) end to end, in the ``teste`` profile, offline.

One module-wide run does what a student's interrupted run does: ``tudo`` is stopped with
Ctrl+C (SIGINT) right after the first training checkpoint, then the same command is run
again and must resume training from that checkpoint and finish every step, with the
judge played by the in-package test double (``--juiz-simulado``). The interruption is
deterministic: the process sends SIGINT to itself from the trainer's step callback once
the checkpoint exists, after starting with SIGINT *ignored* (as a CI runner or a
background job may leave it), so the test also shows that the CLI installs its own
handler. Later tests delete an output and check that only the steps after it run
again, and that bad input ends with a pt-BR message, a non-zero exit code and no traceback.
"""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llmdefinitions import cli
from llmdefinitions._argparse_pt import argparse_in_portuguese
from llmdefinitions.data import split_data
from llmdefinitions.profiles import load_profile
from llmdefinitions.runs import sft_model_filename

REPO = Path(__file__).resolve().parents[1]
import shared_data  # noqa: E402  (tests/shared_data.py)

PROFILE = load_profile("teste")
MODEL_FILE = sft_model_filename(PROFILE.model_name)
RESPONSE_KEYS = {"instruction", "input", "output", "model_response"}


def _mirror() -> Path:
    """The public files (tests/shared_data.py), found when a test first needs them."""
    return shared_data.locate()


def _env(tiktoken_cache: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMDEF_PERFIL", "LLMDEF_SAIDA")}
    env.update(LLMDEF_MIRROR=str(_mirror()), TIKTOKEN_CACHE_DIR=str(tiktoken_cache),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONIOENCODING="utf-8", **extra)
    return env


def _command(*args) -> list:
    return [sys.executable, "-m", "llmdefinitions", *map(str, args)]


# Runs the CLI with SIGINT ignored on entry, and interrupts itself (SIGINT) after the first
# training step that finds the resume checkpoint on disk.
INTERRUPTING_CLI = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
from llmdefinitions import cli, pipeline
created = pipeline.Run.__post_init__
def post_init(run):
    created(run)
    def interrupt(state):
        if run.paths.train_checkpoint.is_file():
            os.kill(os.getpid(), signal.SIGINT)
    run.on_train_step = interrupt
pipeline.Run.__post_init__ = post_init
sys.exit(cli.main(sys.argv[1:]))
"""


class Cli:
    """Runs the command line in a subprocess with the offline mirror."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.tiktoken_cache = workdir / "tiktoken-cache"

    def run(self, *args, timeout=300, **env) -> subprocess.CompletedProcess:
        return subprocess.run(_command(*args), cwd=self.workdir, env=_env(self.tiktoken_cache, **env),
                              capture_output=True, text=True, encoding="utf-8", timeout=timeout)

    def run_interrupted(self, *args, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", INTERRUPTING_CLI, *map(str, args)], cwd=self.workdir,
                              env=_env(self.tiktoken_cache), capture_output=True, text=True,
                              encoding="utf-8", timeout=timeout)


@pytest.fixture(autouse=True)
def _headless(monkeypatch):
    """main() picks matplotlib's file-only backend unless one is set: keep that out of os.environ."""
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def cli_runner(tmp_path_factory) -> Cli:
    return Cli(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def pipeline_run(cli_runner):
    """``tudo`` interrupted after the first training checkpoint, then run again to the end."""
    saida = cli_runner.workdir / "saida"
    run_dir = saida / "teste"
    checkpoint = run_dir / "treino-checkpoint.pt"
    args = ("tudo", "--perfil", "teste", "--saida", saida, "--juiz-simulado")

    interrupted = cli_runner.run_interrupted(*args, "--salvar-a-cada", 1)
    state = {"checkpoint": checkpoint.is_file(), "model": (run_dir / MODEL_FILE).is_file()}

    completed = cli_runner.run(*args)
    return {"saida": saida, "run_dir": run_dir, "args": args, "interrupted": interrupted,
            "after_interrupt": state, "completed": completed}


def _no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def _step_lines(stdout: str) -> dict:
    """``{"preparar": "executando" | "já feito", ...}`` from the ``[i/4] step: ...`` lines."""
    lines = {}
    for line in stdout.splitlines():
        for name in cli.STEP_NAMES:
            if line.startswith("[") and f"] {name}:" in line:
                if "já feito" in line:
                    lines[name] = "já feito"
                elif "executando" in line:
                    lines[name] = "executando"
    return lines


def test_ctrl_c_stops_cleanly_and_keeps_the_checkpoint(pipeline_run):
    result = pipeline_run["interrupted"]
    assert result.returncode == cli.EXIT_INTERRUPTED, (result.stdout[-2000:], result.stderr[-2000:])
    assert "Interrompido" in result.stderr and "rode o mesmo comando de novo" in result.stderr
    _no_traceback(result)
    assert pipeline_run["after_interrupt"] == {"checkpoint": True, "model": False}


def test_rerun_resumes_training_and_finishes_every_step(pipeline_run):
    result = pipeline_run["completed"]
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    _no_traceback(result)
    out = result.stdout
    assert _step_lines(out) == {"preparar": "já feito", "treinar": "executando",
                                "gerar": "executando", "avaliar": "executando"}
    assert "Retomando do checkpoint" in out
    assert "DUBLÊ DE TESTE" in out and "não as use como resultado" in out
    # Training is done: the resume checkpoint (weights + optimizer state) is gone.
    assert not (pipeline_run["run_dir"] / "treino-checkpoint.pt").exists()


def test_run_folder_holds_every_output(pipeline_run):
    import torch

    from llmdefinitions.config import get_config
    from llmdefinitions.model import GPTModel

    run_dir = pipeline_run["run_dir"]
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert config["name"] == "teste" and config["model_name"] == PROFILE.model_name
    assert config["device"] == "cpu" or config["device"].startswith(("cuda", "mps"))

    losses = json.loads((run_dir / "perdas.json").read_text(encoding="utf-8"))
    # Evaluations at steps 0 and 2 of 4: the interrupted run's first one was kept on resume.
    assert len(losses["train_losses"]) == len(losses["val_losses"]) == len(losses["tokens_seen"]) == 2
    assert all(math.isfinite(x) for x in losses["train_losses"] + losses["val_losses"])
    for png in ("perdas.png", "comprimentos.png", "pontuacoes.png", "avaliacao.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "Relatório de qualidade dos dados" in (run_dir / "qualidade-dados.txt").read_text(encoding="utf-8")

    state = torch.load(run_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    GPTModel(get_config(PROFILE.model_name)).load_state_dict(state)

    responses = json.loads((run_dir / "instruction-data-with-response.json").read_text(encoding="utf-8"))
    test_split = split_data(json.loads((_mirror() / "instruction-data.json").read_text(encoding="utf-8"))).test
    assert len(responses) == PROFILE.test_items
    assert all(set(r) == RESPONSE_KEYS and isinstance(r["model_response"], str) for r in responses)
    assert [r["instruction"] for r in responses] == [e["instruction"] for e in test_split[:PROFILE.test_items]]

    scores = json.loads((run_dir / "pontuacoes.json").read_text(encoding="utf-8"))
    assert [s["index"] for s in scores] == list(range(len(responses)))
    for s in scores:        # a score, or the reason there is none
        assert s["status"] in ("scored", "empty_response", "unparsable", "error"), s
        assert s["score"] is not None or s["reason"], s
    summary = json.loads((run_dir / "pontuacoes-resumo.json").read_text(encoding="utf-8"))
    assert summary["simulated"] is True and summary["n_total"] == len(responses)
    assert summary["n_scored"] == sum(s["score"] is not None for s in scores)

    evaluation = json.loads((run_dir / "avaliacao.json").read_text(encoding="utf-8"))
    assert evaluation["n"] == len(responses) and evaluation["juiz"]["simulado"] is True
    for metric in ("exact_match", "token_f1", "rouge_l", "bleu", "chrf"):
        interval = evaluation["metricas"]["metrics"][metric]["interval"]
        assert 0 <= interval["low"] <= interval["estimate"] <= interval["high"] <= 100, metric
    verifiable = json.loads((run_dir / "respostas-verificaveis.json").read_text(encoding="utf-8"))
    assert len(verifiable) == evaluation["verificaveis"]["n_prompts"] >= 120


def test_deleting_the_responses_reruns_only_generation_and_judge(pipeline_run, cli_runner, capsys):
    run_dir = pipeline_run["run_dir"]
    responses = run_dir / "instruction-data-with-response.json"
    kept = [run_dir / MODEL_FILE, run_dir / "perdas.json", run_dir / "config.json",
            run_dir / "qualidade-dados.txt"]
    before = {p: p.stat().st_mtime_ns for p in kept}
    old_responses = json.loads(responses.read_text(encoding="utf-8"))
    scores_before = (run_dir / "pontuacoes.json").stat().st_mtime_ns
    responses.unlink()

    result = cli_runner.run(*pipeline_run["args"])
    assert result.returncode == 0, result.stderr[-3000:]
    _no_traceback(result)
    assert _step_lines(result.stdout) == {"preparar": "já feito", "treinar": "já feito",
                                          "gerar": "executando", "avaliar": "executando"}
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert (run_dir / "pontuacoes.json").stat().st_mtime_ns > scores_before
    # Greedy decoding of the same model: the regenerated answers are the same.
    assert json.loads(responses.read_text(encoding="utf-8")) == old_responses

    # Everything is up to date now: nothing runs (in-process, it only reads file dates).
    assert cli.main([str(a) for a in pipeline_run["args"]]) == 0
    assert _step_lines(capsys.readouterr().out) == dict.fromkeys(cli.STEP_NAMES, "já feito")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_judge_says_what_to_do(pipeline_run, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/api/chat"
    code = cli.main(["avaliar", "--perfil", "teste", "--saida", str(pipeline_run["saida"]), "--url", url])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert f"O juiz não está disponível em {url}" in err
    assert "ollama serve" in err and "rode o mesmo comando de novo" in err
    # The metrics that need no judge were computed and saved; the judge is recorded as failed.
    evaluation = json.loads((pipeline_run["run_dir"] / "avaliacao.json").read_text(encoding="utf-8"))
    assert evaluation["juiz"]["status"] == "falhou" and evaluation["metricas"]["n"] == PROFILE.test_items


def test_unknown_profile_in_a_subprocess_exits_2_without_traceback(cli_runner, tmp_path):
    result = cli_runner.run("tudo", "--perfil", "gigante", "--saida", tmp_path)
    assert result.returncode == 2
    assert "erro: argumento --perfil: perfil desconhecido: 'gigante'; use um destes: completo, rapido, teste" \
        in result.stderr
    _no_traceback(result)


# In-process (main() returns the exit code; an exception escaping it would fail the test):
# the parser and the checks that run before any heavy work.

def test_unwritable_folder_and_missing_model(tmp_path, capsys):
    blocker = tmp_path / "arquivo.txt"
    blocker.write_text("não é uma pasta", encoding="utf-8")
    assert cli.main(["preparar", "--perfil", "teste", "--saida", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert "Não é possível escrever na pasta de saída" in err and "--saida" in err

    assert cli.main(["gerar", "--perfil", "teste", "--saida", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Modelo ajustado não encontrado" in err
    assert f"python -m llmdefinitions treinar --perfil teste --saida {tmp_path}" in err


def test_help_and_argparse_errors_are_in_portuguese(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("uso: python -m llmdefinitions") and "mostra esta ajuda e sai" in text
    assert "tudo --perfil rapido" in text
    assert cli.main(["fazer"]) == 2
    assert "erro: argumento SUBCOMANDO: opção inválida: 'fazer'" in capsys.readouterr().err
    assert cli.main(["tudo", "--salvar-a-cada", "x"]) == 2
    assert "esperava um número inteiro" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert "subcomandos" in capsys.readouterr().err


def test_common_options_work_before_or_after_the_subcommand():
    with argparse_in_portuguese():
        parser = cli.build_parser()
        before = parser.parse_args(["--perfil", "rapido", "--saida", "x", "gerar"])
        after = parser.parse_args(["gerar", "--perfil", "rapido", "--saida", "x"])
    assert (before.perfil, before.saida) == (after.perfil, after.saida) == ("rapido", "x")


def test_bad_profile_variable_and_bad_device(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LLMDEF_PERFIL", "enorme")
    assert cli.main(["preparar", "--saida", str(tmp_path)]) == 2
    assert "Perfil desconhecido: 'enorme' (variável LLMDEF_PERFIL)" in capsys.readouterr().err
    monkeypatch.delenv("LLMDEF_PERFIL")
    assert cli.main(["preparar", "--perfil", "teste", "--saida", str(tmp_path),
                     "--dispositivo", "tpu9"]) == 2
    assert "Dispositivo inválido: 'tpu9'" in capsys.readouterr().err
    assert not (tmp_path / "instruction-data.json").exists()     # nothing ran


def test_a_checkpoint_that_would_run_code_is_refused_on_resume(cli_runner, tmp_path):
    """A crafted treino-checkpoint.pt: resuming refuses it, and its payload never runs."""
    import pickle

    run_dir = tmp_path / "saida" / "teste"
    run_dir.mkdir(parents=True)
    marker = tmp_path / "executou"

    class CreatesAFile:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(run_dir / "treino-checkpoint.pt", "wb") as handle:
        pickle.dump({"model": {}, "optimizer": {}, "state": CreatesAFile()}, handle, protocol=2)
    result = cli_runner.run("treinar", "--perfil", "teste", "--saida", tmp_path / "saida")
    assert result.returncode == cli.EXIT_ERROR
    assert "recusado por segurança" in result.stderr and "weights_only=False" not in result.stderr
    assert not marker.exists()
    _no_traceback(result)


def test_no_judge_asked_and_none_answering_is_skipped_not_an_error(cli_runner, tmp_path):
    """The book's published answers, scored with no server: metrics and intervals, judge skipped, exit 0."""
    book = _mirror() / "instruction-data-with-response.json"
    closed = f"http://127.0.0.1:{_closed_port()}/api/chat"
    result = cli_runner.run("avaliar", "--perfil", "rapido", "--saida", tmp_path, "--respostas", book,
                            LLMDEF_JUIZ_URL=closed)
    assert result.returncode == 0, result.stderr[-2000:]
    _no_traceback(result)
    assert "Juiz pulado" in result.stdout and "ollama serve" in result.stdout
    evaluation = json.loads((tmp_path / "rapido" / "avaliacao.json").read_text(encoding="utf-8"))
    assert evaluation["n"] == 110 and evaluation["juiz"]["status"] == "pulado"
    em = evaluation["metricas"]["metrics"]["exact_match"]["interval"]
    assert em["low"] < em["estimate"] < em["high"]


def test_a_bad_responses_file_names_the_item_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "respostas.json"
    bad.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b", "model_response": "c"},
                               {"instruction": "a", "input": "", "output": "b"}]), encoding="utf-8")
    code = cli.main(["avaliar", "--perfil", "teste", "--saida", str(tmp_path / "saida"), "--respostas", str(bad)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and "model_response" in err and "1" in err and str(bad) in err
    assert not (tmp_path / "saida" / "teste" / "avaliacao.json").exists()


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    from llmdefinitions.io import folder_lock

    with folder_lock(tmp_path / "teste"):                      # another run holds the folder
        code = cli.main(["preparar", "--perfil", "teste", "--saida", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and str(os.getpid()) in err and "teste" in err
    assert not (tmp_path / "instruction-data.json").exists()    # nothing was done twice


@pytest.mark.slow
def test_the_main_command_runs_where_tensorflow_cannot_be_imported(cli_runner, tmp_path):
    """TensorFlow is only for reading OpenAI's original checkpoint: the whole chain runs without it."""
    code = ("import sys; sys.modules['tensorflow'] = None\n"       # `import tensorflow` now fails
            "from llmdefinitions.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "tudo", "--perfil", "teste", "--saida", str(tmp_path),
                             "--juiz-simulado"], cwd=cli_runner.workdir, env=_env(cli_runner.tiktoken_cache),
                            capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "teste" / "avaliacao.json").is_file()
