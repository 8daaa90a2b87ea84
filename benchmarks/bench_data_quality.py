#!/usr/bin/env python
"""Time and peak memory of the data-quality report's near-duplicate step on a large dataset.

    python benchmarks/bench_data_quality.py                         # 195,340 entries (~50 MB), ~2 min
    python benchmarks/bench_data_quality.py --entries 20000 --baseline-rev 1bb0f2b
    LLMDEF_MIRROR=../shared/data python benchmarks/bench_data_quality.py --report   # + lengths (tiktoken)

Why: ``preparar --perfil completo`` on a 50 MB file of 195,340 distinct entries was still
in the near-duplicate step after 10,5 min at 4,2 GB of memory (issue 20, item 10).

The dataset is synthetic and reproducible (``--seed``): words drawn with the frequencies
of the course's real dataset (``instruction-data.json`` from the mirror when there is
one, else a built-in word list), fields of realistic lengths, and 1 % of the entries
copied from another with one or two words changed (near duplicates that must be found).

Every measurement runs in a fresh process (so its peak memory is its own) and prints:
the wall time and the CPU time (the latter barely moves when other processes share the
machine), the peak resident memory of that process (``ru_maxrss``) and the memory the
step added over the loaded data. ``--baseline-rev REV`` also runs the
``data_quality.py`` of that git revision (e.g. the exact prefix-filtering join it had
before MinHash) on the same entries and prints the ratio; keep ``--entries`` small for
it (its cost grows much faster). ``--check-exact N`` compares the pairs found on the
first N entries with an all-pairs computation (must be identical).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.util
import itertools
import json
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

if importlib.util.find_spec("llmdefinitions") is None:     # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
ISSUE_ENTRIES = 195_340
FALLBACK_WORDS = (
    "the a of to and in is that for it as with be on by this are or an which can from "
    "write give name describe explain list sentence word following text example what how "
    "translate rewrite summarize classify identify convert calculate provide create generate "
    "water energy people time world house city river music science history language number"
).split()


def _words(seed: int):
    """Word list and weights: the real dataset's frequencies when the mirror has it."""
    from llmdefinitions.downloads import DATASET_URL, MirrorError, find_in_mirror

    try:
        path = find_in_mirror(DATASET_URL)
    except MirrorError:
        path = None
    if path is None:
        return FALLBACK_WORDS, [1.0 / (k + 1) for k in range(len(FALLBACK_WORDS))], "lista interna"
    counts = collections.Counter(
        word for entry in json.loads(path.read_text(encoding="utf-8"))
        for field in ("instruction", "input", "output") for word in entry[field].split())
    words, weights = zip(*counts.most_common())
    return list(words), list(weights), str(path)


def make_entries(count: int, seed: int):
    """``count`` synthetic entries (about 256 characters each), 1 % near copies of another."""
    words, weights, source = _words(seed)
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(weights))

    def text(low: int, high: int) -> str:
        return " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(low, high)))

    entries = []
    for index in range(count):
        if index > 10 and rng.random() < 0.01:               # a near copy of an earlier entry
            entry = dict(entries[rng.randrange(index)])
            tokens = entry["output"].split() or ["x"]
            for _ in range(rng.randint(1, 2)):
                tokens[rng.randrange(len(tokens))] = rng.choice(words)
            entry["output"] = " ".join(tokens)
        else:
            entry = {"instruction": text(4, 14), "input": text(3, 20) if rng.random() < 0.4 else "",
                     "output": text(8, 40)}
        entries.append(entry)
    return entries, source


