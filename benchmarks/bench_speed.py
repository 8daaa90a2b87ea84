#!/usr/bin/env python
"""The whole job, the book's way against the course's, on this machine (issue 18).

    LLMDEF_MIRROR=/work/shared/data python benchmarks/bench_speed.py            # gpt2-medium
    LLMDEF_MIRROR=/work/shared/data python benchmarks/bench_speed.py --quick    # CI: gpt2-small, minutes

The job is the course's chain on the GPT-2 medium shape (random weights: speed does not
depend on their values): finetune 2 epochs over the 935 training items with the loss
evaluated every 5 steps over 5 + 5 batches (the book's ``eval_freq=5, eval_iter=5``),
the two epoch-end sample answers, then the answers to the 110 test items (up to 256 new
tokens, greedy, stop at end-of-text).

* **The book's way**: ``train_model_simple`` (``calc_loss_loader``, ``evaluate_model``)
  from ``llmdefinitions.training``, fp32, the book's shuffled padded batches, PyTorch's
  default AdamW; one test prompt at a time with the book's loop (``generate(...,
  use_cache=False)``: the whole window again for every token).
* **The course's way**: ``Profile`` defaults through ``pipeline.make_loaders``,
  ``trainer.make_optimizer`` and ``trainer.train_model``; ``generate_responses``.

Random weights never write end-of-text, so every answer would run to the 256-token cap.
Here each answer is made to end where the book's published answer to the same test item
ends (``instruction-data-with-response.json``: the tokens of "\\n\\n### Response:\\n" +
answer, then end-of-text), by forcing end-of-text in the model's logits at that step
(:class:`ScriptedStop`, the same for both ways): the real job's answer lengths.

Running the book's whole job here would take hours, so both ways run slices of it, in
rounds that alternate the two ways (load on the shared CPU hits both alike): ``--rounds``
slices of 5 training steps + 1 evaluation (the real loops, on the job's own batches),
``--book-prompts`` test prompts the book's way; the course's way answers the whole test
set. Each stage is scaled to the whole job by its measured cost per unit of work (tokens
of the steps, evaluations, window tokens of the book's generation) and LABELLED
"estimado"; ``benchmarks/README.md`` explains every line (in Portuguese).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# Before torch starts: OpenMP threads that wait passively (on a CPU shared with other
# processes, spinning threads wait for each other far too long), and huge pages for
# large tensors (see llmdefinitions.device.tune_cpu_allocator). Both ways get them.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from llmdefinitions import trainer, training  # noqa: E402
from llmdefinitions.config import get_config  # noqa: E402
from llmdefinitions.data import (InstructionDataset, custom_collate_fn, download_and_load_file,  # noqa: E402
                                 split_data)
from llmdefinitions.device import (autocast, choose_device, choose_precision, cpu_has_native_bf16,  # noqa: E402
                                   tune_cpu_allocator)
from llmdefinitions.downloads import DATASET_URL, DATASET_WITH_RESPONSE_URL  # noqa: E402
from llmdefinitions.generation import common_prefix, extract_response, generate, generate_responses  # noqa: E402
from llmdefinitions.model import GPTModel, KVCache  # noqa: E402
from llmdefinitions.pipeline import PreparedData, make_loaders  # noqa: E402
from llmdefinitions.profiles import load_profile  # noqa: E402
from llmdefinitions.prompts import get_prompt_style  # noqa: E402
from llmdefinitions.stats import format_decimal, format_thousands  # noqa: E402
from llmdefinitions.tokenizer import END_OF_TEXT_ID, encode_text, get_gpt2_tokenizer  # noqa: E402

GOALS = {"job": 4.0, "train": 3.0, "eval": 4.0, "generation": 30.0}
BF16_LOSS_TOLERANCE = 0.02          # relative difference of the loss, bf16 autocast vs fp32
SLICE_STEPS = 5                     # one slice = eval_freq steps = 1 evaluation + 5 steps


# --------------------------------------------------------------------------- measuring

@dataclass
class Cost:
    """Seconds of wall-clock time and of this process's CPU time (all its threads)."""

    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.wall + other.wall, self.cpu + other.cpu, self.calls + other.calls)

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(self.wall - other.wall, self.cpu - other.cpu, self.calls)

    def scaled(self, factor: float) -> "Cost":
        return Cost(self.wall * factor, self.cpu * factor, self.calls)


