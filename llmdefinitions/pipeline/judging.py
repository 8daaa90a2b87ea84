"""The judge's side of the pipeline: where the judge answers, scoring, and the ``avaliar`` step."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional, Tuple

from ..profiles import Profile
from ..runs import RunPaths
from .run import PROG, Log, PipelineError, Run

STAND_IN_MODEL = "dublê-de-teste"   # the model name the judge's test double answers to


SIMULATED_JUDGE_WARNING = (
    "AVISO: as notas vêm de um DUBLÊ DE TESTE (llmdefinitions.testing.fake_llm_server), que "
    "pontua por sobreposição de palavras.\n"
    "       Não são avaliações de um LLM juiz: servem só para testar o encadeamento; "
    "não as use como resultado."
)



class JudgeEndpoint:
    """Where the judge answers: ``url``, ``model`` and whether it is the test double.

    ``with judge_endpoint(profile) as url:`` gives the URL and closes at the end; a
    notebook, where a ``with`` block cannot span cells, keeps the object and calls
    :meth:`close` in its last cell. Closing twice is harmless.
    """

    def __init__(self, url: str, model: str, simulated: bool = False, server=None):
        self.url = url
        self.model = model
        self.simulated = simulated
        self._server = server

    def cache_path(self, paths: RunPaths) -> Path:
        """The reply cache for this judge: the test double's is kept apart from a real judge's."""
        return paths.simulated_judge_cache if self.simulated else paths.judge_cache

    def close(self) -> None:
        """Stop the test double, if one was started (a real judge is left alone)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        who = "DUBLÊ DE TESTE" if self.simulated else "juiz"
        return f"JudgeEndpoint({who}, model={self.model!r}, url={self.url!r})"


def judge_endpoint(profile: Profile, url: Optional[str] = None, model: Optional[str] = None,
                   simulated: Optional[bool] = None, log: Log = print) -> JudgeEndpoint:
    """The judge to use: ``url``/``model`` or the profile's; the test double when ``simulated``.

    ``simulated`` defaults to ``profile.judge_stand_in`` (only the ``teste`` profile, where
    CI has no Ollama). The double (:mod:`llmdefinitions.testing.fake_llm_server`) starts on
    a free local port and its scores come from word overlap, not from a judge LLM — said
    loudly. Otherwise nothing is started.
    """
    model = model or profile.judge_model
    simulated = profile.judge_stand_in if simulated is None else simulated
    if not simulated:
        return JudgeEndpoint(url or profile.judge_url, model)
    from ..testing.fake_llm_server import FakeLLMServer

    model = STAND_IN_MODEL                 # never shown as if a real judge's name
    server = FakeLLMServer(models=[model]).start()
    log(SIMULATED_JUDGE_WARNING)
    log(f"       Dublê de teste servindo em {server.url}.")
    return JudgeEndpoint(server.ollama_url, model, simulated=True, server=server)


def judge_responses(paths: RunPaths, endpoint: JudgeEndpoint, progress: bool = True,
                    max_workers: int = 4, responses_file: Optional[Path] = None, **client_kwargs):
    """Score the responses (the run's, or ``responses_file``) with ``endpoint``; save scores and summary.

    ``pontuacoes.json`` holds one result per item (score or the reason there is none);
    ``pontuacoes-resumo.json`` the summary (mean with its interval), which judge gave the
    scores and the run's report; ``pontuacoes.png`` the histogram. Replies are cached
    (``juiz-cache.jsonl``): a rerun asks only for the items without a reply.
    ``client_kwargs`` (``deadline``, ``timeout``, ``max_reply_bytes``) bound each request.
    Returns ``(results, summary_dict)``.
    """
    import dataclasses

    import matplotlib.pyplot as plt

    from ..io import read_json, write_json_atomic
    from ..judge import save_score_results, score_responses, summarize_scores
    from ..plotting import plot_score_histogram

    source = responses_file or paths.responses
    entries = read_json(source)
    results = score_responses(entries, "model_response", endpoint.model, url=endpoint.url,
                              cache_path=endpoint.cache_path(paths), max_workers=max_workers,
                              progress=progress, **client_kwargs)
    save_score_results(results, paths.scores)
    summary = summarize_scores(results)
    record = {**dataclasses.asdict(summary), "n_missing": summary.n_missing,
              "judge_model": endpoint.model, "judge_url": endpoint.url,
              "simulated": endpoint.simulated, "responses": str(source),
              "report": results.report.to_dict(),
              "failures": [r.reason for r in results if r.score is None]}
    write_json_atomic(paths.scores_summary, record)
    who = "DUBLÊ DE TESTE (não é um juiz)" if endpoint.simulated else f"juiz {endpoint.model}"
    title = f"{who}: {summary.n_scored} de {summary.n_total} itens com nota"
    fig = plot_score_histogram(results, save_path=paths.scores_png, show=False, title=title)
    plt.close(fig)
    return results, record


def _judge_choice(run: Run) -> Tuple[str, str, bool]:
    """``(url, model, simulated)``: what the user asked for, else the profile's judge."""
    options, profile = run.options, run.profile
    simulated = options.judge_simulated or (profile.judge_stand_in and not (options.judge_url or
                                                                            options.judge_model))
    return (options.judge_url or profile.judge_url, options.judge_model or profile.judge_model, simulated)


def _responses_file(run: Run) -> Path:
    return run.options.responses_file or run.paths.responses


def _require_responses(run: Run) -> None:
    if not _responses_file(run).is_file():
        if run.options.responses_file:
            raise PipelineError(f"Arquivo de respostas não encontrado: '{run.options.responses_file}'.")
        raise PipelineError(
            f"Respostas do modelo não encontradas em '{run.paths.responses}'. Gere-as antes:\n"
            f"  {run.command('gerar')}\n(ou avalie outro arquivo: {PROG} avaliar --respostas ARQUIVO)")


