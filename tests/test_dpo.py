"""Tests of DPO (llmdefinitions.dpo and llmdefinitions.dpo_data).

The loss against its closed form, the masks token by token against the real GPT-2
tokenizer, the LoRA reference against a frozen copy, and end to end: a tiny GPT
finetuned on a synthetic task, then DPO-trained until it prefers the chosen style.
"""
from __future__ import annotations

import copy
import math
import random
import time

import pytest
import torch

from llmdefinitions.config import get_config
from llmdefinitions.data import DatasetError
from llmdefinitions.dpo import (
    compute_dpo_loss,
    compute_dpo_loss_batch,
    compute_dpo_loss_loader,
    compute_dpo_metrics_loader,
    compute_logprobs,
    evaluate_dpo_loss_loader,
    load_dpo_checkpoint,
    save_dpo_checkpoint,
    train_model_dpo,
    train_model_dpo_simple,
)
from llmdefinitions.dpo_data import (
    PreferenceDataset,
    download_and_load_preference_file,
    make_preference_loader,
    preference_collate_fn,
    validate_preference_entries,
)
from llmdefinitions.lora import disable_lora, iter_lora_layers, merge_lora, replace_linear_with_lora
from llmdefinitions.model import GPTModel
from llmdefinitions.prompts import get_prompt_style
from llmdefinitions.tokenizer import END_OF_TEXT_ID, encode_text

pytestmark = pytest.mark.usefixtures("one_thread")

PREFERENCE_FILE = "instruction-data-with-preference.json"


