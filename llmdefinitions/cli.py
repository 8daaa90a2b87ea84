"""The command line: ``python -m llmdefinitions`` (or ``llmdefinitions``).

It parses options, hands them to the one orchestrator (:mod:`llmdefinitions.pipeline`),
and turns the outcome into messages and exit codes: 0 ok, 1 error, 2 bad command line,
130 interrupted (Ctrl+C). Expected errors end with a pt-BR message, never a traceback
(``--depurar`` shows it). Heavy imports (torch) happen inside the steps, so a bad
command line is answered at once.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

from ._argparse_pt import argparse_in_portuguese
from .distributed import DistributedSetupError, ParallelOptions, launch_from_env
from .pipeline import (DEFAULT_CHECKPOINT_EVERY, PROG, STEP_NAMES, PipelineError, Run, RunOptions,
                       describe, run_steps)

from .profiles import (DEFAULT_JUDGE_DEADLINE, DEFAULT_JUDGE_URL, OUTPUT_ENV, PROFILE_ENV, PROFILES, load_profile,
                       output_root)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MIRROR_HELP = ("Sem internet: LLMDEF_MIRROR=PASTA aponta para um espelho offline dos arquivos "
               "públicos (dados, tokenizador, pesos), consultado antes de qualquer download; veja o README.")

HELPS = {
    "preparar": "baixa, valida e divide os dados; mostra o relatório de qualidade e grava o "
                "histograma de comprimentos",
    "treinar": "faz o ajuste fino (retoma do checkpoint se foi interrompido)",
    "gerar": "gera as respostas do modelo para o conjunto de teste (retoma se foi interrompido)",
    "avaliar": "avalia as respostas: métricas de referência e instruções verificáveis (sem servidor) e, se "
               "houver um, as notas de um LLM juiz (Ollama ou URL compatível com a OpenAI)",
    "preferencia": "opcional, depois de treinar: ajuste fino por preferência (DPO) do modelo ajustado, "
                   "com adaptadores LoRA (retoma se foi interrompido; não faz parte de tudo)",
    "tudo": "roda as etapas preparar, treinar, gerar e avaliar, pulando as que já estão prontas",
}
REDO_HELPS = {
    "preparar": "refaz a etapa mesmo que seus arquivos já existam",
    "treinar": "refaz o treino do zero, ignorando modelo e checkpoint existentes",
    "gerar": "gera de novo todas as respostas, ignorando as já salvas",
    "avaliar": "avalia de novo, apagando o cache do juiz (todas as notas são pedidas de novo)",
    "preferencia": "refaz o DPO do zero, ignorando adaptador e checkpoint existentes",
    "tudo": "refaz todas as etapas (o treino recomeça do zero)",
}


class UsageError(Exception):
    """A bad command line or environment setting (exit code 2)."""


def _profile_name(value: str) -> str:
    name = value.strip().lower()
    if name not in PROFILES:
        raise argparse.ArgumentTypeError(
            f"perfil desconhecido: {value!r}; use um destes: {', '.join(PROFILES)}")
    return name


def _int_at_least(minimum: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise argparse.ArgumentTypeError(f"esperava um número inteiro >= {minimum}, recebi {value!r}")
        return number
    return parse


_non_negative_int, _positive_int = _int_at_least(0), _int_at_least(1)


def _positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"esperava um número de segundos > 0, recebi {value!r}")
    return number


def _add_common_options(parser: argparse.ArgumentParser, command: Optional[str]) -> None:
    """Options every subcommand takes, before or after it.

    On the subcommands the defaults are SUPPRESS, so a value given before the subcommand
    is not overwritten by the subcommand's default.
    """
    default = (lambda value: value) if command is None else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("opções comuns")
    group.add_argument("--perfil", type=_profile_name, metavar="NOME", default=default(None),
                       help=f"completo, rapido ou teste (padrão: ${PROFILE_ENV}; sem ela, completo com GPU "
                            "e rapido sem GPU)")
    group.add_argument("--saida", metavar="PASTA", default=default(None),
                       help=f"pasta de saída (padrão: ${OUTPUT_ENV} ou ./saida); "
                            "os resultados ficam em PASTA/<perfil>/")
    group.add_argument("--dispositivo", metavar="DISP", default=default(None),
                       help="cpu, cuda, cuda:1 ou mps (padrão: o melhor disponível)")
    group.add_argument("--como-no-livro", action="store_true", dest="como_no_livro", default=default(False),
                       help="calcula exatamente como o livro (fp32, lotes preenchidos embaralhados, AdamW "
                            "padrão, uma resposta por vez) em vez do caminho otimizado (padrão)")
    group.add_argument("--refazer", action="store_true", default=default(False),
                       help=REDO_HELPS.get(command or "tudo"))
    group.add_argument("--depurar", action="store_true", default=default(False),
                       help="mostra o traceback completo quando há erro")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (build it inside :func:`argparse_in_portuguese` for pt-BR messages)."""
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
               f"  {PROG} preferencia --perfil rapido   # DPO, depois de treinar (opcional)\n"
               "  torchrun --nproc_per_node=2 -m llmdefinitions treinar --perfil completo   # 2 GPUs\n"
               "Interrompeu? Rode o mesmo comando de novo: ele continua de onde parou.\n"
               + MIRROR_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versao", action="version", version=f"llmdefinitions {__version__}",
                        help="mostra a versão e sai")
    _add_common_options(parser, None)
    sub = parser.add_subparsers(dest="comando", metavar="SUBCOMANDO", title="subcomandos")
    sub.required = True
    for name, text in HELPS.items():
        command = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                                 epilog=MIRROR_HELP)
        _add_common_options(command, name)
        if name in ("treinar", "preferencia", "tudo"):
            command.add_argument("--salvar-a-cada", type=_non_negative_int, metavar="PASSOS",
                                 default=DEFAULT_CHECKPOINT_EVERY, dest="salvar_a_cada",
                                 help="grava o checkpoint de retomada a cada PASSOS passos, além do fim "
                                      f"de cada época (padrão: {DEFAULT_CHECKPOINT_EVERY}; 0 = só no fim "
                                      "da época)")
        if name == "treinar":
            group = command.add_argument_group(
                "treino distribuído (só com torchrun: torchrun --nproc_per_node=N -m llmdefinitions treinar ...)")
            group.add_argument("--fsdp", action="store_true",
                               help="fatia modelo e otimizador entre os processos (FSDP2) em vez de copiá-los "
                                    "(DDP, o padrão): para modelos que não cabem numa GPU")
            group.add_argument("--lote-por-processo", type=_positive_int, metavar="N", dest="lote_por_processo",
                               help="exemplos por processo em cada lote (padrão: o lote do perfil dividido "
                                    "pelos processos, para manter o lote global)")
            group.add_argument("--acumular", type=_positive_int, metavar="K",
                               help="lotes acumulados por passo de otimização (lote global = N × processos × K)")
        if name in ("avaliar", "tudo"):
            command.add_argument("--url", metavar="URL", default=None,
                                 help=f"endereço do juiz: Ollama ({DEFAULT_JUDGE_URL}, o padrão) ou um "
                                      "servidor compatível com a OpenAI (.../v1/chat/completions: "
                                      "llama.cpp, vLLM, LM Studio)")
            command.add_argument("--modelo", metavar="NOME", default=None,
                                 help="modelo juiz (padrão: o do perfil, llama3)")
            command.add_argument("--juiz-simulado", action="store_true", dest="juiz_simulado",
                                 help="usa o DUBLÊ DE TESTE embutido no lugar de um juiz de verdade "
                                      "(notas por sobreposição de palavras; só para testes/CI, sem rede)")
            command.add_argument("--timeout", type=_positive_seconds, metavar="SEGUNDOS", default=None,
                                 help=f"tempo máximo de cada pedido ao juiz (padrão: {DEFAULT_JUDGE_DEADLINE:.0f} s); "
                                      "um juiz que não responde a 3 itens seguidos encerra a avaliação")
        if name == "avaliar":
            command.add_argument("--respostas", metavar="ARQUIVO", default=None,
                                 help="avalia este arquivo de respostas (formato do livro: instruction, input, "
                                      "output, model_response) em vez das respostas desta execução")
    _add_datagen_parser(sub)
    return parser


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """The :class:`RunOptions` a parsed command line asks for."""
    try:
        profile = load_profile(args.perfil)
    except ValueError as exc:                       # a bad $LLMDEF_PERFIL
        raise UsageError(str(exc)) from None
    if args.como_no_livro:
        profile = profile.book_way()
    return RunOptions(profile=profile, output=Path(args.saida) if args.saida else None,
                      device=args.dispositivo, redo=args.refazer,
                      checkpoint_every=getattr(args, "salvar_a_cada", DEFAULT_CHECKPOINT_EVERY),
                      judge_url=getattr(args, "url", None), judge_model=getattr(args, "modelo", None),
                      judge_simulated=getattr(args, "juiz_simulado", False),
                      judge_deadline=getattr(args, "timeout", None),
                      responses_file=Path(args.respostas) if getattr(args, "respostas", None) else None,
                      parallel=ParallelOptions(fsdp=getattr(args, "fsdp", False),
                                               per_device_batch=getattr(args, "lote_por_processo", None),
                                               grad_accum_steps=getattr(args, "acumular", None)))