def _evaluation_stale(run: Run) -> Optional[str]:
    """Reason to evaluate again: another file, another judge asked for, or a judge that failed before."""
    from ..io import read_json

    try:
        before = read_json(run.paths.evaluation_json)
        judge = before["juiz"]
    except (OSError, ValueError, KeyError, TypeError):
        return "a avaliação anterior está ilegível"
    if before.get("respostas") != str(_responses_file(run)):
        return f"a avaliação anterior foi de '{before.get('respostas')}'"
    url, model, simulated = _judge_choice(run)
    if judge["status"] == "falhou":
        return "o juiz falhou na avaliação anterior"
    if judge["status"] == "pulado":
        return "pedido um juiz, e a avaliação anterior não teve juiz" if run.options.judge_requested else None
    if (judge["url"], judge["modelo"], bool(judge["simulado"])) != (url, model, simulated) and \
            (run.options.judge_requested or bool(judge["simulado"]) != simulated):
        return f"as notas existentes são de {judge['modelo']} em {judge['url']}"
    return None


def _judge_unreachable(run: Run, url: str, model: str, message: str) -> PipelineError:
    return PipelineError(
        f"O juiz não está disponível em {url} (modelo '{model}').\n  {message}\n"
        "O que fazer:\n"
        f"  - Ollama: instale (https://ollama.com), rode `ollama serve` em outro terminal e "
        f"`ollama pull {model}`; depois repita o comando.\n"
        "  - Outro servidor compatível com a OpenAI (llama.cpp, vLLM, LM Studio): "
        "--url http://localhost:8080/v1/chat/completions --modelo NOME\n"
        f"As métricas que não precisam de juiz já estão em '{run.paths.evaluation_json}'; "
        "rode o mesmo comando de novo quando o juiz estiver no ar.")


def _run_judge(run: Run):
    """Score with the judge; returns a :class:`~llmdefinitions.evaluation.JudgeOutcome`.

    A judge that was not asked for and does not answer is *skipped* (not an error);
    one that was asked for and does not answer, or never answers a single item, *fails*.
    """
    from ..evaluation import FAILED, JUDGED, SKIPPED, JudgeOutcome
    from ..judge import JudgeError, check_server

    url, model, simulated = _judge_choice(run)
    paths = run.paths
    with contextlib.ExitStack() as stack:
        endpoint = judge_endpoint(run.profile, url, model, simulated, log=run.log)
        stack.callback(endpoint.close)
        if run.options.redo and endpoint.cache_path(paths).is_file():
            endpoint.cache_path(paths).unlink()
            run.log(f"--refazer: cache de respostas do juiz '{endpoint.cache_path(paths).name}' apagado.")
        if not simulated:
            status = check_server(url, model, timeout=10.0)
            if not status.ok:
                if run.options.judge_requested:
                    return JudgeOutcome(FAILED, model, url, reason=status.message)
                hint = (f"sem juiz em {url} ({status.message.splitlines()[0]}). Para ter as notas de um LLM "
                        f"juiz: rode `ollama serve` e `ollama pull {model}`, ou passe --url/--modelo de um "
                        "servidor compatível com a OpenAI, e repita o comando.")
                return JudgeOutcome(SKIPPED, model, url, reason=hint)
            run.log(status.message)
        kwargs = {"deadline": run.options.judge_deadline} if run.options.judge_deadline else {}
        try:
            results, record = judge_responses(paths, endpoint, progress=run.options.progress,
                                              responses_file=_responses_file(run), **kwargs)
        except JudgeError as exc:                      # e.g. the server stopped in the middle
            return JudgeOutcome(FAILED, model, url, simulated, reason=str(exc))
    report = results.report
    summary = {key: record[key] for key in ("mean", "n_scored", "n_total", "interval") if key in record}
    outcome = JudgeOutcome(FAILED if report.judge_never_answered else JUDGED, model, url, simulated,
                           reason=str(report) if report.judge_never_answered else None,
                           summary=summary, report=report.to_dict())
    run.log(f"Juiz ({'DUBLÊ DE TESTE' if simulated else model}): {report}")
    if report.n_with_score:
        from ..judge import summarize_scores
        run.log(f"Nota média: {summarize_scores(results)}")
    return outcome


def _evaluate(run: Run) -> None:
    from ..evaluation import FAILED, SKIPPED, Evaluation, save_evaluation, score_verifiable
    from ..metrics import load_responses, reference_metrics

    _require_responses(run)
    paths, source = run.paths, _responses_file(run)
    entries = load_responses(source)
    evaluation = Evaluation(str(source), len(entries), reference_metrics(entries))
    if run.options.responses_file:
        evaluation.verifiable_note = "só para as respostas do próprio modelo (gerar), não para --respostas"
    elif paths.verifiable_responses.is_file():
        evaluation.verifiable = score_verifiable(paths.verifiable_responses)
    else:
        evaluation.verifiable_note = f"'{paths.verifiable_responses.name}' ainda não existe (rode gerar)"
    evaluation.judge = _run_judge(run)
    save_evaluation(evaluation, paths.evaluation_json, paths.evaluation_png)
    run.log(evaluation.to_text())
    judge = evaluation.judge
    if judge.status == SKIPPED:
        run.log(f"Juiz pulado: {judge.reason}")
    run.log(f"Avaliação salva em '{paths.evaluation_json}' e '{paths.evaluation_png.name}'.")
    if judge.simulated:
        run.log("Lembrete: notas do DUBLÊ DE TESTE, não de um juiz.")
    if judge.status == FAILED:
        url, model, _ = _judge_choice(run)
        raise _judge_unreachable(run, url, model, judge.reason or "")
