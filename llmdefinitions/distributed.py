"""Training on several processes: data parallelism (DDP) or sharding (FSDP2), launched by torchrun.

``torchrun --nproc_per_node=N -m llmdefinitions treinar ...`` starts N copies of the same
program; each learns its place from torchrun's environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ...). :func:`session` reads them, joins the process group
(NCCL between GPUs, gloo on the CPU) and hands the trainer a :class:`Distributed`:

* **DDP** (default): every process holds the whole model and optimizer; each takes its
  share of every global batch (a ``DistributedSampler``, reshuffled each epoch with
  ``set_epoch``) and the gradients are averaged by all-reduce during the backward pass,
  so every copy takes the same step;
* **FSDP2** (``fsdp=True``, ``torch.distributed.fsdp.fully_shard``): each transformer
  block, the output head and the rest of the model are split across the processes, and
  so is the optimizer state; a block's weights are gathered just before it runs. At the
  end the full weights are gathered and saved as a plain ``GPTModel`` file.

The global batch (per process x processes x accumulation) is, by default, the one a
single process uses, and the data order does not depend on the number of processes:
1, 2 or 8 processes compute the same steps, up to float rounding (tested). Training
losses are normalized by the target tokens of the whole global batch; evaluation losses
come from the sums and counts of all processes. Only the main process (rank 0) writes
files, logs and progress bars; checkpoints hold full (unsharded) state, so a run resumes
with any number of processes, DDP or FSDP.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Tuple

# torchrun sets all of these for every process it starts (and more: LOCAL_WORLD_SIZE, GROUP_RANK, ...).
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(ValueError):
    """A launch or batch layout that cannot work; the pt-BR message says what to change."""


# --------------------------------------------------------------------------- the launch

@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch."""

    rank: int                 # 0 .. world_size - 1, over every machine
    world_size: int
    local_rank: int           # index on this machine (which GPU it takes)
    local_world_size: int     # processes on this machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))