class Clock:
    """``with clock.measure(key): ...`` adds the block's :class:`Cost` to ``clock.costs[key]``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.costs: Dict[str, Cost] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def measure(self, key: str):
        self.sync()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.sync()
            spent = Cost(time.perf_counter() - wall, time.process_time() - cpu, 1)
            self.costs[key] = self.costs.get(key, Cost()) + spent

    def get(self, key: str) -> Cost:
        return self.costs.get(key, Cost())

    @contextlib.contextmanager
    def instrument(self, targets: Dict[str, Tuple[object, str]]):
        """Time the functions the loops call (``key -> (module, name)``), then put them back."""
        originals = {}
        for key, (module, name) in targets.items():
            function = getattr(module, name)
            originals[key] = function

            def timed(*args, _function=function, _key=key, **kwargs):
                with self.measure(_key):
                    return _function(*args, **kwargs)

            setattr(module, name, timed)
        try:
            yield
        finally:
            for key, (module, name) in targets.items():
                setattr(module, name, originals[key])


def matmul_rate(device: torch.device, dtype: torch.dtype, repeats: int = 3) -> float:
    """Best FLOP/s of the MLP product of a training batch (412 x 1024 x 4096): the ceiling."""
    x = torch.randn(412, 1024, device=device, dtype=dtype)
    w = torch.randn(4096, 1024, device=device, dtype=dtype)
    F.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        F.linear(x, w)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 412 * 1024 * 4096 / best


def load_average() -> str:
    """The 1, 5 and 15-minute load averages (what ``uptime`` shows)."""
    try:
        return " ".join(format_decimal(x, 2) for x in os.getloadavg())
    except OSError:
        return "?"


# --------------------------------------------------------------------------- the job

class SliceLoader:
    """A fixed list of batches with a loader's ``len`` and iteration (a slice of the job)."""

    def __init__(self, batches: Sequence):
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class TrackedCache(KVCache):
    """A KV cache that knows which prompt each of its rows holds (for :class:`ScriptedStop`)."""

    def __init__(self, n_layers: int):
        super().__init__(n_layers)
        self.prompt_of_row: List[Optional[int]] = []

    def select_rows(self, rows: torch.Tensor) -> None:
        super().select_rows(rows)
        self.prompt_of_row = [self.prompt_of_row[r] for r in rows.tolist()]

    def replace_rows(self, rows: List[int], other: "TrackedCache") -> None:
        super().replace_rows(rows, other)
        for row, prompt in zip(rows, other.prompt_of_row):
            self.prompt_of_row[row] = prompt

    def repeated(self, batch: int, room: int = 0) -> "TrackedCache":
        copy = TrackedCache(len(self.keys))
        copy.__dict__.update(super().repeated(batch, room).__dict__)
        copy.prompt_of_row = [None] * batch
        return copy


class ScriptedStop(torch.nn.Module):
    """``model``, made to write end-of-text where the book's published answer to each prompt ends.

    ``answer_tokens[i]`` tokens are written after ``prompts[i]``, then end-of-text is
    forced (its logit set to +inf at that step); greedy tokens before it are the
    model's own. The book's loop: the prompt is the one the window starts with. Batches:
    each row is recognised when prefilled (it ends with the prompt's tokens after the
    shared prefix, and has its length) and its cache (:class:`TrackedCache`) carries the
    row's prompt however rows are dropped or replaced. Greedy decoding, as the job uses.
    """

    def __init__(self, model: GPTModel, prompts: Sequence[Sequence[int]], answer_tokens: Sequence[int],
                 eos_id: int = END_OF_TEXT_ID):
        super().__init__()
        self.model, self.eos_id = model, eos_id
        self.prompts = [tuple(p) for p in prompts]
        self.answer_tokens = [int(n) for n in answer_tokens]
        self.by_length: Dict[int, List[int]] = {}
        for i, ids in enumerate(self.prompts):
            self.by_length.setdefault(len(ids), []).append(i)
        self.written: Dict[int, int] = {}        # tokens written so far, per prompt being answered
        self._cache: Optional[TrackedCache] = None

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def pos_emb(self):
        return self.model.pos_emb

    def new_kv_cache(self) -> TrackedCache:
        return TrackedCache(len(self.model.trf_blocks))

    def _recognise(self, length: int, ends_with: Tuple[int, ...]) -> int:
        found = [i for i in self.by_length.get(length, []) if self.prompts[i][length - len(ends_with):] == ends_with]
        if len({self.answer_tokens[i] for i in found}) != 1:
            raise RuntimeError(f"ScriptedStop: prompt de {length} tokens não reconhecido ({len(found)} candidatos).")
        return found[0]

    def hidden_states(self, idx, position_ids=None, segment_ids=None, kv_cache=None):
        self._cache = kv_cache
        if idx.shape[1] > 1 and position_ids is not None:       # a batch's prefill: which prompt is in each row
            kv_cache.prompt_of_row = []
            for r in range(idx.shape[0]):
                prompt = self._recognise(int(position_ids[r, -1]) + 1, tuple(idx[r][segment_ids[r] == 1].tolist()))
                kv_cache.prompt_of_row.append(prompt)
                self.written[prompt] = 0
        return self.model.hidden_states(idx, position_ids, segment_ids, kv_cache)

    def out_head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.out_head(hidden)
        rows = self._cache.prompt_of_row
        for r, prompt in enumerate(rows):
            if self.written[prompt] >= self.answer_tokens[prompt]:
                logits[r, self.eos_id] = float("inf")
        for prompt, token in zip(rows, logits.argmax(dim=-1).tolist()):
            if token != self.eos_id:
                self.written[prompt] += 1
        return logits

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """The book's loop: the whole window; its prompt is the longest one it starts with."""
        logits = self.model(idx)
        window = tuple(idx[0].tolist())
        for length in sorted(self.by_length, reverse=True):
            found = [i for i in self.by_length[length] if window[:length] == self.prompts[i]]
            if length <= len(window) and found:
                if len(window) - length >= self.answer_tokens[found[0]]:
                    logits[0, -1, self.eos_id] = float("inf")
                return logits
        raise RuntimeError("ScriptedStop: a janela não começa por nenhum prompt conhecido.")


