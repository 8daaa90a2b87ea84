"""Tests of llmdefinitions.data_quality: duplicates, overlap, lengths, report, plot."""
from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import numpy as np
import pytest

from llmdefinitions.data_quality import (
    ALL_FIELDS,
    PROMPT_FIELDS,
    NearDuplicate,
    Overlap,
    entry_key,
    exact_duplicates,
    jaccard,
    length_stats,
    near_duplicates,
    normalize_text,
    overlap,
    plot_length_histogram,
    quality_report,
    shingles,
)
from llmdefinitions.prompts import get_prompt_style



# The real GPT-2 tokenizer comes from the `gpt2_tokenizer` fixture of tests/conftest.py.


class WordTokenizer:
    """Fake tokenizer: one token per whitespace-separated word; records disallowed_special."""

    def __init__(self):
        self.allowed = []

    def encode(self, text, allowed_special=frozenset(), disallowed_special=()):
        self.allowed.append(disallowed_special)
        return text.split()


def entry(instruction, input_="", output=""):
    return {"instruction": instruction, "input": input_, "output": output}


WORDS = (
    "the a cat dog bird house river tree runs sleeps eats quickly slowly under over near "
    "green blue red small large old young happy sad bright dark stone window garden road "
    "music paper table chair light heavy warm cold morning evening city village mountain "
    "ocean apple bread letter friend teacher"
).split()


