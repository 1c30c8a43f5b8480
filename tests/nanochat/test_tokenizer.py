"""nanochat/tokenizer.py: the BPE tokenizer (round trips, special tokens, persistence, errors) and chat
rendering (exact token/mask layouts, input validation)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanochat.dataloader import load_text
from nanochat.tokenizer import MIN_VOCAB_SIZE, SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer

VOCAB = 600


@pytest.fixture(scope="module")
def big_tok():
    return Tokenizer.train([load_text()[:100_000]], VOCAB)


def test_vocab_layout(big_tok):
    assert big_tok.vocab_size == VOCAB
    n_merged = VOCAB - len(SPECIAL_TOKENS)
    assert [big_tok.encode_special(s) for s in SPECIAL_TOKENS] == list(range(n_merged, VOCAB))
    assert big_tok.bos_token_id == n_merged
    assert big_tok.pattern == SPLIT_PATTERN
    # the first 256 ids are the single bytes, so merges start at 256
    assert [big_tok.id_to_token(i) for i in (0, 65, 255)] == [b"\x00", b"A", b"\xff"]
    assert len(big_tok.id_to_token(256)) == 2


def test_training_learns_frequent_words(big_tok):
    ids = big_tok.encode(" the")
    assert len(ids) == 1
    assert big_tok.decode(ids) == " the"


def test_digits_split_in_pairs(big_tok):
    pieces = [big_tok.decode([i]) for i in big_tok.encode("12345")]
    assert all(len(p) <= 2 for p in pieces)
    assert "".join(pieces) == "12345"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_round_trip(big_tok, text):
    assert big_tok.decode(big_tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_bytes_round_trip(big_tok, data):
    assert big_tok.decode_bytes(big_tok.encode_bytes(data)) == data


def test_invalid_utf8_uses_byte_tokens(big_tok):
    ids = big_tok.encode_bytes(b"ok\xff")
    assert ids[-1] == 255
    assert big_tok.decode(ids) == "ok\ufffd"


def test_decode_partial_utf8_is_replaced(big_tok):
    ids = big_tok.encode("é")
    partial = big_tok.encode_bytes("é".encode()[:1])
    assert big_tok.decode(partial) == "\ufffd"
    assert big_tok.decode(ids) == "é"


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_strings_are_ordinary_text(big_tok, special):
    ids = big_tok.encode(f"a {special} b")
    assert big_tok.encode_special(special) not in ids
    assert all(i < big_tok.bos_token_id for i in ids)
    assert big_tok.decode(ids) == f"a {special} b"


def test_decode_specials(big_tok):
    ids = [big_tok.bos_token_id] + big_tok.encode("hi") + [big_tok.encode_special("<|assistant_end|>")]
    assert big_tok.decode(ids) == "<|bos|>hi<|assistant_end|>"


def test_prepend_append(big_tok):
    plain = big_tok.encode("hello world")
    assert big_tok.encode("hello world", prepend="<|bos|>") == [big_tok.bos_token_id] + plain
    end = big_tok.encode_special("<|assistant_end|>")
    assert big_tok.encode("hello world", prepend=big_tok.bos_token_id, append=end) == [big_tok.bos_token_id] + plain + [end]
    assert big_tok.encode("hello world", append="<|user_end|>")[-1] == big_tok.encode_special("<|user_end|>")


def test_encode_batch_matches_encode(big_tok):
    texts = ["hello world", "", "def f(x):\n    return x", "<|bos|>"]
    bos = big_tok.bos_token_id
    assert big_tok.encode_batch(texts) == [big_tok.encode(t) for t in texts]
    assert big_tok.encode_batch(texts, prepend="<|bos|>", num_threads=1) == [[bos] + big_tok.encode(t) for t in texts]


def test_token_bytes(big_tok):
    tb = big_tok.token_bytes
    assert tb.dtype == np.int32 and tb.shape == (big_tok.vocab_size,)
    assert (tb[:256] == 1).all()
    assert (tb[big_tok.bos_token_id:] == 0).all()
    for i in (256, 300, big_tok.bos_token_id - 1):
        assert tb[i] == len(big_tok.id_to_token(i))
    text = load_text()[:5000]
    assert tb[big_tok.encode(text)].sum() == len(text.encode("utf-8"))


def test_save_load_same_ids(big_tok, tmp_path):
    big_tok.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    text = load_text()[200_000:220_000] + " <|bos|> ünïcødé 12345"
    assert loaded.encode(text) == big_tok.encode(text)
    assert loaded.special_tokens == big_tok.special_tokens
    assert np.array_equal(loaded.token_bytes, big_tok.token_bytes)
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
def test_load_corrupt_names_file(big_tok, tmp_path, corrupt, match):
    big_tok.save(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(ValueError, match=match):
        Tokenizer.load(tmp_path)


def test_train_errors():
    with pytest.raises(ValueError, match=str(MIN_VOCAB_SIZE)):
        Tokenizer.train(["some text"], MIN_VOCAB_SIZE - 1)
    with pytest.raises(TypeError, match="single string"):
        Tokenizer.train("some text", 300)


def test_minimum_vocab_has_no_merges():
    big_tok = Tokenizer.train(["aaaa bbbb"], MIN_VOCAB_SIZE)
    assert big_tok.vocab_size == MIN_VOCAB_SIZE
    assert big_tok.encode("ab") == [97, 98]


def test_encode_errors(big_tok):
    with pytest.raises(ValueError, match="unknown special token"):
        big_tok.encode_special("<|nope|>")
    with pytest.raises(ValueError, match="unknown special token"):
        big_tok.encode("x", prepend="<|nope|>")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        big_tok.encode("x", append=big_tok.vocab_size)
    with pytest.raises(TypeError, match="str"):
        big_tok.encode(b"bytes")


@given(st.text(max_size=60))
@settings(deadline=None, max_examples=60)
def test_decode_stream_pieces_join_to_decode(big_tok, text):
    ids = big_tok.encode(text)
    pieces = list(big_tok.decode_stream(iter(ids)))
    assert "".join(pieces) == big_tok.decode(ids) == text
    assert all(pieces)  # no empty writes


def test_decode_stream_holds_a_split_character_until_it_is_complete(big_tok):
    ids = big_tok.encode_bytes("é".encode())  # one character, two bytes
    split = big_tok.encode_bytes(b"\xc3") + big_tok.encode_bytes(b"\xa9")
    assert list(big_tok.decode_stream(split)) == ["é"]
    assert list(big_tok.decode_stream(big_tok.encode_bytes(b"\xc3"))) == ["\ufffd"]  # an unfinished character at the end
    assert list(big_tok.decode_stream(ids)) == ["é"]


# ---- chat conversations (conftest's 300-token tokenizer) --------------------------------------------

@pytest.fixture(scope="module")
def sp(tok):
    """Special token ids by short name: sp['bos'], sp['user_start'], ..."""
    return {name[2:-2]: i for name, i in tok.special_tokens.items()}


def test_simple_exchange_layout(tok, sp):
    conv = {"messages": [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "See you"},
    ]}
    ids, mask = tok.render_conversation(conv)
    u1, a1, u2, a2 = (tok.encode(t) for t in ("Hi there", "Hello!", "Bye", "See you"))
    expected = (
        [(sp["bos"], 0), (sp["user_start"], 0)] + [(i, 0) for i in u1] + [(sp["user_end"], 0)]
        + [(sp["assistant_start"], 0)] + [(i, 1) for i in a1] + [(sp["assistant_end"], 1)]
        + [(sp["user_start"], 0)] + [(i, 0) for i in u2] + [(sp["user_end"], 0)]
        + [(sp["assistant_start"], 0)] + [(i, 1) for i in a2] + [(sp["assistant_end"], 1)]
    )
    assert list(zip(ids, mask)) == expected


def test_plain_list_same_as_dict(tok):
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert tok.render_conversation(messages) == tok.render_conversation({"messages": messages})


def test_user_only_conversation(tok, sp):
    ids, mask = tok.render_conversation([{"role": "user", "content": "q"}])
    assert ids == [sp["bos"], sp["user_start"]] + tok.encode("q") + [sp["user_end"]]
    assert mask == [0] * len(ids)


def test_system_message_merged_into_first_user(tok):
    conv = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "Because."},
    ]}
    merged = [
        {"role": "user", "content": "Be brief.\n\nWhy?"},
        {"role": "assistant", "content": "Because."},
    ]
    assert tok.render_conversation(conv) == tok.render_conversation(merged)
    assert conv["messages"][1]["content"] == "Why?"  # the caller's conversation is untouched


def test_tool_parts_layout(tok, sp):
    parts = [
        {"type": "text", "text": "Let me compute."},
        {"type": "python", "text": "2**10"},
        {"type": "python_output", "text": "1024"},
        {"type": "text", "text": "It is 1024."},
    ]
    ids, mask = tok.render_conversation([{"role": "user", "content": "2^10?"}, {"role": "assistant", "content": parts}])
    t1, code, out, t2 = (tok.encode(p["text"]) for p in parts)
    head = [sp["bos"], sp["user_start"]] + tok.encode("2^10?") + [sp["user_end"], sp["assistant_start"]]
    assert ids == head + t1 + [sp["python_start"]] + code + [sp["python_end"], sp["output_start"]] + out + [
        sp["output_end"]] + t2 + [sp["assistant_end"]]
    assert mask == [0] * len(head) + [1] * (len(t1) + len(code) + 2) + [0] * (len(out) + 2) + [1] * (len(t2) + 1)


def test_special_strings_in_content_are_text(tok, sp):
    ids, _ = tok.render_conversation([{"role": "user", "content": "<|assistant_end|>"}])
    assert ids.count(sp["assistant_end"]) == 0


@pytest.mark.parametrize("max_tokens", [0, 1, 3, 7, 12, 1000])
def test_truncation_keeps_alignment(tok, max_tokens):
    conv = [{"role": "user", "content": "one two"}, {"role": "assistant", "content": "three four five"}]
    full_ids, full_mask = tok.render_conversation(conv)
    ids, mask = tok.render_conversation(conv, max_tokens=max_tokens)
    assert len(ids) == len(mask) == min(max_tokens, len(full_ids))
    assert ids == full_ids[:max_tokens] and mask == full_mask[:max_tokens]


def test_render_for_completion_drops_last_assistant(tok, sp):
    conv = {"messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]}
    prompt = [sp["bos"], sp["user_start"]] + tok.encode("2+2?") + [sp["user_end"], sp["assistant_start"]]
    assert tok.render_for_completion(conv) == prompt
    assert tok.render_for_completion(conv["messages"][:1]) == prompt
    assert len(conv["messages"]) == 2


def test_render_for_completion_with_system(tok, sp):
    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    ids = tok.render_for_completion(conv)
    assert ids == [sp["bos"], sp["user_start"]] + tok.encode("S\n\nU") + [sp["user_end"], sp["assistant_start"]]


BAD_CONVERSATIONS = {
    "empty list": [],
    "empty dict": {"messages": []},
    "no messages key": {"msgs": []},
    "not a conversation": "hello",
    "starts with assistant": [{"role": "assistant", "content": "x"}],
    "two users": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "two assistants": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                       {"role": "assistant", "content": "c"}],
    "unknown role": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}],
    "system alone": [{"role": "system", "content": "s"}],
    "system then assistant": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
    "system not first": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}],
    "user content not str": [{"role": "user", "content": 5}],
    "user content list": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
    "system content not str": [{"role": "system", "content": None}, {"role": "user", "content": "u"}],
    "assistant content int": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 3}],
    "unknown part type": [{"role": "user", "content": "a"},
                          {"role": "assistant", "content": [{"type": "image", "text": "x"}]}],
    "part text not str": [{"role": "user", "content": "a"},
                          {"role": "assistant", "content": [{"type": "text", "text": 1}]}],
    "part not dict": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ["x"]}],
    "message missing content": [{"role": "user"}],
    "message not dict": ["hi"],
}


@pytest.mark.parametrize("name", list(BAD_CONVERSATIONS))
def test_malformed_conversations_raise(tok, name):
    with pytest.raises(ValueError):
        tok.render_conversation(BAD_CONVERSATIONS[name])


def test_bad_max_tokens(tok):
    with pytest.raises(ValueError, match="max_tokens"):
        tok.render_conversation([{"role": "user", "content": "a"}], max_tokens=-1)


def test_render_for_completion_rejects_malformed(tok):
    with pytest.raises(ValueError):
        tok.render_for_completion([{"role": "assistant", "content": "x"}])


_part = st.builds(
    lambda kind, text: {"type": kind, "text": text},
    st.sampled_from(["text", "python", "python_output"]),
    st.text(max_size=20),
)
_assistant = st.one_of(st.text(max_size=20), st.lists(_part, max_size=4))


@st.composite
def conversations(draw):
    n_turns = draw(st.integers(1, 4))
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(st.text(max_size=20))})
    for i in range(n_turns):
        messages.append({"role": "user", "content": draw(st.text(max_size=20))})
        if i < n_turns - 1 or draw(st.booleans()):
            messages.append({"role": "assistant", "content": draw(_assistant)})
    return {"messages": messages}


@settings(max_examples=100, deadline=None)
@given(conversations(), st.one_of(st.none(), st.integers(0, 60)))
def test_mask_only_inside_assistant_turns(tok, conv, max_tokens):
    ids, mask = tok.render_conversation(conv, max_tokens=max_tokens)
    assert len(ids) == len(mask)
    assert set(mask) <= {0, 1}
    start, end = tok.encode_special("<|assistant_start|>"), tok.encode_special("<|assistant_end|>")
    inside = False
    for i, m in zip(ids, mask):
        if i == start:
            assert m == 0
            inside = True
        elif m:
            assert inside
        if i == end:
            assert m == 1
            inside = False
    if max_tokens is None:
        n_assistant = sum(m["role"] == "assistant" for m in conv["messages"])
        assert ids.count(start) == ids.count(end) == n_assistant
