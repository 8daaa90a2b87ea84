"""A run of the pipeline: its options, its folders, the step type, and what runs before any step."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from ..distributed import ParallelOptions
from ..profiles import Profile
from ..runs import RunPaths, run_paths

if TYPE_CHECKING:                       # the step modules import this one, not the other way round
    from .sft import PreparedData

PROG = "python -m llmdefinitions"
DEFAULT_CHECKPOINT_EVERY = 50      # optimizer steps between training checkpoints
Log = Callable[[str], None]


class PipelineError(Exception):
    """An expected failure of a step; its pt-BR message says what to do."""


@dataclass
class RunOptions:
    """What a run was asked to do (the command line's options)."""

    profile: Profile
    output: Optional[Path] = None          # default ./saida or $LLMDEF_SAIDA
    device: Optional[str] = None           # default: cuda > mps > cpu
    redo: bool = False
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    judge_url: Optional[str] = None
    judge_model: Optional[str] = None
    judge_simulated: bool = False
    judge_deadline: Optional[float] = None  # seconds per judge request (default: the judge's)
    responses_file: Optional[Path] = None   # avaliar: any responses file instead of the run's
    progress: bool = True
    parallel: ParallelOptions = ParallelOptions()   # under torchrun: DDP/FSDP, batch split

    @property
    def judge_requested(self) -> bool:
        """True when the user asked for a judge (URL, model or the test double): it must answer."""
        return bool(self.judge_url or self.judge_model or self.judge_simulated)


@dataclass
class Run:
    """One run: its options and folders; the device and the data are computed once, when needed."""

    options: RunOptions
    log: Log = print
    paths: RunPaths = field(init=False)
    _device: object = None
    _prepared: Optional["PreparedData"] = None
    on_train_step: Optional[Callable] = None       # passed to the trainer (tests use it)

    def __post_init__(self):
        self.paths = run_paths(self.options.profile, self.options.output)

    @property
    def profile(self) -> Profile:
        return self.options.profile

    @property
    def device(self):
        if self._device is None:
            from ..device import resolve_device
            self._device = resolve_device(self.options.device)
        return self._device

    def prepared(self) -> "PreparedData":
        if self._prepared is None:
            from .sft import prepare_data
            self._prepared = prepare_data(self.profile, self.paths)
        return self._prepared

    def command(self, step: str) -> str:
        """The command line that runs ``step`` on this same run folder."""
        import shlex

        line = f"{PROG} {step} --perfil {self.profile.name}"
        if self.options.output:
            line += f" --saida {shlex.quote(str(self.options.output))}"
        return line

    @property
    def model_file(self) -> Path:
        return self.paths.sft_model(self.profile.model_name)


@dataclass(frozen=True)
class Step:
    """A step: what it reads and writes, how to run it, and when it must run again."""

    name: str
    title: str
    inputs: Callable[[Run], List[Path]]
    outputs: Callable[[Run], List[Path]]
    run: Callable[[Run], None]
    require: Callable[[Run], None] = lambda run: None        # fail fast when run alone
    stale: Callable[[Run], Optional[str]] = lambda run: None  # another reason to redo

    def status(self, run: Run) -> Tuple[bool, str]:
        """``(done, why not)``: done when every output exists and is newer than every input."""
        outputs = self.outputs(run)
        missing = [p for p in outputs if not p.is_file()]
        if missing:
            return False, f"falta {_short(missing[0], run)}"
        inputs = [p for p in self.inputs(run) if p.is_file()]
        if inputs:
            newest = max(inputs, key=_mtime)
            oldest = min(outputs, key=_mtime)
            if _mtime(newest) > _mtime(oldest):
                return False, f"{_short(newest, run)} é mais novo que {_short(oldest, run)}"
        reason = self.stale(run)
        return (False, reason) if reason else (True, "")


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _short(path: Path, run: Run) -> str:
    try:
        return str(path.relative_to(run.paths.root))
    except ValueError:
        return str(path)


def _elapsed(seconds: float) -> str:
    from ..stats import format_decimal

    return f"{format_decimal(seconds, 1)} s" if seconds < 120 else f"{format_decimal(seconds / 60, 1)} min"


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and check that a file can be written there (pt-BR error if not)."""
    from ..io import os_error_pt

    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".teste-escrita-", dir=folder)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise PipelineError(
            f"Não é possível escrever na pasta de saída '{folder}': {os_error_pt(exc)}. "
            "Escolha outra pasta com --saida (ou corrija as permissões).") from None


def describe(paths: RunPaths) -> str:
    """A short listing of what the run folder holds (for the end of a notebook or run)."""
    if not paths.run_dir.is_dir():
        return f"'{paths.run_dir}' ainda não existe."
    lines = [f"Conteúdo de '{paths.run_dir}':"]
    for item in sorted(paths.run_dir.iterdir()):
        if item.name.startswith("."):
            continue
        lines.append(f"  {item.name:45s} {item.stat().st_size / 1e6:8.2f} MB")
    return "\n".join(lines)
