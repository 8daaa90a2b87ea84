"""Pipeline pieces not covered by the CLI test: profiles, run paths and the judge endpoint."""
import pytest

from llmdefinitions.judge import check_server, query_model
from llmdefinitions.pipeline import judge_endpoint
from llmdefinitions.runs import run_paths
from llmdefinitions.profiles import PROFILES, load_profile


def test_profiles_and_the_environment_variable(monkeypatch):
    import torch

    monkeypatch.delenv("LLMDEF_PERFIL", raising=False)
    # unset: the book's run where a GPU is available, the CPU laptop's run elsewhere
    assert load_profile().name == ("completo" if torch.cuda.is_available() else "rapido")
    assert load_profile("completo").model_name == "gpt2-medium (355M)"
    assert load_profile("completo").learning_rate == 5e-5
    monkeypatch.setenv("LLMDEF_PERFIL", "rapido")
    assert load_profile().model_size == "124M"
    monkeypatch.setenv("LLMDEF_PERFIL", "turbo")
    with pytest.raises(ValueError, match="completo, rapido, teste"):
        load_profile()
    assert [p.judge_stand_in for p in PROFILES.values()] == [False, False, True]


def test_run_paths_keep_profiles_apart(tmp_path):
    teste, completo = run_paths(load_profile("teste"), tmp_path), run_paths(load_profile("completo"), tmp_path)
    assert teste.data_file == completo.data_file                 # the dataset is shared
    assert teste.responses != completo.responses                 # results are per profile
    assert completo.sft_model("gpt2-medium (355M)").name == "gpt2-medium355M-sft.pth"


def test_judge_endpoint_starts_the_stand_in_only_in_teste(capsys, tmp_path):
    endpoint = judge_endpoint(load_profile("teste"))
    try:
        assert endpoint.simulated and "DUBLÊ" in capsys.readouterr().out
        assert check_server(endpoint.url, endpoint.model).ok
        assert query_model("Score: ?", endpoint.model, endpoint.url) != ""
        assert endpoint.cache_path(run_paths(load_profile("teste"), tmp_path)).name.endswith("simulado.jsonl")
    finally:
        endpoint.close()
    endpoint.close()                                              # closing twice is harmless
    assert not check_server(endpoint.url, endpoint.model, timeout=1).reachable
    real = judge_endpoint(load_profile("completo"))
    assert not real.simulated and real.url == "http://localhost:11434/api/chat"


def test_book_way_is_one_named_choice_of_the_profile():
    fast = load_profile("rapido")
    book = fast.book_way()
    assert (fast.way, book.way) == ("otimizado", "livro")
    assert (book.precision, book.batching, book.fused_optimizer, book.generation_batch_size) == ("fp32", "random", False, 1)
    # only how it computes changes: the numbers of the profile stay
    assert (book.model_name, book.batch_size, book.learning_rate, book.num_epochs) == \
        (fast.model_name, fast.batch_size, fast.learning_rate, fast.num_epochs)
