"""Tests for chat rendering: exact token/mask layouts and input validation."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanochat.dataloader import load_text
from nanochat.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([load_text()[:50_000]], 400)


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