@pytest.fixture(scope="module")
def preference_entries(shared_data):
    return validate_preference_entries(
        __import__("json").loads((shared_data / PREFERENCE_FILE).read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def real_batch(preference_entries, gpt2_tokenizer):
    """Four real entries: two with an input, two without."""
    with_input = [e for e in preference_entries if e["input"]][:2]
    without = [e for e in preference_entries if not e["input"]][:2]
    entries = with_input + without
    dataset = PreferenceDataset(entries, gpt2_tokenizer)
    return entries, preference_collate_fn([dataset[i] for i in range(len(entries))])


def tiny_gpt(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(get_config("gpt2-tiny (test)"))


# --- the loss -----------------------------------------------------------------------------------

def test_dpo_loss_equals_closed_form_on_hand_made_numbers():
    pc, pr = torch.tensor([-10.0, -4.0, -7.5]), torch.tensor([-12.0, -3.0, -7.5])
    rc, rr = torch.tensor([-11.0, -5.0, -6.0]), torch.tensor([-11.5, -2.0, -8.0])
    beta = 0.5
    loss, chosen, rejected = compute_dpo_loss(pc, pr, rc, rr, beta=beta)
    per_pair = []
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        h = (a - b) - (c - d)                       # 1.5, -2.0, 3.5
        per_pair.append(math.log(1.0 + math.exp(-beta * h)))
    assert loss.item() == pytest.approx(sum(per_pair) / 3, rel=1e-6)
    assert chosen.item() == pytest.approx(beta * (1.0 + 1.0 - 1.5) / 3, rel=1e-6)
    assert rejected.item() == pytest.approx(beta * (-0.5 - 1.0 + 0.5) / 3, rel=1e-6)
    losses, chosen_each, _ = compute_dpo_loss(pc, pr, rc, rr, beta=beta, reduction="none")
    assert losses.tolist() == pytest.approx(per_pair, rel=1e-6)
    assert chosen_each.tolist() == pytest.approx([0.5, 0.5, -0.75])
    with pytest.raises(ValueError, match="reduction"):
        compute_dpo_loss(pc, pr, rc, rr, reduction="sum")


def test_compute_logprobs_sums_by_default_and_averages_on_request():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[2, 0, 1, 2]])
    mask = torch.tensor([[True, False, True, True]])    # position 0 never counts: nothing predicts it
    logp = torch.log_softmax(logits, dim=-1)
    # logits at t predict labels at t+1; label 1 (position 1) is masked out.
    expected = [logp[0, 1, 1].item() + logp[0, 2, 2].item()]
    assert compute_logprobs(logits, labels, mask).tolist() == pytest.approx(expected, rel=1e-6)
    assert compute_logprobs(logits, labels, mask, average=True).tolist() == pytest.approx(
        [expected[0] / 2], rel=1e-6)
    every = [logp[0, 0, 0].item() + logp[0, 1, 1].item() + logp[0, 2, 2].item()]
    assert compute_logprobs(logits, labels).tolist() == pytest.approx(every, rel=1e-6)


def test_identical_policy_and_reference_give_ln2_and_zero_margins(real_batch):
    _, batch = real_batch
    model = tiny_gpt()
    for reference in (model, copy.deepcopy(model)):
        loss, chosen, rejected = compute_dpo_loss_batch(batch, model, reference, beta=0.1)
        assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
        assert chosen.item() == pytest.approx(0.0, abs=1e-6)
        assert rejected.item() == pytest.approx(0.0, abs=1e-6)
    metrics = compute_dpo_metrics_loader([batch, batch], model, model, beta=0.1)
    assert metrics["loss"] == pytest.approx(math.log(2.0), abs=1e-6)
    assert metrics["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["accuracy"] == 0.0                   # ties are not preferences


def test_batch_loss_equals_the_books_computation_on_full_logits(real_batch):
    """Our batch function runs the head only on scored tokens and one forward for both
    responses; it must give what the book's recipe gives (full logits, four passes)."""
    _, batch = real_batch
    policy, reference = tiny_gpt(0), tiny_gpt(1).eval()
    for average in (False, True):
        def logprobs(model, key):
            return compute_logprobs(model(batch[key]), batch[key], batch[f"{key}_mask"], average)

        with torch.no_grad():
            expected = compute_dpo_loss(logprobs(policy, "chosen"), logprobs(policy, "rejected"),
                                        logprobs(reference, "chosen"), logprobs(reference, "rejected"),
                                        beta=0.1, reduction="none")
        got = compute_dpo_loss_batch(batch, policy, reference, 0.1, average_log_probs=average,
                                     reduction="none")
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got[1], got[2])       # different models: the test can fail


def test_one_gradient_step_raises_chosen_and_lowers_rejected(real_batch):
    _, batch = real_batch
    policy = tiny_gpt(0)
    reference = copy.deepcopy(policy).eval()
    policy.eval()                                       # no dropout: before/after comparable

    def logprobs(key):
        with torch.no_grad():
            return compute_logprobs(policy(batch[key]), batch[key], batch[f"{key}_mask"])

    chosen_before, rejected_before = logprobs("chosen"), logprobs("rejected")
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.05)
    loss, _, _ = compute_dpo_loss_batch(batch, policy, reference, beta=0.1)
    loss.backward()
    optimizer.step()
    assert (logprobs("chosen") > chosen_before).all()
    assert (logprobs("rejected") < rejected_before).all()
    loss_after, chosen_reward, rejected_reward = compute_dpo_loss_batch(batch, policy, reference, 0.1)
    assert loss_after.item() < math.log(2.0)
    assert chosen_reward.item() > 0 > rejected_reward.item()


# --- the data -----------------------------------------------------------------------------------

