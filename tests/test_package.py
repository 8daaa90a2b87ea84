"""The package's public surface: the book's names import from the top level, lazily."""
import subprocess
import sys

import llmdefinitions

BOOK_NAMES = ["GPTModel", "load_weights_into_gpt", "download_and_load_gpt2", "generate", "text_to_token_ids",
              "token_ids_to_text", "calc_loss_loader", "train_model_simple", "plot_losses", "format_input",
              "InstructionDataset", "custom_collate_fn", "query_model", "generate_model_scores"]


def test_every_book_name_imports_from_the_top_level():
    for name in BOOK_NAMES + llmdefinitions.__all__:
        assert getattr(llmdefinitions, name) is not None, name


def test_import_is_light():
    code = ("import sys, llmdefinitions; heavy = [m for m in ('torch', 'tensorflow', 'matplotlib', 'scipy', "
            "'ipywidgets') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_only_parses_and_prints():
    """The pipeline is the one orchestrator: the CLI imports no data, model, judge or test double."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(llmdefinitions.__file__).with_name("cli.py").read_text(encoding="utf-8"))
    modules = {node.module.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
    assert modules <= {"_argparse_pt", "distributed", "pipeline", "profiles"}, modules
