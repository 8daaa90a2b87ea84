"""The course's whole chain from the command line: ``python -m llmdefinitions`` (or ``llmdefinitions``).

Subcommands (pt-BR, like the course)::

    preparar   download, validate and split the data; quality report + length histogram
    treinar    finetune (resumes from the training checkpoint after an interruption)
    gerar      answer the test set -> instruction-data-with-response.json
    avaliar    score the answers with a judge LLM (Ollama or an OpenAI-compatible URL)
    tudo       all of the above, skipping what is already done

Every subcommand calls the same steps the notebooks use (:mod:`llmdefinitions.pipeline`)
and writes into the run folder ``<saida>/<perfil>/``. A step whose outputs exist and are
newer than its inputs is skipped (``--refazer`` redoes it), so after an interruption the
same command continues from the first missing output. Every output is written atomically
(:mod:`llmdefinitions.io`), so an interruption never leaves half a file behind.

Expected errors (bad option, unwritable folder, missing model, judge offline) end with
a pt-BR message and a non-zero exit code, never a traceback (``--depurar`` shows it).
Exit codes: 0 ok, 1 error, 2 bad command line, 130 interrupted (Ctrl+C).

Heavy imports (torch, matplotlib, the pipeline) happen inside the steps, so a bad
command line is answered at once.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .profiles import OUTPUT_ENV, PROFILE_ENV, PROFILES, Profile, load_profile, output_root

PROG = "python -m llmdefinitions"
STEP_NAMES = ("preparar", "treinar", "gerar", "avaliar")
DEFAULT_CHECKPOINT_EVERY = 50      # optimizer steps between training checkpoints

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

SIMULATED_JUDGE_WARNING = (
    "AVISO: --juiz-simulado: as notas vêm de um DUBLÊ DE TESTE "
    "(llmdefinitions.testing.fake_llm_server), que pontua por sobreposição de palavras.\n"
    "       Não são avaliações de um LLM juiz: servem só para testar o encadeamento; "
    "não as use como resultado."
)


class CliError(Exception):
    """An expected failure: its message (pt-BR) is shown without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- argparse in pt-BR

# argparse builds its messages with gettext's ``_``; these are the ones a user can meet.
_ARGPARSE_PT: Dict[str, str] = {
    "usage: ": "uso: ",
    "positional arguments": "argumentos posicionais",
    "options": "opções",
    "show this help message and exit": "mostra esta ajuda e sai",
    "show program's version number and exit": "mostra a versão e sai",
    "%(prog)s: error: %(message)s\n": "%(prog)s: erro: %(message)s\n",
    "the following arguments are required: %s": "faltam os argumentos obrigatórios: %s",
    "invalid choice: %(value)r (choose from %(choices)s)":
        "opção inválida: %(value)r (escolha entre %(choices)s)",
    "unrecognized arguments: %s": "argumentos não reconhecidos: %s",
    "expected one argument": "esperava um valor",
    "expected at most one argument": "esperava no máximo um valor",
    "expected at least one argument": "esperava ao menos um valor",
    "argument %(argument_name)s: %(message)s": "argumento %(argument_name)s: %(message)s",
    "invalid %(type)s value: %(value)r": "valor inválido (%(type)s): %(value)r",
    "ambiguous option: %(option)s could match %(matches)s":
        "opção ambígua: %(option)s pode ser %(matches)s",
    "not allowed with argument %s": "não pode ser usado com o argumento %s",
    "one of the arguments %s is required": "um dos argumentos %s é obrigatório",
    "unknown parser %(parser_name)r (choices: %(choices)s)":
        "subcomando desconhecido %(parser_name)r (opções: %(choices)s)",
    "ignored explicit argument %r": "argumento explícito ignorado: %r",
}


@contextlib.contextmanager
def _argparse_in_portuguese() -> Iterator[None]:
    """Translate argparse's messages while the parser is built and used (then restore)."""
    old_gettext, old_ngettext = argparse._, argparse.ngettext

    def ngettext(singular: str, plural: str, n: int) -> str:
        if singular == "expected %s argument":
            return "esperava %s valor" if n == 1 else "esperava %s valores"
        return old_ngettext(singular, plural, n)

    argparse._ = lambda message: _ARGPARSE_PT.get(message, old_gettext(message))
    argparse.ngettext = ngettext
    try:
        yield
    finally:
        argparse._, argparse.ngettext = old_gettext, old_ngettext


