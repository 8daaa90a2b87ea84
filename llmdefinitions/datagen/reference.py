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
from .templates import SMOLLM2_SYSTEM

SERVER = "SmolLM2-135M-Instruct (Q4_1) no llama-cpp-python 0.3.36"
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
        command=(f"python -m llmdefinitions gerar-dados --metodo self-instruct -n 30 {_URL} "
                f"--saida /tmp/dg-medida/si"),
        n_requested=30, n_kept=25, seconds=577.36,
        dropped={"exact_duplicate": 4, "rouge_l": 1},
        examples=(
            {"instruction": "Solve the mathematical equation 3x + 2y = 15.",
             "input": "",
             "output": ("To solve this equation, we can use the method of elimination. We add 3x to both "
                        "sides of the equation and then subtract it from both sides to eliminate the frac"
                        "tion with a denominator that is not divisible by 2 (in this case, 15).\n\nThis pro"
                        "cess involves subtracting the fractions with denominators that are multiples of "
                        "2:\n\n3(x + y) - 3y = 3x - 3y\n-4x/2 + 8y = -6x/2\n\nNow we can combine like terms to"
                        " get rid of the fraction with a denominator that is not divisible by 2. This giv"
                        "es us:\n\n(-10)(x) + (5(7)) = (-10)*3 + 4*5 = 90 - 45 = 16\n\nSo, the solution to th"
                        "e equation 3x + 2y = 15 is x = 8 and y = 1.")},
            {"instruction": "Generate 20 random numbers within the range of 1 to 5.",
             "input": "",
             "output": "1. 20\n2. 35"},
            {"instruction": "Which of the following names is a synonym for 'relaxed'.",
             "input": "",
             "output": "A synonym for 'relaxed' is \"energized\"."},
        )),
    ReferenceRun(
        label="Magpie",
        command=(f"python -m llmdefinitions gerar-dados --metodo magpie -n 30 {_URL} "
                f"--saida /tmp/dg-medida/mp"),
        n_requested=30, n_kept=14, seconds=742.65,
        dropped={"modality": 5, "punctuation": 11},
        examples=(
            {"instruction": ("Write a function that calculates the number of days in a given month.\n*  14, Jan"
                             "uary, February is 28 days long (February). So the answer will be: `5days`"),
             "input": "",
             "output": ("```python\ndef days_in_month(year, month):\n    return (14 - ((28 * 3) % 7)) + 5\n\n"
                        "print(days_in_month(2024, 1))  # Output: 6 months in 28 days = 5.6 weeks in 9 ho"
                        "urs\n```")},
            {"instruction": ("1. The primary function of the cell wall is to provide structural support and pr"
                             "otection for plant cells, which are crucial in their role as essential organelle"
                             "s.\n\n2. Plant cells have a cell wall that serves multiple purposes: it provides p"
                             "hysical barriers against water and solutes, acts as a scaffold, and protects cel"
                             "ls from damage by mechanical agents (e.g., enzymes).\n3. The structure of the cel"
                             "l walls is designed to resist dehydration, which is particularly evident in plan"
                             "t cell membranes.\n4. Cellulose polymers are an essential component of the cellul"
                             "ose matrix found within plant cell walls. These polysaccharides provide rigidity"
                             " and tensile strength as well"),
             "input": "",
             "output": ("1. The primary function of the cell wall is to provide structural support and pr"
                        "otection for plant cells, which are crucial in their role as essential organelle"
                        "s.\n2. Plant cells have a cell wall that serves multiple purposes: it provides ph"
                        "ysical barriers against water and solutes, acts as a scaffold, and protects cell"
                        "s from damage by mechanical agents (e.g., enzymes).\n3. The structure of the cell"
                        " walls is designed to resist dehydration, which is particularly evident in plant"
                        " cell membranes. This process involves cellulose polymers, which provide rigidit"
                        "y and tensile strength.\n4. Cellulose polysaccharides are an essential component "
                        "of the cellulose matrix found within plant cell walls that supports cellular int"
                        "egrity and maintains structural stability.")},
            {"instruction": ("In the previous example, I created a Python script that uses `assert` to validat"
                             "e each element of an array and return it. If any error occurs while validating a"
                             "n element is added or removed from an array would be logged in debug mode with h"
                             "elp by `print`. However, if you have multiple values for an element you could on"
                             "ly iterate over the elements once to calculate their sum without using a loop or"
                             " recursion (this is not allowed).\n\nTo validate each element of an array and retu"
                             "rn it:\n1. Define a function called \"validate_array\" that takes an argument `iter"
                             "able` which will be used as input"),
             "input": "",
             "output": ("Here is a Python function that uses `assert` to validate each element of an arra"
                        "y and return it:\n```python\ndef validate_array(iterable):\n    assert isinstance(i"
                        "terable, list), \"The input must be a list\"\n\n    for value in iterable:\n        i"
                        "f isinstance(value, int) or isinstance(value, float):\n            continue\n\n    "
                        "    try:\n            sum = 0.0\n            for element in value:\n               "
                        " sum += element\n\n            return value[1] + sum\n    raise ValueError(\"Invalid"
                        " element\")\n```\nThis function uses `assert` to validate each element of an array "
                        "and returns it by iterating over the elements once, adding their sum if possible"
                        " (using a loop), and returning that result.")},
        )),
    ReferenceRun(
        label="Magpie + sistema do SmolLM2",
        command=(f"python -m llmdefinitions gerar-dados --metodo magpie -n 30 {_URL} "
                f"--saida /tmp/dg-medida/mps --sistema \"{SMOLLM2_SYSTEM}\""),
        n_requested=30, n_kept=29, seconds=507.67,
        dropped={"refusal": 1},
        examples=(
            {"instruction": "Can you help me create a plan to improve my writing skills?",
             "input": "",
             "output": ("I'm glad you're interested in improving your writing skills. I'd be happy to hel"
                        "p with that!\n\nTo get started, just share a piece of writing you want to improve "
                        "and let me know what kind of improvement you're looking for (e.g., grammar corre"
                        "ction, style enhancement, clarity). If there's any specific area where you need "
                        "support or guidance, feel free to ask. I'm here to help!\n\nIn terms of tools, I h"
                        "ave a vast collection of writing resources available online. You can find everyt"
                        "hing from grammar and spell checkers to editing services like Grammarly and Hemi"
                        "ngway Editor. But don't worry, there's always a library of more resources out th"
                        "ere. Just search for \"writing tools\" or \"grammar help.\"\n\nI'm here to assist you "
                        "in any way I can. Whether it's suggesting alternative ways to improve your writi"
                        "ng skills or providing guidance on specific areas like grammar and style editing"
                        ". So go ahead and share whatever you're working on, and we'll get started!")},
            {"instruction": "Can you help me with a beginner's guide on how to create a successful startup?",
             "input": "",
             "output": ("Sure, I'd be happy to help with that. Here's a basic guide on creating a success"
                        "ful startup:\n\n1. **Define Your Business Idea**: Startup definition is crucial. I"
                        "t should include your mission statement and what you do. This will give potentia"
                        "l investors or clients the chance to understand your business better.\n\n2. **Buil"
                        "d Your Business**: The next step is building your business. This can be done by "
                        "creating a business plan, which includes everything from startup costs to how it"
                        " will work out financially.\n\n3. **Launch Your Business**: Launching your busines"
                        "s means you have 60 days to launch and grow. This can involve hiring freelancers"
                        " or outsourcing tasks that are not yours but can still help the company.\n\n4. **B"
                        "uild a Team**: You need people who can support you, so hire someone with skills "
                        "that will be used in the future.\n\n5. **Launch Your Business**: Once your busines"
                        "s is launched, it's time to grow and expand. This means hiring employees or outs"
                        "ourcing tasks that are not yours but can still help the company.\n\n6. **Maintain "
                        "Your Business**: The last thing you need is a business plan. You need to keep yo"
                        "ur business running so there will always be someone who wants to learn")},
            {"instruction": ("Hey Alex,\n\nI hope you're doing well. I've been going through the latest draft of"
                             " a joint research paper on climate change and biodiversity loss due to plastic p"
                             "ollution in the environment and ecosystems. The paper aims to provide new insigh"
                             "ts into how these issues intersect with our understanding of human-environment r"
                             "elationships and ecosystem management practices. As such, I think your input is "
                             "really valuable as it goes beyond mere technical analysis but rather delves deep"
                             "ly into real world applications that can make a difference through collective ac"
                             "tion.\n\nI've already asked for the full paper now, hoping you'll be able to meet "
                             "me in person at the upcoming climate talk on"),
             "input": "",
             "output": ("Hi Alex,\n\nHope you're well! I've just finished reviewing the latest draft of you"
                        "r joint research paper on climate change and biodiversity loss due to plastic po"
                        "llution in ecosystems. It's really important for me to share your expertise with"
                        " others who might be interested in this topic. Your insights are truly valuable "
                        "as they go beyond mere technical analysis, but also into real-world applications"
                        " that can make a difference through collective action.\n\nI'm looking forward to m"
                        "eeting you in person at the upcoming climate talk on your blog tomorrow! I'll se"
                        "nd you a link to the full paper so we can discuss it further.\n\nBest regards,\nSmo"
                        "lLM")},
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
    """The first kept items of each run (or of the run called ``label``), whitespace collapsed;
    an instruction or response longer than ``max_lines`` lines is cut, and the cut marked ``[…]``."""
    def clipped(text: str, indent: str) -> str:
        lines = textwrap.wrap(" ".join(text.split()), width - len(indent)) or [""]
        shown = lines[:max_lines] + (["[…]"] if len(lines) > max_lines else [])
        return "\n".join(indent + line for line in shown)

    for run in RUNS:
        if label is not None and run.label != label:
            continue
        print(f"— {run.label}")
        for number, entry in enumerate(run.examples, start=1):
            prompt = entry["instruction"] + (f" | entrada: {entry['input']}" if entry["input"] else "")
            print(f"{number}.", clipped(prompt, "   ").lstrip())
            print(clipped(entry["output"], "   → "))


__all__ = ["ReferenceRun", "RUNS", "SERVER", "MACHINE", "print_summary", "print_examples"]
