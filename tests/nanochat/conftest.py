"""Fixtures the nanochat tests share: the small chat tokenizer, and untrained models whose replies
are visible text (the chat command's and the server's)."""
import numpy as np
import pytest

from nanochat.dataloader import load_text
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer

CHAT_CONTEXT = 48  # the chat model's: short, so a few exchanges fill it
SERVE_CONTEXT = 128


@pytest.fixture(scope="session")
def tok():
    """300 tokens trained on the first 50,000 characters of the default text."""
    return Tokenizer.train([load_text()[:50_000]], 300)


def visible_text_model(tok, sequence_len, n_layer, n_head, n_kv_head):
    """An untrained GPT whose replies are one line of visible text: random blocks (so attention and
    the cache shape every reply), random logits for tokens of printable ASCII (not all spaces), zero
    for the rest, which then never reach the top 50."""
    m = GPT(GPTConfig(sequence_len=sequence_len, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head,
                      n_kv_head=n_kv_head, n_embd=32))
    rng = np.random.default_rng(0)
    for name, p in m.named_parameters():
        if name.startswith("transformer.h."):
            p.data[...] = rng.normal(0, 0.3, p.shape)
    weight = rng.normal(0, 1.0, m.lm_head.weight.shape)
    for token in range(tok.vocab_size):
        text = tok.decode_bytes([token])
        if token in tok.special_tokens.values() or not (text.strip() and all(32 <= b < 127 for b in text)):
            weight[token] = 0.0
    m.lm_head.weight.data[...] = weight
    return m


@pytest.fixture(scope="session")
def chat_model(tok):
    return visible_text_model(tok, CHAT_CONTEXT, n_layer=1, n_head=1, n_kv_head=1)


@pytest.fixture(scope="session")
def serve_model(tok):
    return visible_text_model(tok, SERVE_CONTEXT, n_layer=2, n_head=2, n_kv_head=1)
