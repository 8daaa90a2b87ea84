"""pytest setup for the whole repository (package tests and notebooks under nbval).

Notebooks run in the ``teste`` profile unless ``LLMDEF_PERFIL`` says otherwise; the
kernels nbval starts inherit this environment.
"""
import os

os.environ.setdefault("LLMDEF_PERFIL", "teste")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# --- Notebook 12, exercise C: a stand-in for Alpaca 52K in the `teste` profile ------------
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

_ROOT = Path(__file__).resolve().parent
_alpaca_slice = None


def pytest_sessionstart(session):
    """Notebook 12 loads saida/alpaca_data.json (Alpaca 52K, ~22 MB, not in the offline mirror).

    In the `teste` profile, when the file is missing, write a 60-entry slice of the course's
    dataset (same keys as Alpaca 52K) there; it is removed again at the end of the session.
    A hook, not a fixture: nbval's notebook cells do not request fixtures, autouse or not.
    """
    global _alpaca_slice
    if os.environ.get("LLMDEF_PERFIL") != "teste":
        return
    saida = Path(os.environ.get("LLMDEF_SAIDA") or "saida")
    target = (saida if saida.is_absolute() else _ROOT / "notebooks" / saida) / "alpaca_data.json"
    if target.exists():
        return
    sys.path.insert(0, str(_ROOT / "tests"))
    from shared_data import SharedDataMissing
    from test_exercises import default_source, write_alpaca_slice

    try:
        _alpaca_slice = write_alpaca_slice(target, default_source())
    except SharedDataMissing as exc:          # reported by the tests that need the data, one line each
        print(f"\nAVISO: {exc}")


def pytest_sessionfinish(session, exitstatus):
    """Remove the slice, so that a later `rapido`/`completo` run downloads the real Alpaca 52K."""
    if _alpaca_slice is not None:
        _alpaca_slice.unlink(missing_ok=True)
