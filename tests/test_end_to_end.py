"""End to end: a tiny GPT trained from scratch learns synthetic instructions through the real chain.

Formatting (Alpaca), InstructionDataset with prompt lengths, custom_collate_fn with
instruction masking, the course's trainer, and batched generation with a stop at
end-of-text all have to fit together for the held-out accuracy to be reached.
"""
import random
import re
import time
from functools import partial

import torch
from torch.utils.data import DataLoader

from llmdefinitions.data import InstructionDataset, custom_collate_fn
from llmdefinitions.generation import generate_responses
from llmdefinitions.model import GPTModel
from llmdefinitions.prompts import format_input
from llmdefinitions.trainer import train_model
from llmdefinitions.training import calc_loss_loader

WORDS = ("red blue green black white cat dog fish bird horse apple pear plum grape lemon "
         "sun moon star rain snow tree rock sand lake hill car bus boat train plane").split()
TASKS = {
    "Reverse the order of the words.": lambda ws: " ".join(reversed(ws)),
    "Repeat the words.": lambda ws: " ".join(ws),
    "Write the words in uppercase.": lambda ws: " ".join(w.upper() for w in ws),
}
TARGET_ACCURACY = 0.9


class WordTokenizer:
    """Lossless word-level tokenizer (each piece keeps its leading whitespace)."""

    PIECES = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+")
    EOT = "<|endoftext|>"

    def __init__(self, texts):
        vocab = sorted({p for t in texts for p in self.PIECES.findall(t)})
        self.ids = {p: i for i, p in enumerate(vocab)}
        self.eot_id = len(vocab)
        self.pieces = vocab + [self.EOT]

    def encode(self, text, allowed_special=(), disallowed_special=()):
        return [self.ids[p] for p in self.PIECES.findall(text)]

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def make_entries(rng, n):
    entries = []
    for _ in range(n):
        instruction = rng.choice(list(TASKS))
        words = rng.sample(WORDS, rng.randint(2, 3))
        entries.append({"instruction": instruction, "input": " ".join(words), "output": TASKS[instruction](words)})
    return entries


def test_tiny_gpt_learns_instructions_and_stops_at_end_of_text():
    start = time.perf_counter()
    rng = random.Random(0)
    entries = make_entries(rng, 2600)
    train, held_out = entries[:2400], []
    train_keys = {(e["instruction"], e["input"]) for e in train}
    for e in entries[2400:]:                           # held-out: (instruction, input) never trained on
        if (e["instruction"], e["input"]) not in train_keys and len(held_out) < 60:
            held_out.append(e)
    assert len(held_out) >= 40

    texts = [format_input(e) + "\n\n### Response:\n" + e["output"] for e in entries]
    texts += [u.upper() for u in WORDS]
    tokenizer = WordTokenizer(texts)
    eot = tokenizer.eot_id
    cfg = {"vocab_size": eot + 1, "context_length": 64, "emb_dim": 128, "n_heads": 4, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True}
    torch.manual_seed(123)
    model = GPTModel(cfg)

    collate = partial(custom_collate_fn, pad_token_id=eot, mask_instruction=True)
    make = lambda data, shuffle: DataLoader(  # noqa: E731
        InstructionDataset(data, tokenizer, return_prompt_length=True),
        batch_size=16, collate_fn=collate, shuffle=shuffle, drop_last=shuffle)
    train_loader, val_loader = make(train, True), make(held_out, False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                       # a model this small only loses from threads
    try:
        train_model(model, train_loader, val_loader, optimizer, "cpu", num_epochs=6, eval_freq=150,
                    eval_iter=2, start_context=format_input(held_out[0]), tokenizer=tokenizer,
                    warmup_steps=20, lr_schedule="cosine", grad_clip=1.0, progress=False,
                    print_samples=False)
        with torch.no_grad():
            val_loss = calc_loss_loader(val_loader, model, "cpu")
        answers = generate_responses(model, tokenizer, held_out, max_new_tokens=12, batch_size=16,
                                     eos_id=eot, progress=False)
    finally:
        torch.set_num_threads(threads)
    correct = sum(a == e["output"] for a, e in zip(answers, held_out))
    accuracy = correct / len(held_out)
    elapsed = time.perf_counter() - start
    print(f"\nheld-out exact match: {correct}/{len(held_out)} = {accuracy:.1%}; "
          f"response-only val loss {val_loss:.3f}; {elapsed:.0f} s")
    for a, e in list(zip(answers, held_out))[:3]:
        print(f"  {e['instruction']} | {e['input']} -> {a!r}")
    assert accuracy >= TARGET_ACCURACY
    # An answer that stops at end-of-text is exactly the expected words, nothing after them.
    assert all(len(a.split()) <= 3 for a in answers)
