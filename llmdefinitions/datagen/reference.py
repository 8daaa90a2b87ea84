"""Measured reference: Self-Instruct and Magpie with SmolLM2-135M-Instruct on a CPU (labelled, not recomputed).

These numbers were measured once, with the commands in each :class:`ReferenceRun`,
against llama-cpp-python 0.3.36's server (``tools/start_llm_server.sh``: SmolLM2-135M-Instruct,
Q4_1 GGUF, ``--n_ctx 2048``) on a shared 2-core AMD EPYC (load average about 12
during the runs: other jobs shared the CPU, so the speed is a lower bound). The
examples are the **first three kept items** of each run, as the model wrote them
(``sinteticos-<método>.json``). A notebook shows them in place of a run it cannot
do in CI; they are a reference for what a 135M model produces, not a target.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..stats import format_decimal
from .filters import RULES

SERVER = "llama-cpp-python 0.3.36 (llama_cpp.server), SmolLM2-135M-Instruct Q4_1"
MACHINE = "CPU AMD EPYC de 2 núcleos, compartilhada (carga média ~12 nas medidas)"


@dataclass(frozen=True)
class ReferenceRun:
    """One measured run: the command, the counts by reason and the first kept items."""

    label: str
    command: str
    n_requested: int
    n_kept: int
    seconds: float
    dropped: Dict[str, int]
    examples: Tuple[Dict[str, str], ...]

    @property
    def share_kept(self) -> float:
        return self.n_kept / self.n_requested

    @property
    def items_per_minute(self) -> float:
        return 60.0 * self.n_requested / self.seconds


_URL = "--url http://127.0.0.1:8081/v1/chat/completions --modelo smollm2"
RUNS: Tuple[ReferenceRun, ...] = (
    ReferenceRun(
        label="Self-Instruct",
        command=f"python -m llmdefinitions gerar-dados --metodo self-instruct -n 30 {_URL} --saida /tmp/dg-medida/si",
        n_requested=30, n_kept=25, seconds=577.36,
        dropped={"exact_duplicate": 4, "rouge_l": 1},
        examples=(
            {"instruction": "Solve the mathematical equation 3x + 2y = 15.", "input": "",
             "output": "To solve this equation, we can use the method of elimination. We add 3x to both sides of "
                       "the equation and then subtract "},
            {"instruction": "Generate 20 random numbers within the range of 1 to 5.", "input": "",
             "output": "1. 20\n2. 35"},
            {"instruction": "Which of the following names is a synonym for 'relaxed'.", "input": "",
             "output": "A synonym for 'relaxed' is \"energized\"."},
        )),
)


def print_summary() -> None:
    """The runs as a pt-BR table: items, kept, share, speed and why the rest was dropped."""
    print(f"{'método':28} itens mantidos parcela itens/min")
    for run in RUNS:
        print(f"{run.label:28} {run.n_requested:5} {run.n_kept:8} {format_decimal(100 * run.share_kept, 1):>5} %"
              f" {format_decimal(run.items_per_minute, 1):>9}")
        reasons = ", ".join(f"{RULES[rule]} {count}" for rule, count in
                            sorted(run.dropped.items(), key=lambda item: -item[1]))
        print(textwrap.fill(f"descartes: {reasons}", 78, initial_indent="  ", subsequent_indent="    "))
    print(f"Servidor: {SERVER}.\n{MACHINE}.")


def print_examples(label: Optional[str] = None, width: int = 76, max_lines: int = 3) -> None:
    """The first kept items of each run (or of the run called ``label``); long responses cut, marked ``[…]``."""
    for run in RUNS:
        if label is not None and run.label != label:
            continue
        print(f"— {run.label}")
        for number, entry in enumerate(run.examples, start=1):
            prompt = entry["instruction"] + (f" | entrada: {entry['input']}" if entry["input"] else "")
            print(textwrap.fill(f"{number}. {prompt}", width, subsequent_indent="   "))
            lines = textwrap.wrap(" ".join(entry["output"].split()), width - 5)
            shown = lines[:max_lines] + (["[…]"] if len(lines) > max_lines else [])
            print("\n".join("   → " + line for line in shown))


__all__ = ["ReferenceRun", "RUNS", "SERVER", "MACHINE", "print_summary", "print_examples"]