def test_collate_masks_exactly_the_response_and_its_end_of_text(real_batch, gpt2_tokenizer):
    entries, batch = real_batch
    style = get_prompt_style("alpaca")
    assert batch["chosen"].shape == batch["rejected"].shape    # one width: one forward pass
    width = batch["chosen"].shape[1]
    for key in ("chosen", "rejected"):
        for row, entry in enumerate(entries):
            ids, mask = batch[key][row].tolist(), batch[f"{key}_mask"][row].tolist()
            prompt_ids = encode_text(gpt2_tokenizer, style.generation_prompt(entry))
            response_ids = encode_text(gpt2_tokenizer, entry[key]) + [END_OF_TEXT_ID]
            start, stop = len(prompt_ids), len(prompt_ids) + len(response_ids)
            assert ids[:start] == prompt_ids
            assert ids[start:stop] == response_ids
            assert ids[stop:] == [END_OF_TEXT_ID] * (width - stop)
            assert mask == [False] * start + [True] * len(response_ids) + [False] * (width - stop)
            assert gpt2_tokenizer.decode([i for i, m in zip(ids, mask) if m]) == entry[key] + "<|endoftext|>"
        assert batch["prompt"][row].tolist() == encode_text(gpt2_tokenizer, style.prompt(entries[row]))
    # The book's offset (prompt + 2 tokens) would score "### Response:\n" as if it were answer.
    book_start = len(batch["prompt"][0]) + 2
    first_scored = batch["chosen_mask"][0].nonzero()[0].item()
    assert gpt2_tokenizer.decode(batch["chosen"][0, book_start:first_scored].tolist()) == "### Response:\n"


def test_collate_without_prompt_masking_scores_everything_but_padding(real_batch, gpt2_tokenizer):
    entries, _ = real_batch
    dataset = PreferenceDataset(entries, gpt2_tokenizer)
    batch = preference_collate_fn([dataset[i] for i in range(len(entries))], mask_prompt_tokens=False)
    for row in range(len(entries)):
        assert batch["chosen_mask"][row].sum().item() == len(dataset[row]["chosen"]) + 1


def test_collate_truncation_warns_about_rows_left_without_a_response(real_batch, gpt2_tokenizer):
    entries, _ = real_batch
    dataset = PreferenceDataset(entries, gpt2_tokenizer)
    with pytest.warns(RuntimeWarning, match="sem nenhum token de resposta"):
        batch = preference_collate_fn([dataset[0]], allowed_max_length=10)
    assert batch["chosen"].shape == (1, 10)
    with pytest.raises(ValueError, match="lote vazio"):
        preference_collate_fn([])


def test_prompt_length_is_found_when_the_tokenizer_merges_across_the_boundary():
    """A tokenizer whose pieces keep leading whitespace merges the header's last "\\n" with
    the response's first word: that token is response and must be scored."""
    vocab = {}

    class Pieces:
        def encode(self, text, **_):
            import re
            return [vocab.setdefault(p, len(vocab)) for p in re.findall(r"\s*\S+|\s+", text)]

    entry = {"instruction": "Say hi.", "input": "", "chosen": "hello", "rejected": "go away"}
    item = PreferenceDataset([entry], Pieces())[0]
    header = Pieces().encode(get_prompt_style().generation_prompt(entry))
    assert item["chosen_prompt_length"] == len(header) - 1     # "\nhello" is one piece
    batch = preference_collate_fn([item], pad_token_id=999)
    assert batch["chosen_mask"][0].sum().item() == 2            # "\nhello" + end-of-text


@pytest.mark.parametrize("data, message", [
    ({"a": 1}, "lista JSON"),
    ([], "lista vazia"),
    (["texto"], "Entrada 0 .*objeto JSON"),
    ([{"instruction": "i", "input": "", "chosen": "c", "rejected": "r"},
      {"instruction": "i", "input": "", "chosen": "c"}], "Entrada 1 .*falta o campo 'rejected'"),
    ([{"instruction": "i", "input": None, "chosen": "c", "rejected": "r"}],
     "Entrada 0 .*'input' deve ser texto .*NoneType"),
])
def test_bad_entries_get_a_ptbr_error_naming_entry_and_field(data, message):
    with pytest.raises(DatasetError, match=message):
        validate_preference_entries(data, "prefs.json")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        with pytest.raises(DatasetError, match=message):
            PreferenceDataset(data, tokenizer=None)


def test_download_and_load_preference_file_from_the_mirror(mirror, tmp_path):
    data = download_and_load_preference_file(tmp_path / PREFERENCE_FILE)
    assert len(data) == 1100
    assert {"instruction", "input", "chosen", "rejected"} <= set(data[0])