@dataclass
class Job:
    """What the whole job computes, and the data both ways use."""

    model_name: str
    train_set: InstructionDataset
    prepared: PreparedData
    book_batches: List                      # every step of the job (2 epochs), the book's batches
    course_batches: List                    # the same samples, as the course's loader gives them
    evaluations: int                        # evaluation passes in the job
    prompts: List[List[int]]                # test prompts (tokens)
    answer_tokens: List[int]                # tokens each answer has in the book's published run
    epochs: int = 2

    @property
    def steps(self) -> int:
        return len(self.book_batches)

    def step_tokens(self, step: int) -> int:
        """Tokens of the samples of a step (the same in both ways: the work, without padding)."""
        return int((self.book_batches[step][1] != -100).sum())

    def book_window_tokens(self, i: int) -> int:
        """Tokens the book's loop computes for prompt ``i``: its window at every step."""
        p, calls = len(self.prompts[i]), min(self.answer_tokens[i] + 1, 256)
        return calls * p + calls * (calls - 1) // 2


def build_job(model_name: str, device: torch.device, data_dir: Path) -> Job:
    tokenizer = get_gpt2_tokenizer()
    data = download_and_load_file(data_dir / "instruction-data.json", DATASET_URL)
    train, test, val = split_data(data)
    published = download_and_load_file(data_dir / "instruction-data-with-response.json",
                                       DATASET_WITH_RESPONSE_URL)
    if [e["instruction"] for e in published] != [e["instruction"] for e in test]:
        raise SystemExit("As respostas publicadas do livro não correspondem ao conjunto de teste.")
    style = get_prompt_style("alpaca")
    prompts = [encode_text(tokenizer, style.prompt(e)) for e in test]
    answer_tokens = [len(encode_text(tokenizer, style.response_prefix + e["model_response"])) for e in published]
    profile = load_profile("completo")
    prepared = PreparedData(train, val, test, tokenizer)
    train_set = InstructionDataset(train, tokenizer)
    # The book's loader (ch. 7): seed 123, shuffled, padded, drop_last; two epochs of it.
    torch.manual_seed(profile.seed)
    book_loader = DataLoader(train_set, batch_size=profile.batch_size, shuffle=True, drop_last=True,
                             collate_fn=partial(custom_collate_fn, device=device, allowed_max_length=1024))
    book_batches = [b for _ in range(profile.num_epochs) for b in book_loader]
    course_loader = make_loaders(profile, prepared, device)[0]          # seeds 123 itself
    course_batches = [b for _ in range(profile.num_epochs) for b in course_loader]
    for a, b in zip(book_batches, course_batches):                      # the same samples per step
        assert int((a[1] != -100).sum()) == int((b[1] != -100).sum())
    evaluations = math.ceil(len(book_batches) / profile.eval_freq)       # steps 0, 5, 10, ...
    return Job(model_name, train_set, prepared, book_batches, course_batches, evaluations, prompts,
               answer_tokens, profile.num_epochs)


# --------------------------------------------------------------------------- the two ways

@dataclass
class WayCosts:
    """What one way spent in the measured slices, and the work those slices held."""

    steps: Cost = field(default_factory=Cost)
    step_count: int = 0
    step_tokens: int = 0
    evaluation: Cost = field(default_factory=Cost)
    samples: Cost = field(default_factory=Cost)
    generation: Cost = field(default_factory=Cost)
    generation_units: int = 0               # book: window tokens; course: prompts answered
    answers: Dict[int, str] = field(default_factory=dict)


