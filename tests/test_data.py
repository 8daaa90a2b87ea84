"""Dataset loading/validation, split, InstructionDataset and custom_collate_fn at the edges."""
import json
import warnings

import pytest
import torch

from llmdefinitions.data import (DatasetError, InstructionDataset, Sample, custom_collate_fn, download_and_load_file,
                                 split_data, validate_entries)
from llmdefinitions.prompts import format_input, format_input_phi3, get_prompt_style

TOY = ([0, 1, 2, 3, 4], [5, 6], [7, 8, 9])


def test_toy_batch_gives_the_books_tensors():
    inputs, targets = custom_collate_fn(TOY)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert targets.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]


def book_collate(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None):
    """The book's final collate, verbatim in logic (masks by token value)."""
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for item in batch:
        new_item = item.copy() + [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs, targets = torch.tensor(padded[:-1]), torch.tensor(padded[1:])
        indices = torch.nonzero(targets == pad_token_id).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if allowed_max_length is not None:
            inputs, targets = inputs[:allowed_max_length], targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst), torch.stack(targets_lst)


def test_matches_the_book_on_ordinary_batches():
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = [torch.randint(0, 50000, (int(n),), generator=rng).tolist()
                 for n in torch.randint(1, 30, (5,), generator=rng)]
        for limit in (None, 7):
            ours, book = custom_collate_fn(batch, allowed_max_length=limit), book_collate(batch, allowed_max_length=limit)
            assert torch.equal(ours[0], book[0]) and torch.equal(ours[1], book[1])


def test_an_end_of_text_id_inside_the_content_keeps_the_real_target():
    batch = [[0, 50256, 2], [5, 6, 7, 8, 9]]
    _, targets = custom_collate_fn(batch)
    assert targets[0].tolist() == [50256, 2, 50256, -100, -100]   # content 50256 kept, eos at position 2
    _, book_targets = book_collate(batch)
    assert book_targets[0].tolist() == [50256, 2, -100, -100, -100]  # the book masks the real end-of-text


def test_truncation_keeps_targets_the_shift_of_inputs():
    inputs, targets = custom_collate_fn(([1, 2, 3, 4, 5, 6, 7], [8, 9]), allowed_max_length=4)
    assert inputs.tolist() == [[1, 2, 3, 4], [8, 9, 50256, 50256]]
    assert targets.tolist() == [[2, 3, 4, 5], [9, 50256, -100, -100]]


def test_instruction_masking_hides_the_prompt_targets():
    inputs, targets = custom_collate_fn((Sample([10, 11, 12, 13, 14], 3), Sample([20, 21], 1)), mask_instruction=True)
    # prompt of 3 tokens: the targets 11 and 12 (predicting prompt tokens) are masked; 13 is the first answer token
    assert targets.tolist() == [[-100, -100, 13, 14, 50256], [21, 50256, -100, -100, -100]]
    with pytest.raises(ValueError, match="return_prompt_length"):
        custom_collate_fn(TOY, mask_instruction=True)


def test_a_row_with_no_target_is_reported():
    with pytest.warns(RuntimeWarning, match=r"\[0\]"):
        custom_collate_fn((Sample([1, 2, 3, 4, 5, 6], 6), Sample([7, 8], 1)), mask_instruction=True, allowed_max_length=3)


def test_no_warning_for_ordinary_batches():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        custom_collate_fn(TOY)


def test_device_and_dtype():
    inputs, targets = custom_collate_fn(TOY, device="cpu")
    assert inputs.dtype == targets.dtype == torch.long and inputs.device.type == "cpu"


def test_ignore_index_cross_entropy_demo():
    logits_1 = torch.tensor([[-1.0, 1.0], [-0.5, 1.5]])
    targets_1 = torch.tensor([0, 1])
    loss_1 = torch.nn.functional.cross_entropy(logits_1, targets_1)
    logits_2 = torch.tensor([[-1.0, 1.0], [-0.5, 1.5], [-0.5, 1.5]])
    loss_2 = torch.nn.functional.cross_entropy(logits_2, torch.tensor([0, 1, 1]))
    loss_3 = torch.nn.functional.cross_entropy(logits_2, torch.tensor([0, 1, -100]))
    assert round(loss_1.item(), 4) == 1.1269 and round(loss_2.item(), 4) == 0.7936
    assert loss_1 == loss_3


