"""Score answers to the verifiable prompts: strict and loose, per prompt and per instruction.

As in IFEval: **strict** checks the answer as it is; **loose** also tries it without
its first line, without its last line, without both, and each of those without
``*`` markup (:func:`.text.loose_variants`), and counts an instruction as followed
if any variant follows it (so "Claro! Aqui está:" before the answer is forgiven).
**Prompt-level** accuracy counts a prompt only when all its instructions are
followed; **instruction-level** accuracy counts every instruction on its own.

Accuracies are percentages with a bootstrap 95 % interval (``stats.bootstrap_mean``
over the 0/100 outcomes). The instruction-level interval resamples instructions as
if independent; two instructions of one prompt are not quite, so it is slightly
too narrow.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from ..tables import text_table
from ..io import PathLike, write_json_atomic
from ..stats import Interval, bootstrap_mean, format_decimal
from .instructions import INSTRUCTIONS, check_instruction
from .prompt_set import Prompt
from .text import loose_variants

MODES = ("strict", "loose")
LEVELS = ("prompt", "instruction")
_LABELS = {"strict": "estrita", "loose": "flexível", "prompt": "por prompt", "instruction": "por instrução"}


@dataclass(frozen=True)
class PromptResult:
    """One answer: whether each of its prompt's instructions was followed, strictly and loosely."""

    key: str
    lang: str
    instruction_ids: Tuple[str, ...]
    response: str
    strict: Tuple[bool, ...]
    loose: Tuple[bool, ...]

    def to_dict(self) -> dict:
        return {"key": self.key, "lang": self.lang, "instruction_ids": list(self.instruction_ids),
                "response": self.response, "strict": list(self.strict), "loose": list(self.loose)}


def _outcomes(results: Sequence[PromptResult], mode: str, level: str) -> List[float]:
    if level == "prompt":
        return [100.0 * all(getattr(r, mode)) for r in results]
    return [100.0 * ok for r in results for ok in getattr(r, mode)]


def _accuracies(results: Sequence[PromptResult]) -> Dict[str, Dict[str, Interval]]:
    return {level: {mode: bootstrap_mean(_outcomes(results, mode, level)) for mode in MODES}
            for level in LEVELS}


@dataclass
class VerifiableReport:
    """Strict/loose x prompt/instruction accuracy, overall, per language and per instruction type."""

    results: List[PromptResult]

    @property
    def accuracy(self) -> Dict[str, Dict[str, Interval]]:
        """``accuracy[level][mode]``: level ``"prompt"``/``"instruction"``, mode ``"strict"``/``"loose"``."""
        return _accuracies(self.results)

    @property
    def by_language(self) -> Dict[str, Dict[str, Dict[str, Interval]]]:
        """``by_language[lang][level][mode]``."""
        langs = sorted({r.lang for r in self.results})
        return {lang: _accuracies([r for r in self.results if r.lang == lang]) for lang in langs}

    @property
    def by_type(self) -> Dict[str, Dict[str, Interval]]:
        """``by_type[instruction_id][mode]``: instruction-level accuracy of each type present."""
        outcomes: Dict[str, Dict[str, List[float]]] = {}
        for r in self.results:
            for i, id in enumerate(r.instruction_ids):
                for mode in MODES:
                    outcomes.setdefault(id, {m: [] for m in MODES})[mode].append(100.0 * getattr(r, mode)[i])
        return {id: {mode: bootstrap_mean(values[mode]) for mode in MODES}
                for id, values in sorted(outcomes.items())}

    def to_dict(self) -> dict:
        """JSON-able: every interval and every answer's outcome."""
        def intervals(tree: Mapping[str, Any]) -> dict:
            return {k: v.to_dict() if isinstance(v, Interval) else intervals(v) for k, v in tree.items()}
        return {"n_prompts": len(self.results), "n_instructions": sum(len(r.strict) for r in self.results),
                "accuracy": intervals(self.accuracy), "by_language": intervals(self.by_language),
                "by_type": intervals(self.by_type), "results": [r.to_dict() for r in self.results]}

    def to_table(self, by_type: bool = True) -> str:
        """pt-BR text tables (decimal commas): overall and per language, then (``by_type``) per instruction type."""
        rows = [("grupo", *(f"{_LABELS[level]}, {_LABELS[mode]}" for level in LEVELS for mode in MODES))]
        groups = {"todos": self.accuracy, **{f"idioma {lang}": acc for lang, acc in self.by_language.items()}}
        for name, acc in groups.items():
            rows.append((name, *(_cell(acc[level][mode]) for level in LEVELS for mode in MODES)))
        types = [("instrução", "n", "estrita", "flexível", "descrição")]
        for id, acc in self.by_type.items():
            types.append((id, str(acc["strict"].n), _cell(acc["strict"]), _cell(acc["loose"]),
                          INSTRUCTIONS[id].description))
        note = (f"{len(self.results)} prompts; acurácia em %, com IC bootstrap de 95 %; "
                "flexível = também sem a 1ª linha, sem a última ou sem '*'.")
        return "\n".join([_format(rows), "", _format(types), "", note] if by_type else [_format(rows), note])

    def save_json(self, path: PathLike) -> Path:
        """Write :meth:`to_dict` as UTF-8 JSON, atomically."""
        return write_json_atomic(path, self.to_dict())


def _cell(interval: Interval) -> str:
    return (f"{format_decimal(interval.estimate, 1)} "
            f"[{format_decimal(interval.low, 1)}; {format_decimal(interval.high, 1)}]")


def _format(rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(text_table(rows[0], rows[1:]))


def score_response(prompt: Prompt, response: str) -> PromptResult:
    """Check one answer against every instruction of its prompt, strictly and loosely."""
    variants = loose_variants(response)
    checks = [(id, kwargs) for id, kwargs in zip(prompt.instruction_ids, prompt.kwargs)]
    strict = tuple(check_instruction(id, response, prompt.lang, kw) for id, kw in checks)
    loose = tuple(any(check_instruction(id, v, prompt.lang, kw) for v in variants) for id, kw in checks)
    return PromptResult(prompt.key, prompt.lang, prompt.instruction_ids, response, strict, loose)


def score(prompts: Sequence[Prompt], responses: Sequence[Union[str, Mapping[str, Any]]],
          response_key: str = "model_response") -> VerifiableReport:
    """Score ``responses[i]`` as the answer to ``prompts[i]``.

    A response is a string, or an entry (a dict, as ``generation.save_responses``
    writes) holding the answer under ``response_key``; an entry whose
    ``instruction`` is not its prompt's text is refused (the lists are misaligned).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts mas {len(responses)} respostas: "
                         "é preciso uma resposta por prompt, na mesma ordem.")
    if not prompts:
        raise ValueError("Nenhum prompt para avaliar.")
    answers = []
    for index, response in enumerate(responses):
        if isinstance(response, Mapping):
            if response_key not in response:
                raise ValueError(f"Resposta {index}: falta o campo '{response_key}'.")
            if response.get("instruction", prompts[index].prompt) != prompts[index].prompt:
                raise ValueError(f"Resposta {index}: o campo 'instruction' não é o texto do prompt "
                                 f"'{prompts[index].key}': as listas estão desalinhadas.")
            response = response[response_key]
        if not isinstance(response, str):
            raise ValueError(f"Resposta {index}: deve ser texto (str), mas é {type(response).__name__}.")
        answers.append(response)
    return VerifiableReport([score_response(p, a) for p, a in zip(prompts, answers)])


__all__ = ["PromptResult", "VerifiableReport", "score", "score_response"]
