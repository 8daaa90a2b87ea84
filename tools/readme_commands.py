"""The README's commands for a fresh machine, as written, for CI to run (and nothing else).

The README marks each command block with an HTML comment on the line before its fence::

    <!-- comando: tarefa-principal -->
    ```bash
    python tools/instalar.py && python -m llmdefinitions tudo
    ```

``python tools/readme_commands.py NOME`` prints the command of block ``NOME``; ``.ci/run``
runs what it prints, so the README cannot drift from what CI checks.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- comando: ([\w-]+) -->\s*\n```(?:bash|sh)?\n(.*?)\n```", re.S)


def commands(text: str) -> dict:
    """``{name: command}`` of every marked block; a block must hold exactly one command line."""
    found = {}
    for name, body in BLOCK.findall(text):
        lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if len(lines) != 1:
            raise ValueError(f"README: o bloco '{name}' deve ter exatamente um comando, tem {len(lines)}.")
        if name in found:
            raise ValueError(f"README: o bloco '{name}' aparece duas vezes.")
        found[name] = lines[0].strip()
    return found


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    found = commands(README.read_text(encoding="utf-8"))
    if len(argv) != 1 or argv[0] not in found:
        print(f"uso: python tools/readme_commands.py {{{','.join(found)}}}", file=sys.stderr)
        return 2
    print(found[argv[0]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
