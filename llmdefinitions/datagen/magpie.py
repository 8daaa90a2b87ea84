"""Magpie (Xu et al., 2024, arXiv 2406.08464): an aligned LLM writes the instruction and the response.

Step 1 sends **only** the start of a user turn (:meth:`ChatTemplate.instruction_prompt`,
e.g. ``<|im_start|>user\\n`` for ChatML) through a raw completion route, sampling
with temperature 1: the model writes a user's message and stops at its
end-of-turn token. Step 2 asks for the response to that instruction: through the
chat route (the server applies the model's template, ``response_mode="chat"``) or
as one raw prompt with the whole template (``response_mode="raw"``).

The book's bonus notebook (``ch07/05_dataset-generation/llama3-ollama.ipynb``) sends
the pre-query text as an *assistant message* to Ollama's chat route, so the
server wraps it in the chat template; here it goes raw, as in the paper.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

from .candidates import Candidate, collect
from .requests import CachedRequests, user_message
from .templates import ChatTemplate, get_template

RESPONSE_MODES = ("chat", "raw")
# Step 1 samples (diversity comes from here); step 2 answers greedily, as Magpie does.
INSTRUCTION_OPTIONS: Dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "num_predict": 128}
RESPONSE_OPTIONS: Dict[str, Any] = {"temperature": 0.0, "num_predict": 256}


def magpie_instruction(requests: CachedRequests, template: ChatTemplate, seed: int,
                       options: Optional[Mapping[str, Any]] = None, system: Optional[str] = None) -> str:
    """Step 1: the text the model writes after the bare start of a user turn (raw completion)."""
    merged = {**INSTRUCTION_OPTIONS, **(options or {}), "seed": seed, "stop": list(template.stop)}
    return requests.complete(template.instruction_prompt(system), merged)


def magpie_response(requests: CachedRequests, template: ChatTemplate, instruction: str, seed: int,
                    response_mode: str = "chat", options: Optional[Mapping[str, Any]] = None,
                    system: Optional[str] = None) -> str:
    """Step 2: the model's answer to ``instruction``, through the chat route or one raw prompt."""
    merged = {**RESPONSE_OPTIONS, **(options or {}), "seed": seed}
    if response_mode == "chat":
        messages = ([{"role": "system", "content": system}] if system else []) + user_message(instruction)
        return requests.chat(messages, merged)
    if response_mode == "raw":
        return requests.complete(template.response_prompt(instruction, system),
                                 {**merged, "stop": list(template.stop)})
    raise ValueError(f"response_mode deve ser um de {RESPONSE_MODES}; recebi {response_mode!r}.")


def generate_magpie(requests: CachedRequests, n: int, *, template: Union[str, ChatTemplate, None] = None,
                    response_mode: str = "chat", system: Optional[str] = None, seed: int = 123,
                    instruction_options: Optional[Mapping[str, Any]] = None,
                    response_options: Optional[Mapping[str, Any]] = None,
                    progress: bool = True) -> List[Candidate]:
    """``n`` Magpie candidates; item *i* samples its instruction with seed ``seed + i``.

    ``template``: a :class:`ChatTemplate`, a family name (``"chatml"``, ``"llama3"``...)
    or ``None`` (guessed from the client's model name). ``system``: a system turn
    before the user's (Magpie's "pre-query template with system prompt"; a small
    model such as SmolLM2 writes far more plausible instructions after its own
    default system text, :data:`~.templates.SMOLLM2_SYSTEM`). Failures are recorded per
    item (see :func:`~.candidates.collect`).
    """
    if response_mode not in RESPONSE_MODES:
        raise ValueError(f"response_mode deve ser um de {RESPONSE_MODES}; recebi {response_mode!r}.")
    chat_template = get_template(template, requests.client.model)

    def make_one(index: int) -> Candidate:
        raw_instruction = magpie_instruction(requests, chat_template, seed + index, instruction_options, system)
        instruction = raw_instruction.strip()
        candidate = Candidate(index, "magpie", instruction=instruction, raw={"instruction": raw_instruction})
        if instruction:  # an empty instruction is dropped by the filters; nothing to answer
            candidate.output = magpie_response(requests, chat_template, instruction, seed, response_mode,
                                               response_options, system).strip()
        return candidate

    return collect(n, make_one, method="magpie", progress=progress, desc=f"Magpie ({requests.client.model})")


__all__ = ["RESPONSE_MODES", "INSTRUCTION_OPTIONS", "RESPONSE_OPTIONS", "magpie_instruction",
           "magpie_response", "generate_magpie"]