def _profile_name(value: str) -> str:
    name = value.strip().lower()
    if name not in PROFILES:
        raise argparse.ArgumentTypeError(
            f"perfil desconhecido: {value!r}; use um destes: {', '.join(PROFILES)}")
    return name


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"esperava um número inteiro >= 0, recebi {value!r}")
    return number


def _add_common_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """Options every subcommand takes; accepted before or after the subcommand.

    On the subcommands the defaults are SUPPRESS, so a value given before the
    subcommand is not overwritten by the subcommand's default.
    """
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("opções comuns")
    group.add_argument("--perfil", type=_profile_name, metavar="NOME", default=default(None),
                       help=f"completo, rapido ou teste (padrão: ${PROFILE_ENV} ou completo)")
    group.add_argument("--saida", metavar="PASTA", default=default(None),
                       help=f"pasta de saída (padrão: ${OUTPUT_ENV} ou ./saida); "
                            "os resultados ficam em PASTA/<perfil>/")
    group.add_argument("--dispositivo", metavar="DISP", default=default(None),
                       help="cpu, cuda, cuda:1 ou mps (padrão: o melhor disponível)")
    group.add_argument("--refazer", action="store_true", default=default(False),
                       help="refaz as etapas mesmo que seus arquivos já existam "
                            "(o treino recomeça do zero)")
    group.add_argument("--depurar", action="store_true", default=default(False),
                       help="mostra o traceback completo quando há erro")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--salvar-a-cada", type=_non_negative_int, metavar="PASSOS",
                        default=DEFAULT_CHECKPOINT_EVERY, dest="salvar_a_cada",
                        help="grava o checkpoint de retomada a cada PASSOS passos, além do fim "
                             f"de cada época (padrão: {DEFAULT_CHECKPOINT_EVERY}; 0 = só no fim da época)")


def _add_judge_options(parser: argparse.ArgumentParser) -> None:
    from_judge = "http://localhost:11434/api/chat"
    parser.add_argument("--url", metavar="URL", default=None,
                        help=f"endereço do juiz: Ollama ({from_judge}, o padrão) ou um servidor "
                             "compatível com a OpenAI (.../v1/chat/completions: llama.cpp, vLLM, LM Studio)")
    parser.add_argument("--modelo", metavar="NOME", default=None,
                        help="modelo juiz (padrão: o do perfil, llama3)")
    parser.add_argument("--juiz-simulado", action="store_true", dest="juiz_simulado",
                        help="usa o DUBLÊ DE TESTE embutido no lugar de um juiz de verdade "
                             "(notas por sobreposição de palavras; só para testes/CI, sem rede)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (build it inside :func:`_argparse_in_portuguese` for pt-BR messages)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ajuste fino de instruções do GPT-2 de ponta a ponta, sem notebooks.\n"
                    "Cada etapa usa as mesmas funções dos notebooks e grava em <saida>/<perfil>/.",
        epilog="Exemplos:\n"
               f"  {PROG} tudo --perfil rapido\n"
               f"  {PROG} treinar --perfil completo --dispositivo cuda\n"
               f"  {PROG} avaliar --url http://localhost:8080/v1/chat/completions --modelo llama3\n"
               f"  {PROG} tudo --perfil teste --juiz-simulado   # CI, sem rede nem juiz\n"
               "Interrompeu? Rode o mesmo comando de novo: ele continua de onde parou.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versao", action="version", version=f"llmdefinitions {__version__}",
                        help="mostra a versão e sai")
    _add_common_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="comando", metavar="SUBCOMANDO", title="subcomandos")
    sub.required = True
    helps = {
        "preparar": "baixa, valida e divide os dados; mostra o relatório de qualidade e grava o "
                    "histograma de comprimentos",
        "treinar": "faz o ajuste fino (retoma do checkpoint se foi interrompido)",
        "gerar": "gera as respostas do modelo para o conjunto de teste",
        "avaliar": "pede a um LLM juiz (Ollama ou URL compatível com a OpenAI) as notas das respostas",
        "tudo": "roda todas as etapas, pulando as que já estão prontas",
    }
    for name, text in helps.items():
        command = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        _add_common_options(command, top_level=False)
        if name in ("treinar", "tudo"):
            _add_train_options(command)
        if name in ("avaliar", "tudo"):
            _add_judge_options(command)
    return parser