def test_alpaca_prompt_is_the_books_text():
    entry = {"instruction": "Identify the correct spelling.", "input": "Occassion", "output": "Occasion"}
    assert format_input(entry) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nIdentify the correct spelling.\n\n### Input:\nOccassion")
    assert "### Input" not in format_input({**entry, "input": ""})
    assert format_input_phi3(entry) == "<|user|>\nIdentify the correct spelling.\nOccassion"
    assert get_prompt_style("phi3").full_text(entry).endswith("<|assistant|>:\nOccasion")
    with pytest.raises(ValueError, match="alpaca, phi3"):
        get_prompt_style("chatml")


def test_dataset_tokenizes_prompt_and_response(gpt2_tokenizer):
    entry = {"instruction": "Say hi.", "input": "", "output": "Hi <|endoftext|> there"}
    ds = InstructionDataset([entry], gpt2_tokenizer)
    text = format_input(entry) + "\n\n### Response:\n" + entry["output"]
    assert ds[0] == gpt2_tokenizer.encode(text, disallowed_special=())
    assert 50256 not in ds[0]                       # a literal <|endoftext|> stays text
    masked = InstructionDataset([entry], gpt2_tokenizer, return_prompt_length=True)
    ids, prompt_length = masked[0]
    assert gpt2_tokenizer.decode(ids[prompt_length:]) == "\n\n### Response:\n" + entry["output"]


def test_split_sizes_follow_the_book(mirror, tmp_path):
    data = download_and_load_file(tmp_path / "instruction-data.json")
    train, test, val = split_data(data)
    assert (len(data), len(train), len(test), len(val)) == (1100, 935, 110, 55)
    assert train[0] == data[0] and val[-1] == data[-1]
    shuffled = split_data(data, shuffle=True, seed=1)
    assert shuffled.train != train and sorted(map(json.dumps, shuffled.train + shuffled.test + shuffled.val)) \
        == sorted(map(json.dumps, data))
    assert split_data(data, shuffle=True, seed=1) == shuffled


@pytest.mark.parametrize("content, message", [
    ('[{"instruction": "a", "input": "", "output": "b"}', "não é um JSON válido"),
    ('[{"instruction": "a", "output": "b"}]', "Entrada 0 .*falta o campo 'input'"),
    ('[{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "input": 3, "output": "b"}]',
     "Entrada 1 .*'input' deve ser texto"),
    ("[]", "nenhuma entrada"),
    ('{"instruction": "a"}', "lista JSON"),
])
def test_bad_files_give_a_pt_br_error_and_write_nothing(tmp_path, monkeypatch, content, message):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "bad.json").write_text(content, encoding="utf-8")
    monkeypatch.setenv("LLMDEF_MIRROR", str(mirror))
    target = tmp_path / "out" / "data.json"
    with pytest.raises((DatasetError, ValueError), match=message):
        download_and_load_file(target, "https://example.invalid/bad.json")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


def test_a_failed_download_names_the_final_file(tmp_path, monkeypatch):
    from llmdefinitions.downloads import DownloadError

    monkeypatch.delenv("LLMDEF_MIRROR", raising=False)
    target = tmp_path / "instruction-data.json"
    with pytest.raises(DownloadError) as error:          # port 9: nothing listens, refused at once
        download_and_load_file(target, "http://127.0.0.1:9/instruction-data.json")
    assert f"'{target}'" in str(error.value) and ".download" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_read_not_overwritten(tmp_path):
    path = tmp_path / "mine.json"
    entries = [{"instruction": "Traduza", "input": "pão", "output": "bread"}]
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    assert download_and_load_file(path, "https://example.invalid/x.json") == entries


def test_validate_entries_names_the_source():
    with pytest.raises(DatasetError, match="'meus-dados.json'"):
        validate_entries([{"instruction": 1, "input": "", "output": ""}], "meus-dados.json")


def test_common_prefix_length_stops_at_the_first_difference():
    from llmdefinitions.data import common_prefix_length

    assert common_prefix_length([5, 6, 7], [5, 6, 9, 7]) == 2      # a token merged across the boundary
    assert common_prefix_length([5, 6], [5, 6, 7]) == 2 and common_prefix_length([], [1]) == 0
    assert common_prefix_length((1, 2), [1, 2]) == 2                # any sequences, not only lists
