"""The course's hands-on chain as steps: the one orchestrator of notebooks and command line.

Four steps, each reading what the previous one wrote in the run folder
(``<saida>/<perfil>/``, see :mod:`llmdefinitions.runs`):

============  =================================================================
``preparar``  download/validate/split the data; quality report + length histogram
``treinar``   finetune (resumes from the training checkpoint after an interruption)
``gerar``     answer the test set (saves progress per batch; resumes)
``avaliar``   score the answers (judge LLM)
============  =================================================================

After ``treinar``, the optional step ``preferencia`` tunes the finetuned model on the
book's preference pairs with DPO (LoRA adapters; not part of ``tudo``).

A step whose outputs exist and are newer than its inputs is skipped (``redo`` redoes
it), so after an interruption the same command continues from the first missing
output. :func:`run_steps` runs steps; the command line (:mod:`llmdefinitions.cli`) only
parses options into :class:`RunOptions` and prints. The step functions
(:func:`prepare_data`, :func:`load_pretrained`, :func:`finetune`, ...) are also what
notebooks call once they have written the mechanics themselves.
"""
from .judging import (SIMULATED_JUDGE_WARNING, STAND_IN_MODEL, JudgeEndpoint, judge_endpoint,
                      judge_responses)
from .preference import (add_dpo_adapters, compare_dpo_responses, make_preference_loaders, plot_dpo_metrics,
                         prepare_preference_data, preference_finetune, save_dpo_plot)
from .run import (DEFAULT_CHECKPOINT_EVERY, PROG, PipelineError, Run, RunOptions, Step, describe,
                  ensure_writable)
from .sft import (PreparedData, finetune, generate_and_save, generate_test_responses,
                  generate_verifiable_responses, load_finetuned, load_losses, load_pretrained, make_loaders,
                  prepare_data, save_data_report, save_loss_plot, save_run_config)
from .steps import STEP_NAMES, STEPS, run_steps
from ..runs import RunPaths, run_paths

__all__ = ["PROG", "DEFAULT_CHECKPOINT_EVERY", "SIMULATED_JUDGE_WARNING", "STAND_IN_MODEL",
           "generate_and_save", "generate_verifiable_responses", "PipelineError", "PreparedData", "prepare_data", "make_loaders", "load_pretrained",
           "finetune", "load_finetuned", "load_losses", "save_run_config", "save_data_report",
           "save_loss_plot", "generate_test_responses", "JudgeEndpoint", "judge_endpoint",
           "judge_responses", "describe", "RunOptions", "Run", "Step", "STEPS", "STEP_NAMES",
           "run_steps", "ensure_writable", "RunPaths", "run_paths",
           "prepare_preference_data", "make_preference_loaders", "add_dpo_adapters",
           "preference_finetune", "plot_dpo_metrics", "save_dpo_plot", "compare_dpo_responses"]
