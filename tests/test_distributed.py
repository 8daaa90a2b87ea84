"""Training on several processes (llmdefinitions.distributed), launched for real by torchrun.

Every run is the command line's ``treinar`` under torchrun, in the ``teste`` profile on the
CPU (gloo), through ``torchrun_worker.py``, which first shrinks the profile (8 training
samples: 2 steps per epoch, 2 epochs, evaluation after every step, fp32) and can interrupt
training after a given step. The runs are compared with each other:

* 1 process vs 2 (DDP, padded batches) and 2 (DDP, packed batches of 1 sample, 2 accumulated
  per step): the same global batches, so the same losses and weights up to float rounding;
* 2 processes interrupted mid-epoch and resumed by a new launch vs never interrupted (DDP;
  and FSDP2, with accumulation, on two "machines": two torchrun launchers on this host, c10d
  rendezvous);
* wrong launches end with one pt-BR line.

Bounds: the largest differences measured here were 1.1e-6 (losses) and 3.7e-6 (weights)
(``pytest -s`` prints them); the tests allow 1e-4. Ports are chosen free by the test;
nothing depends on timing.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import shared_data
from llmdefinitions.distributed import (TORCHRUN_VARIABLES, DistributedSetupError, Launch, ParallelOptions,
                                        launch_from_env, plan_batches)
from llmdefinitions.profiles import load_profile
from llmdefinitions.runs import sft_model_filename

REPO = Path(__file__).resolve().parents[1]
MIRROR = shared_data.locate()
MODEL_FILE = sft_model_filename(load_profile("teste").model_name)
LOSS_BOUND = 1e-4
WEIGHT_BOUND = 1e-4
SMALL = {"train_items": 8, "num_epochs": 2, "max_steps": None, "eval_freq": 1, "eval_iter": 2,
         "precision": "fp32", "fused_optimizer": False}

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Launcher:
    """Runs the worker under torchrun with the offline mirror, one output folder per run."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.worker = Path(__file__).with_name("torchrun_worker.py")
        unset = ("LLMDEF_PERFIL", "LLMDEF_SAIDA", *TORCHRUN_VARIABLES)
        self.env = {k: v for k, v in os.environ.items() if k not in unset}
        python_path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env.update(LLMDEF_MIRROR=str(MIRROR), TIKTOKEN_CACHE_DIR=str(workdir / "tiktoken"),
                        MPLBACKEND="Agg", PYTHONIOENCODING="utf-8", PYTHONPATH=python_path)

    def torchrun_args(self, name: str, *cli_args, overrides=None, stop_at=-1) -> list:
        return [str(self.worker), json.dumps({**SMALL, **(overrides or {})}), str(stop_at), "treinar",
                "--perfil", "teste", "--saida", str(self.workdir / name), "--dispositivo", "cpu",
                *map(str, cli_args)]

    def run(self, name: str, processes: int, *cli_args, overrides=None, stop_at=-1):
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   "--master_addr=127.0.0.1", f"--master_port={free_port()}",
                   *self.torchrun_args(name, *cli_args, overrides=overrides, stop_at=stop_at)]
        return self._wait([self._start(command)])[0]

    def run_two_nodes(self, name: str, *cli_args, stop_at=-1):
        """Two torchrun launchers (one process each) that meet through c10d rendezvous, as two machines would."""
        endpoint = f"127.0.0.1:{free_port()}"
        launches = [self._start([sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                                 f"--node_rank={node}", "--nproc_per_node=1", "--rdzv_backend=c10d",
                                 f"--rdzv_endpoint={endpoint}", f"--rdzv_id={name}",
                                 *self.torchrun_args(name, *cli_args, stop_at=stop_at)])
                    for node in (0, 1)]
        return self._wait(launches)

    def _start(self, command) -> subprocess.Popen:
        return subprocess.Popen(command, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, encoding="utf-8")

    @staticmethod
    def _wait(processes) -> list:
        results = []
        for process in processes:
            out, err = process.communicate(timeout=600)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        return results

    def result(self, name: str):
        run_dir = self.workdir / name / "teste"
        losses = json.loads((run_dir / "perdas.json").read_text(encoding="utf-8"))
        weights = torch.load(run_dir / MODEL_FILE, map_location="cpu", weights_only=True)
        return losses, weights


