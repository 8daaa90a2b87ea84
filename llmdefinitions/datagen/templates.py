"""Chat templates of aligned LLMs: the text around a user turn, for Magpie's raw prompts.

Magpie (Xu et al., 2024, arXiv 2406.08464) sends an aligned model only the start
of a user turn (the *pre-query template*). Having been trained to see a user's
message next, the model writes one, and stops at its end-of-turn token: an
instruction nobody wrote. The same template, closed and followed by the
assistant's header (the *post-query template*), asks for the response.

These strings go through a **raw** completion route (no chat template added by
the server: Ollama ``/api/generate`` with ``"raw": true``, ``/v1/completions``,
llama.cpp's ``/completion``). The beginning-of-sequence token
(``<|begin_of_text|>``, ``<s>``, ``<bos>``) is left out: llama.cpp and Ollama
add it when they tokenize the prompt, and a second one would only confuse the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union


@dataclass(frozen=True)
class ChatTemplate:
    """One model family's chat format, as far as Magpie needs it.

    ``user_prefix`` opens a user turn (Magpie's pre-query template);
    ``assistant_prefix`` closes it and opens the assistant's turn; ``stop`` holds the
    strings that end a turn (end-of-turn token, the next header); ``system_turn``
    is a whole system turn with ``{system}`` where its text goes.
    """

    name: str
    user_prefix: str
    assistant_prefix: str
    stop: Tuple[str, ...]
    system_turn: str = ""

    def system_block(self, system: Optional[str]) -> str:
        """The system turn with ``system`` in it ("" without one)."""
        if not system:
            return ""
        if not self.system_turn:
            raise ValueError(f"O formato {self.name!r} não tem turno de sistema; use system=None.")
        return self.system_turn.format(system=system)

    def instruction_prompt(self, system: Optional[str] = None) -> str:
        """Magpie's step 1: only the start of a user turn (after a system turn, if ``system``)."""
        return self.system_block(system) + self.user_prefix

    def response_prompt(self, instruction: str, system: Optional[str] = None) -> str:
        """Magpie's step 2 as one raw prompt: the user turn with ``instruction``, then the assistant's header."""
        return self.system_block(system) + self.user_prefix + instruction + self.assistant_prefix


TEMPLATES: Dict[str, ChatTemplate] = {t.name: t for t in (
    # ChatML: SmolLM2, Qwen, many small instruct models.
    ChatTemplate("chatml", "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n",
                 ("<|im_end|>", "<|im_start|>", "<|endoftext|>"), "<|im_start|>system\n{system}<|im_end|>\n"),
    ChatTemplate("llama3", "<|start_header_id|>user<|end_header_id|>\n\n",
                 "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                 ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"),
                 "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"),
    ChatTemplate("phi3", "<|user|>\n", "<|end|>\n<|assistant|>\n",
                 ("<|end|>", "<|user|>", "<|assistant|>", "<|endoftext|>"), "<|system|>\n{system}<|end|>\n"),
    ChatTemplate("gemma", "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n",
                 ("<end_of_turn>", "<start_of_turn>")),
    ChatTemplate("mistral", "[INST] ", " [/INST]", ("</s>", "[INST]", "[/INST]")),
)}

# What SmolLM2's own chat template puts in the system turn when the messages have none.
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Substrings of a model's name (lowercase, without "-", "_" or ".") -> its family.
MODEL_FAMILIES: Tuple[Tuple[str, str], ...] = (
    ("smollm", "chatml"), ("qwen", "chatml"), ("chatml", "chatml"),
    ("llama3", "llama3"),
    ("phi3", "phi3"),
    ("gemma", "gemma"),
    ("mistral", "mistral"),
)


def template_for_model(model: str) -> ChatTemplate:
    """The chat template of ``model`` guessed from its name (``"llama3"``, ``"smollm2:135m"``...)."""
    key = model.lower().replace("-", "").replace("_", "").replace(".", "")
    for part, family in MODEL_FAMILIES:
        if part in key:
            return TEMPLATES[family]
    raise ValueError(
        f"Não sei o formato de chat do modelo {model!r}. Passe template= (ou --template na linha de "
        f"comando) com um destes: {', '.join(TEMPLATES)}; ou um ChatTemplate com os textos do modelo.")


def get_template(template: Union[str, ChatTemplate, None], model: str = "") -> ChatTemplate:
    """``template`` itself, the family called ``template``, or (``None``) the one of ``model``."""
    if isinstance(template, ChatTemplate):
        return template
    if template is None:
        return template_for_model(model)
    if template not in TEMPLATES:
        raise ValueError(f"Formato de chat desconhecido: {template!r}. Use um destes: {', '.join(TEMPLATES)}.")
    return TEMPLATES[template]


__all__ = ["ChatTemplate", "TEMPLATES", "SMOLLM2_SYSTEM", "template_for_model", "get_template"]
