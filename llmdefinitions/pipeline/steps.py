"""The steps, in order, and the loop that runs them (skipping what is done; one run per folder)."""
from __future__ import annotations

import contextlib
import time
from typing import Dict, Sequence

from .judging import _evaluate, _evaluation_stale, _require_responses, _responses_file
from .preference import _preference
from .run import PipelineError, Run, Step, _elapsed, _short, ensure_writable
from .sft import _generate, _prepare, _require_model, _train

STEPS: Dict[str, Step] = {step.name: step for step in (
    Step("preparar", "dados (download, validação, divisão, relatório de qualidade)",
         inputs=lambda run: [],
         outputs=lambda run: [run.paths.data_file, run.paths.quality_report, run.paths.lengths_png],
         run=_prepare),
    Step("treinar", "ajuste fino",
         inputs=lambda run: [run.paths.data_file],
         outputs=lambda run: [run.model_file, run.paths.losses_json, run.paths.losses_png],
         run=_train),
    Step("gerar", "respostas para o conjunto de teste e as instruções verificáveis",
         inputs=lambda run: [run.paths.data_file, run.model_file],
         outputs=lambda run: [run.paths.responses, run.paths.verifiable_responses],
         run=_generate, require=_require_model),
    Step("avaliar", "métricas, instruções verificáveis e LLM juiz",
         inputs=lambda run: [_responses_file(run), run.paths.verifiable_responses],
         outputs=lambda run: [run.paths.evaluation_json, run.paths.evaluation_png],
         run=_evaluate, require=_require_responses, stale=_evaluation_stale),
)}
STEP_NAMES = tuple(STEPS)


STEPS["preferencia"] = Step(
    "preferencia", "ajuste fino por preferência (DPO com adaptadores LoRA)",
    inputs=lambda run: [run.model_file, run.paths.preference_data_file],
    outputs=lambda run: [run.paths.dpo_adapter(run.profile.model_name), run.paths.dpo_metrics,
                         run.paths.dpo_png, run.paths.dpo_responses],
    run=_preference, require=_require_model)


def run_steps(run: Run, names: Sequence[str]) -> None:
    """Run the steps called ``names`` in order, skipping those already done (unless ``redo``).

    The run folder is locked for the whole run (by process 0 under torchrun): a second run on
    the same folder stops at once with a pt-BR message instead of doing the work twice.
    """
    from ..distributed import is_main_process
    from ..io import FolderLockedError, folder_lock

    steps = [STEPS[name] for name in names]
    ensure_writable(run.paths.run_dir)
    with contextlib.ExitStack() as stack:
        try:
            if is_main_process():              # under torchrun, the run is one: process 0 holds the lock
                stack.enter_context(folder_lock(run.paths.run_dir))
        except FolderLockedError as exc:
            raise PipelineError(str(exc)) from None
        if len(steps) == 1 and not run.options.redo and not steps[0].status(run)[0]:
            steps[0].require(run)
        for number, step in enumerate(steps, start=1):
            label = f"[{number}/{len(steps)}] {step.name}"
            if run.options.redo:
                why = "--refazer"
            else:
                done, why = step.status(run)
                if done:
                    names_done = ", ".join(_short(p, run) for p in step.outputs(run))
                    run.log(f"{label}: já feito ({names_done}) — pulando. Use --refazer para refazer.")
                    continue
            run.log(f"{label}: {step.title} — executando ({why})")
            start = time.perf_counter()
            step.run(run)
            run.log(f"{label}: concluído em {_elapsed(time.perf_counter() - start)}.")