def assert_same_training(launcher, name_a: str, name_b: str) -> None:
    """Losses (4 evaluations) and final weights of two runs agree within the bounds; prints the differences."""
    (losses_a, weights_a), (losses_b, weights_b) = launcher.result(name_a), launcher.result(name_b)
    assert len(losses_a["train_losses"]) == len(losses_b["train_losses"]) == 4, (losses_a, losses_b)
    assert sorted(weights_a) == sorted(weights_b)
    losses = max(abs(x - y) for key in ("train_losses", "val_losses")
                 for x, y in zip(losses_a[key], losses_b[key]))
    weights = max(float((weights_a[k] - weights_b[k]).abs().max()) for k in weights_a)
    print(f"{name_a} × {name_b}: perdas até {losses:.2e}, pesos até {weights:.2e}")
    assert losses < LOSS_BOUND and weights < WEIGHT_BOUND


def ok(result) -> None:
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Launcher:
    return Launcher(tmp_path_factory.mktemp("distribuido"))


@pytest.fixture(scope="module")
def one_process(launcher):
    result = launcher.run("um", 1, "--como-no-livro")
    ok(result)
    return result


@pytest.fixture(scope="module")
def ddp_padded(launcher):
    result = launcher.run("ddp-preenchido", 2, "--como-no-livro")
    ok(result)
    return result


ACCUMULATED = ("--lote-por-processo", 1, "--acumular", 2)     # global batch 4 = 1 x 2 x 2


@pytest.fixture(scope="module")
def ddp_packed(launcher):
    result = launcher.run("ddp-empacotado", 2, *ACCUMULATED, overrides={"batching": "packed"})
    ok(result)
    return result


# --------------------------------------------------------------------------- same steps, any process count

@pytest.mark.slow
def test_two_processes_padded_match_one(launcher, one_process, ddp_padded):
    assert_same_training(launcher, "um", "ddp-preenchido")
    losses, _ = launcher.result("um")
    assert losses["train_losses"][0] != losses["train_losses"][-1]          # it did train


@pytest.mark.slow
def test_two_processes_packed_and_accumulated_match_one(launcher, one_process, ddp_packed):
    """Each process packs its share (1 sample, 2 accumulated): the same steps as the padded single process."""
    assert_same_training(launcher, "um", "ddp-empacotado")


@pytest.mark.slow
def test_only_rank_zero_speaks(ddp_padded):
    out = ddp_padded.stdout
    assert out.count("llmdefinitions treinar — perfil 'teste'") == 1, out
    assert out.count("Treino distribuído (DDP, backend gloo): 2 processo(s) em 1 máquina(s)") == 1, out
    assert "lote global 4 = 2 por processo × 2 processo(s) × 1 passo(s) de acumulação" in out
    assert out.count("Ep 2 (Step 000003)") == 1, out
    assert ddp_padded.stderr.count("Treinando:   0%") == 1, ddp_padded.stderr


@pytest.mark.slow
def test_the_saved_model_loads_into_a_plain_gpt(launcher, ddp_padded):
    from llmdefinitions.config import get_config
    from llmdefinitions.model import GPTModel

    _, weights = launcher.result("ddp-preenchido")
    GPTModel(get_config(load_profile("teste").model_name)).load_state_dict(weights)


# --------------------------------------------------------------------------- resume

@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted(launcher, ddp_packed):
    name = "ddp-retomado"
    run_dir = launcher.workdir / name / "teste"
    packed = {"batching": "packed"}
    stopped = launcher.run(name, 2, *ACCUMULATED, "--salvar-a-cada", 1, overrides=packed,
                           stop_at=2)                                    # mid-epoch 2
    assert stopped.returncode != 0
    assert (run_dir / "treino-checkpoint.pt").is_file() and not (run_dir / MODEL_FILE).is_file()
    resumed = launcher.run(name, 2, *ACCUMULATED, overrides=packed)
    ok(resumed)
    assert "o treino continua de onde parou" in resumed.stdout
    assert_same_training(launcher, "ddp-empacotado", name)


# --------------------------------------------------------------------------- FSDP2 on two "machines"