def run_command(args: argparse.Namespace, log=print) -> int:
    """Run the subcommand of ``args``; errors propagate (see :func:`main`)."""
    if args.comando == DATAGEN_COMMAND:
        return run_datagen(args, log)
    options = options_from_args(args)
    try:
        launch = launch_from_env()
    except DistributedSetupError as exc:
        raise UsageError(str(exc)) from None
    if launch is not None and args.comando != "treinar":
        raise UsageError(f"Com torchrun, só o subcomando treinar é distribuído; rode '{args.comando}' "
                         f"sem torchrun ({PROG} {args.comando} ...).")
    if launch is None and options.parallel.requested:
        raise UsageError("--fsdp, --lote-por-processo e --acumular só valem num treino distribuído: lance com "
                         "torchrun (ex.: torchrun --nproc_per_node=2 -m llmdefinitions treinar ...).")
    if launch is not None and not launch.is_main:
        log = lambda *parts, **kwargs: None  # noqa: E731  (only rank 0 speaks)
    run = Run(options, log=lambda text: log(text, flush=True))
    names = list(STEP_NAMES) if args.comando == "tudo" else [args.comando]
    if options.device is not None:
        try:
            run.device
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    profile = options.profile
    run.log(f"llmdefinitions {args.comando} — perfil '{profile.name}' ({profile.model_name})"
            + (", como no livro" if profile.way == "livro" else ""))
    run.log(f"Pasta da execução: {output_root(options.output).resolve() / profile.name}")
    run_steps(run, names)
    if args.comando == "tudo":
        run.log(describe(run.paths))
    return EXIT_OK