# --- the reference: LoRA with adapters off --------------------------------------------------------

def lora_policy(seed: int = 0):
    """A tiny GPT with LoRA whose B is not zero (so adapters on and off really differ),
    and a frozen deep copy of the model before LoRA."""
    model = tiny_gpt(seed)
    frozen = copy.deepcopy(model).eval()
    replace_linear_with_lora(model, rank=4, alpha=8, targets="all_linear", include_head=True)
    torch.manual_seed(seed + 1)
    for _, layer in iter_lora_layers(model):
        torch.nn.init.normal_(layer.lora.B, std=0.05)
    return model, frozen


def test_lora_reference_gives_the_same_loss_as_a_frozen_copy(real_batch):
    _, batch = real_batch
    policy, frozen = lora_policy()
    policy.train()
    with torch.no_grad():
        on_before = policy.eval()(batch["chosen"])
    policy.train()
    for average in (False, True):
        with_copy = compute_dpo_loss_batch(batch, policy, frozen, 0.1, average_log_probs=average,
                                           reduction="none")
        without = compute_dpo_loss_batch(batch, policy, None, 0.1, average_log_probs=average,
                                         reduction="none")
        for a, b in zip(with_copy, without):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert with_copy[1].abs().max() > 1e-3          # adapters matter: rewards far from 0
    assert policy.training                              # the reference pass restored train mode
    with torch.no_grad():
        torch.testing.assert_close(policy.eval()(batch["chosen"]), on_before)   # adapters back on
    assert all(layer.enabled for _, layer in iter_lora_layers(policy))          # switched back on


def test_only_the_policy_gets_gradients(real_batch):
    _, batch = real_batch
    policy, _ = lora_policy()
    loss, _, _ = compute_dpo_loss_batch(batch, policy, None, 0.1)    # reference: adapters off
    loss.backward()
    grads = [layer.lora.B.grad for _, layer in iter_lora_layers(policy)]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    policy, reference = tiny_gpt(0), tiny_gpt(1)        # reference: a copy that could be trained
    compute_dpo_loss_batch(batch, policy, reference, 0.1)[0].backward()
    assert all(p.grad is None for p in reference.parameters())
    assert all(p.grad is not None for p in policy.parameters())


def test_adapters_off_is_the_base_model_and_dpo_refuses_what_it_cannot_use(real_batch):
    _, batch = real_batch
    policy, frozen = lora_policy()
    policy.eval()
    with torch.no_grad(), disable_lora(policy):
        torch.testing.assert_close(policy(batch["chosen"]), frozen(batch["chosen"]))
    with pytest.raises(ValueError, match="não tem camadas LoRA.*Passe um reference_model"):
        compute_dpo_loss_batch(batch, tiny_gpt(), None, 0.1)
    merge_lora(policy)
    with pytest.raises(ValueError, match="fundida"):
        compute_dpo_loss_batch(batch, policy, None, 0.1)


# --- the training loop ----------------------------------------------------------------------------

