"""pytest setup for the whole repository (package tests and notebooks under nbval).

Notebooks run in the ``teste`` profile unless ``LLMDEF_PERFIL`` says otherwise; the
kernels nbval starts inherit this environment.
"""
import os

os.environ.setdefault("LLMDEF_PERFIL", "teste")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
