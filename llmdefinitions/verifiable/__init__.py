"""Verifiable instruction following, in Portuguese and English (IFEval-style, course's own prompts).

IFEval (Zhou et al. 2023) scores instructions a program can check ("answer in at
most 50 words", "no commas", "end with ...") instead of asking a judge; it is
English-only. This package has the course's own set (:func:`load_prompts`, half
pt-BR and half English), one deterministic checker per instruction type
(:data:`INSTRUCTIONS`), and :func:`score` with strict/loose, prompt/instruction
accuracies and bootstrap intervals. No server is needed.

    prompts = load_prompts()
    entries = as_entries(prompts)               # the book's Alpaca format
    answers = generate_responses(model, tokenizer, entries)
    report = score(prompts, answers)
    print(report.to_table())
"""
from .instructions import INSTRUCTIONS, Instruction, check_instruction, detect_language
from .prompt_set import Prompt, as_entries, load_prompts
from .scoring import PromptResult, VerifiableReport, score, score_response

__all__ = ["INSTRUCTIONS", "Instruction", "Prompt", "PromptResult", "VerifiableReport", "as_entries",
           "check_instruction", "detect_language", "load_prompts", "score", "score_response"]
