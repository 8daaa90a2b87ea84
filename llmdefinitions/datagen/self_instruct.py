"""Self-Instruct (Wang et al., 2023, arXiv 2212.10560), as Alpaca ran it: seed tasks → new tasks → responses.

A few-shot prompt lists some **seed tasks** (written by people; here, samples of
the course's dataset) as a numbered list and leaves the next number open; the
model continues the list with a new task (raw completion, one line). A second
request asks for the response. As in Alpaca's script, the examples of each
prompt are drawn from the seed tasks only (item *i* draws with ``seed + i``), so
every item's prompt is known in advance and a rerun repeats no request. The
novelty filter (ROUGE-L against the pool) is applied afterwards, in
:mod:`.filters`.
"""
from __future__ import annotations

import random
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .candidates import Candidate, collect
from .requests import CachedRequests, user_message

PROMPT_HEADER = "Come up with a series of tasks:"
INPUT_MARKER = " Input: "
NUM_EXAMPLES = 6
INSTRUCTION_OPTIONS: Dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "num_predict": 128,
                                       "stop": ["\n", "Task "]}
RESPONSE_OPTIONS: Dict[str, Any] = {"temperature": 0.0, "num_predict": 256}


def task_line(entry: Mapping[str, str]) -> str:
    """A seed task on one line: the instruction, then ``Input: ...`` when it has one."""
    text = " ".join(entry["instruction"].split())
    if entry.get("input"):
        text += INPUT_MARKER + " ".join(entry["input"].split())
    return text


def build_self_instruct_prompt(examples: Sequence[Mapping[str, str]]) -> str:
    """The few-shot prompt: a header, the examples numbered ``Task 1:`` ..., and the next number open."""
    lines = [PROMPT_HEADER, ""]
    lines += [f"Task {number}: {task_line(entry)}" for number, entry in enumerate(examples, start=1)]
    lines.append(f"Task {len(examples) + 1}:")
    return "\n".join(lines)


def parse_task(text: str) -> Tuple[str, str]:
    """``(instruction, input)`` of a generated task line (split at ``Input:``, as the examples show it)."""
    text = text.strip()
    instruction, marker, input_text = text.partition(INPUT_MARKER.strip())
    if not marker:
        return text, ""
    return instruction.strip(), input_text.strip()


def sample_examples(seed_tasks: Sequence[Mapping[str, str]], k: int, seed: int) -> List[Mapping[str, str]]:
    """``k`` seed tasks drawn without replacement with ``random.Random(seed)``."""
    if not seed_tasks:
        raise ValueError("O Self-Instruct precisa de tarefas-semente: a lista recebida está vazia.")
    return random.Random(seed).sample(list(seed_tasks), min(k, len(seed_tasks)))


def generate_self_instruct(requests: CachedRequests, seed_tasks: Sequence[Mapping[str, str]], n: int, *,
                           num_examples: int = NUM_EXAMPLES, seed: int = 123,
                           instruction_options: Optional[Mapping[str, Any]] = None,
                           response_options: Optional[Mapping[str, Any]] = None,
                           progress: bool = True) -> List[Candidate]:
    """``n`` Self-Instruct candidates; item *i* draws its examples and samples its task with ``seed + i``."""
    def make_one(index: int) -> Candidate:
        prompt = build_self_instruct_prompt(sample_examples(seed_tasks, num_examples, seed + index))
        options = {**INSTRUCTION_OPTIONS, **(instruction_options or {}), "seed": seed + index}
        raw_task = requests.complete(prompt, options)
        instruction, input_text = parse_task(raw_task)
        candidate = Candidate(index, "self-instruct", instruction=instruction, input=input_text,
                              raw={"instruction": raw_task})
        if instruction:
            answer_options = {**RESPONSE_OPTIONS, **(response_options or {}), "seed": seed}
            candidate.output = requests.chat(user_message(instruction, input_text), answer_options).strip()
        return candidate

    return collect(n, make_one, method="self-instruct", progress=progress,
                   desc=f"Self-Instruct ({requests.client.model})")


__all__ = ["PROMPT_HEADER", "NUM_EXAMPLES", "INSTRUCTION_OPTIONS", "RESPONSE_OPTIONS", "task_line",
           "build_self_instruct_prompt", "parse_task", "sample_examples", "generate_self_instruct"]