def test_train_model_dpo_simple_tracks_the_books_keys_and_ours(preference_entries, gpt2_tokenizer,
                                                               capsys):
    policy = tiny_gpt()
    reference = copy.deepcopy(policy).eval()
    train_loader = make_preference_loader(preference_entries[:8], gpt2_tokenizer, batch_size=4,
                                          shuffle=True, drop_last=True)
    val_loader = make_preference_loader(preference_entries[8:13], gpt2_tokenizer, batch_size=4)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    tracking = train_model_dpo_simple(policy, reference, train_loader, val_loader, optimizer,
                                      num_epochs=2, beta=0.1, eval_freq=1, eval_iter=2,
                                      start_context="Below is", tokenizer=gpt2_tokenizer)
    books = ["train_losses", "train_chosen_rewards", "train_rejected_rewards", "val_losses",
             "val_chosen_rewards", "val_rejected_rewards", "tokens_seen"]
    ours = ["train_reward_margins", "val_reward_margins", "train_accuracies", "val_accuracies"]
    assert set(tracking) == set(books + ours)
    assert all(len(tracking[k]) == 4 for k in tracking)          # 2 epochs x 2 steps
    assert tracking["val_losses"][-1] < tracking["val_losses"][0] < math.log(2.0) + 1e-6
    for split in ("train", "val"):
        margins = [c - r for c, r in zip(tracking[f"{split}_chosen_rewards"],
                                         tracking[f"{split}_rejected_rewards"])]
        assert tracking[f"{split}_reward_margins"] == pytest.approx(margins, abs=1e-6)
    out = capsys.readouterr().out
    assert out.count("Ep 1 (Step") == 2 and out.count("Below is") == 2    # log + a sample per epoch
    # The loader-level book functions agree with the metrics (5 val pairs: 4 + 1).
    loss, chosen, rejected = compute_dpo_loss_loader(val_loader, policy, reference, 0.1)
    res = evaluate_dpo_loss_loader(policy, reference, train_loader, val_loader, 0.1, eval_iter=None)
    assert (loss, chosen, rejected) == pytest.approx(
        (res["val_loss"], res["val_chosen_reward"], res["val_rejected_reward"]))
    assert math.isnan(compute_dpo_loss_loader([], policy, reference, 0.1)[0])


def _lora_run(preference_entries, gpt2_tokenizer):
    """A LoRA policy (reference: adapters off), its loaders and optimizer, all seeded."""
    policy, _ = lora_policy()
    torch.manual_seed(7)
    train_loader = make_preference_loader(preference_entries[:12], gpt2_tokenizer, batch_size=4,
                                          shuffle=True, drop_last=True)
    val_loader = make_preference_loader(preference_entries[12:17], gpt2_tokenizer, batch_size=4)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    return policy, train_loader, val_loader, optimizer


def _adapter(model):
    return {name: (layer.lora.A.detach().clone(), layer.lora.B.detach().clone())
            for name, layer in iter_lora_layers(model)}


def test_train_model_dpo_is_the_books_loop_with_extras(preference_entries, gpt2_tokenizer, capsys):
    runs = []
    for train in (train_model_dpo_simple, train_model_dpo):
        policy, train_loader, val_loader, optimizer = _lora_run(preference_entries, gpt2_tokenizer)
        extra = {"progress": False} if train is train_model_dpo else {}
        tracking = train(policy, None, train_loader, val_loader, optimizer, num_epochs=2, beta=0.1,
                         eval_freq=2, eval_iter=1, start_context="Below is",
                         tokenizer=gpt2_tokenizer, **extra)
        runs.append((tracking, _adapter(policy), capsys.readouterr().out))
    (book, book_weights, book_out), (ours, our_weights, our_out) = runs
    assert ours == book and len(book["val_losses"]) == 3                # steps 0, 2, 4 of 6
    for name, (a, b) in book_weights.items():
        assert torch.equal(our_weights[name][0], a) and torch.equal(our_weights[name][1], b)
    assert our_out == book_out and book_out.count("Ep 2 (Step 000004)") == 1


def test_dpo_resumes_after_an_interruption_to_the_same_result(preference_entries, gpt2_tokenizer,
                                                              tmp_path):
    """Stopped after step 3 of 6 (checkpoint every step), then resumed: same metrics and
    adapter as one uninterrupted run; the checkpoint holds the adapter, not the model."""
    def run(checkpoint, stop_after=None):
        policy, train_loader, val_loader, optimizer = _lora_run(preference_entries, gpt2_tokenizer)

        def interrupt(state):
            if stop_after is not None and state.global_step == stop_after:
                raise KeyboardInterrupt

        tracking = train_model_dpo(policy, None, train_loader, val_loader, optimizer, num_epochs=2,
                                   beta=0.1, eval_freq=2, eval_iter=1, start_context="",
                                   tokenizer=gpt2_tokenizer, checkpoint_path=checkpoint,
                                   checkpoint_every=1, resume=True, print_samples=False,
                                   progress=False, on_step=interrupt)
        return tracking, _adapter(policy)

    whole, whole_weights = run(tmp_path / "inteiro.pt")
    checkpoint = tmp_path / "dpo-checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint, stop_after=3)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["lora"] and all(".lora." in key for key in saved["weights"])
    assert saved["state"]["global_step"] == 3 and len(saved["tracking"]["val_losses"]) == 2
    resumed, resumed_weights = run(checkpoint)
    assert resumed == whole
    for name, (a, b) in whole_weights.items():
        torch.testing.assert_close(resumed_weights[name][0], a, rtol=0, atol=0)
        torch.testing.assert_close(resumed_weights[name][1], b, rtol=0, atol=0)


