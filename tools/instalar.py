"""Install the course on this machine, with the right PyTorch for it, in one command.

    python tools/instalar.py             # the package (what `python -m llmdefinitions` needs)
    python tools/instalar.py --dev       # + tests, notebooks, TensorFlow route (what `python -m pytest` needs)
    python tools/instalar.py --notebooks # + JupyterLab, widgets, Jupytext

Why a script: PyPI's PyTorch for Linux is the CUDA build (several GB). On a machine with no
NVIDIA GPU this installs the CPU build from PyTorch's own index first; with a GPU, or on
macOS and Windows, PyPI's build is the right one; where PyTorch is already installed (Colab)
it is kept as it is. Then the package is installed in editable mode with the extras asked
for. Every command it runs is printed first.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def has_nvidia_gpu() -> bool:
    """True when ``nvidia-smi -L`` lists at least one GPU."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def torch_command(system: str, nvidia: bool):
    """The pip command that installs the right PyTorch, or ``None`` to let pip choose (PyPI's)."""
    if system == "Linux" and not nvidia:
        # Only torch itself from the CPU index: its dependencies come from PyPI in the next step.
        return [sys.executable, "-m", "pip", "install", "--no-deps", "--index-url", CPU_INDEX, "torch"]
    return None


def pip(args, what: str) -> None:
    print("+ " + " ".join(args), flush=True)
    if subprocess.run(args).returncode != 0:
        sys.exit(f"erro: a instalação falhou ({what}). A saída do pip acima diz o motivo; "
                 "sem internet, veja a seção 'Sem internet' do README.")


def installed_torch_build() -> str:
    """``"cpu"`` or ``"cuda X.Y"``: which build of PyTorch pip installed."""
    code = "import torch; print('cuda ' + torch.version.cuda if torch.version.cuda else 'cpu')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return result.stdout.strip() or "desconhecida"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Instala o curso e o PyTorch certo para esta máquina.")
    parser.add_argument("--dev", action="store_true", help="também o necessário para os testes")
    parser.add_argument("--notebooks", action="store_true", help="também JupyterLab, widgets e Jupytext")
    args = parser.parse_args(argv)

    if importlib.util.find_spec("torch") is not None:
        print("PyTorch já instalado: mantido como está.", flush=True)
    else:
        nvidia = has_nvidia_gpu()
        command = torch_command(platform.system(), nvidia)
        if command is None:
            print("PyTorch: a versão do PyPI (GPU NVIDIA encontrada, ou macOS/Windows).", flush=True)
        else:
            print("PyTorch: nenhuma GPU NVIDIA encontrada; instalando a versão para CPU.", flush=True)
            pip(command, "PyTorch para CPU")
            build = installed_torch_build()
            if build != "cpu":
                # The CPU index did not answer and pip took the build another configured index offered.
                print(f"AVISO: o índice de CPU do PyTorch ({CPU_INDEX}) não respondeu; o pip instalou a "
                      f"versão {build} de outro índice configurado. Ela funciona na CPU, só ocupa mais disco.",
                      flush=True)
    extras = [name for name, wanted in (("dev", args.dev), ("notebooks", args.notebooks)) if wanted]
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    pip([sys.executable, "-m", "pip", "install", "-e", target], "pacote llmdefinitions")
    print("Pronto.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
