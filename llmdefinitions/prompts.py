"""Prompt styles: how an instruction entry becomes the text the model reads.

Two styles are offered, chosen in one place (``PROMPT_STYLES``):

* ``"alpaca"`` — the book's format (Alpaca), the default everywhere;
* ``"phi3"`` — the shorter chat format of Phi-3 (``<|user|>`` / ``<|assistant|>``).

Each style has a ``prompt`` function (instruction + optional input) and a
``response_prefix`` that goes between the prompt and the gold answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping


def format_input(entry: Mapping[str, str]) -> str:
    """Alpaca prompt for ``entry`` (keys ``instruction`` and ``input``), as in the book."""
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""
    return instruction_text + input_text


def format_input_phi3(entry: Mapping[str, str]) -> str:
    """Phi-3 prompt for ``entry``: ``<|user|>`` then the instruction (and input)."""
    input_text = f"\n{entry['input']}" if entry["input"] else ""
    return f"<|user|>\n{entry['instruction']}{input_text}"


@dataclass(frozen=True)
class PromptStyle:
    """A prompt format: the prompt builder and the text that introduces the answer."""

    name: str
    prompt: Callable[[Mapping[str, str]], str]
    response_prefix: str

    def full_text(self, entry: Mapping[str, str]) -> str:
        """Prompt followed by the gold response (what the model is trained on)."""
        return self.prompt(entry) + self.response_prefix + entry["output"]

    def generation_prompt(self, entry: Mapping[str, str]) -> str:
        """Prompt followed by the response prefix (what the model completes)."""
        return self.prompt(entry) + self.response_prefix


PROMPT_STYLES: Dict[str, PromptStyle] = {
    "alpaca": PromptStyle("alpaca", format_input, "\n\n### Response:\n"),
    "phi3": PromptStyle("phi3", format_input_phi3, "\n<|assistant|>:\n"),
}


def get_prompt_style(name: str = "alpaca") -> PromptStyle:
    """The prompt style called ``name``; a pt-BR error lists the valid names."""
    try:
        return PROMPT_STYLES[name]
    except KeyError:
        raise ValueError(
            f"Estilo de prompt desconhecido: {name!r}. Use um destes: {', '.join(PROMPT_STYLES)}."
        ) from None
