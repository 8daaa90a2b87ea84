"""Synthetic instruction data (section "Estratégias de Coleta de Dados II" of the lecture).

An LLM served locally (Ollama, llama.cpp, any OpenAI-compatible server; the
judge's clients do the HTTP) writes new instruction–response pairs in the Alpaca
format, by one of two methods:

* :mod:`.self_instruct` — seed tasks in a few-shot prompt → a new task → its response;
* :mod:`.magpie` — only the chat template's start of a user turn → an instruction → its response
  (:mod:`.templates` has the templates by model family).

Around them, one job each: :mod:`.requests` (requests through a reply cache: a rerun
asks nothing twice), :mod:`.candidates` (one candidate per item, failures recorded),
:mod:`.filters` (every item kept or dropped with its reason: empty, template
leakage, refusal, length, modality, duplicates, ROUGE-L novelty) and :mod:`.run`
(a whole run and its files). :mod:`.reference` holds numbers measured with
SmolLM2-135M-Instruct, labelled as such.
"""
from .candidates import CANDIDATE_STATUSES, Candidate, collect
from .filters import (
    MODALITY_WORDS, REFUSALS, RULES, TEMPLATE_LEAKS, FilterConfig, Verdict, check_entry, filter_entries,
    find_refusal, find_template_leak, rouge_l,
)
from .magpie import RESPONSE_MODES, generate_magpie, magpie_instruction, magpie_response
from .requests import CachedRequests, user_message
from .run import METHODS, DatagenPaths, DatagenReport, DatagenResult, generate_dataset, save_result, verdicts_for
from .self_instruct import (
    NUM_EXAMPLES, PROMPT_HEADER, build_self_instruct_prompt, generate_self_instruct, parse_task, sample_examples,
    task_line,
)
from .templates import SMOLLM2_SYSTEM, TEMPLATES, ChatTemplate, get_template, template_for_model

__all__ = [
    # templates and the two methods
    "ChatTemplate", "TEMPLATES", "SMOLLM2_SYSTEM", "template_for_model", "get_template",
    "RESPONSE_MODES", "magpie_instruction", "magpie_response", "generate_magpie",
    "PROMPT_HEADER", "NUM_EXAMPLES", "task_line", "build_self_instruct_prompt", "parse_task", "sample_examples",
    "generate_self_instruct",
    # requests, candidates, filters
    "CachedRequests", "user_message", "Candidate", "CANDIDATE_STATUSES", "collect",
    "RULES", "FilterConfig", "Verdict", "check_entry", "filter_entries", "find_template_leak", "find_refusal",
    "rouge_l", "TEMPLATE_LEAKS", "REFUSALS", "MODALITY_WORDS",
    # a whole run
    "METHODS", "DatagenPaths", "DatagenReport", "DatagenResult", "verdicts_for", "generate_dataset",
    "save_result",
]
