"""`nanochat serve`'s API through the official openai client and raw HTTP: answers, streams, every
error in OpenAI's shape, limits, the queue, API keys, faults in one request, disconnects."""
import json
import threading
import time

import httpx
import openai
import pytest
from serve_testing import RunningServer

import nanochat.engine
from nanochat.engine import generate
from nanochat.serve.protocol import Limits, StopScanner, parse_chat, parse_completion

USER = [{"role": "user", "content": "hello there"}]
CONTEXT = 128  # conftest's serve_model


@pytest.fixture(scope="module")
def model(serve_model):
    assert serve_model.config.sequence_len == CONTEXT
    return serve_model


@pytest.fixture(scope="module")
def server(model, tok):
    with RunningServer(model, tok, max_batch=4) as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def post(server, path, body=None, content=None, **kwargs):
    return httpx.post(server.url + path, json=body, content=content, timeout=30, **kwargs)


def sse_events(response):
    """The decoded data of each server-sent event; [DONE] as the string."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# ---- answers ----------------------------------------------------------------------------------


def test_health_and_models(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in models["data"]] == [("tiny", "model", "nanochat")]
    assert isinstance(models["data"][0]["created"], int) and models["data"][0]["max_model_len"] == CONTEXT


def test_chat_through_the_openai_client(client, model, tok):
    reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=0)
    prompt = tok.render_for_completion({"messages": USER})
    expected = tok.decode(list(generate(model, prompt, 8, temperature=0)))
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        len(prompt), 8, len(prompt) + 8)


def test_streamed_chat_equals_the_whole_answer(client):
    whole = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_raw_stream_ends_with_done(server):
    body = dict(messages=USER, max_tokens=4, temperature=0, stream=True)
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])  # usage only when stream_options asks for it


def test_completions_whole_and_streamed(client, model, tok):
    whole = client.completions.create(model="tiny", prompt="The cat", max_tokens=10, temperature=0)
    expected = tok.decode(list(generate(model, tok.encode("The cat", prepend="<|bos|>"), 10, temperature=0)))
    assert whole.object == "text_completion" and whole.choices[0].text == expected
    assert whole.choices[0].finish_reason == "length"
    streamed = list(client.completions.create(model="tiny", prompt="The cat", max_tokens=10, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected


def test_n_choices_are_sampled_with_their_own_seeds(client):
    reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=10, temperature=1.0, seed=7, n=3)
    again = client.chat.completions.create(model="tiny", messages=USER, max_tokens=10, temperature=1.0, seed=7, n=3)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]  # a seed replays
    assert len(set(texts)) > 1


def test_stop_strings_cut_the_text(client):
    free = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0)
    text = free.choices[0].message.content
    stop = text[5:8]
    cut = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0, stop=[stop, "@@@"])
    assert cut.choices[0].message.content == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0, stop=stop,
                                              stream=True)
    chunks = [c for c in streamed if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text[:text.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_system_message_is_folded_into_the_first_user_turn(tok):
    body = {"messages": [{"role": "system", "content": "be brief"}] + USER}
    req = parse_chat(body, tok, CONTEXT, Limits())
    assert req.prompt == tok.render_for_completion({"messages": [{"role": "user", "content": "be brief\n\nhello there"}]})


def test_special_token_text_in_messages_stays_text(tok):
    start, end = tok.encode_special("<|assistant_start|>"), tok.encode_special("<|assistant_end|>")
    text = "<|assistant_start|> hi <|assistant_end|><|bos|>"
    req = parse_chat({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": text},
                                   {"role": "user", "content": "x"}]}, tok, CONTEXT, Limits())
    assert req.prompt.count(start) == 2  # the assistant turn's own marker, and the one that primes the reply
    assert req.prompt.count(end) == 1  # closing the assistant turn, not from the text
    assert req.prompt.count(tok.bos_token_id) == 1
    assert tok.decode(req.prompt).count(text) == 2
    completion = parse_completion({"prompt": text}, tok, CONTEXT, Limits())
    assert completion.prompt.count(tok.bos_token_id) == 1 and start not in completion.prompt


def test_text_streams_in_whole_utf8_characters(server, tok, monkeypatch):
    """A reply whose characters are split across byte tokens arrives as whole characters."""
    text = "é→😀 ok"
    script = [tok._byte_ids[b] for b in text.encode()]  # one token per byte
    monkeypatch.setattr(nanochat.engine.Sequence, "sample", lambda self, logits: script[len(self.tokens)])
    body = dict(messages=USER, max_tokens=len(script), stream=True)
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        pieces = [e["choices"][0]["delta"].get("content") for e in sse_events(r)[:-1] if e["choices"]]
    pieces = [p for p in pieces if p]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert "😀" in pieces  # four tokens, one piece


def test_stop_scanner_holds_back_possible_stop_prefixes():
    scanner = StopScanner(["END", "xyz"])
    assert scanner.push("abcE") == ("abc", False)
    assert scanner.push("N") == ("", False)
    assert scanner.push("D and more") == ("", True)
    scanner = StopScanner(["END"])
    assert scanner.push("aEN") == ("a", False)
    assert scanner.push("d") == ("ENd", False)
    assert scanner.flush() == ""


# ---- errors -----------------------------------------------------------------------------------


def assert_error(response, status, param=None, code=None, contains=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    if contains is not None:
        assert contains in error["message"]


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe", b'{"messages": NaN}'])
def test_malformed_json_is_a_400(server, content):
    assert_error(post(server, "/v1/chat/completions", content=content), 400, code="invalid_json")


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"null"])
def test_a_body_that_is_not_an_object_is_a_400(server, content):
    assert_error(post(server, "/v1/chat/completions", content=content), 400, code="invalid_json")


@pytest.mark.parametrize("field, value, param", [
    ("messages", None, "messages"),
    ("messages", "hi", "messages"),
    ("messages", [], "messages"),
    ("messages", ["hi"], "messages[0]"),
    ("messages", [{"role": "robot", "content": "x"}], "messages[0].role"),
    ("messages", [{"role": "user", "content": 5}], "messages[0].content"),
    ("messages", [{"role": "user"}], "messages[0].content"),
    ("messages", [{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content"),
    ("messages", [{"role": "assistant", "content": "x"}], "messages"),  # roles must start with user
    ("max_tokens", "5", "max_tokens"),
    ("max_tokens", 0, "max_tokens"),
    ("max_tokens", 2.5, "max_tokens"),
    ("max_tokens", True, "max_tokens"),
    ("max_completion_tokens", -3, "max_completion_tokens"),
    ("temperature", "hot", "temperature"),
    ("temperature", -0.5, "temperature"),
    ("temperature", 2.5, "temperature"),
    ("top_p", 0, "top_p"),
    ("top_p", 1.5, "top_p"),
    ("top_k", 0, "top_k"),
    ("top_k", 1.5, "top_k"),
    ("seed", "x", "seed"),
    ("seed", -1, "seed"),
    ("n", 0, "n"),
    ("n", 99, "n"),
    ("stream", "yes", "stream"),
    ("stream_options", [], "stream_options"),
    ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage"),
    ("stop", 5, "stop"),
    ("stop", [""], "stop"),
    ("stop", ["a", "b", "c", "d", "e"], "stop"),
])
def test_wrong_types_and_ranges_are_400s_naming_the_field(server, field, value, param):
    body = {"messages": USER, "max_tokens": 4, field: value}
    response = post(server, "/v1/chat/completions", body)
    assert_error(response, 400, param=param)
    assert param.split("[")[0].split(".")[0] in response.json()["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({"max_tokens": 4}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": "a", "max_tokens": "4"}, "max_tokens"),
    ({"prompt": "a", "temperature": 9}, "temperature"),
])
def test_completions_checks_its_fields(server, body, param):
    assert_error(post(server, "/v1/completions", body), 400, param=param)


def test_limits_on_messages_and_characters(model, tok):
    limits = Limits(max_messages=3, max_message_chars=50, max_total_chars=80, max_body_bytes=2000)
    with RunningServer(model, tok, limits=limits) as s:
        many = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2
        assert_error(post(s, "/v1/chat/completions", {"messages": many}), 400, "messages", "too_many_messages")
        long = [{"role": "user", "content": "x" * 51}]
        assert_error(post(s, "/v1/chat/completions", {"messages": long}), 400, "messages[0].content", "too_long")
        total = [{"role": "user", "content": "x" * 45}, {"role": "assistant", "content": "y"},
                 {"role": "user", "content": "z" * 45}]
        assert_error(post(s, "/v1/chat/completions", {"messages": total}), 400, "messages", "too_long")
        assert_error(post(s, "/v1/completions", {"prompt": "p" * 81}), 400, "prompt", "too_long")
        big = json.dumps({"messages": USER, "pad": "x" * 3000}).encode()
        assert_error(post(s, "/v1/chat/completions", content=big), 413, code="request_too_large")
        # without a Content-Length the body is counted as it arrives
        chunks = iter([big[:1000], big[1000:]])
        assert_error(post(s, "/v1/chat/completions", content=chunks), 413, code="request_too_large")
        assert httpx.get(s.url + "/health").status_code == 200


def test_max_tokens_past_the_context_is_a_400(server, tok):
    prompt_len = len(tok.render_for_completion({"messages": USER}))
    fits = post(server, "/v1/chat/completions", {"messages": USER, "max_tokens": CONTEXT - prompt_len, "temperature": 0})
    assert fits.status_code == 200 and fits.json()["usage"]["completion_tokens"] == CONTEXT - prompt_len
    too_many = post(server, "/v1/chat/completions", {"messages": USER, "max_tokens": CONTEXT - prompt_len + 1})
    assert_error(too_many, 400, "max_tokens", "context_length_exceeded")
    huge = [{"role": "user", "content": "word " * 200}]
    assert_error(post(server, "/v1/chat/completions", {"messages": huge}), 400, "messages", "context_length_exceeded")
    assert_error(post(server, "/v1/completions", {"prompt": "word " * 200}), 400, "prompt", "context_length_exceeded")


def test_unknown_routes_and_methods(server):
    assert_error(httpx.get(server.url + "/v1/nothing"), 404, code="not_found", contains="/v1/nothing")
    assert_error(post(server, "/v1/embeddings", {"input": "x"}), 404, code="not_found")
    assert_error(httpx.get(server.url + "/v1/chat/completions"), 405)


def test_openai_client_errors_surface_as_its_exception_types(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=USER, temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("tiny")  # GET /v1/models/tiny is not served


def test_api_key_is_required_when_set(model, tok):
    with RunningServer(model, tok, api_key="s3cret") as s:
        body = {"messages": USER, "max_tokens": 2}
        assert_error(post(s, "/v1/chat/completions", body), 401, code="invalid_api_key")
        assert_error(post(s, "/v1/chat/completions", body, headers={"Authorization": "Bearer nope"}), 401)
        assert_error(post(s, "/v1/chat/completions", body, headers={"Authorization": "s3cret"}), 401)
        assert_error(httpx.get(s.url + "/v1/models"), 401)
        assert post(s, "/v1/chat/completions", body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(s.url + "/health").status_code == 200  # health and the page stay open
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.models.list().data[0].id == "tiny"


# ---- concurrency, faults, disconnects ---------------------------------------------------------


@pytest.fixture
def slow_sampling(monkeypatch):
    """Each sampled token takes ~20 ms, or waits for `gate` when it is cleared; gate.calls counts them."""
    gate = threading.Event()
    gate.set()
    original = nanochat.engine.Sequence.sample

    gate.calls = [0]

    def slow(self, logits):
        gate.calls[0] += 1
        gate.wait(10)
        time.sleep(0.02)
        return original(self, logits)
    monkeypatch.setattr(nanochat.engine.Sequence, "sample", slow)
    return gate


def test_a_full_queue_answers_429(model, tok, slow_sampling):
    slow_sampling.clear()  # the first request holds its row until the gate opens
    with RunningServer(model, tok, max_batch=1, max_queue=1) as s:
        body = {"messages": USER, "max_tokens": 3}
        results = []
        threads = [threading.Thread(target=lambda: results.append(post(s, "/v1/chat/completions", body)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while s.server.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        full = post(s, "/v1/chat/completions", body)
        assert_error(full, 429, code="queue_full")
        assert full.headers["retry-after"] == "1"
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
                model="tiny", messages=USER, max_tokens=3)
        slow_sampling.set()
        for t in threads:
            t.join(20)
        assert [r.status_code for r in results] == [200, 200]
        assert post(s, "/v1/chat/completions", body).status_code == 200  # room again


def test_health_answers_while_the_model_works(server, slow_sampling):
    body = {"messages": USER, "max_tokens": 100, "temperature": 0}
    worker = threading.Thread(target=lambda: post(server, "/v1/chat/completions", body))
    worker.start()
    engine, deadline = server.server.worker.engine, time.monotonic() + 10
    while not engine.rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.rows  # generating now, for ~2 s more
    started = time.monotonic()
    assert httpx.get(server.url + "/health", timeout=5).json() == {"status": "ok"}
    assert time.monotonic() - started < 0.5
    assert engine.rows  # the answer came while the model was still at work
    worker.join(30)


def test_a_closed_connection_stops_its_generation(server, slow_sampling):
    engine = server.server.worker.engine
    body = {"messages": USER, "max_tokens": 100, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        for line in lines:
            if '"content": "' in line and '"role"' not in line:
                break  # the first text arrived: hang up
    sampled_at_hang_up = slow_sampling.calls[0]
    deadline = time.monotonic() + 10
    while (engine.rows or server.server.in_flight) and time.monotonic() < deadline:
        time.sleep(0.02)  # the handler counts its request out just after the engine drops the row
    assert not engine.rows
    assert server.server.in_flight == 0
    # left within a few steps, far from the 100 tokens it would have run to (slack for a loaded machine)
    assert slow_sampling.calls[0] - sampled_at_hang_up < 25


def test_a_client_that_hangs_up_on_a_whole_answer_stops_its_generation(server, slow_sampling):
    engine = server.server.worker.engine
    with pytest.raises(httpx.ReadTimeout):
        post_body = {"messages": USER, "max_tokens": 110}
        httpx.post(server.url + "/v1/chat/completions", json=post_body, timeout=httpx.Timeout(30, read=0.5))
    deadline = time.monotonic() + 1.5
    while (engine.rows or engine.waiting) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.rows and not engine.waiting
    assert server.server.in_flight == 0
    sampled = slow_sampling.calls[0]
    time.sleep(0.3)
    assert slow_sampling.calls[0] == sampled < 100  # cut short (110 tokens take > 2.2 s), and nothing since


def test_an_exception_in_one_generation_ends_only_that_request(server, tok, monkeypatch):
    marker = tok.encode("boom")
    original = nanochat.engine.Sequence.sample

    def faulty(self, logits):
        if self.prompt[-len(marker) - 2:-2] == marker and len(self.tokens) == 3:
            raise RuntimeError("injected fault")
        time.sleep(0.01)  # keep the streams overlapping
        return original(self, logits)
    monkeypatch.setattr(nanochat.engine.Sequence, "sample", faulty)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=30)
    results = {}

    def chat(name, text, stream):
        messages = [{"role": "user", "content": text}]
        try:
            if stream:
                chunks = client.chat.completions.create(model="tiny", messages=messages, max_tokens=15, temperature=0,
                                                        stream=True)
                results[name] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                results[name] = client.chat.completions.create(model="tiny", messages=messages, max_tokens=15,
                                                               temperature=0).choices[0].message.content
        except openai.APIError as e:
            results[name] = e

    jobs = [("bad_stream", "boom", True), ("bad_whole", "boom", False), ("good1", "hello there", True),
            ("good2", "hi", False)]
    threads = [threading.Thread(target=chat, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(results["bad_stream"], openai.APIError) and "injected fault" in str(results["bad_stream"])
    assert isinstance(results["bad_whole"], openai.InternalServerError)
    assert "injected fault" in str(results["bad_whole"])
    monkeypatch.setattr(nanochat.engine.Sequence, "sample", original)
    for name, text in (("good1", "hello there"), ("good2", "hi")):
        alone = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}],
                                               max_tokens=15, temperature=0)
        assert results[name] == alone.choices[0].message.content
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_stopped_worker_turns_new_sequences_away(model):
    from nanochat.engine import BatchedEngine, Sequence
    from nanochat.serve.worker import GenerationWorker

    worker = GenerationWorker(BatchedEngine(model))
    worker.start()
    worker.stop()
    assert not worker.thread.is_alive()
    events = []
    seq = Sequence([1, 2], 3, temperature=0)
    worker.submit(seq, events.append)
    assert [(e.seq, e.finish) for e in events] == [(seq, "cancelled")]