def launch_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[Launch]:
    """The torchrun launch this process belongs to; ``None`` when it was started plainly.

    Raises :class:`DistributedSetupError` when the variables are only partly set or
    inconsistent (e.g. ``WORLD_SIZE`` exported by hand, without torchrun).
    """
    env = os.environ if environ is None else environ
    present = [name for name in TORCHRUN_VARIABLES if env.get(name)]
    if not present:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if name not in present]
    if missing:
        raise DistributedSetupError(
            f"Variáveis do torchrun pela metade: há {', '.join(present)}, mas faltam {', '.join(missing)}. "
            "Lance com torchrun (ex.: torchrun --nproc_per_node=2 -m llmdefinitions treinar ...) "
            "ou, para um só processo, apague essas variáveis.")
    try:
        rank, world, local = (int(env[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        local_world = int(env.get("LOCAL_WORLD_SIZE") or world)
    except ValueError:
        values = ", ".join(f"{name}={env.get(name)!r}" for name in TORCHRUN_VARIABLES[:3])
        raise DistributedSetupError(f"Variáveis do torchrun inválidas ({values}): esperava inteiros.") from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local < local_world <= world):
        raise DistributedSetupError(
            f"Variáveis do torchrun incoerentes: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}, "
            f"LOCAL_WORLD_SIZE={local_world} (é preciso 0 <= RANK < WORLD_SIZE e "
            "0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE).")
    return Launch(rank, world, local, local_world)


def is_main_process(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True unless this is a torchrun process other than rank 0 (no torch import)."""
    env = os.environ if environ is None else environ
    return env.get("RANK", "0").strip() in ("", "0")


# --------------------------------------------------------------------------- the global batch

@dataclass(frozen=True)
class ParallelOptions:
    """What the command line may ask of a distributed run (``None``: keep the profile's global batch)."""

    fsdp: bool = False
    per_device_batch: Optional[int] = None
    grad_accum_steps: Optional[int] = None

    @property
    def requested(self) -> bool:
        return self.fsdp or self.per_device_batch is not None or self.grad_accum_steps is not None


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's samples are split: per process x processes x accumulation."""

    per_device: int
    world_size: int
    grad_accum_steps: int
    reference: int            # the global batch of one process (the profile's)

    @property
    def global_batch(self) -> int:
        return self.per_device * self.world_size * self.grad_accum_steps

    def describe(self) -> str:
        same = ("o mesmo de um processo só" if self.global_batch == self.reference
                else f"o perfil usa {self.reference} num processo só: ajuste a taxa de aprendizado se preciso")
        return (f"lote global {self.global_batch} = {self.per_device} por processo × {self.world_size} "
                f"processo(s) × {self.grad_accum_steps} passo(s) de acumulação ({same})")


def plan_batches(global_batch: int, world_size: int, train_items: int,
                 per_device: Optional[int] = None, grad_accum_steps: Optional[int] = None) -> BatchPlan:
    """Split ``global_batch`` over ``world_size`` processes, or take the caller's split.

    With neither ``per_device`` nor ``grad_accum_steps`` the global batch stays the same
    (per process = global / processes); with one of them the other is chosen to keep it;
    with both, they define a new global batch. Refuses (pt-BR) what cannot be kept or
    what leaves no optimizer step for ``train_items`` samples.
    """
    for name, value in (("lote por processo", per_device), ("passos de acumulação", grad_accum_steps)):
        if value is not None and value < 1:
            raise DistributedSetupError(f"O {name} deve ser >= 1, mas é {value}.")
    if per_device is None or grad_accum_steps is None:
        accum = grad_accum_steps or 1
        divisor = world_size * (accum if per_device is None else per_device)
        share, rest = divmod(global_batch, divisor)
        if rest or share == 0:
            given = ("" if per_device is None and grad_accum_steps is None
                     else f" com --acumular {accum}" if per_device is None
                     else f" com --lote-por-processo {per_device}")
            raise DistributedSetupError(
                f"O lote global do perfil ({global_batch}) não se divide igualmente entre {world_size} "
                f"processo(s){given}. Escolha --lote-por-processo N e --acumular K: o lote global passa "
                f"a ser N × {world_size} × K (ou use um número de processos que divida {global_batch}).")
        per_device, grad_accum_steps = (share, accum) if per_device is None else (per_device, share)
    plan = BatchPlan(per_device, world_size, grad_accum_steps, global_batch)
    if train_items // plan.global_batch == 0:
        raise DistributedSetupError(
            f"Há {train_items} exemplos de treino, menos que um lote global de {plan.global_batch} "
            f"({plan.per_device} por processo × {world_size} processos × {grad_accum_steps}): nenhum passo "
            "de otimização caberia. Use menos processos ou um lote menor.")
    return plan


# --------------------------------------------------------------------------- the session

@contextlib.contextmanager
def session(device: Optional[str] = None,
            options: ParallelOptions = ParallelOptions()) -> Iterator[Optional["Distributed"]]:
    """``with session() as dist:`` — a :class:`Distributed` under torchrun, ``None`` otherwise.

    Joins the process group (left again at the end, also on errors) unless one is already
    open, e.g. by an outer ``session``. Other ranks than 0 print nothing while inside.
    """
    launch = launch_from_env()
    if launch is None:
        if options.requested:
            raise DistributedSetupError(
                "--fsdp, --lote-por-processo e --acumular só valem num treino distribuído: "
                "lance com torchrun (ex.: torchrun --nproc_per_node=2 -m llmdefinitions treinar ...).")
        yield None
        return
    import torch
    import torch.distributed as dist

    torch_device = _process_device(launch, device)
    owner = not dist.is_initialized()
    if owner:
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
            dist.init_process_group("nccl", device_id=torch_device)
        else:
            dist.init_process_group("gloo")
    try:
        with contextlib.ExitStack() as stack:
            if not launch.is_main:
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            yield Distributed(launch, torch_device, options)
    finally:
        if owner:
            dist.destroy_process_group()


def _process_device(launch: Launch, requested: Optional[str]):
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is there (unless ``cpu`` asked), else the CPU."""
    import torch

    name = (requested or "").strip().lower()
    if name in ("", "cuda") and torch.cuda.is_available():
        if launch.local_rank >= torch.cuda.device_count():
            raise DistributedSetupError(
                f"O processo de LOCAL_RANK {launch.local_rank} não tem GPU: esta máquina tem "
                f"{torch.cuda.device_count()}. Use --nproc_per_node <= {torch.cuda.device_count()}.")
        return torch.device("cuda", launch.local_rank)
    if name in ("", "cpu"):
        return torch.device("cpu")
    if name == "cuda":
        raise DistributedSetupError("--dispositivo cuda: não há GPU CUDA nesta máquina (use cpu).")
    raise DistributedSetupError(
        f"--dispositivo {requested}: com torchrun, cada processo usa a GPU do seu LOCAL_RANK; "
        "use --dispositivo cuda (sem número) ou cpu.")


class Distributed:
    """One process of a distributed run: what the pipeline and the trainer ask of it."""

    def __init__(self, launch: Launch, device, options: ParallelOptions = ParallelOptions()):
        self.launch = launch
        self.device = device
        self.options = options
        self.plan: Optional[BatchPlan] = None
        self._ddp = None

    # -- who am I
    @property
    def is_main(self) -> bool:
        return self.launch.is_main

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def mode(self) -> str:
        return "FSDP2" if self.options.fsdp else "DDP"

    def describe(self) -> str:
        import torch.distributed as dist

        return (f"Treino distribuído ({self.mode}, backend {dist.get_backend()}): {self.world_size} "
                f"processo(s) em {self.launch.nodes} máquina(s), dispositivo {self.device.type}; "
                + (self.plan.describe() if self.plan else "lote ainda não definido") + ".")

    # -- collectives
    def _tensor(self, values, dtype=None):
        import torch

        return torch.tensor(values, dtype=dtype or torch.float64,
                            device=self.device if self.device.type == "cuda" else "cpu")

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def sum(self, *values: float) -> Tuple[float, ...]:
        """The sum of each value over every process."""
        import torch.distributed as dist

        totals = self._tensor(list(values))
        dist.all_reduce(totals)
        return tuple(totals.tolist())

    def check_same(self, value: bool, what: str) -> None:
        """Fail (pt-BR) unless every process sees the same ``value`` (e.g. a file on a shared disk)."""
        total = int(self.sum(float(bool(value)))[0])
        if 0 < total < self.world_size:
            raise DistributedSetupError(
                f"Os processos não veem o mesmo {what} ({total} de {self.world_size} o veem): em várias "
                "máquinas, a pasta de saída (--saida) precisa ser compartilhada por todas.")

    @contextlib.contextmanager
    def first_per_machine(self):
        """Rank 0 runs the block first, then the first process of each other machine, then the rest.

        For blocks that create files (download, the ``teste`` model): on a shared disk rank 0
        makes them before anyone looks; on separate disks each machine's first process does.
        """
        phase = 0 if self.is_main else (1 if self.launch.local_rank == 0 else 2)
        for _ in range(phase):
            self.barrier()
        yield
        for _ in range(2 - phase):
            self.barrier()

    # -- data
    def shard_loaders(self, train_loader, val_loader, seed: int = 0):
        """Each process's share of the single-process loaders ``train_loader`` and ``val_loader``.

        Plans the batch from ``train_loader.batch_size`` (the global batch of one process).
        Training: a ``DistributedSampler`` (seeded with ``seed``, ``drop_last``) deals
        position ``i`` of each epoch's shuffle to process ``i % world_size``, so global
        batch ``k`` holds positions ``k*G .. k*G+G-1`` for any number of processes.
        Validation: the same dealing, in order, without repeating samples to even out.
        The collate functions (padded or packed) are the loaders' own; each process's
        batch is the plan's ``per_device`` (``grad_accum_steps`` of them make a step).
        """
        from torch.utils.data import DataLoader, Subset
        from torch.utils.data.distributed import DistributedSampler

        if train_loader.batch_size is None:
            raise DistributedSetupError(
                "Lotes agrupados por comprimento ('grouped') não são distribuídos: use lotes 'packed' "
                "ou 'random' no perfil.")
        self.plan = plan_batches(train_loader.batch_size, self.world_size, len(train_loader.dataset),
                                 self.options.per_device_batch, self.options.grad_accum_steps)
        rank, world, per_device = self.launch.rank, self.world_size, self.plan.per_device
        sampler = DistributedSampler(train_loader.dataset, num_replicas=world, rank=rank, shuffle=True,
                                     seed=seed, drop_last=True)
        train = DataLoader(train_loader.dataset, batch_size=per_device, sampler=sampler, drop_last=True,
                           collate_fn=train_loader.collate_fn, num_workers=train_loader.num_workers)
        val_share = Subset(val_loader.dataset, range(rank, len(val_loader.dataset), world))
        val = DataLoader(val_share, batch_size=per_device, shuffle=False, collate_fn=val_loader.collate_fn,
                         num_workers=val_loader.num_workers)
        return train, val

    def layout(self) -> str:
        """What a checkpoint must share with the run that resumes it (same steps, same data order)."""
        return f"DistributedSampler, lote global {self.plan.global_batch if self.plan else '?'}"

    # -- the model
    def prepare(self, model, precision: str = "fp32"):
        """Wrap ``model`` for training (before the optimizer is made): DDP, or FSDP2's shards in place."""
        from torch.nn.parallel import DistributedDataParallel

        from .device import choose_precision

        model.to(self.device)
        if self.options.fsdp:
            if choose_precision(self.device, precision) == "fp16":
                raise DistributedSetupError(
                    "FSDP com fp16 (GPUs sem bf16, como a T4) não é suportado aqui: o escalonador de "
                    "gradientes do fp16 não sabe de parâmetros fatiados. Use DDP (sem --fsdp) nessa GPU.")
            return _shard(model, self.device, self.world_size)
        inner = _hidden_states_class()(model) if hasattr(model, "hidden_states") else model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = DistributedDataParallel(inner, device_ids=device_ids)   # copies rank 0's weights
        return model

    def loss_model(self, model):
        """What the loss runs through: the DDP view (its hooks average the gradients), or ``model``."""
        if self._ddp is None:
            return model
        return _DDPView(self._ddp, model) if isinstance(self._ddp.module, _hidden_states_class()) else self._ddp

    def gradient_sync(self, model, enabled: bool):
        """No gradient exchange on accumulation micro-batches (``enabled=False``)."""
        if enabled:
            return contextlib.nullcontext()
        if self._ddp is not None:
            return self._ddp.no_sync()
        return _fsdp_no_sync(model)

    @property
    def loss_scale(self) -> float:
        """DDP and FSDP average gradients over processes; the loss is scaled back to a sum."""
        return float(self.world_size)

    def state_dicts(self, model, optimizer) -> Tuple[dict, dict]:
        """Full (unsharded, CPU) model and optimizer state; every process must call it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(model, optimizer,
                              options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_state_dicts(self, model, optimizer, model_state: dict, optimizer_state: dict) -> None:
        """Load full state (from :meth:`state_dicts`) into this process's model and optimizer."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                       options=StateDictOptions(full_state_dict=True))

    def save_model(self, model, path):
        """Save the full weights as a plain ``GPTModel`` file (gathered from every process; rank 0 writes)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from .serialization import save_tensors

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.is_main:
            save_tensors(state, path)
        self.barrier()
        return path

    # -- evaluation
    def evaluate(self, model, train_loader, val_loader, device, eval_iter: int,
                 precision: str = "fp32") -> Tuple[float, float]:
        """The trainer's ``evaluate`` over global batches: sums and counts added over processes."""
        model.eval()
        try:
            return (self._loader_loss(train_loader, model, device, eval_iter, precision),
                    self._loader_loss(val_loader, model, device, eval_iter, precision))
        finally:
            model.train()

    def _loader_loss(self, loader, model, device, num_batches: int, precision: str) -> float:
        """Mean over the first ``num_batches`` global batches of (their loss sum / their target count).

        A global batch is ``grad_accum_steps`` consecutive batches of every process: the
        batch one process would evaluate, however the step is split.
        """
        import torch
        import torch.distributed as dist

        from .device import autocast
        from .trainer import loss_sum_and_count

        group = self.plan.grad_accum_steps if self.plan else 1
        longest = self._tensor([len(loader)], torch.int64)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        per_process = int(longest.item())
        available = per_process // group if loader.drop_last else -(-per_process // group)
        batches = min(num_batches, available)
        if batches == 0:
            return float("nan")
        totals = torch.zeros(batches, 2, dtype=torch.float64)
        iterator = iter(loader)
        with torch.no_grad(), autocast(device, precision):
            for index in range(batches * group):
                # A process with fewer samples still runs (an empty batch): FSDP's gathers need everyone.
                batch = next(iterator, None)
                if batch is None:
                    batch = _empty_batch(device)
                loss, count = loss_sum_and_count(batch, model, device)
                totals[index // group] += torch.tensor([float(loss), count], dtype=torch.float64)
        totals = self._tensor(totals.tolist())
        dist.all_reduce(totals)
        sums, counts = totals[:, 0], totals[:, 1]
        means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))
        return float(means.mean())


def _empty_batch(device):
    """A one-token batch with no target (loss sum 0, count 0)."""
    import torch

    from .data import IGNORE_INDEX

    return (torch.zeros(1, 1, dtype=torch.long, device=device),
            torch.full((1, 1), IGNORE_INDEX, dtype=torch.long, device=device))


# --------------------------------------------------------------------------- DDP and FSDP details

@functools.lru_cache(maxsize=None)
def _hidden_states_class():
    """Defined on first use, so that importing this module needs no torch (the CLI reads launches)."""
    import torch

    class HiddenStates(torch.nn.Module):
        """``GPTModel.hidden_states`` as a module's forward, so DDP's hooks run when the loss calls it."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            return self.model.hidden_states(*args, **kwargs)

    return HiddenStates


class _DDPView:
    """What the loss reads of a model (``hidden_states``, ``out_head``), hidden states through DDP.

    The loss applies the output head only at target positions, outside ``forward``; the
    head's gradient is still averaged, since DDP's hooks sit on every parameter.
    """

    def __init__(self, ddp, model):
        self.hidden_states = ddp
        self.out_head = model.out_head

    def __call__(self, *args, **kwargs):
        return self.out_head(self.hidden_states(*args, **kwargs))


def _shard(model, device, world_size: int):
    """FSDP2: each transformer block, the output head and the root (embeddings, final norm) sharded."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (world_size,))
    for block in getattr(model, "trf_blocks", []):
        fully_shard(block, mesh=mesh)
    if hasattr(model, "out_head"):
        fully_shard(model.out_head, mesh=mesh)        # its own unit: the loss calls it outside forward
    fully_shard(model, mesh=mesh)
    if hasattr(model, "hidden_states"):
        register_fsdp_forward_method(model, "hidden_states")
    return model


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


__all__ = ["TORCHRUN_VARIABLES", "DistributedSetupError", "Launch", "launch_from_env", "is_main_process",
           "ParallelOptions", "BatchPlan", "plan_batches", "session", "Distributed"]