def test_max_steps_and_a_checkpoint_of_another_model(preference_entries, gpt2_tokenizer, tmp_path):
    policy, train_loader, val_loader, optimizer = _lora_run(preference_entries, gpt2_tokenizer)
    checkpoint = tmp_path / "dpo.pt"
    tracking = train_model_dpo(policy, None, train_loader, val_loader, optimizer, num_epochs=2,
                               beta=0.1, eval_freq=1, eval_iter=1, start_context="",
                               tokenizer=gpt2_tokenizer, max_steps=2, checkpoint_path=checkpoint,
                               print_samples=False, progress=False)
    assert len(tracking["val_losses"]) == 2
    state, saved = load_dpo_checkpoint(checkpoint, policy, optimizer, "cpu")
    assert (state.global_step, state.epoch, state.batch_in_epoch) == (1, 0, 2) and saved == tracking
    other = replace_linear_with_lora(tiny_gpt(), rank=2, alpha=2, targets="attention")
    other_optimizer = torch.optim.AdamW([p for p in other.parameters() if p.requires_grad])
    with pytest.raises(ValueError, match="checkpoint de DPO .* não corresponde"):
        load_dpo_checkpoint(checkpoint, other, other_optimizer, "cpu")
    full = tiny_gpt()                                   # no LoRA: the whole model is saved
    save_dpo_checkpoint(checkpoint, full, torch.optim.SGD(full.parameters(), lr=0.1),
                        state, tracking)
    assert set(torch.load(checkpoint, weights_only=True)["weights"]) == set(full.state_dict())


# --- end to end -----------------------------------------------------------------------------------

POLITE = ("gladly", "sure", "happily", "certainly")
RUDE = ("ugh", "whatever", "meh", "fine")
TARGET_ACCURACY = 0.9


def policy_prefers_chosen(model, loader) -> float:
    """Share of pairs where the model itself gives the chosen response the higher log-prob."""
    model.eval()
    wins = pairs = 0
    with torch.no_grad():
        for batch in loader:
            chosen = compute_logprobs(model(batch["chosen"]), batch["chosen"], batch["chosen_mask"])
            rejected = compute_logprobs(model(batch["rejected"]), batch["rejected"], batch["rejected_mask"])
            wins += (chosen > rejected).sum().item()
            pairs += len(chosen)
    return wins / pairs