# --------------------------------------------------------------------------- run state

@dataclass
class Run:
    """One invocation: the parsed options, the profile and its folders, lazily the device and data."""

    args: argparse.Namespace
    profile: Profile
    paths: Any                            # pipeline.RunPaths (imported lazily: it needs torch)
    _device: Any = None
    _prepared: Any = None
    log: Callable[[str], None] = field(default=lambda text: print(text, flush=True))

    @property
    def device(self):
        if self._device is None:
            self._device = resolve_device(self.args.dispositivo)
        return self._device

    def prepared(self):
        """Data of the profile (downloaded once, then read), computed once per invocation."""
        if self._prepared is None:
            from . import pipeline
            self._prepared = pipeline.prepare_data(self.profile, self.paths)
        return self._prepared

    def command(self, subcommand: str) -> str:
        """The command line that runs ``subcommand`` on this same run folder."""
        line = f"{PROG} {subcommand} --perfil {self.profile.name}"
        if self.args.saida:
            line += f" --saida {shlex.quote(str(self.args.saida))}"
        return line


def resolve_device(name: Optional[str]):
    """``torch.device`` for ``--dispositivo`` (default: cuda > mps > cpu), checked to exist."""
    import torch

    from .device import choose_device

    try:
        device = choose_device(name)
    except RuntimeError:
        raise CliError(f"Dispositivo inválido: {name!r}. Use cpu, cuda, cuda:0 ou mps.",
                       EXIT_USAGE) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--dispositivo {name}: não há GPU CUDA disponível nesta máquina "
                       "(use --dispositivo cpu ou deixe sem a opção).", EXIT_USAGE)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--dispositivo {name}: MPS (GPU da Apple) não está disponível nesta máquina.",
                       EXIT_USAGE)
    return device


_OS_ERRORS_PT = {
    errno.EACCES: "permissão negada",
    errno.EPERM: "operação não permitida",
    errno.ENOTDIR: "parte do caminho é um arquivo, não uma pasta",
    errno.EEXIST: "já existe um arquivo com esse nome",
    errno.EROFS: "o sistema de arquivos é somente leitura",
    errno.ENOSPC: "não há espaço no disco",
}


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and check that a file can be written there (pt-BR error if not)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".teste-escrita-", dir=folder)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        reason = _OS_ERRORS_PT.get(exc.errno, exc.strerror or str(exc))
        raise CliError(
            f"Não é possível escrever na pasta de saída '{folder}': {reason}. "
            "Escolha outra pasta com --saida (ou corrija as permissões)."
        ) from None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _short(path: Path, run: Run) -> str:
    try:
        return str(path.relative_to(run.paths.root))
    except ValueError:
        return str(path)


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# --------------------------------------------------------------------------- steps

@dataclass(frozen=True)
class Step:
    """A pipeline step: what it reads, what it writes, how to run it."""

    name: str
    title: str
    inputs: Callable[[Run], List[Path]]
    outputs: Callable[[Run], List[Path]]
    run: Callable[[Run], None]
    require: Callable[[Run], None] = lambda run: None        # fail fast when run alone
    stale: Callable[[Run], Optional[str]] = lambda run: None  # extra reason to redo

    def status(self, run: Run) -> Tuple[bool, str]:
        """``(done, why not)``: done when every output exists and is newer than every input."""
        outputs = self.outputs(run)
        missing = [p for p in outputs if not p.is_file()]
        if missing:
            return False, f"falta {_short(missing[0], run)}"
        inputs = [p for p in self.inputs(run) if p.is_file()]
        if inputs:
            newest = max(inputs, key=_mtime)
            oldest = min(outputs, key=_mtime)
            if _mtime(newest) > _mtime(oldest):
                return False, f"{_short(newest, run)} é mais novo que {_short(oldest, run)}"
        reason = self.stale(run)
        return (False, reason) if reason else (True, "")