def random_sentences(count, seed=0, length=10):
    rng = random.Random(seed)
    out = set()
    while len(out) < count:
        out.add(" ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + ".")
    return sorted(out)


def brute_force_near(data, threshold, n=3, fields=ALL_FIELDS):
    """All pairs i < j with Jaccard >= threshold, by comparing every pair."""
    sets = [shingles(entry_key(e, fields), n) for e in data]
    return {
        (i, j)
        for i, j in itertools.combinations(range(len(data)), 2)
        if jaccard(sets[i], sets[j]) >= threshold
    }


# ---------------------------------------------------------------- normalization


def test_normalization_strips_collapses_and_casefolds():
    assert normalize_text("  Olá,\n\t  MUNDO  ") == "olá, mundo"
    assert normalize_text("Straße") == normalize_text("STRASSE")  # casefold, not lower
    assert normalize_text("e\u0301") == normalize_text("\u00e9")  # NFC: decomposed é == é
    # The field boundary matters: moving a word from instruction to input is a different entry.
    assert entry_key(entry("a b", "")) != entry_key(entry("a", "b"))
    assert entry_key(entry("A", " B ", "c")) == entry_key(entry("a", "b", "C"))


def test_shingles_and_jaccard():
    assert shingles("abcd", 3) == {"abc", "bcd"}
    assert shingles("ab", 3) == {"ab"}
    assert shingles("", 3) == frozenset()
    assert jaccard(frozenset("ab"), frozenset("bc")) == pytest.approx(1 / 3)
    assert jaccard(frozenset(), frozenset()) == 1.0
    with pytest.raises(ValueError):
        shingles("abc", 0)


# ---------------------------------------------------------------- exact duplicates


def test_exact_duplicates_with_whitespace_and_case_variants():
    data = [
        entry("Name the capital of France.", "", "Paris."),  # 0
        entry("Translate to Spanish.", "Good morning", "Buenos días"),  # 1
        entry("  name the CAPITAL of   France. ", "", "paris.\n"),  # 2 = 0
        entry("Name the capital of Italy.", "", "Rome."),  # 3
        entry("TRANSLATE TO SPANISH.", "good\tmorning", " Buenos  días"),  # 4 = 1
        entry("Name the capital of France.", "", "Paris"),  # 5: no final period, differs
        entry("Name the capital of France.", "", "PARIS."),  # 6 = 0
        entry("Name the capital of Italy.", "", "It is Rome."),  # 7: same prompt as 3
    ]
    assert exact_duplicates(data) == [[0, 2, 6], [1, 4]]
    assert exact_duplicates(data, fields=PROMPT_FIELDS) == [[0, 2, 5, 6], [1, 4], [3, 7]]
    assert exact_duplicates(data[:2]) == []


# ---------------------------------------------------------------- near duplicates


LONG = (
    "Write a short paragraph that explains why regular exercise is important for people "
    "of all ages, mentioning the heart, the muscles, sleep quality and the mood, and "
    "finish with one practical suggestion that anyone can follow every single day."
)


def test_near_duplicate_one_word_changed_is_found():
    changed = LONG.replace("practical", "simple")
    data = [
        entry("Give an example of a mammal.", "", "A dolphin."),
        entry(LONG, "", "Exercise keeps the body healthy."),
        entry("What is 2 + 2?", "", "4"),
        entry(changed, "", "Exercise keeps the body healthy."),
    ]
    pairs = near_duplicates(data, threshold=0.9)
    assert [(p.i, p.j) for p in pairs] == [(1, 3)]
    expected = jaccard(shingles(entry_key(data[1])), shingles(entry_key(data[3])))
    assert 0.9 <= expected < 1.0
    assert pairs[0].similarity == pytest.approx(expected)
    # A tighter threshold than their similarity finds nothing.
    assert near_duplicates(data, threshold=min(1.0, expected + 0.01)) == []


def test_exact_duplicates_are_excluded_from_near_duplicates_unless_asked():
    data = [entry(LONG, "", "ok"), entry(LONG.upper() + "  ", "", "OK"), entry(LONG.replace("heart", "lungs"), "", "ok")]
    default = near_duplicates(data, threshold=0.8)
    assert {(p.i, p.j) for p in default} == {(0, 2), (1, 2)}
    with_exact = near_duplicates(data, threshold=0.8, include_exact=True)
    assert with_exact[0] == NearDuplicate(0, 1, 1.0)  # sorted by similarity first
    assert {(p.i, p.j) for p in with_exact} == {(0, 1), (0, 2), (1, 2)}
    with pytest.raises(ValueError):
        near_duplicates(data, threshold=0.0)


def test_distinct_random_sentences_are_not_flagged_and_join_matches_brute_force():
    sentences = random_sentences(200, seed=1)
    data = [entry(s, "", s.lower()[::-1]) for s in sentences]
    assert exact_duplicates(data) == []
    assert near_duplicates(data, threshold=0.9) == []
    sets = [shingles(entry_key(e)) for e in data]
    assert max(jaccard(a, b) for a, b in itertools.combinations(sets, 2)) < 0.9
    # At low thresholds many pairs qualify: the prefix-filtering join must find each one.
    for threshold in (0.2, 0.3, 0.45):
        found = near_duplicates(data, threshold=threshold)
        brute = brute_force_near(data, threshold)
        assert len(brute) > 0
        assert {(p.i, p.j) for p in found} == brute, threshold
        assert found == sorted(found, key=lambda p: (-p.similarity, p.i, p.j))


def test_join_is_exact_at_the_filter_boundaries():
    """Small random letter sets (n=1: shingles = letters) hit the prefix and length bounds exactly."""
    rng = random.Random(7)
    letters = "abcdefghijkl"
    data = [entry("".join(rng.sample(letters, rng.randint(1, 8)))) for _ in range(300)]
    fields = ("instruction",)
    for threshold in (0.25, 1 / 3, 0.5, 0.6, 2 / 3, 0.75, 0.8, 0.9, 1.0):
        found = near_duplicates(data, threshold=threshold, n=1, fields=fields, include_exact=True)
        assert {(p.i, p.j) for p in found} == brute_force_near(data, threshold, n=1, fields=fields), threshold


# ---------------------------------------------------------------- overlap


def test_overlap_exact_prompt_and_near():
    train = [
        entry("Name the capital of France.", "", "Paris."),  # 0
        entry(LONG, "", "Exercise keeps the body healthy."),  # 1
        entry("Sort the list.", "b, a", "a, b"),  # 2
        entry("name the capital of france.", "", "paris."),  # 3 (duplicate of 0)
    ]
    test = [
        entry("What is 2 + 2?", "", "4"),  # 0: new
        entry("NAME THE CAPITAL OF FRANCE.", "", "  Paris. "),  # 1: exact, twice in train
        entry(LONG.replace("practical", "simple"), "", "Exercise keeps the body healthy."),  # 2: near
        entry("Sort the list.", "b, a", "The sorted list is: a, b"),  # 3: same prompt only
    ]
    assert overlap(train, test) == [Overlap(1, 0), Overlap(1, 3)]
    assert overlap(train, test, fields=PROMPT_FIELDS) == [(1, 0), (1, 3), (3, 2)]
    assert overlap(train, test, near_threshold=0.9) == [(1, 0), (1, 3), (2, 1)]
    assert overlap(train, []) == []


# ---------------------------------------------------------------- lengths


def test_length_stats_match_a_direct_computation_with_a_fake_tokenizer():
    rng = random.Random(3)
    data = [
        entry(" ".join(rng.choices(WORDS, k=rng.randint(3, 30))), "" if k % 3 else "some input here",
              " ".join(rng.choices(WORDS, k=rng.randint(1, 60))))
        for k in range(50)
    ]
    tok = WordTokenizer()
    stats = length_stats(data, tok, context_length=70)
    assert all(a == () for a in tok.allowed)       # special-token text counted as plain text

    header = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    prompts = [len(header.split()) + 2 + len(e["instruction"].split())
               + (2 + len(e["input"].split()) if e["input"] else 0) for e in data]
    responses = [2 + len(e["output"].split()) for e in data]  # "###", "Response:" + words
    totals = [p + r for p, r in zip(prompts, responses)]  # word split: no merge at the joint
    assert stats.prompt_lengths == prompts
    assert stats.response_lengths == responses
    assert stats.total_lengths == totals
    for summary, values in ((stats.prompt, prompts), (stats.response, responses), (stats.total, totals)):
        assert summary.count == len(data)
        assert summary.min == min(values) and summary.max == max(values)
        assert summary.median == pytest.approx(float(np.median(values)))
        assert summary.mean == pytest.approx(sum(values) / len(values))
        assert summary.p95 == pytest.approx(float(np.percentile(values, 95)))
    assert stats.over_context == sum(t > 70 for t in totals)
    assert 0 < stats.over_context < len(data)


def test_length_stats_with_gpt2_tokenizer_and_phi3(gpt2_tokenizer):
    data = [entry("Rewrite the sentence in passive voice.", "The chef cooked the meal.", "The meal was cooked by the chef."),
            entry("Qual é a capital do Brasil?", "", "Brasília.")]
    for name in ("alpaca", "phi3"):
        style = get_prompt_style(name)
        stats = length_stats(data, gpt2_tokenizer, prompt_style=name)
        enc = lambda t: len(gpt2_tokenizer.encode(t, disallowed_special=()))  # noqa: E731
        assert stats.prompt_lengths == [enc(style.prompt(e)) for e in data]
        assert stats.response_lengths == [enc(style.response_prefix + e["output"]) for e in data]
        assert stats.total_lengths == [enc(style.full_text(e)) for e in data]
        assert stats.over_context == 0 and stats.context_length == 1024
    with pytest.raises(ValueError):
        length_stats(data, gpt2_tokenizer, prompt_style="chatml")


# ---------------------------------------------------------------- report and plot


def _row_numbers(table: str, label: str):
    [line] = [line for line in table.splitlines() if line.startswith(label)]
    return [int(x) for x in re.findall(r"\b\d+\b", line[len(label):])]


def test_report_table_shows_the_counts(capsys):
    train = [entry(s) for s in random_sentences(30, seed=5)]
    train += [entry(train[0]["instruction"].upper()), entry(" " + train[0]["instruction"]),
              entry(train[1]["instruction"] + "  ")]  # 2 groups, 3 extra copies
    train.append(entry(train[2]["instruction"].replace(".", "!")))  # a near duplicate of item 2
    val = [entry("A brand new validation sentence."), entry(train[5]["instruction"].lower())]
    test = [entry(train[6]["instruction"]), entry(train[7]["instruction"]), entry("Something else entirely.")]
    report = quality_report(train, val, test, near_threshold=0.9)

    assert report.splits["train"].exact_copies == 3
    assert len(report.splits["train"].near_duplicates) >= 1
    table = report.to_table()
    assert "Duplicatas exatas" in table and "Quase duplicatas" in table
    assert _row_numbers(table, "Amostras") == [len(train), 2, 3, len(train) + 5]
    assert _row_numbers(table, "Duplicatas exatas: grupos") == [2, 0, 0, 5]
    assert _row_numbers(table, "Duplicatas exatas: cópias a mais") == [3, 0, 0, 6]
    near = [len(report.splits[s].near_duplicates) for s in ("train", "val", "test", "all")]
    assert near[0] >= 1
    assert _row_numbers(table, "Quase duplicatas (Jaccard >= 0,90): pares") == near
    assert _row_numbers(table, "Itens de teste também no treino") == [2, 2, 2]
    assert _row_numbers(table, "Itens de validação também no treino") == [1, 1, 1]
    assert _row_numbers(table, "Itens de teste também na validação") == [0, 0, 0]
    assert "não calculados" in table

    print(report)
    assert capsys.readouterr().out.strip() == table.strip()


def test_report_with_tokenizer_has_length_rows():
    data = [entry("one two three", "", "four five"), entry("six", "seven", "eight nine ten eleven")]
    report = quality_report(data, data[:1], data[1:], tokenizer=WordTokenizer(), context_length=20)
    table = str(report)
    assert "Comprimentos em tokens" in table and "> 20" in table
    total = report.splits["all"].lengths.total
    assert total.count == 4
    assert report.splits["all"].lengths.total_lengths == (
        report.splits["train"].lengths.total_lengths + report.splits["val"].lengths.total_lengths
        + report.splits["test"].lengths.total_lengths
    )
    [line] = [ln for ln in table.splitlines() if ln.startswith("todos")]  # "todos  prompt ..."
    assert "prompt" in line


def test_plot_length_histogram_saves_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    path = tmp_path / "figs" / "lengths.png"
    fig = plot_length_histogram([10, 12, 12, 40, 55], save_path=path, show=False, context_length=64)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.axes[0].get_xlabel() == "Comprimento (tokens)"
    svg = tmp_path / "two.svg"
    fig2 = plot_length_histogram({"treino": [1, 2, 3], "teste": [2, 3]}, save_path=svg, show=False)
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert [t.get_text() for t in fig2.axes[0].get_legend().get_texts()] == ["treino", "teste"]
    assert not list(tmp_path.rglob("*.tmp"))
    import matplotlib.pyplot as plt

    plt.close("all")


# ---------------------------------------------------------------- the real dataset


def test_real_dataset_counts_agree_with_brute_force(gpt2_tokenizer, entries):
    data = entries
    assert len(data) == 1100
    train, test, val = data[:935], data[935:1045], data[1045:]  # the course's 85/10/5 split
    report = quality_report(train, val, test, tokenizer=gpt2_tokenizer)

    # Independent brute force over the report's "all" order (train + val + test): every pair.
    everything = train + val + test
    n_train, n_val = len(train), len(val)

    def norm(e, fields=ALL_FIELDS):
        return tuple(" ".join(e[k].split()).casefold() for k in fields)

    def copies(fields):
        keys = [norm(e, fields) for e in everything]
        return sum(1 for j in range(len(keys)) if any(keys[i] == keys[j] for i in range(j)))

    keys = [norm(e) for e in everything]
    near = brute_force_near(everything, 0.9)
    near_not_exact = {(i, j) for i, j in near if keys[i] != keys[j]}

    def in_train(other, fields=ALL_FIELDS):
        train_keys = {norm(e, fields) for e in train}
        return sum(norm(e, fields) in train_keys for e in other)

    counts = {
        "exact_duplicate_copies": report.splits["all"].exact_copies,
        "prompt_duplicate_copies": report.splits["all"].prompt_copies,
        "near_duplicate_pairs_0.9": len(report.splits["all"].near_duplicates),
        "test_in_train": report.test_in_train.exact_items,
        "val_in_train": report.val_in_train.exact_items,
        "test_prompt_in_train": report.test_in_train.prompt_items,
        "val_prompt_in_train": report.val_in_train.prompt_items,
        "test_near_train_0.9": report.test_in_train.near_items,
        "val_near_train_0.9": report.val_in_train.near_items,
    }
    print(counts)
    print(report)
    assert counts["exact_duplicate_copies"] == copies(ALL_FIELDS)
    assert counts["prompt_duplicate_copies"] == copies(PROMPT_FIELDS)
    assert {(p.i, p.j) for p in report.splits["all"].near_duplicates} == near_not_exact
    assert counts["test_in_train"] == in_train(test)
    assert counts["val_in_train"] == in_train(val)
    assert counts["test_prompt_in_train"] == in_train(test, PROMPT_FIELDS)
    assert counts["val_prompt_in_train"] == in_train(val, PROMPT_FIELDS)
    near_val = {j for i, j in near if i < n_train <= j < n_train + n_val}
    near_test = {j for i, j in near if i < n_train and j >= n_train + n_val}
    assert counts["val_near_train_0.9"] == len(near_val)
    assert counts["test_near_train_0.9"] == len(near_test)
    # Measured on the file (sha256 7e09a9af…): no exact duplicates, two near-duplicate
    # pairs ("synonym for 'fast'/'quick'", "perseverant/persistent"), and only same-prompt
    # overlaps between the splits (answers worded differently).
    assert counts == {
        "exact_duplicate_copies": 0,
        "prompt_duplicate_copies": 25,
        "near_duplicate_pairs_0.9": 2,
        "test_in_train": 0,
        "val_in_train": 0,
        "test_prompt_in_train": 2,
        "val_prompt_in_train": 4,
        "test_near_train_0.9": 0,
        "val_near_train_0.9": 0,
    }
    assert report.splits["all"].lengths.over_context == 0


# ---------------------------------------------------------------- MinHash + LSH


def test_lsh_bands_are_the_most_selective_that_keep_the_miss_chance_small():
    from llmdefinitions.data_quality import LSH_MISS, NUM_PERM, lsh_bands

    for threshold in (0.3, 0.5, 0.8, 0.9, 0.95):
        bands, rows = lsh_bands(threshold)
        assert bands * rows <= NUM_PERM
        assert (1 - threshold ** rows) ** bands <= LSH_MISS
        more_rows = rows + 1
        assert (1 - threshold ** more_rows) ** (NUM_PERM // more_rows) > LSH_MISS
    assert lsh_bands(0.9) == (18, 7)


def test_real_dataset_near_pairs_equal_all_pairs_at_several_thresholds(entries):
    data = entries
    keys = [entry_key(e) for e in data]
    sets = [shingles(k) for k in keys]
    sims = {(i, j): jaccard(sets[i], sets[j]) for i, j in itertools.combinations(range(len(data)), 2)}
    for threshold in (0.6, 0.75, 0.9):
        brute = {pair for pair, sim in sims.items() if sim >= threshold and keys[pair[0]] != keys[pair[1]]}
        found = near_duplicates(data, threshold=threshold)
        assert {(p.i, p.j) for p in found} == brute, threshold
        assert all(p.similarity == sims[(p.i, p.j)] for p in found)
    assert len(brute) == 2


def test_progress_bars_only_when_asked_or_large(capsys):
    data = [entry(s) for s in random_sentences(50, seed=2)]
    near_duplicates(data)
    assert "MinHash" not in capsys.readouterr().err
    near_duplicates(data, progress=True)
    assert "MinHash" in capsys.readouterr().err


# ---------------------------------------------------------------- over-length entries


def test_overlength_entries_are_exactly_those_the_collate_cuts(gpt2_tokenizer, entries):
    from llmdefinitions.data import InstructionDataset, custom_collate_fn
    from llmdefinitions.data_quality import overlength_entries

    data = entries[:60]
    max_length = 70
    found = overlength_entries(data, gpt2_tokenizer, max_length)
    assert 0 < len(found) < len(data)
    dataset = InstructionDataset(data, gpt2_tokenizer)
    cut = []
    for index in range(len(data)):
        _, targets = custom_collate_fn([dataset[index]], allowed_max_length=max_length)
        if 50256 not in targets[0].tolist():          # the end-of-text target did not survive
            cut.append((index, len(dataset[index])))
    assert found == cut


def test_report_lists_overlength_entries_by_split_and_index():
    tok = WordTokenizer()
    short, long_ = entry("a b", "", "c"), entry("a b", "", " ".join(["w"] * 40))
    report = quality_report([short, long_, short], [long_], [short], tokenizer=tok, context_length=30)
    assert report.splits["train"].lengths.over_context_entries == [(1, report.splits["train"].lengths.total_lengths[1])]
    table = report.to_table()
    assert "Amostras mais longas que o contexto (30 tokens)" in table
    assert re.search(r"^  treino: #1 \(\d+ tokens\)$", table, re.MULTILINE)
    assert re.search(r"^  validação: #0 \(\d+ tokens\)$", table, re.MULTILINE)
    assert "teste: #" not in table
    fine = quality_report([short], [short], [short], tokenizer=tok, context_length=30).to_table()
    assert "Amostras mais longas que o contexto (30 tokens): o collate corta o fim da resposta, que não " \
           "entra na perda: nenhum." in fine