def run_slice(way: str, clock: Clock, job: Job, model, optimizer, start: int, val_loader, profile,
              label: Optional[str] = None) -> None:
    """``SLICE_STEPS`` steps of the job from ``start`` through the way's real loop (1 evaluation, 1 sample).

    Costs go to ``<label>:slice``, ``<label>:eval`` and ``<label>:sample`` (label: the way).
    """
    label = label or way
    start_context = get_prompt_style("alpaca").prompt(job.prepared.val[0])
    module = training if way == "book" else trainer
    targets = {f"{label}:eval": (module, "evaluate_model" if way == "book" else "evaluate"),
               f"{label}:sample": (module, "generate_and_print_sample")}
    with clock.instrument(targets), clock.measure(f"{label}:slice"), contextlib.redirect_stdout(io.StringIO()):
        if way == "book":
            training.train_model_simple(model, SliceLoader(job.book_batches[start:start + SLICE_STEPS]),
                                        val_loader, optimizer, clock.device, num_epochs=1,
                                        eval_freq=profile.eval_freq, eval_iter=profile.eval_iter,
                                        start_context=start_context, tokenizer=job.prepared.tokenizer)
        else:
            trainer.train_model(model, SliceLoader(job.course_batches[start:start + SLICE_STEPS]),
                                val_loader, optimizer, clock.device, num_epochs=1,
                                eval_freq=profile.eval_freq, eval_iter=profile.eval_iter,
                                start_context=start_context, tokenizer=job.prepared.tokenizer,
                                precision=profile.precision, progress=False, log=lambda _: None)


def book_generation(clock: Clock, job: Job, scripted: ScriptedStop, indices: Sequence[int],
                    costs: WayCosts) -> None:
    """The book: one prompt at a time, the whole window at every token (ch. 7's call)."""
    tokenizer = job.prepared.tokenizer
    for i in indices:
        with clock.measure("book:generation"):
            ids = torch.tensor([job.prompts[i]], device=clock.device)
            out = generate(scripted, ids, max_new_tokens=256, context_size=scripted.context_length,
                           eos_id=END_OF_TEXT_ID, use_cache=False)
        costs.answers[i] = extract_response(tokenizer.decode(out[0, ids.shape[1]:].tolist()))
        costs.generation_units += job.book_window_tokens(i)


def course_generation(clock: Clock, key: str, job: Job, scripted: ScriptedStop, entries: Sequence[dict],
                      batch_size: int, between: Optional[Callable[[int], None]] = None) -> List[str]:
    """The course: ``generate_responses`` (continuous batching, KV cache, shared prefix), fp32.

    ``between(n)`` runs after the n-th answer (the book's prompts, interleaved); its time
    is measured under its own keys and taken out of ``key``.
    """
    scripted.eval()
    nested = Clock(clock.device)
    finished = []

    def on_answer(answers: Dict[int, str]) -> None:
        finished.extend(answers)
        if between is not None:
            with nested.measure("between"):
                between(len(finished))

    with clock.measure(key):
        answers = generate_responses(scripted, job.prepared.tokenizer, entries, max_new_tokens=256,
                                     batch_size=batch_size, progress=False, on_batch=on_answer)
    clock.costs[key] = clock.get(key) - nested.get("between")
    return answers


def compile_check(clock: Clock, job: Job, model, optimizer, val_loader, profile, scripted: ScriptedStop,
                  starts: Sequence[int]) -> Dict[str, float]:
    """``torch.compile`` in the course's way: first runs (compilation included), then compiled
    against eager, alternated (``torch.compiler.set_stance``), on the same slices and prompts."""
    entries = job.prepared.test[:16]
    run = partial(run_slice, "course", clock, job, model, optimizer, val_loader=val_loader, profile=profile)
    gen = partial(course_generation, clock, job=job, scripted=scripted, entries=entries,
                  batch_size=profile.generation_batch_size)
    trainer.compile_model(model)
    with clock.measure("compile:first"):
        run(starts[0], label="compiled-first")
        gen("compiled-first:generation")
    for k in range(2):
        start = starts[(k + 1) % len(starts)]
        with torch.compiler.set_stance("force_eager"):
            model.split_packed_attention = True          # eager at its best: attention by sample
            run(start, label="eager")
            gen("eager:generation")
        model.split_packed_attention = False
        run(start, label="compiled")
        gen("compiled:generation")
    out = {}
    for label in ("eager", "compiled", "compiled-first"):
        evaluation, samples = clock.get(f"{label}:eval"), clock.get(f"{label}:sample")
        out[f"{label}_steps_s"] = (clock.get(f"{label}:slice") - evaluation - samples).wall
        out[f"{label}_eval_s"] = evaluation.wall
        out[f"{label}_generation_s"] = clock.get(f"{label}:generation").wall
    out["first_s"] = clock.get("compile:first").wall
    # Compilation = what the first compiled slice and answers took beyond a steady compiled one.
    out["compile_overhead_s"] = out["first_s"] - (out["compiled_steps_s"] + out["compiled_eval_s"]
                                                  + out["compiled_generation_s"]) / 2
    return out


