"""The real tiktoken GPT-2 encoding works offline from the mirror."""
import hashlib

from llmdefinitions.downloads import TOKENIZER_URLS
from llmdefinitions.tokenizer import get_gpt2_tokenizer


def test_mirror_tokenizer_gives_the_real_gpt2_ids(mirror, tmp_path):
    tokenizer = get_gpt2_tokenizer()
    assert tokenizer.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert tokenizer.encode("Hello, world!") == [15496, 11, 995, 0]
    assert tokenizer.n_vocab == 50257
    cache = tmp_path / "tiktoken-cache"
    for url in TOKENIZER_URLS.values():                 # placed under tiktoken's own cache names
        assert (cache / hashlib.sha1(url.encode()).hexdigest()).is_file()


def test_accents_round_trip(mirror):
    tokenizer = get_gpt2_tokenizer()
    text = "Ajuste fino de instruções: ação, coração, pão."
    assert tokenizer.decode(tokenizer.encode(text)) == text
