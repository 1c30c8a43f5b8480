"""A bounded load test on loopback: 16 concurrent streaming clients x 3 requests each; every request
completes, no stream carries another's tokens, and greedy results equal the one-at-a-time ones."""
import json
import threading
import time

import httpx
import pytest
from serve_testing import RunningServer

CLIENTS, REQUESTS_EACH, MAX_TOKENS = 16, 3, 24


@pytest.fixture(scope="module")
def running(tok, serve_model):
    with RunningServer(serve_model, tok, max_batch=16, max_queue=64) as s:
        yield s


def question(client, k):
    return [{"role": "user", "content": f"client {client} asks question {k}: " + "why " * (client % 5)}]


def stream_chat(url, messages):
    """(text, finish_reason, chunk ids) of one streamed greedy chat."""
    body = {"messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    text, finish, ids = "", None, set()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            ids.add(chunk["id"])
            choice = chunk["choices"][0]
            text += choice["delta"].get("content") or ""
            finish = choice["finish_reason"] or finish
    return text, finish, ids


def test_16_concurrent_streaming_clients(running):
    sequential = {(c, k): stream_chat(running.url, question(c, k))[0]
                  for c in range(CLIENTS) for k in range(REQUESTS_EACH)}
    results, errors = {}, []
    peak = [0]

    def client(c):
        try:
            for k in range(REQUESTS_EACH):
                results[c, k] = stream_chat(running.url, question(c, k))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(CLIENTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    engine = running.server.worker.engine
    while any(t.is_alive() for t in threads) and time.monotonic() - started < 120:
        peak[0] = max(peak[0], len(engine.rows))
        time.sleep(0.005)
    assert not any(t.is_alive() for t in threads), "the load test ran past its 120 s bound"
    assert not errors, errors
    assert len(results) == CLIENTS * REQUESTS_EACH
    for key, (text, finish, ids) in results.items():
        assert text == sequential[key], key  # not lost, not mixed with another stream's tokens
        assert finish == "length" and len(ids) == 1
    assert len({ids.pop() for _, _, ids in results.values()}) == CLIENTS * REQUESTS_EACH
    assert peak[0] > 1  # the requests really were decoded together
    assert running.server.in_flight == 0 and not engine.rows
