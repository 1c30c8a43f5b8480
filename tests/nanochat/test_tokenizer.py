"""Tests for the BPE tokenizer: round trips, special tokens, persistence, errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanochat.dataloader import load_text
from nanochat.tokenizer import MIN_VOCAB_SIZE, SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer

VOCAB = 600


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([load_text()[:100_000]], VOCAB)


def test_vocab_layout(tok):
    assert tok.vocab_size == VOCAB
    n_merged = VOCAB - len(SPECIAL_TOKENS)
    assert [tok.encode_special(s) for s in SPECIAL_TOKENS] == list(range(n_merged, VOCAB))
    assert tok.bos_token_id == n_merged
    assert tok.pattern == SPLIT_PATTERN
    # the first 256 ids are the single bytes, so merges start at 256
    assert [tok.id_to_token(i) for i in (0, 65, 255)] == [b"\x00", b"A", b"\xff"]
    assert len(tok.id_to_token(256)) == 2


def test_training_learns_frequent_words(tok):
    ids = tok.encode(" the")
    assert len(ids) == 1
    assert tok.decode(ids) == " the"


def test_digits_split_in_pairs(tok):
    pieces = [tok.decode([i]) for i in tok.encode("12345")]
    assert all(len(p) <= 2 for p in pieces)
    assert "".join(pieces) == "12345"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_bytes_round_trip(tok, data):
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


def test_invalid_utf8_uses_byte_tokens(tok):
    ids = tok.encode_bytes(b"ok\xff")
    assert ids[-1] == 255
    assert tok.decode(ids) == "ok\ufffd"


def test_decode_partial_utf8_is_replaced(tok):
    ids = tok.encode("é")
    partial = tok.encode_bytes("é".encode()[:1])
    assert tok.decode(partial) == "\ufffd"
    assert tok.decode(ids) == "é"


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_strings_are_ordinary_text(tok, special):
    ids = tok.encode(f"a {special} b")
    assert tok.encode_special(special) not in ids
    assert all(i < tok.bos_token_id for i in ids)
    assert tok.decode(ids) == f"a {special} b"


def test_decode_specials(tok):
    ids = [tok.bos_token_id] + tok.encode("hi") + [tok.encode_special("<|assistant_end|>")]
    assert tok.decode(ids) == "<|bos|>hi<|assistant_end|>"


def test_prepend_append(tok):
    plain = tok.encode("hello world")
    assert tok.encode("hello world", prepend="<|bos|>") == [tok.bos_token_id] + plain
    end = tok.encode_special("<|assistant_end|>")
    assert tok.encode("hello world", prepend=tok.bos_token_id, append=end) == [tok.bos_token_id] + plain + [end]
    assert tok.encode("hello world", append="<|user_end|>")[-1] == tok.encode_special("<|user_end|>")


def test_encode_batch_matches_encode(tok):
    texts = ["hello world", "", "def f(x):\n    return x", "<|bos|>"]
    bos = tok.bos_token_id
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, prepend="<|bos|>", num_threads=1) == [[bos] + tok.encode(t) for t in texts]


def test_token_bytes(tok):
    tb = tok.token_bytes
    assert tb.dtype == np.int32 and tb.shape == (tok.vocab_size,)
    assert (tb[:256] == 1).all()
    assert (tb[tok.bos_token_id:] == 0).all()
    for i in (256, 300, tok.bos_token_id - 1):
        assert tb[i] == len(tok.id_to_token(i))
    text = load_text()[:5000]
    assert tb[tok.encode(text)].sum() == len(text.encode("utf-8"))


def test_save_load_same_ids(tok, tmp_path):
    tok.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    text = load_text()[200_000:220_000] + " <|bos|> ünïcødé 12345"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.special_tokens == tok.special_tokens
    assert np.array_equal(loaded.token_bytes, tok.token_bytes)
    config = json.loads((tmp_path / "tokenizer.json").read_text())
    assert config["pattern"] == SPLIT_PATTERN


def test_load_missing_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.tiktoken"):
        Tokenizer.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda d: (d / "tokenizer.tiktoken").write_text("not base64!! x\n"), "tokenizer.tiktoken, line 1"),
        (lambda d: (d / "tokenizer.tiktoken").write_text("QQ== 0\n"), "tokenizer.tiktoken"),
        (lambda d: (d / "tokenizer.json").write_text("{broken"), "tokenizer.json"),
        (lambda d: (d / "tokenizer.json").write_text('{"pattern": "x", "special_tokens": {}}'), "tokenizer.json"),
    ],
)
def test_load_corrupt_names_file(tok, tmp_path, corrupt, match):
    tok.save(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(ValueError, match=match):
        Tokenizer.load(tmp_path)


def test_train_errors():
    with pytest.raises(ValueError, match=str(MIN_VOCAB_SIZE)):
        Tokenizer.train(["some text"], MIN_VOCAB_SIZE - 1)
    with pytest.raises(TypeError, match="single string"):
        Tokenizer.train("some text", 300)


def test_minimum_vocab_has_no_merges():
    tok = Tokenizer.train(["aaaa bbbb"], MIN_VOCAB_SIZE)
    assert tok.vocab_size == MIN_VOCAB_SIZE
    assert tok.encode("ab") == [97, 98]


def test_encode_errors(tok):
    with pytest.raises(ValueError, match="unknown special token"):
        tok.encode_special("<|nope|>")
    with pytest.raises(ValueError, match="unknown special token"):
        tok.encode("x", prepend="<|nope|>")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.encode("x", append=tok.vocab_size)
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")


@given(st.text(max_size=60))
@settings(deadline=None, max_examples=60)
def test_decode_stream_pieces_join_to_decode(tok, text):
    ids = tok.encode(text)
    pieces = list(tok.decode_stream(iter(ids)))
    assert "".join(pieces) == tok.decode(ids) == text
    assert all(pieces)  # no empty writes


def test_decode_stream_holds_a_split_character_until_it_is_complete(tok):
    ids = tok.encode_bytes("é".encode())  # one character, two bytes
    split = tok.encode_bytes(b"\xc3") + tok.encode_bytes(b"\xa9")
    assert list(tok.decode_stream(split)) == ["é"]
    assert list(tok.decode_stream(tok.encode_bytes(b"\xc3"))) == ["\ufffd"]  # an unfinished character at the end
    assert list(tok.decode_stream(ids)) == ["é"]