def _model_file(run: Run) -> Path:
    return run.paths.sft_model(run.profile.model_name)


# preparar ------------------------------------------------------------------------

def _prepare(run: Run) -> None:
    from . import pipeline
    from .data import download_and_load_file, split_data

    profile, paths = run.profile, run.paths
    data = download_and_load_file(paths.data_file)
    full = split_data(data)
    prepared = run.prepared()
    run.log(f"{len(data)} entradas válidas em '{paths.data_file}'. Divisão 85/10/5: treino "
            f"{len(full.train)}, validação {len(full.val)}, teste {len(full.test)}; o perfil "
            f"'{profile.name}' usa {len(prepared.train)}/{len(prepared.val)}/{len(prepared.test)}.")
    report = pipeline.save_data_report(profile, paths, prepared)
    run.log("")
    run.log(report.to_table())
    run.log("")
    run.log(f"Relatório salvo em '{paths.quality_report}'; histograma de comprimentos em "
            f"'{paths.lengths_png}'.")


PREPARE = Step(
    "preparar", "dados (download, validação, divisão, relatório de qualidade)",
    inputs=lambda run: [],
    outputs=lambda run: [run.paths.data_file, run.paths.quality_report, run.paths.lengths_png],
    run=_prepare,
)


# treinar -------------------------------------------------------------------------

def _train(run: Run) -> None:
    from . import pipeline

    profile, paths, args = run.profile, run.paths, run.args
    model_file = _model_file(run)
    trained = [model_file, paths.losses_json]
    if (not args.refazer and all(p.is_file() for p in trained) and paths.data_file.is_file()
            and _mtime(paths.data_file) <= min(_mtime(p) for p in trained)):
        run.log(f"Modelo já treinado em '{model_file}': só redesenhando '{paths.losses_png.name}'.")
        pipeline.save_loss_plot(profile, paths)
        return
    prepared = run.prepared()
    device = run.device
    pipeline.save_run_config(profile, paths, device)
    resume = not args.refazer and paths.train_checkpoint.is_file()
    run.log(f"Modelo {profile.model_name}: {len(prepared.train)} exemplos de treino, "
            f"{profile.num_epochs} época(s)"
            + (f", no máximo {profile.max_steps} passos" if profile.max_steps else "") + ".")
    if resume:
        # The checkpoint holds the weights: no need to read OpenAI's checkpoint again.
        from .config import get_config
        from .model import GPTModel

        run.log(f"Checkpoint de um treino interrompido encontrado ('{paths.train_checkpoint.name}'): "
                "o treino continua de onde parou.")
        model = GPTModel(get_config(profile.model_name)).to(device)
    else:
        model = pipeline.load_pretrained(profile, paths, device)
    loaders = pipeline.make_loaders(profile, prepared, device)
    start = time.perf_counter()
    pipeline.finetune(profile, paths, model, prepared, loaders, device, resume=resume,
                      progress=True, checkpoint_every=args.salvar_a_cada)
    run.log(f"Treino concluído em {_elapsed(time.perf_counter() - start)}.")
    pipeline.save_loss_plot(profile, paths)
    losses = pipeline.load_losses(paths)
    if losses["val_losses"]:
        run.log(f"Perda final: treino {losses['train_losses'][-1]:.3f}, "
                f"validação {losses['val_losses'][-1]:.3f}.")
    run.log(f"Modelo salvo em '{model_file}'; perdas em '{paths.losses_json.name}' e "
            f"'{paths.losses_png.name}'.")
    # The checkpoint (weights + optimizer state: ~3x the model) only serves an interrupted run.
    if paths.train_checkpoint.is_file():
        paths.train_checkpoint.unlink()
        run.log(f"Checkpoint de retomada '{paths.train_checkpoint.name}' removido (o treino terminou).")


TRAIN = Step(
    "treinar", "ajuste fino",
    inputs=lambda run: [run.paths.data_file],
    outputs=lambda run: [_model_file(run), run.paths.losses_json, run.paths.losses_png],
    run=_train,
)


# gerar ---------------------------------------------------------------------------

def _require_model(run: Run) -> None:
    model_file = _model_file(run)
    if not model_file.is_file():
        raise CliError(
            f"Modelo ajustado não encontrado em '{model_file}'. Treine-o antes:\n"
            f"  {run.command('treinar')}\n"
            f"(ou rode tudo de uma vez: {run.command('tudo')})")


