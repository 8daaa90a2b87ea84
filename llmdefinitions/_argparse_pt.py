"""argparse speaking pt-BR, for the command line (and nothing else).

argparse builds its messages with gettext's ``_``; :func:`argparse_in_portuguese`
swaps in pt-BR text while a parser is built and used, then restores argparse as it
was, so nothing outside the command line sees the change.
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Dict, Iterator

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
def argparse_in_portuguese() -> Iterator[None]:
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