# --------------------------------------------------------------------------- gerar-dados
# Synthetic instruction data (llmdefinitions.datagen): Self-Instruct or Magpie with a local LLM.

DATAGEN_COMMAND = "gerar-dados"
DATAGEN_HELP = ("gera amostras sintéticas (Self-Instruct ou Magpie) com um LLM local, filtra e presta contas "
                "de cada item (retoma se foi interrompido)")
REDO_HELPS[DATAGEN_COMMAND] = "apaga o cache de respostas e pede tudo de novo ao modelo"


def _add_datagen_parser(sub) -> None:
    from .pipeline.synthetic import METHODS, RESPONSE_MODES, TEMPLATES

    command = sub.add_parser(
        DATAGEN_COMMAND, help=DATAGEN_HELP, description=DATAGEN_HELP[0].upper() + DATAGEN_HELP[1:] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exemplos:\n"
               f"  {PROG} {DATAGEN_COMMAND} --metodo magpie -n 50 --modelo llama3\n"
               f"  {PROG} {DATAGEN_COMMAND} --metodo self-instruct -n 50 "
               "--url http://127.0.0.1:8081/v1/chat/completions --modelo smollm2\n"
               "Arquivos: <saida>/<perfil>/sinteticos-<método>.json (amostras mantidas, formato Alpaca), "
               "-contas.json (cada item: mantido ou o motivo do descarte), -resumo.json e -cache.jsonl.\n"
               "Interrompeu? Rode o mesmo comando de novo: nenhum pedido é repetido.\n" + MIRROR_HELP)
    _add_common_options(command, DATAGEN_COMMAND)
    command.add_argument("--metodo", choices=METHODS, required=True, help="self-instruct ou magpie")
    command.add_argument("-n", type=_positive_int, required=True, metavar="N", dest="n",
                         help="quantos itens pedir ao modelo (cada um é mantido ou descartado com o motivo)")
    command.add_argument("--url", metavar="URL", default=None,
                         help=f"servidor do LLM: Ollama ({DEFAULT_JUDGE_URL}, o padrão) ou compatível com a "
                              "OpenAI (.../v1/chat/completions: llama.cpp, vLLM, LM Studio)")
    command.add_argument("--modelo", metavar="NOME", default=None, help="modelo (padrão: o do perfil, llama3)")
    command.add_argument("--template", choices=sorted(TEMPLATES), default=None,
                         help="formato de chat do modelo, para o Magpie (padrão: deduzido do nome do modelo)")
    command.add_argument("--resposta", choices=RESPONSE_MODES, default="chat",
                         help="Magpie: pede a resposta pela rota de chat (padrão) ou com o template completo (raw)")
    command.add_argument("--sistema", metavar="TEXTO", default=None,
                         help="Magpie: um turno de sistema antes do do usuário (modelos pequenos escrevem "
                              "instruções melhores depois do texto de sistema padrão deles)")
    command.add_argument("--tarefas-semente", metavar="ARQUIVO", default=None, dest="tarefas_semente",
                         help="JSON no formato Alpaca com as tarefas-semente do Self-Instruct e a referência "
                              "dos filtros de duplicatas (padrão: o conjunto de dados do curso)")
    command.add_argument("--semente", type=_non_negative_int, default=123, metavar="N",
                         help="semente aleatória: o item i usa N + i (padrão: 123)")


