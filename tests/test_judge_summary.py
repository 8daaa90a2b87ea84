"""What the scores say, with uncertainty: summaries with intervals, paired comparisons, agreement, repeatability.

The book's real judge files (GPT-4 and Llama 3 8B scoring two models on 100 items) are
the data no one here made: the agreement numbers and the model 1 vs model 2 decision
are computed from them, not written down.
"""
from __future__ import annotations

import statistics

import pytest

from llmdefinitions import judge
from llmdefinitions.judge import ScoreList, ScoreResult
from llmdefinitions.stats import bootstrap_mean, paired_comparison
from llmdefinitions.testing.fake_llm_server import FakeLLMServer

from judge_helpers import FAST, read_shared


def reference(shared_data, name: str):
    return read_shared(shared_data, f"judge-reference/{name}-response.json")


# --------------------------------------------------------------------------- summaries

def test_summary_numbers_and_interval():
    summary = judge.summarize_scores([10, 20, 30, None])
    assert (summary.n_scored, summary.n_total, summary.n_missing) == (3, 4, 1)
    assert summary.mean == 20 and summary.median == 20
    assert summary.std == pytest.approx(statistics.pstdev([10, 20, 30]))
    assert summary.interval == bootstrap_mean([10, 20, 30])
    assert 10 <= summary.interval.low < 20 < summary.interval.high <= 30
    text = str(summary)
    assert "3 de 4 itens" in text and "média 20,00 (IC 95%: " in text and "desvio padrão 8,16" in text
    results = [ScoreResult(0, 50, "scored"), ScoreResult(1, None, "error", reason="x")]
    assert judge.summarize_scores(ScoreList(results)).n_total == 2
    empty = judge.summarize_scores([None])
    assert empty.mean is None and empty.interval is None and str(empty) == "Nenhuma nota em 1 itens."


def test_summary_of_the_book_judge_scores_has_an_interval(shared_data):
    gpt4 = reference(shared_data, "gpt4-model-1")
    summary = judge.summarize_scores(gpt4)
    assert summary.mean == pytest.approx(statistics.fmean(gpt4))
    assert summary.interval.low < summary.mean < summary.interval.high
    assert summary.interval.n == 100 and summary.interval.confidence == 0.95


# --------------------------------------------------------------------------- two models

def test_compare_two_models():
    comparison = judge.compare_scores([80, 50, 30, None, 40], [70, 50, 60, 90, 40])
    assert comparison.diffs == [10, 0, -30, None, 0]
    assert (comparison.wins, comparison.ties, comparison.losses, comparison.n_skipped) == (1, 2, 1, 1)
    assert comparison.mean_diff == pytest.approx(-5.0)
    assert comparison.paired == paired_comparison([80, 50, 30, 40], [70, 50, 60, 40])
    assert comparison.significant is False and "permutação pareada" in str(comparison)
    assert judge.compare_scores([1, None], [2, 3]).paired is None   # one pair: no test
    with pytest.raises(ValueError, match="alinhamento"):
        judge.compare_scores([1, 2], [1])


def test_book_gpt4_judge_tells_model_1_from_model_2(shared_data):
    """GPT-4 as judge, the same 100 items: is model 1 better than model 2? (computed here)"""
    model_1, model_2 = reference(shared_data, "gpt4-model-1"), reference(shared_data, "gpt4-model-2")
    comparison = judge.compare_scores(model_1, model_2)
    paired = comparison.paired
    print(f"\nGPT-4, modelo 1 × modelo 2: {comparison}")
    assert paired.n == 100 and comparison.n_skipped == 0
    assert paired.mean_a > paired.mean_b
    assert comparison.significant is True and paired.difference.low > 0
    assert paired.p_value < 0.01


def test_book_llama3_model_2_list_is_refused_for_comparison(shared_data):
    gpt4, llama = reference(shared_data, "gpt4-model-2"), reference(shared_data, "llama3-8b-model-2")
    with pytest.raises(ValueError, match=r"tamanhos diferentes \(100 e 99\)"):
        judge.compare_scores(gpt4, llama)


# --------------------------------------------------------------------------- two judges

def test_agreement_reproduces_the_reference_numbers(shared_data):
    agreement = judge.judge_agreement(reference(shared_data, "gpt4-model-1"),
                                      reference(shared_data, "llama3-8b-model-1"))
    assert agreement.n == 100
    assert round(agreement.pearson, 5) == 0.80489
    assert round(agreement.spearman, 5) == 0.69841
    assert round(agreement.kendall_tau_b, 5) == 0.57292
    assert "Pearson 0,80489" in str(agreement)