def spread(count: int, total: int, width: int = 1) -> List[int]:
    """``count`` starts spread evenly over ``range(total - width + 1)``."""
    last = total - width
    return sorted({round((k + 0.5) * last / count) for k in range(count)}) if count else []


# --------------------------------------------------------------------------- precision checks

def bf16_against_fp32(clock: Clock, model, batch) -> Dict[str, float]:
    """Loss of one packed batch under bf16 autocast against fp32, and one training step's cost in each."""
    model.train()
    out: Dict[str, float] = {}
    for precision in ("fp32", "bf16", "fp32", "bf16"):       # alternated: load hits both
        model.zero_grad(set_to_none=True)
        clock.sync()
        start, cpu = time.perf_counter(), time.process_time()
        with autocast(clock.device, precision):
            loss, count = trainer.loss_sum_and_count(batch, model, clock.device)
        (loss / count).backward()
        clock.sync()
        out[f"{precision}_step_cpu"] = min(out.get(f"{precision}_step_cpu", 1e9), time.process_time() - cpu)
        out[f"{precision}_step_wall"] = min(out.get(f"{precision}_step_wall", 1e9), time.perf_counter() - start)
        out[f"{precision}_loss"] = loss.item() / count
    model.zero_grad(set_to_none=True)
    out["relative_loss_difference"] = abs(out["bf16_loss"] - out["fp32_loss"]) / out["fp32_loss"]
    return out