def run_datagen(args: argparse.Namespace, log=print) -> int:
    """``gerar-dados``: generate, filter, write the files, print the accounts; 1 if requests failed."""
    from .pipeline.synthetic import generate_synthetic_data

    try:
        profile = load_profile(args.perfil)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = generate_synthetic_data(
        profile, args.metodo, args.n, output=Path(args.saida) if args.saida else None, url=args.url,
        model=args.modelo, template=args.template, response_mode=args.resposta, system=args.sistema,
        seed_tasks_file=args.tarefas_semente, seed=args.semente, redo=args.refazer,
        log=lambda text: log(text, flush=True))
    log(str(result.report), flush=True)
    for entry in result.kept[:3]:
        log(f"  mantido: {entry['instruction'][:100]!r}", flush=True)
    log(f"Amostras mantidas: {result.paths.kept}\nContas de cada item: {result.paths.accounts}", flush=True)
    if result.report.n_failed:
        _print_error(f"{result.report.n_failed} de {args.n} itens ficaram sem resposta do modelo (veja os "
                     f"motivos em {result.paths.accounts}). Rode o mesmo comando de novo: só esses serão pedidos.")
        return EXIT_ERROR
    return EXIT_OK


def _print_error(message: str) -> None:
    print(f"erro: {message}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m llmdefinitions`` and of the ``llmdefinitions`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with argparse_in_portuguese():
        parser = build_parser()
        if not argv:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:                   # --help, --versao or a bad command line
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    os.environ.setdefault("MPLBACKEND", "Agg")      # figures go to files; no window
    # Ctrl+C must interrupt even when the parent started us with SIGINT ignored (a CI runner,
    # a background job): install Python's handler ourselves.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_command(args)
    except KeyboardInterrupt:
        print("\nInterrompido. O que terminou está salvo; rode o mesmo comando de novo "
              "para continuar de onde parou.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        _print_error(str(exc))
        return EXIT_USAGE
    except PipelineError as exc:
        if args.depurar:
            raise
        _print_error(str(exc))
        return EXIT_ERROR
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        # The package's errors (DatasetError, DownloadError, JudgeError, ...) carry pt-BR messages.
        if args.depurar:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        _print_error(f"{message}\n(use --depurar para ver o traceback)")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