def test_agreement_refuses_the_99_of_100_list(shared_data):
    gpt4, llama = reference(shared_data, "gpt4-model-2"), reference(shared_data, "llama3-8b-model-2")
    assert (len(gpt4), len(llama)) == (100, 99)
    with pytest.raises(ValueError, match=r"tamanhos diferentes \(100 e 99\).*alinhamento.*se perdeu"):
        judge.judge_agreement(gpt4, llama)


def test_align_by_index_and_unscored_items():
    a = [ScoreResult(0, 10, "scored"), ScoreResult(1, None, "error"), ScoreResult(2, 30, "scored"),
         ScoreResult(3, 40, "scored")]
    b = {0: 15, 1: 20, 3: 35}
    sa, sb, indices = judge.align_by_index(a, b)
    assert (sa, sb, indices) == ([10, 40], [15, 35], [0, 3])
    agreement = judge.judge_agreement([1, 2, None, 4], [2, 4, 6, 9])
    assert agreement.n == 3 and agreement.n_skipped == 1 and agreement.pearson > 0.9
    with pytest.raises(ValueError, match="duas vezes"):
        judge.align_by_index(a + [ScoreResult(0, 1, "scored")], b)


# --------------------------------------------------------------------------- repeatability

def test_repeatability_numbers():
    runs = [[10, 50, 90, None], [10, 60, 90, 5], [10, 40, 90, 5]]
    rep = judge.repeatability(runs)
    assert (rep.repeats, rep.n_items, rep.n_incomplete, rep.indices) == (3, 3, 1, [0, 1, 2])
    assert rep.ranges == [0, 20, 0] and rep.n_changed == 1 and rep.share_changed == pytest.approx(1 / 3)
    assert rep.stds[1] == pytest.approx(statistics.pstdev([50, 60, 40]))
    # item 1: pairs |50-60|, |50-40|, |60-40| -> mean 40/3; items 0 and 2 never move
    assert rep.mean_abs_change.estimate == pytest.approx((40 / 3) / 3)
    assert "a nota mudou em 1 (33,3 %)" in str(rep) and "1 itens sem nota" in str(rep)
    with pytest.raises(ValueError, match="alinhamento"):
        judge.repeatability([[1, 2], [1]])


def test_a_deterministic_judge_never_moves(shared_data):
    data = read_shared(shared_data, "instruction-data-with-response.json")[:12]
    with FakeLLMServer() as server:
        rep = judge.measure_repeatability(data, "model_response", url=server.ollama_url, repeats=3,
                                          progress=False, **FAST)
        assert server.chat_count() == 36
    assert rep.n_items == 12 and rep.n_changed == 0 and rep.max_range == 0
    assert rep.mean_abs_change.estimate == 0


def test_a_non_deterministic_judge_is_measured(shared_data, tmp_path):
    data = read_shared(shared_data, "instruction-data-with-response.json")[:20]
    cache = tmp_path / "repeats.jsonl"
    with FakeLLMServer(jitter=5, rng_seed=1) as server:
        rep = judge.measure_repeatability(data, "model_response", url=server.ollama_url, repeats=3,
                                          vary_seed=True, cache_path=cache, progress=False, **FAST)
        seeds = sorted({r.body["options"]["seed"] for r in server.requests})
        asked = server.chat_count()
        again = judge.measure_repeatability(data, "model_response", url=server.ollama_url, repeats=3,
                                            vary_seed=True, cache_path=cache, progress=False, **FAST)
        assert server.chat_count() == asked            # the repeats resume from the cache
    assert seeds == [123, 124, 125] and asked == 60
    assert rep.n_items == 20 and rep.n_changed > 0 and 0 < rep.max_range <= 10
    assert all(s == pytest.approx(statistics.pstdev(scores)) for s, scores in zip(rep.stds, rep.scores))
    assert 0 < rep.mean_abs_change.estimate <= 10
    assert again.scores == rep.scores
    with pytest.raises(ValueError, match="ao menos 2"):
        judge.measure_repeatability(data, "model_response", repeats=1)


# --------------------------------------------------------------------------- histogram

def test_plot_score_histogram(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from llmdefinitions.plotting import plot_score_histogram

    results = ScoreList([ScoreResult(0, 80, "scored"), ScoreResult(1, None, "error"),
                         ScoreResult(2, 20, "scored")])
    fig = plot_score_histogram(results, save_path=tmp_path / "hist.png", show=False)
    assert (tmp_path / "hist.png").stat().st_size > 1000
    ax = fig.axes[0]
    assert sum(patch.get_height() for patch in ax.patches) == 2
    assert "2 de 3 itens" in ax.get_title() and "1 sem nota" in ax.get_title()
