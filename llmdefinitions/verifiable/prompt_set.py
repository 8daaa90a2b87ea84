"""The course's verifiable prompts: a JSONL file inside the package, checked on load.

Each line is one prompt: ``key`` (unique), ``lang`` (``"pt"`` or ``"en"``),
``prompt`` (the text the model answers), ``instruction_ids`` (ids of
:data:`.instructions.INSTRUCTIONS`, one or two) and ``kwargs`` (one object per
instruction, in the same order, with exactly that instruction's parameters).
A bad line raises a pt-BR ``ValueError`` naming the file, the line and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..io import PathLike
from .instructions import INSTRUCTIONS, PARAM_KINDS
from .text import LANGUAGES

PROMPTS_FILE = "prompts.jsonl"
FIELDS = ("key", "lang", "prompt", "instruction_ids", "kwargs")


@dataclass(frozen=True)
class Prompt:
    """One prompt and the instructions its answer is checked against."""

    key: str
    lang: str
    prompt: str
    instruction_ids: Tuple[str, ...]
    kwargs: Tuple[Dict[str, Any], ...]

    def to_dict(self) -> dict:
        return {"key": self.key, "lang": self.lang, "prompt": self.prompt,
                "instruction_ids": list(self.instruction_ids), "kwargs": [dict(k) for k in self.kwargs]}


def load_prompts(path: Optional[PathLike] = None) -> List[Prompt]:
    """The prompts of ``path`` (default: the course's set shipped in the package), validated."""
    if path is None:
        source = resources.files(__package__).joinpath(PROMPTS_FILE)
        name, text = f"llmdefinitions/verifiable/{PROMPTS_FILE}", source.read_text(encoding="utf-8")
    else:
        name, text = str(path), Path(path).read_text(encoding="utf-8")
    prompts: List[Prompt] = []
    keys: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        prompt = _parse_line(line, f"{name}, linha {number}")
        if prompt.key in keys:
            raise ValueError(f"{name}, linha {number}: campo 'key': '{prompt.key}' repete a linha {keys[prompt.key]}.")
        keys[prompt.key] = number
        prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{name}: nenhum prompt no arquivo.")
    return prompts


def _parse_line(line: str, where: str) -> Prompt:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"{where}: não é um JSON válido ({exc}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: deve ser um objeto JSON, mas é {type(data).__name__}.")
    for field in FIELDS:
        if field not in data:
            raise ValueError(f"{where}: falta o campo '{field}'.")
    extra = sorted(set(data) - set(FIELDS))
    if extra:
        raise ValueError(f"{where}: campo(s) desconhecido(s): {', '.join(extra)}.")
    for field in ("key", "prompt"):
        if not isinstance(data[field], str) or not data[field].strip():
            raise ValueError(f"{where}: o campo '{field}' deve ser um texto não vazio.")
    if data["lang"] not in LANGUAGES:
        raise ValueError(f"{where}: o campo 'lang' deve ser um de {', '.join(LANGUAGES)}, não {data['lang']!r}.")
    ids, kwargs = data["instruction_ids"], data["kwargs"]
    if not isinstance(ids, list) or not ids:
        raise ValueError(f"{where}: o campo 'instruction_ids' deve ser uma lista não vazia.")
    if len(set(map(str, ids))) != len(ids):
        raise ValueError(f"{where}: o campo 'instruction_ids' repete uma instrução.")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise ValueError(f"{where}: o campo 'kwargs' deve ser uma lista com um objeto por instrução "
                         f"({len(ids)}).")
    for i, (id, params) in enumerate(zip(ids, kwargs)):
        _check_params(id, params, f"{where}: instruction_ids[{i}]", f"{where}: kwargs[{i}]")
    return Prompt(data["key"], data["lang"], data["prompt"], tuple(ids), tuple(dict(k) for k in kwargs))


def _check_params(id: Any, params: Any, where_id: str, where: str) -> None:
    if id not in INSTRUCTIONS:
        raise ValueError(f"{where_id}: instrução desconhecida {id!r}. Conhecidas: {', '.join(sorted(INSTRUCTIONS))}.")
    if not isinstance(params, dict):
        raise ValueError(f"{where}: deve ser um objeto JSON com os parâmetros de '{id}'.")
    expected = INSTRUCTIONS[id].params
    missing, extra = [p for p in expected if p not in params], sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(f"{where}: '{id}' pede os parâmetros {list(expected)}; "
                         f"faltam {missing}, sobram {extra}.")
    for name in expected:
        problem = PARAM_KINDS[name](params[name])
        if problem:
            raise ValueError(f"{where}: o parâmetro '{name}' de '{id}' {problem} (veio {params[name]!r}).")


def as_entries(prompts: List[Prompt]) -> List[dict]:
    """The prompts as the book's Alpaca entries, so the course's batched generation answers them."""
    return [{"instruction": p.prompt, "input": "", "output": ""} for p in prompts]