@pytest.mark.slow
def test_sft_then_dpo_with_lora_reference_learns_the_preference():
    """SFT on answers that start with a polite or a rude word at random (so the model has
    no preference), then DPO with LoRA, the reference being the adapters switched off."""
    from functools import partial

    from torch.utils.data import DataLoader

    from llmdefinitions.data import InstructionDataset, custom_collate_fn
    from llmdefinitions.generation import generate_responses
    from llmdefinitions.trainer import train_model
    from test_end_to_end import WORDS, WordTokenizer, make_entries

    start = time.perf_counter()
    rng = random.Random(0)
    base = make_entries(rng, 1600)
    sft = [dict(e, output=f"{rng.choice(POLITE + RUDE)} , {e['output']}") for e in base[:1000]]
    pairs = [dict(e, chosen=f"{rng.choice(POLITE)} , {e['output']}",
                  rejected=f"{rng.choice(RUDE)} , {e['output']}") for e in base[1000:]]
    train_pairs = pairs[:400]
    seen = {(e["instruction"], e["input"]) for e in base[:1000] + train_pairs}
    held_out = [p for p in pairs[400:] if (p["instruction"], p["input"]) not in seen][:80]
    assert len(held_out) >= 60

    style = get_prompt_style("alpaca")
    texts = [style.generation_prompt(e) + e["output"] for e in sft]
    texts += [style.generation_prompt(p) + p[k] for p in pairs for k in ("chosen", "rejected")]
    texts += [style.generation_prompt(p) for p in pairs] + [w.upper() for w in WORDS]
    tokenizer = WordTokenizer(texts)
    eot = tokenizer.eot_id
    torch.manual_seed(123)
    model = GPTModel({"vocab_size": eot + 1, "context_length": 64, "emb_dim": 96, "n_heads": 4,
                      "n_layers": 2, "drop_rate": 0.0, "qkv_bias": True})

    sft_loader = DataLoader(InstructionDataset(sft, tokenizer, return_prompt_length=True),
                            batch_size=16, shuffle=True, drop_last=True,
                            collate_fn=partial(custom_collate_fn, pad_token_id=eot, mask_instruction=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sft_losses, _, _ = train_model(
        model, sft_loader, sft_loader, optimizer, "cpu", num_epochs=6, eval_freq=100, eval_iter=2,
        start_context="", tokenizer=tokenizer, warmup_steps=10, lr_schedule="cosine", grad_clip=1.0,
        progress=False, print_samples=False)
    assert sft_losses[-1] < 0.5 * sft_losses[0]

    def loader(data, shuffle):
        return make_preference_loader(data, tokenizer, batch_size=16, shuffle=shuffle,
                                      drop_last=shuffle, pad_token_id=eot, allowed_max_length=None)

    train_loader, held_out_loader = loader(train_pairs, True), loader(held_out, False)
    prefers_before = policy_prefers_chosen(model, held_out_loader)

    replace_linear_with_lora(model, rank=8, alpha=16, targets="all_linear", include_head=True)
    before = compute_dpo_metrics_loader(held_out_loader, model, None, beta=0.1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4,
                                  weight_decay=0.0)
    tracking = train_model_dpo_simple(model, None, train_loader, held_out_loader, optimizer,
                                      num_epochs=1, beta=0.1, eval_freq=5, eval_iter=5,
                                      start_context="", tokenizer=tokenizer, print_samples=False)
    after = compute_dpo_metrics_loader(held_out_loader, model, None, beta=0.1)
    prefers_after = policy_prefers_chosen(model, held_out_loader)
    answers = generate_responses(model, tokenizer, held_out, max_new_tokens=8, batch_size=40,
                                 eos_id=eot, progress=False)
    polite = sum(a.split(" ")[0] in POLITE for a in answers) / len(answers)
    elapsed = time.perf_counter() - start
    print(f"\nheld-out pairs: {len(held_out)}; DPO steps: {len(train_loader)}; {elapsed:.0f} s\n"
          f"model prefers chosen (log-prob): {prefers_before:.0%} -> {prefers_after:.0%}\n"
          f"reward accuracy: {before['accuracy']:.0%} -> {after['accuracy']:.0%}; "
          f"loss {before['loss']:.3f} -> {after['loss']:.3f}; margin {after['reward_margin']:.3f}\n"
          f"greedy answers starting polite after DPO: {polite:.0%}, e.g. {answers[:2]}")
    assert before["loss"] == pytest.approx(math.log(2.0), abs=1e-6) and before["accuracy"] == 0.0
    assert 0.25 <= prefers_before <= 0.75                       # about chance before DPO
    assert prefers_after >= TARGET_ACCURACY
    assert after["accuracy"] >= TARGET_ACCURACY
    assert after["loss"] < before["loss"]
    assert tracking["val_accuracies"][-1] >= TARGET_ACCURACY
    assert polite >= TARGET_ACCURACY
    assert all(len(a.split()) <= 5 for a in answers)            # answers stop at end-of-text