def _load_baseline(rev: str) -> types.ModuleType:
    """``llmdefinitions/data_quality.py`` of git revision ``rev``, imported beside the package."""
    import llmdefinitions

    source = subprocess.run(["git", "show", f"{rev}:llmdefinitions/data_quality.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"llmdefinitions._baseline_{rev}")
    module.__package__ = llmdefinitions.__name__
    sys.modules[module.__name__] = module          # dataclasses look their module up there
    exec(compile(source, f"{rev}:data_quality.py", "exec"), module.__dict__)
    return module


def _measure(task: str, data_file: str, threshold: float, rev: str, queue) -> None:
    """Child process: load the entries, run one task, report time and memory."""
    import psutil

    entries = json.loads(Path(data_file).read_text(encoding="utf-8"))
    loaded = psutil.Process().memory_info().rss
    if task == "baseline":
        module = _load_baseline(rev)
    else:
        from llmdefinitions import data_quality as module
    start, cpu_start = time.perf_counter(), time.process_time()
    if task == "report":
        from llmdefinitions.tokenizer import get_gpt2_tokenizer

        n = len(entries)
        train, test, val = entries[:int(n * 0.85)], entries[int(n * 0.85):int(n * 0.95)], entries[int(n * 0.95):]
        report = module.quality_report(train, val, test, tokenizer=get_gpt2_tokenizer(),
                                       near_threshold=threshold, progress=False)
        found = report.splits["all"].near_duplicates
    else:
        kwargs = {} if task == "baseline" else {"progress": False}
        found = module.near_duplicates(entries, threshold=threshold, **kwargs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    digest = hashlib.sha256(repr(sorted((p.i, p.j) for p in found)).encode()).hexdigest()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    queue.put({"task": task, "seconds": seconds, "cpu": cpu, "peak": peak, "added": peak - loaded,
               "pairs": len(found), "digest": digest})


def run_in_child(task: str, data_file: str, threshold: float, rev: str = "") -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure, args=(task, data_file, threshold, rev, queue))
    child.start()
    child.join()
    if child.exitcode != 0 or queue.empty():
        raise SystemExit(f"a medida '{task}' falhou (código de saída {child.exitcode}).")
    return queue.get()


def check_exact(entries, threshold: float) -> None:
    """The pairs found == all pairs compared one by one (the first entries only)."""
    from llmdefinitions.data_quality import entry_key, jaccard, near_duplicates, shingles

    keys = [entry_key(e) for e in entries]
    sets = [shingles(k) for k in keys]
    brute = {(i, j) for i, j in itertools.combinations(range(len(entries)), 2)
             if keys[i] != keys[j] and jaccard(sets[i], sets[j]) >= threshold}
    found = {(p.i, p.j) for p in near_duplicates(entries, threshold=threshold, progress=False)}
    print(f"  conferência com todos os pares ({len(entries):,} entradas): {len(found)} pares, "
          f"{'idênticos' if found == brute else f'DIFERENTES (faltam {len(brute - found)}, sobram {len(found - brute)})'}")


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f}".replace(".", ",") + " GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=ISSUE_ENTRIES)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--report", action="store_true",
                        help="also time the whole quality_report with the GPT-2 tokenizer")
    parser.add_argument("--baseline-rev", default="", help="git revision whose data_quality.py to compare")
    parser.add_argument("--check-exact", type=int, default=3000, metavar="N")
    args = parser.parse_args()

    entries, source = make_entries(args.entries, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "entries.json"
        data_file.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
        size = data_file.stat().st_size
        print(f"{len(entries):,} entradas sintéticas ({size / 1e6:.1f} MB; palavras de {source}); "
              f"limiar {args.threshold}; {os.cpu_count()} CPUs")
        if args.check_exact:
            check_exact(entries[:args.check_exact], args.threshold)
        tasks = ["near"] + (["report"] if args.report else []) + (["baseline"] if args.baseline_rev else [])
        results = {}
        for task in tasks:
            result = run_in_child(task, str(data_file), args.threshold, args.baseline_rev)
            results[task] = result
            label = {"near": "near_duplicates (MinHash + LSH)", "report": "quality_report completo",
                     "baseline": f"near_duplicates de {args.baseline_rev}"}[task]
            print(f"  {label}: {result['seconds']:.1f} s ({result['cpu']:.1f} s de CPU), pico de memória {_gib(result['peak'])} "
                  f"(+{_gib(result['added'])} sobre os dados carregados), {result['pairs']} pares")
        if "baseline" in results:
            ratio = results["baseline"]["cpu"] / results["near"]["cpu"]
            same = results["baseline"]["digest"] == results["near"]["digest"]
            print(f"  razão de tempo de CPU ({args.baseline_rev} / agora): {ratio:.1f}x; "
                  f"os mesmos pares: {'sim' if same else 'NÃO'}")


if __name__ == "__main__":
    main()
