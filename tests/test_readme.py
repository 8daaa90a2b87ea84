"""The README's commands are the ones CI runs (tools/readme_commands.py reads them from README.md)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import readme_commands  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_has_the_two_commands_for_a_fresh_machine():
    found = readme_commands.commands(README)
    assert set(found) == {"tarefa-principal", "testes"}
    assert found["tarefa-principal"].startswith("python tools/instalar.py")
    assert "python -m llmdefinitions tudo" in found["tarefa-principal"]
    assert found["testes"].endswith("python -m pytest")


def test_ci_runs_them_as_written():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for name in ("tarefa-principal", "testes"):
        assert f"python tools/readme_commands.py {name}" in ci
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "readme_commands.py"), "testes"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == readme_commands.commands(README)["testes"]


@pytest.mark.parametrize("block, problem", [
    ("<!-- comando: x -->\n```bash\na\nb\n```", "exatamente um comando"),
    ("<!-- comando: x -->\n```bash\na\n```\n<!-- comando: x -->\n```bash\nb\n```", "duas vezes"),
])
def test_a_malformed_block_is_refused(block, problem):
    with pytest.raises(ValueError, match=problem):
        readme_commands.commands(block)


def test_every_script_the_readme_names_exists():
    for script in ("tools/instalar.py", "tools/slides.py", "tools/make_figures.py", "benchmarks/bench_speed.py"):
        assert script in README and (ROOT / script).is_file(), script