def isa_emulations(quick: bool) -> List[dict]:
    """GEMM rates in child processes as this CPU, and capped below its bf16 instructions."""
    runs = [{}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}]
    if not quick:
        runs.append({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
    results = []
    for extra in runs:
        env = {**os.environ, **extra}
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gemm_rates.py")], env=env,
                              capture_output=True, text=True, timeout=600)
        if done.returncode == 0:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


# --------------------------------------------------------------------------- report

def fmt(seconds: float) -> str:
    """Seconds as a short pt-BR duration."""
    if seconds >= 3600:
        return f"{format_decimal(seconds / 3600, 2)} h"
    if seconds >= 60:
        return f"{format_decimal(seconds / 60, 1)} min"
    return f"{format_decimal(seconds, 1)} s"


def ratio(a: float, b: float) -> str:
    return f"{format_decimal(a / b, 1)}x" if b > 0 else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="gpt2-medium (padrão) ou gpt2-small (--quick)")
    parser.add_argument("--quick", action="store_true", help="CI: gpt2-small, 1 rodada, poucos prompts")
    parser.add_argument("--rounds", type=int, default=None, help="fatias de 5 passos + 1 avaliação, por modo")
    parser.add_argument("--book-prompts", type=int, default=None, help="prompts de teste gerados à moda do livro")
    parser.add_argument("--test-items", type=int, default=None, help="itens de teste do modo do curso (padrão: 110)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", default=None, help="precisão do modo do curso (padrão: a do Profile, 'auto')")
    parser.add_argument("--attention", choices=("amostras", "mascara"), default="amostras",
                        help="lotes empacotados: atenção amostra por amostra (padrão) ou uma máscara por linha")
    parser.add_argument("--compile-check", action="store_true",
                        help="mede torch.compile no modo do curso (compilação + passos, avaliação, geração)")
    parser.add_argument("--no-tune-allocator", action="store_true", help="sem device.tune_cpu_allocator()")
    parser.add_argument("--json", default=None, help="arquivo JSON com todos os números")
    args = parser.parse_args(argv)
    quick = args.quick
    model_name = args.model or ("gpt2-small" if quick else "gpt2-medium")
    rounds = args.rounds or (1 if quick else 4)
    book_prompts = args.book_prompts or (2 if quick else 8)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    tuned = False if args.no_tune_allocator or device.type != "cpu" else tune_cpu_allocator()
    profile = load_profile("completo")
    if args.precision:
        profile = replace(profile, precision=args.precision)
    run_start, load_start = time.perf_counter(), load_average()

    print(f"Benchmark do trabalho inteiro: {model_name}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; carga média no início: {load_start}")
    print(f"    CPU: {platform.processor() or platform.machine()}; bf16 nativo: {cpu_has_native_bf16()}; "
          f"alocador ajustado: {tuned}; THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}")
    precision = choose_precision(device, profile.precision)
    print(f"    modo do curso: precisão {profile.precision} -> {precision}, lotes {profile.batching}, "
          f"AdamW fundido={profile.fused_optimizer}, compile={profile.compile}, "
          f"geração em lotes de {profile.generation_batch_size}")
    peaks = {"fp32": matmul_rate(device, torch.float32, 5), "bf16": matmul_rate(device, torch.bfloat16, 5)}
    print(f"[1] pico de multiplicação de matrizes (412x1024x4096): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")

    with tempfile.TemporaryDirectory() as data_dir:
        job = build_job(model_name, device, Path(data_dir))
    lengths = job.answer_tokens
    print(f"[2] o trabalho: {job.steps} passos ({len(job.train_set)} itens, {job.epochs} épocas, lotes de 8), "
          f"{job.evaluations} avaliações de 5+5 lotes, {job.epochs} amostras de fim de época, "
          f"{len(job.prompts)} respostas de teste (até 256 tokens; fim forçado onde termina a resposta publicada "
          f"do livro: média {format_decimal(sum(lengths) / len(lengths), 1)}, máx. {max(lengths)} tokens)")

    torch.manual_seed(profile.seed)
    model = GPTModel(get_config(model_name)).to(device)
    model.split_packed_attention = args.attention == "amostras"
    n_matmul = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "emb" not in name)
    book_opt = torch.optim.AdamW(model.parameters(), lr=0.00005, weight_decay=0.1)      # the book's
    course_opt = trainer.make_optimizer(model, lr=profile.learning_rate, weight_decay=profile.weight_decay,
                                        fused=profile.fused_optimizer)
    book_val = DataLoader(InstructionDataset(job.prepared.val, job.prepared.tokenizer), batch_size=8,
                          shuffle=False, drop_last=False,
                          collate_fn=partial(custom_collate_fn, device=device, allowed_max_length=1024))
    course_val = make_loaders(profile, job.prepared, device)[1]
    clock = Clock(device)
    book, course = WayCosts(), WayCosts()
    # Generation uses a copy of the weights as they are now: training slices change the
    # model between rounds, and both ways must answer with the same weights.
    scripted = ScriptedStop(copy.deepcopy(model), job.prompts, job.answer_tokens)

    # 3. Rounds: a slice the book's way, the same slice the course's way, a few book prompts;
    #    the course's test-set generation in the middle of the rounds.
    starts = spread(rounds, job.steps, SLICE_STEPS)
    test_items = min(args.test_items or len(job.prompts), len(job.prompts))
    by_length = sorted(range(test_items), key=lambda i: len(job.prompts[i]))
    chosen = [by_length[k] for k in spread(min(book_prompts, test_items), test_items)]
    print(f"[3] medindo: {len(starts)} rodadas (passos {', '.join(str(s) for s in starts)} + 4), "
          f"{len(chosen)} prompts à moda do livro, {test_items} respostas à moda do curso")
    for r, start in enumerate(starts):
        run_slice("book", clock, job, model, book_opt, start, book_val, profile)
        run_slice("course", clock, job, model, course_opt, start, course_val, profile)
        for steps in range(start, start + SLICE_STEPS):
            book.step_tokens += job.step_tokens(steps)
        print(f"    rodada {r + 1}: livro {fmt(clock.get('book:slice').wall)}, "
              f"curso {fmt(clock.get('course:slice').wall)} (acumulado)", flush=True)
        if r == (len(starts) - 1) // 2:
            # The course answers the test set; after every few of its answers, one prompt the
            # book's way (its time measured apart): the two alternate as the load changes.
            entries = job.prepared.test[:test_items]
            after = {round((k + 0.5) * len(entries) / len(chosen)): i for k, i in enumerate(chosen)}

            def book_prompt(answered: int) -> None:
                if answered in after:
                    book_generation(clock, job, scripted, [after[answered]], book)

            answers = course_generation(clock, "course:generation", job, scripted, entries,
                                        profile.generation_batch_size, between=book_prompt)
            course.answers = dict(enumerate(answers))
            course.generation_units = len(entries)
            print(f"    geração, intercalada: curso {len(entries)} respostas em "
                  f"{fmt(clock.get('course:generation').wall)}, livro {len(book.answers)} prompts em "
                  f"{fmt(clock.get('book:generation').wall)}", flush=True)
    course.step_tokens = book.step_tokens
    for way, costs in (("book", book), ("course", course)):
        costs.evaluation = clock.get(f"{way}:eval")
        costs.samples = clock.get(f"{way}:sample")
        costs.steps = clock.get(f"{way}:slice") - costs.evaluation - costs.samples
        costs.step_count = len(starts) * SLICE_STEPS
        costs.generation = clock.get(f"{way}:generation")

    # 4. Scale each stage to the whole job.
    all_tokens = sum(job.step_tokens(s) for s in range(job.steps))
    book_units = sum(job.book_window_tokens(i) for i in range(len(job.prompts)))
    course_gen_scale = len(job.prompts) / course.generation_units

    def whole(costs: WayCosts, generation_scale: float) -> Dict[str, Cost]:
        return {"treino (passos)": costs.steps.scaled(all_tokens / costs.step_tokens),
                "avaliações": costs.evaluation.scaled(job.evaluations / max(1, costs.evaluation.calls)),
                "amostras de fim de época": costs.samples.scaled(job.epochs / max(1, costs.samples.calls)),
                "geração do teste": costs.generation.scaled(generation_scale)}

    book_job = whole(book, book_units / book.generation_units)
    course_job = whole(course, course_gen_scale)
    same = [i for i in book.answers if book.answers[i] == course.answers.get(i)]
    identical = len(same) == len(book.answers)
    print("[4] o trabalho inteiro, estimado a partir do medido (parede; CPU deste processo entre parênteses)")
    print(f"    {'etapa':28s} {'livro':>22s} {'curso':>22s} {'razão':>8s} {'razão CPU':>10s}")
    totals = {"book": Cost(), "course": Cost()}
    rows = {}
    for stage in book_job:
        b, c = book_job[stage], course_job[stage]
        totals["book"], totals["course"] = totals["book"] + b, totals["course"] + c
        rows[stage] = {"book_s": b.wall, "course_s": c.wall, "book_cpu_s": b.cpu, "course_cpu_s": c.cpu,
                       "ratio": b.wall / c.wall if c.wall else None, "ratio_cpu": b.cpu / c.cpu if c.cpu else None}
        print(f"    {stage:28s} {fmt(b.wall) + ' (' + fmt(b.cpu) + ')':>22s} "
              f"{fmt(c.wall) + ' (' + fmt(c.cpu) + ')':>22s} {ratio(b.wall, c.wall):>8s} {ratio(b.cpu, c.cpu):>10s}")
    b, c = totals["book"], totals["course"]
    print(f"    {'TRABALHO INTEIRO':28s} {fmt(b.wall) + ' (' + fmt(b.cpu) + ')':>22s} "
          f"{fmt(c.wall) + ' (' + fmt(c.cpu) + ')':>22s} {ratio(b.wall, c.wall):>8s} {ratio(b.cpu, c.cpu):>10s}")
    print(f"    medido de fato: {book.step_count} passos de cada modo ({book.step_tokens} de {all_tokens} tokens), "
          f"{book.evaluation.calls} + {course.evaluation.calls} avaliações, {len(book.answers)} prompts à moda do "
          f"livro ({book.generation_units} de {book_units} tokens de janela), {course.generation_units} à moda do "
          f"curso; o resto é ESTIMADO pelo custo medido por unidade de trabalho")
    print(f"    saídas gulosas fp32 idênticas nos {len(book.answers)} prompts gerados dos dois modos: "
          f"{'SIM' if identical else 'NÃO (' + str(len(same)) + ' iguais)'}")

    # 5. bf16 against fp32: the loss (tolerance) and one training step's cost in each.
    check = bf16_against_fp32(clock, model, job.course_batches[starts[0]])
    print(f"[5] bf16 autocast × fp32, um lote empacotado do trabalho: perda fp32 {format_decimal(check['fp32_loss'], 5)}, "
          f"bf16 {format_decimal(check['bf16_loss'], 5)} (diferença relativa "
          f"{format_decimal(100 * check['relative_loss_difference'])} %, "
          f"tolerância {100 * BF16_LOSS_TOLERANCE:.0f} %); um passo: fp32 {fmt(check['fp32_step_wall'])} "
          f"(CPU {fmt(check['fp32_step_cpu'])}), bf16 {fmt(check['bf16_step_wall'])} "
          f"(CPU {fmt(check['bf16_step_cpu'])})")
    emulated = isa_emulations(quick) if device.type == "cpu" else []
    for run in emulated:
        rates = run["gflops"]["mlp 412x1024x4096"]
        print(f"    produto de matrizes 412x1024x4096 como CPU {'limitada a ' + run['isa_cap'] if run['isa_cap'] else 'desta máquina'}: "
              f"fp32 {rates['fp32']:.0f}, bf16 {rates['bf16']:.0f} GFLOP/s -> choose_precision('auto') = {run['auto']}")

    compiled = None
    if args.compile_check:
        compiled = compile_check(clock, job, model, course_opt, course_val, profile, scripted, starts)
        speed = {stage: compiled[f"eager_{key}_s"] / compiled[f"compiled_{key}_s"]
                 for stage, key in (("treino (passos)", "steps"), ("avaliações", "eval"),
                                    ("geração do teste", "generation"))}
        with_compile = compiled["compile_overhead_s"] + sum(
            cost.wall / speed.get(stage, 1.0) for stage, cost in course_job.items())
        print(f"[5b] torch.compile (blocos, dynamic=True) no modo do curso: primeira fatia + 16 respostas "
              f"{fmt(compiled['first_s'])}, dos quais ~{fmt(compiled['compile_overhead_s'])} de compilação")
        print("     compilado × eager, alternados (2 fatias e 2x16 respostas cada): " + ", ".join(
            f"{stage} {format_decimal(value, 2)}x" for stage, value in speed.items()))
        print(f"     trabalho do curso com compile: ~{fmt(with_compile)} contra {fmt(c.wall)} sem: "
              f"{'compensa' if with_compile < c.wall else 'NÃO compensa'} (compilação incluída)")
        compiled.update({"speedups": speed, "job_with_compile_s": with_compile, "job_without_s": c.wall})

    # 6. Goals, and what limits a ratio below its goal.
    end_peaks = {p: matmul_rate(device, dtype, 5) for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"    pico no fim: fp32 {end_peaks['fp32'] / 1e9:.0f}, bf16 {end_peaks['bf16'] / 1e9:.0f} GFLOP/s "
          "(a diferença do início mostra quanto a carga da máquina mudou; vale o maior)")
    peaks = {p: max(peaks[p], end_peaks[p]) for p in peaks}
    stage_goal = {"treino (passos)": "train", "avaliações": "eval", "geração do teste": "generation"}
    print("[6] metas (razões de tempo de parede nesta execução)" + (" — modo rápido: gpt2-small e poucas "
                                                                     "medidas; as metas valem para o completo" if quick else ""))
    useful = {"treino (passos)": 6 * n_matmul * all_tokens,
              "avaliações": 2 * n_matmul * job.evaluations * 10 * (all_tokens / job.steps)}
    goal_rows = [("trabalho inteiro", b.wall / c.wall, GOALS["job"])]
    goal_rows += [(stage, rows[stage]["ratio"], GOALS[key]) for stage, key in stage_goal.items()]
    for label, value, goal in goal_rows:
        print(f"    {label:28s} {format_decimal(value, 1):>6s}x  meta >= {goal:.0f}x  "
              f"{'ok' if value >= goal else 'NÃO ALCANÇADA'}")
    print(f"    saídas gulosas fp32 idênticas: {'ok' if identical else 'NÃO'}; perda bf16 a "
          f"{format_decimal(100 * check['relative_loss_difference'])} % da fp32: "
          f"{'ok' if check['relative_loss_difference'] <= BF16_LOSS_TOLERANCE else 'NÃO'}")
    print("    o que limita cada etapa (uso do pico medido em [1], parte do tempo do trabalho):")
    for stage in book_job:
        share_b, share_c = book_job[stage].wall / b.wall, course_job[stage].wall / c.wall
        line = f"      {stage}: {100 * share_b:.0f} % do livro, {100 * share_c:.0f} % do curso"
        if stage in useful:
            course_peak = peaks[precision] if precision in peaks else peaks["fp32"]
            line += (f"; FLOP úteis a {100 * useful[stage] / book_job[stage].wall / peaks['fp32']:.0f} % do pico "
                     f"fp32 no livro e {100 * useful[stage] / course_job[stage].wall / course_peak:.0f} % do pico "
                     f"{precision} no curso")
        if stage == "geração do teste":
            shared = len(common_prefix(job.prompts))
            course_tokens = shared + sum(len(p) - shared + min(n, 256) for p, n in zip(job.prompts, job.answer_tokens))
            line += (f"; tokens calculados: {format_thousands(book_units)} no livro (a janela inteira a cada token) e "
                     f"{format_thousands(course_tokens)} no curso (prefixo comum uma vez, cache KV): {book_units / course_tokens:.0f}x "
                     "menos trabalho, o teto da razão com a mesma eficiência; a decodificação em lotes de "
                     "poucas linhas aproveita menos o pico do que as janelas longas do livro")
        print(line)
    elapsed = time.perf_counter() - run_start
    print(f"    duração do benchmark: {fmt(elapsed)}; carga média: início {load_start}, fim {load_average()}")

    if args.json:
        from llmdefinitions.io import write_json_atomic

        write_json_atomic(args.json, {
            "model": model_name, "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "quick": quick, "allocator_tuned": tuned,
            "load_average": {"start": load_start, "end": load_average()}, "precision": precision,
            "matmul_peak_flops": peaks, "job": {"steps": job.steps, "evaluations": job.evaluations,
                                                "test_prompts": len(job.prompts), "tokens": all_tokens,
                                                "book_window_tokens": book_units},
            "measured": {"book": {**asdict(book), "answers": None}, "course": {**asdict(course), "answers": None}},
            "stages": rows, "whole_job": {"book_s": b.wall, "course_s": c.wall, "ratio": b.wall / c.wall,
                                          "book_cpu_s": b.cpu, "course_cpu_s": c.cpu},
            "identical_outputs": identical, "bf16_check": check, "isa_emulations": emulated,
            "compile_check": compiled, "attention": args.attention,
            "goals": GOALS, "elapsed_s": elapsed}, indent=2)
    # Speed goals are reported, not enforced (they depend on the load); correctness is enforced.
    if not identical or check["relative_loss_difference"] > BF16_LOSS_TOLERANCE:
        print("ERRO: saídas gulosas fp32 diferentes entre os modos, ou perda bf16 fora da tolerância.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