def _generate(run: Run) -> None:
    from . import pipeline

    _require_model(run)
    model = pipeline.load_finetuned(run.profile, run.paths, run.device)
    prepared = run.prepared()
    rows = pipeline.generate_test_responses(run.profile, run.paths, model, prepared)
    run.log(f"{len(rows)} respostas salvas em '{run.paths.responses}'.")
    if rows:
        first = rows[0]
        run.log(f"Exemplo — instrução: {first['instruction']!r}\n"
                f"          referência: {first['output']!r}\n"
                f"          modelo: {first['model_response']!r}")


GENERATE = Step(
    "gerar", "respostas para o conjunto de teste",
    inputs=lambda run: [run.paths.data_file, _model_file(run)],
    outputs=lambda run: [run.paths.responses],
    run=_generate,
    require=_require_model,
)


# avaliar -------------------------------------------------------------------------

def _judge_model(run: Run) -> str:
    return run.args.modelo or run.profile.judge_model


def _judge_url(run: Run) -> str:
    from .judge import DEFAULT_URL
    return run.args.url or DEFAULT_URL


def _require_responses(run: Run) -> None:
    if not run.paths.responses.is_file():
        raise CliError(
            f"Respostas do modelo não encontradas em '{run.paths.responses}'. Gere-as antes:\n"
            f"  {run.command('gerar')}")


