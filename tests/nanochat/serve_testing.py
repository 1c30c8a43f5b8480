"""Shared by the serve tests: a tiny model whose greedy replies are visible text, and a server
running on a free loopback port in a thread."""
import socket
import threading
import time

import numpy as np
import uvicorn

from nanochat.dataloader import load_text
from nanochat.gpt import GPT, GPTConfig
from nanochat.serve.app import Server, create_app
from nanochat.tokenizer import Tokenizer

CONTEXT = 128


def tiny_tokenizer():
    return Tokenizer.train([load_text()[:50_000]], 300)


def tiny_model(tok):
    """Random blocks; lm_head rows only for printable ASCII tokens, so replies are one line of text."""
    m = GPT(GPTConfig(sequence_len=CONTEXT, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_kv_head=1, n_embd=32))
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


class RunningServer:
    """A Server's app on uvicorn in a thread, at self.url; use as a context manager."""

    def __init__(self, model, tok, **kwargs):
        self.server = Server(model, tok, "tiny", **kwargs)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(self.server), log_level="warning", timeout_graceful_shutdown=1)
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs=dict(sockets=[self.sock]), daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.uvicorn.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.uvicorn.should_exit = True
        self.thread.join(20)
        self.sock.close()
        assert not self.thread.is_alive(), "the test server did not stop"