@pytest.mark.slow
def test_fsdp_on_two_nodes_interrupted_and_resumed_matches_ddp(launcher, ddp_padded):
    """Accumulation without gradient sync; sharded state gathered into a checkpoint, read back, sharded again."""
    name = "fsdp-dois-nos"
    args = ("--como-no-livro", "--fsdp", "--salvar-a-cada", 1, *ACCUMULATED)
    stopped = launcher.run_two_nodes(name, *args, stop_at=2)
    assert all(result.returncode != 0 for result in stopped)
    assert (launcher.workdir / name / "teste" / "treino-checkpoint.pt").is_file()
    node_0, node_1 = launcher.run_two_nodes(name, *args)
    ok(node_0)
    ok(node_1)
    said = node_0.stdout + node_1.stdout
    assert "Treino distribuído (FSDP2, backend gloo): 2 processo(s) em 2 máquina(s)" in said
    assert "o treino continua de onde parou" in said
    assert_same_training(launcher, "ddp-preenchido", name)


# --------------------------------------------------------------------------- wrong launches

def _one_pt_br_line(result, start: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.startswith("erro:")]
    assert lines and all(line.startswith(start) for line in lines), result.stderr[-3000:]
    assert "Traceback" not in result.stdout


@pytest.mark.slow
def test_more_processes_than_data_is_refused(launcher):
    result = launcher.run("grande-demais", 2, "--lote-por-processo", 5, "--acumular", 1)
    assert result.returncode != 0
    _one_pt_br_line(result, "erro: Há 8 exemplos de treino, menos que um lote global de 10")


def _cli(launcher, *args, **env):
    return subprocess.run([sys.executable, "-m", "llmdefinitions", *args], cwd=launcher.workdir,
                          env={**launcher.env, **env}, capture_output=True, text=True, encoding="utf-8",
                          timeout=120)


def test_half_set_torchrun_variables_are_refused(launcher):
    result = _cli(launcher, "treinar", "--perfil", "teste", WORLD_SIZE="2")
    assert result.returncode == 2
    _one_pt_br_line(result, "erro: Variáveis do torchrun pela metade: há WORLD_SIZE, mas faltam RANK")


def test_only_training_is_distributed(launcher):
    torchrun_env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    result = _cli(launcher, "tudo", "--perfil", "teste", **torchrun_env)
    assert result.returncode == 2
    _one_pt_br_line(result, "erro: Com torchrun, só o subcomando treinar é distribuído")


def test_fsdp_needs_torchrun(launcher):
    result = _cli(launcher, "treinar", "--perfil", "teste", "--fsdp")
    assert result.returncode == 2
    _one_pt_br_line(result, "erro: --fsdp, --lote-por-processo e --acumular só valem num treino distribuído")


# --------------------------------------------------------------------------- pure functions

def test_launch_from_env():
    full = dict(RANK="1", WORLD_SIZE="4", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2", MASTER_ADDR="h", MASTER_PORT="1")
    assert launch_from_env({}) is None
    launch = launch_from_env(full)
    assert launch == Launch(rank=1, world_size=4, local_rank=1, local_world_size=2)
    assert not launch.is_main and launch.nodes == 2
    with pytest.raises(DistributedSetupError, match="incoerentes"):
        launch_from_env({**full, "RANK": "4"})
    with pytest.raises(DistributedSetupError, match="esperava inteiros"):
        launch_from_env({**full, "RANK": "um"})


def test_plan_keeps_the_global_batch():
    plan = plan_batches(8, 2, 100)
    assert (plan.per_device, plan.grad_accum_steps, plan.global_batch) == (4, 1, 8)
    assert plan_batches(8, 2, 100, grad_accum_steps=2).per_device == 2
    assert plan_batches(8, 2, 100, per_device=1).grad_accum_steps == 4
    assert plan_batches(8, 4, 100, per_device=3, grad_accum_steps=1).global_batch == 12
    assert "o mesmo de um processo só" in plan.describe()


@pytest.mark.parametrize("args, message", [
    ((8, 3, 100), "não se divide igualmente entre 3"),
    ((8, 16, 100), "não se divide igualmente entre 16"),
    ((8, 2, 100, 3, None), "com --lote-por-processo 3"),
    ((8, 2, 7), "Há 7 exemplos de treino, menos que um lote global de 8"),
    ((8, 2, 100, 0, None), "lote por processo deve ser >= 1"),
])
def test_plan_refuses_what_cannot_be_kept(args, message):
    with pytest.raises(DistributedSetupError, match=message):
        plan_batches(*args)


def test_parallel_options_requested():
    assert not ParallelOptions().requested
    assert ParallelOptions(fsdp=True).requested and ParallelOptions(grad_accum_steps=2).requested