def _judge_changed(run: Run) -> Optional[str]:
    """Reason to redo the scores when they came from another judge than the one asked for now."""
    from .io import read_json

    try:
        summary = read_json(run.paths.scores_summary)
        before = (summary["judge_model"], bool(summary["simulated"]), summary["judge_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return "o resumo das notas está ilegível"
    simulated = bool(run.args.juiz_simulado)
    if before[1] != simulated:
        return ("as notas existentes são do juiz simulado" if before[1]
                else "as notas existentes são de um juiz de verdade, e agora foi pedido o simulado")
    if before[0] != _judge_model(run):
        return f"as notas existentes são do juiz '{before[0]}', e agora foi pedido '{_judge_model(run)}'"
    if not simulated and before[2] != _judge_url(run):
        return f"as notas existentes vieram de {before[2]}, e agora foi pedido {_judge_url(run)}"
    return None


def _judge_unreachable(run: Run, status) -> CliError:
    model, url = _judge_model(run), _judge_url(run)
    return CliError(
        f"O juiz não está disponível em {url} (modelo '{model}').\n"
        f"  {status.message}\n"
        "O que fazer:\n"
        f"  - Ollama: instale (https://ollama.com), rode `ollama serve` em outro terminal e "
        f"`ollama pull {model}`; depois repita o comando.\n"
        "  - Outro servidor compatível com a OpenAI (llama.cpp, vLLM, LM Studio): "
        "--url http://localhost:8080/v1/chat/completions --modelo NOME\n"
        "  - Só para testar o encadeamento, sem juiz de verdade: --juiz-simulado "
        "(as notas vêm de um dublê de teste).\n"
        f"O que já foi feito está salvo em '{run.paths.run_dir}': "
        "rode o mesmo comando de novo para continuar dali.")


def _evaluate(run: Run) -> None:
    from . import pipeline
    from .judge import JudgeError, check_server, summarize_scores

    _require_responses(run)
    paths, model = run.paths, _judge_model(run)
    simulated = bool(run.args.juiz_simulado)
    if run.args.refazer:
        cache = paths.simulated_judge_cache if simulated else paths.judge_cache
        if cache.is_file():
            cache.unlink()
            run.log(f"--refazer: cache de respostas do juiz '{cache.name}' apagado.")
    with contextlib.ExitStack() as stack:
        if simulated:
            from .testing.fake_llm_server import FakeLLMServer

            server = stack.enter_context(FakeLLMServer(models=[model]))
            url = server.ollama_url
            run.log(SIMULATED_JUDGE_WARNING)
            run.log(f"Dublê de teste servindo em {server.url}.")
        else:
            url = _judge_url(run)
            status = check_server(url, model, timeout=10.0)
            if not status.ok:
                raise _judge_unreachable(run, status)
            run.log(status.message)
        try:
            results, record = pipeline.judge_responses(run.profile, paths, url=url, model=model,
                                                       simulated=simulated)
        except JudgeError as exc:                   # e.g. the server stopped in the middle
            raise CliError(
                f"O juiz falhou: {exc}\nAs respostas que ele já deu estão no cache "
                f"('{paths.run_dir}'): rode o mesmo comando de novo para continuar dali.") from None
    summary = summarize_scores(results)
    who = "DUBLÊ DE TESTE" if simulated else f"juiz {model}"
    run.log(f"{summary} ({who}).")
    failures = [r for r in results if r.score is None]
    if failures:
        run.log(f"{len(failures)} item(ns) sem nota; primeiro motivo: {failures[0].reason}")
    run.log(f"Notas salvas em '{paths.scores}'; resumo em '{paths.scores_summary.name}'; "
            f"histograma em '{paths.scores_png.name}'.")
    if simulated:
        run.log("Lembrete: notas do DUBLÊ DE TESTE, não de um juiz.")


EVALUATE = Step(
    "avaliar", "notas do LLM juiz",
    inputs=lambda run: [run.paths.responses],
    outputs=lambda run: [run.paths.scores, run.paths.scores_summary, run.paths.scores_png],
    run=_evaluate,
    require=_require_responses,
    stale=_judge_changed,
)

STEPS: Dict[str, Step] = {step.name: step for step in (PREPARE, TRAIN, GENERATE, EVALUATE)}


def run_steps(run: Run, steps: Sequence[Step]) -> None:
    """Run ``steps`` in order, skipping those already done (unless ``--refazer``)."""
    total = len(steps)
    for number, step in enumerate(steps, start=1):
        label = f"[{number}/{total}] {step.name}"
        if run.args.refazer:
            why = "--refazer"
        else:
            done, why = step.status(run)
            if done:
                names = ", ".join(_short(p, run) for p in step.outputs(run))
                run.log(f"{label}: já feito ({names}) — pulando. Use --refazer para refazer.")
                continue
        run.log(f"{label}: {step.title} — executando ({why})")
        start = time.perf_counter()
        step.run(run)
        run.log(f"{label}: concluído em {_elapsed(time.perf_counter() - start)}.")


# --------------------------------------------------------------------------- main

def _dispatch(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.perfil)
    except ValueError as exc:                       # bad $LLMDEF_PERFIL
        raise CliError(str(exc), EXIT_USAGE) from None
    ensure_writable(output_root(args.saida) / profile.name)   # before importing torch

    from .pipeline import run_paths

    paths = run_paths(profile, output_root(args.saida))
    run = Run(args, profile, paths)
    steps = list(STEPS.values()) if args.comando == "tudo" else [STEPS[args.comando]]
    if len(steps) == 1 and not args.refazer and not steps[0].status(run)[0]:
        steps[0].require(run)
    start = time.perf_counter()
    run.log(f"llmdefinitions {args.comando} — perfil '{profile.name}' ({profile.model_name}), "
            f"dispositivo {run.device}")
    run.log(f"Pasta da execução: {paths.run_dir.resolve()}")
    run_steps(run, steps)
    if args.comando == "tudo":
        from .pipeline import describe
        run.log(describe(paths))
    run.log(f"Pronto em {_elapsed(time.perf_counter() - start)}.")
    return EXIT_OK


def _print_error(message: str) -> None:
    print(f"erro: {message}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m llmdefinitions`` and of the ``llmdefinitions`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with _argparse_in_portuguese():
        parser = build_parser()
        if not argv:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:                   # --help, --versao or a bad command line
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    os.environ.setdefault("MPLBACKEND", "Agg")      # figures go to files; no window
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("\nInterrompido. O que terminou está salvo; rode o mesmo comando de novo "
              "para continuar de onde parou.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except CliError as exc:
        if args.depurar:
            raise
        _print_error(str(exc))
        return exc.exit_code
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        # The package's errors (DatasetError, DownloadError, JudgeError, ...) carry pt-BR messages.
        if args.depurar:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        _print_error(f"{message}\n(use --depurar para ver o traceback)")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
