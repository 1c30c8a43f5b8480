"""nanochat/engine.py: KVCache (incremental decoding equals the full forward: GQA, MQA, batch > 1,
any chunking; growth, limits), sampling and generation (determinism, greedy = argmax of the full
forward, top-k/top-p support, stop tokens, several samples, argument validation, no graph recorded),
Engine (stops at <|assistant_end|> and the context limit, trims old turns) and continuous batching
(BatchKVCache keeps every row at its own length; BatchedEngine gives each request the same tokens
whether it runs alone or beside others, whenever it joins or others leave)."""
import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad
import nanochat
import nanochat.engine
from minigrad import Tensor
from nanochat.engine import BatchedEngine, BatchKVCache, Engine, KVCache, Sequence, generate, sample_next_token
from nanochat.gpt import GPT, GPTConfig

CHAT_CONTEXT = 48  # conftest's chat_model
V_SAMPLING = 41
V_BATCH = 300
ATOL = 1e-5


# ---- KVCache --------------------------------------------------------------------------------------

T_SEQ = 13  # longer than sequence_len: decoding past the training length uses the 10x rotary table


@pytest.fixture
def inference_mode():
    """The cache is for inference: every forward here runs as generate runs it, under no_grad."""
    with minigrad.no_grad():
        yield


@pytest.mark.usefixtures("inference_mode")
def test_cache_refuses_to_record_a_graph():
    model = model_with(2)
    with minigrad.enable_grad():
        with pytest.raises(RuntimeError, match="no_grad"):
            model(batch()[:, :4], kv_cache=new_cache(model, 2))


@functools.lru_cache(maxsize=None)
def model_with(n_kv_head):
    cfg = GPTConfig(sequence_len=8, vocab_size=41, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=32)
    model = GPT(cfg, seed=0)
    rng = np.random.default_rng(n_kv_head)
    for _, p in model.named_parameters():  # non-zero everywhere (init zeroes lm_head and c_proj)
        p.data[...] = rng.normal(0.0, 0.3, p.shape)
    return model


def batch(B=2, T=T_SEQ, seed=0):
    return np.random.default_rng(seed).integers(0, 41, (B, T))


def new_cache(model, B):
    cfg = model.config
    return KVCache(B, cfg.n_kv_head, cfg.head_dim, cfg.n_layer)


def run_chunks(model, idx, cuts):
    """Feed idx through a KV cache in chunks split at cuts; return the concatenated logits."""
    cache = new_cache(model, idx.shape[0])
    bounds = [0, *cuts, idx.shape[1]]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out.append(model(idx[:, a:b], kv_cache=cache).data)
        assert cache.pos == b
    return np.concatenate(out, axis=1)


@pytest.mark.usefixtures("inference_mode")
@pytest.mark.parametrize("n_kv_head", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("prefill", [1, 5])
def test_prefill_then_decode_equals_full_forward(n_kv_head, prefill):
    model = model_with(n_kv_head)
    idx = batch()
    full = model(idx).data
    assert full.std() > 1.0
    cache = new_cache(model, 2)
    np.testing.assert_allclose(model(idx[:, :prefill], kv_cache=cache).data, full[:, :prefill], atol=ATOL, rtol=0)
    for t in range(prefill, T_SEQ):
        step = model(idx[:, t:t + 1], kv_cache=cache).data
        assert step.shape == (2, 1, 41)
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=ATOL, rtol=0, err_msg=f"position {t}")


@pytest.mark.usefixtures("inference_mode")
@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_chunks_on_top_of_a_non_empty_cache(n_kv_head):
    model = model_with(n_kv_head)
    idx = batch(B=3, seed=1)
    full = model(idx).data
    np.testing.assert_allclose(run_chunks(model, idx, [4, 8, 9]), full, atol=ATOL, rtol=0)


@pytest.mark.usefixtures("inference_mode")
@settings(max_examples=25, deadline=None)
@given(cuts=st.sets(st.integers(1, T_SEQ - 1)), n_kv_head=st.sampled_from([4, 2, 1]))
def test_any_chunking_equals_full_forward(cuts, n_kv_head):
    model = model_with(n_kv_head)
    idx = batch(seed=2)
    np.testing.assert_allclose(run_chunks(model, idx, sorted(cuts)), model(idx).data, atol=ATOL, rtol=0)


@pytest.mark.usefixtures("inference_mode")
def test_batch_rows_are_independent():
    model = model_with(2)
    idx = batch(B=3, seed=3)
    cache = new_cache(model, 3)
    model(idx[:, :6], kv_cache=cache)
    step = model(idx[:, 6:7], kv_cache=cache).data
    for b in range(3):
        alone = model(idx[b:b + 1, :7]).data[0, -1]
        np.testing.assert_allclose(step[b, 0], alone, atol=ATOL, rtol=0)


@pytest.mark.usefixtures("inference_mode")
def test_pos_advances_once_per_forward_and_reset():
    model = model_with(2)
    idx = batch()
    cache = new_cache(model, 2)
    assert cache.pos == 0
    model(idx[:, :5], kv_cache=cache)
    assert cache.pos == 5  # not 5 per layer
    model(idx[:, 5:6], kv_cache=cache)
    assert cache.pos == 6
    cache.reset()
    assert cache.pos == 0
    other = batch(seed=9)
    np.testing.assert_allclose(model(other[:, :7], kv_cache=cache).data, model(other[:, :7]).data, atol=ATOL, rtol=0)
    np.testing.assert_allclose(model(other[:, 7:8], kv_cache=cache).data[:, 0], model(other[:, :8]).data[:, -1],
                               atol=ATOL, rtol=0)


@pytest.mark.usefixtures("inference_mode")
def test_growth_beyond_capacity_equals_concatenation():
    rng = np.random.default_rng(0)
    B, H, D, L = 2, 3, 4, 2
    cache = KVCache(B, H, D, L)
    inserted = {layer: ([], []) for layer in range(L)}
    sizes = list(rng.integers(1, 40, 20)) + [1] * 10 + [130]
    for n in sizes:
        for layer in range(L):
            k = rng.standard_normal((B, H, n, D)).astype(np.float32)
            v = rng.standard_normal((B, H, n, D)).astype(np.float32)
            inserted[layer][0].append(k)
            inserted[layer][1].append(v)
            ks, vs = cache.insert_kv(layer, Tensor(k), v)  # Tensors and arrays both accepted
            np.testing.assert_array_equal(ks.data, np.concatenate(inserted[layer][0], axis=2))
            np.testing.assert_array_equal(vs.data, np.concatenate(inserted[layer][1], axis=2))
        cache.advance(n)
    assert cache.pos == sum(sizes) > 64  # far beyond the initial allocation


@pytest.mark.usefixtures("inference_mode")
def test_max_len_exceeded_raises():
    cache = KVCache(1, 2, 4, 1, max_len=10)
    k = np.zeros((1, 2, 8, 4), np.float32)
    cache.insert_kv(0, k, k)
    cache.advance(8)
    with pytest.raises(ValueError, match="max_len"):
        cache.insert_kv(0, k[:, :, :3], k[:, :, :3])
    ks, _ = cache.insert_kv(0, k[:, :, :2], k[:, :, :2])
    assert ks.shape == (1, 2, 10, 4)

    model = model_with(2)
    cfg = model.config
    cache = KVCache(2, cfg.n_kv_head, cfg.head_dim, cfg.n_layer, max_len=6)
    model(batch()[:, :6], kv_cache=cache)
    with pytest.raises(ValueError, match="max_len"):
        model(batch()[:, 6:7], kv_cache=cache)


@pytest.mark.usefixtures("inference_mode")
def test_wrong_shapes_raise():
    cache = KVCache(2, 3, 4, 2)
    good = np.zeros((2, 3, 5, 4), np.float32)
    for bad in [np.zeros((1, 3, 5, 4)), np.zeros((2, 2, 5, 4)), np.zeros((2, 3, 5, 6)), np.zeros((2, 3, 5)),
                np.zeros((2, 3, 5, 4, 1))]:
        with pytest.raises(ValueError):
            cache.insert_kv(0, bad, bad)
    with pytest.raises(ValueError):
        cache.insert_kv(0, good, good[:, :, :4])
    with pytest.raises(IndexError):
        cache.insert_kv(2, good, good)
    with pytest.raises(IndexError):
        cache.insert_kv(-1, good, good)
    # a model whose cache was built for another batch size
    model = model_with(2)
    with pytest.raises(ValueError):
        model(batch(B=3), kv_cache=new_cache(model, 2))


@pytest.mark.usefixtures("inference_mode")
@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(n_kv_head=-1), dict(head_dim=2.0), dict(n_layer=0),
                                    dict(max_len=0)])
def test_constructor_validates(kwargs):
    args = dict(batch_size=1, n_kv_head=2, head_dim=4, n_layer=1) | kwargs
    with pytest.raises(ValueError):
        KVCache(**args)


@pytest.mark.usefixtures("inference_mode")
def test_expand_batch():
    model = model_with(2)
    prompt = batch(B=1, T=6, seed=4)
    cache = new_cache(model, 1)
    model(prompt, kv_cache=cache)
    cache.expand_batch(3)
    assert cache.batch_size == 3 and cache.pos == 6
    nxt = np.array([[1], [17], [40]])
    step = model(nxt, kv_cache=cache).data
    for b in range(3):
        full = model(np.concatenate([prompt, nxt[b:b + 1]], axis=1)).data[0, -1]
        np.testing.assert_allclose(step[b, 0], full, atol=ATOL, rtol=0)
    # rows diverge after expansion without touching each other
    nxt2 = np.array([[3], [3], [3]])
    step2 = model(nxt2, kv_cache=cache).data
    for b in range(3):
        full = model(np.concatenate([prompt, nxt[b:b + 1], nxt2[b:b + 1]], axis=1)).data[0, -1]
        np.testing.assert_allclose(step2[b, 0], full, atol=ATOL, rtol=0)
    with pytest.raises(ValueError):
        cache.expand_batch(2)  # only a batch-1 cache expands


@pytest.mark.usefixtures("inference_mode")
def test_expand_batch_of_an_empty_cache():
    model = model_with(1)
    cache = new_cache(model, 1)
    cache.expand_batch(2)
    idx = batch(B=2, T=4)
    np.testing.assert_allclose(model(idx, kv_cache=cache).data, model(idx).data, atol=ATOL, rtol=0)


# ---- sampling and generation ----------------------------------------------------------------

PROMPT = [3, 17, 5, 29]


@pytest.fixture(scope="module")
def sampling_model():
    cfg = GPTConfig(sequence_len=4, vocab_size=V_SAMPLING, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)  # rotary: 40
    m = GPT(cfg, seed=0)
    rng = np.random.default_rng(7)
    for _, p in m.named_parameters():  # non-zero everywhere (init zeroes lm_head and c_proj)
        p.data[...] = rng.normal(0.0, 0.3, p.shape)
    return m


def greedy_by_full_forward(model, prompt, n):
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(np.argmax(model(np.array([tokens])).data[0, -1])))
    return tokens[len(prompt):]


def test_same_seed_same_tokens_different_seed_different(sampling_model):
    a = list(generate(sampling_model, PROMPT, 25, temperature=1.0, seed=123))
    b = list(generate(sampling_model, PROMPT, 25, temperature=1.0, seed=123))
    c = list(generate(sampling_model, PROMPT, 25, temperature=1.0, seed=124))
    assert len(a) == 25 and all(isinstance(t, int) and 0 <= t < V_SAMPLING for t in a)
    assert a == b
    assert a != c


def test_greedy_equals_argmax_of_full_forward(sampling_model):
    out = list(generate(sampling_model, PROMPT, 20, temperature=0.0))
    assert out == greedy_by_full_forward(sampling_model, PROMPT, 20)
    assert len(set(out)) > 2  # the check is not trivially satisfied by a constant sequence


def test_top_k_1_equals_greedy(sampling_model):
    greedy = list(generate(sampling_model, PROMPT, 15, temperature=0.0))
    assert list(generate(sampling_model, PROMPT, 15, temperature=1.5, top_k=1, seed=5)) == greedy


def test_generation_up_to_the_end_of_the_rotary_table(sampling_model):
    prompt = [1, 2, 3]
    out = list(generate(sampling_model, prompt, 37, temperature=0.0))  # 3 + 37 = 40 positions
    assert out == greedy_by_full_forward(sampling_model, prompt, 37)


def test_stop_token_ends_generation_without_being_yielded(sampling_model):
    greedy = list(generate(sampling_model, PROMPT, 15, temperature=0.0))
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    stop = greedy[k]
    assert list(generate(sampling_model, PROMPT, 15, temperature=0.0, stop_tokens=[stop])) == greedy[:k]
    assert list(generate(sampling_model, PROMPT, 15, temperature=0.0, stop_tokens={stop, V_SAMPLING + 100})) == greedy[:k]
    assert list(generate(sampling_model, PROMPT, 15, temperature=0.0, stop_tokens=[greedy[0]])) == []
    sampled = list(generate(sampling_model, PROMPT, 30, temperature=1.0, seed=3, stop_tokens=[stop]))
    assert stop not in sampled


def test_num_samples_greedy_rows_equal_single_greedy(sampling_model):
    greedy = list(generate(sampling_model, PROMPT, 12, temperature=0.0))
    out = list(generate(sampling_model, PROMPT, 12, temperature=0.0, num_samples=3))
    assert len(out) == 12
    for step, row in zip(greedy, out):
        assert isinstance(row, list) and row == [step] * 3


def test_num_samples_rows_sample_independently(sampling_model):
    out = list(generate(sampling_model, PROMPT, 20, temperature=1.0, seed=11, num_samples=4))
    assert all(len(row) == 4 and all(isinstance(t, int) and 0 <= t < V_SAMPLING for t in row) for row in out)
    columns = [tuple(row[i] for row in out) for i in range(4)]
    assert len(set(columns)) == 4
    # the same seed gives the same rows
    assert list(generate(sampling_model, PROMPT, 20, temperature=1.0, seed=11, num_samples=4)) == out


def test_num_samples_with_stop_tokens(sampling_model):
    greedy = list(generate(sampling_model, PROMPT, 15, temperature=0.0))
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    out = list(generate(sampling_model, PROMPT, 15, temperature=0.0, stop_tokens=[greedy[k]], num_samples=2))
    assert [row for row in out[:k]] == [[t, t] for t in greedy[:k]]
    assert all(greedy[k] not in row for row in out)
    assert out[k:] == [[None, None]]  # the step every row stopped at ends generation

    # a row that has stopped stays None while the others go on
    sampled = list(generate(sampling_model, PROMPT, 30, temperature=1.0, seed=2, stop_tokens=[greedy[0]], num_samples=5))
    for i in range(5):
        col = [row[i] for row in sampled]
        if None in col:
            first = col.index(None)
            assert all(t is None for t in col[first:])
        assert greedy[0] not in col


def test_max_tokens_zero_yields_nothing(sampling_model):
    assert list(generate(sampling_model, PROMPT, 0)) == []
    assert list(generate(sampling_model, PROMPT, 0, num_samples=3)) == []


@pytest.mark.parametrize("kwargs", [
    dict(tokens=[]),
    dict(tokens=[1, V_SAMPLING]),
    dict(tokens=[-1, 2]),
    dict(tokens=[1.0, 2]),
    dict(max_tokens=-1),
    dict(max_tokens=2.0),
    dict(temperature=-0.5),
    dict(temperature=float("nan")),
    dict(top_k=0),
    dict(top_k=-3),
    dict(top_p=0.0),
    dict(top_p=1.5),
    dict(top_p=float("nan")),
    dict(num_samples=0),
    dict(tokens=[1, 2, 3], max_tokens=38),  # 41 positions past the 40 of the rotary table
])
def test_bad_arguments_raise_before_anything_is_yielded(sampling_model, kwargs):
    args = dict(tokens=PROMPT, max_tokens=5) | kwargs
    gen = generate(sampling_model, args.pop("tokens"), args.pop("max_tokens"), **args)
    with pytest.raises(ValueError):
        next(gen)


def test_generation_records_no_graph(sampling_model, monkeypatch):
    seen = []
    forward = sampling_model.forward

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.append((minigrad.is_grad_enabled(), out.requires_grad, out._ctx is None))
        return out

    monkeypatch.setattr(sampling_model, "forward", spy)
    assert minigrad.is_grad_enabled()
    for _ in generate(sampling_model, PROMPT, 5, temperature=1.0, seed=0, num_samples=2):
        assert minigrad.is_grad_enabled()  # generating does not switch gradients off for the caller
    assert len(seen) == 5  # one prefill, then one decode per token but the last
    assert all(s == (False, False, True) for s in seen), seen
    assert all(p.grad is None for p in sampling_model.parameters())


# ---- sample_next_token -----------------------------------------------------------------------------

LOGITS = np.array([0.0, 3.0, 1.0, 2.5, -1.0, 0.5])


def draws(logits, n=4000, seed=0, **kwargs):
    out = sample_next_token(np.tile(logits, (n, 1)), np.random.default_rng(seed), **kwargs)
    assert out.shape == (n,)
    return out


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_temperature_zero_is_argmax():
    logits = np.random.default_rng(0).standard_normal((7, 30))
    np.testing.assert_array_equal(sample_next_token(logits, np.random.default_rng(0), temperature=0), logits.argmax(-1))


def test_plain_sampling_follows_the_softmax():
    counts = np.bincount(draws(LOGITS, n=20000), minlength=len(LOGITS)) / 20000
    np.testing.assert_allclose(counts, softmax(LOGITS), atol=0.015)
    hot = np.bincount(draws(LOGITS, n=20000, temperature=2.0), minlength=len(LOGITS)) / 20000
    np.testing.assert_allclose(hot, softmax(LOGITS / 2.0), atol=0.015)


def test_top_k_restricts_the_support():
    out = draws(LOGITS, top_k=2)
    assert set(out.tolist()) == {1, 3}
    np.testing.assert_allclose(np.mean(out == 1), softmax(np.array([3.0, 2.5]))[0], atol=0.03)
    assert set(draws(LOGITS, top_k=3).tolist()) == {1, 2, 3}
    assert set(draws(LOGITS, top_k=100).tolist()) == set(range(6))


def test_top_p_keeps_the_nucleus():
    probs = np.array([0.06, 0.5, 0.1, 0.3, 0.04])
    logits = np.log(probs)
    assert set(draws(logits, top_p=0.75).tolist()) == {1, 3}  # 0.5 < 0.75 <= 0.5 + 0.3
    assert set(draws(logits, top_p=0.4).tolist()) == {1}  # the top token alone already covers it
    nucleus = draws(logits, top_p=0.85)
    assert set(nucleus.tolist()) == {1, 2, 3}
    np.testing.assert_allclose(np.bincount(nucleus, minlength=5)[[1, 3, 2]] / len(nucleus),
                               np.array([0.5, 0.3, 0.1]) / 0.9, atol=0.03)
    assert set(draws(logits, top_p=1.0).tolist()) == set(range(5))


def test_top_k_then_top_p():
    probs = np.array([0.06, 0.5, 0.1, 0.3, 0.04])
    # top_k=3 leaves {0.5, 0.3, 0.1} -> renormalized 0.556, 0.333, 0.111; top_p=0.8 keeps the first two
    assert set(draws(np.log(probs), top_k=3, top_p=0.8).tolist()) == {1, 3}


def test_rows_are_sampled_independently():
    logits = np.array([[10.0, 0.0, 0.0], [0.0, 0.0, 10.0]])
    out = sample_next_token(np.repeat(logits, 500, axis=0), np.random.default_rng(0), top_k=1)
    np.testing.assert_array_equal(out, np.repeat([0, 2], 500))


# ---- Engine ---------------------------------------------------------------------------------------

def _script(monkeypatch, tokens):
    """Make generation emit `tokens` in order (then token 65, forever), whatever the logits."""
    queue = list(tokens)
    monkeypatch.setattr(nanochat.engine, "sample_next_token",
                        lambda logits, rng, *a, **k: np.array([queue.pop(0) if queue else 65]))


def _user(text):
    return {"role": "user", "content": text}


def test_engine_is_exported_and_stops_before_assistant_end(tok, chat_model, monkeypatch):
    assert nanochat.Engine is Engine
    end = tok.encode_special("<|assistant_end|>")
    _script(monkeypatch, [72, 105, end, 66])
    engine = Engine(chat_model, tok)
    assert list(engine.chat([_user("hello")])) == [72, 105]
    _script(monkeypatch, [72, 105, end])
    assert engine.reply([_user("hello")]) == "Hi"


def test_engine_stops_at_the_context_limit(tok, chat_model, monkeypatch):
    _script(monkeypatch, [])
    engine = Engine(chat_model, tok)
    messages = [_user("hello")]
    prompt = tok.render_for_completion({"messages": messages})
    assert len(list(engine.chat(messages, max_tokens=1000))) == CHAT_CONTEXT - len(prompt)
    assert len(list(engine.chat(messages, max_tokens=3))) == 3


def test_engine_drops_the_oldest_exchanges_when_the_context_is_full(tok, chat_model):
    engine = Engine(chat_model, tok)
    turns = []
    for i in range(6):
        turns += [_user(f"question {i}"), {"role": "assistant", "content": f"answer {i}"}]
    messages = [{"role": "system", "content": "Be kind."}] + turns + [_user("last one")]
    ids, kept = engine.fit_context(messages)
    assert len(ids) < CHAT_CONTEXT and len(kept) < len(messages)
    assert kept[0]["role"] == "system" and kept[-1] == _user("last one")
    assert kept[1:] == messages[len(messages) - len(kept) + 1:]  # a suffix: the newest exchanges stay
    with pytest.raises(ValueError, match="message is too long"):
        engine.fit_context([_user("word " * 60)])


def test_engine_greedy_reply_equals_uncached_argmax(tok, chat_model):
    """Chat decodes through the KV cache; re-running the whole sequence without one must agree."""
    engine = Engine(chat_model, tok)
    messages = [_user("What is 2 + 2?")]
    reply = list(engine.chat(messages, max_tokens=8, temperature=0))
    ids = tok.render_for_completion({"messages": messages})
    expected = []
    for _ in range(8):
        token = int(np.argmax(chat_model(np.array([ids + expected])).data[0, -1]))
        if token in engine.stop_tokens:
            break
        expected.append(token)
    assert reply == expected and len(reply) > 1


# ---- BatchedEngine --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_model():
    m = GPT(GPTConfig(sequence_len=64, vocab_size=V_BATCH, n_layer=2, n_head=4, n_kv_head=2, n_embd=32))
    rng = np.random.default_rng(0)
    for _, p in m.named_parameters():  # non-zero everywhere (init zeroes lm_head and c_proj)
        p.data[...] = rng.normal(0, 0.3, p.shape)
    return m


def run_until_idle(engine, seqs, join_after=()):
    """Step the engine until idle; seqs[i] is submitted before step join_after[i] (default 0)."""
    join_after = list(join_after) + [0] * (len(seqs) - len(join_after))
    events, step = [], 0
    while step <= max(join_after, default=0) or engine.has_work():
        for seq, at in zip(seqs, join_after):
            if at == step:
                engine.submit(seq)
        events += engine.step()
        step += 1
    return events


def greedy(prompt, n=12):
    return Sequence(prompt, n, temperature=0)


prompts_st = st.lists(st.lists(st.integers(0, V_BATCH - 1), min_size=1, max_size=20), min_size=16, max_size=16)


@settings(max_examples=5, deadline=None)
@given(prompts=prompts_st, join_after=st.lists(st.integers(0, 6), min_size=16, max_size=16))
def test_greedy_tokens_are_the_same_alone_or_beside_15_others(batch_model, prompts, join_after):
    alone = []
    for p in prompts:
        seq = greedy(p)
        run_until_idle(BatchedEngine(batch_model, max_batch=16), [seq])
        alone.append(seq.tokens)
    together = [greedy(p) for p in prompts]
    run_until_idle(BatchedEngine(batch_model, max_batch=16), together, join_after)
    assert [s.tokens for s in together] == alone
    # and the batched path agrees with the single-sequence generator
    assert alone[0] == list(generate(batch_model, prompts[0], 12, temperature=0))


def test_more_requests_than_rows_wait_for_a_free_row(batch_model):
    prompts = [[i + 1, i + 2, i + 3] for i in range(7)]
    seqs = [greedy(p, 5 + i) for i, p in enumerate(prompts)]
    engine = BatchedEngine(batch_model, max_batch=3)
    events = run_until_idle(engine, seqs)
    assert [s.tokens for s in seqs] == [list(generate(batch_model, p, 5 + i, temperature=0)) for i, p in enumerate(prompts)]
    assert sorted(e.finish for e in events if e.finish) == ["length"] * 7
    assert engine.cache.batch_size == 0


def test_seeded_sampling_does_not_depend_on_the_neighbours(batch_model):
    def sampled(seed):
        return Sequence([5, 6, 7], 15, temperature=1.0, top_k=50, seed=seed)
    alone = sampled(3)
    run_until_idle(BatchedEngine(batch_model), [alone])
    crowd = [sampled(3)] + [sampled(s) for s in range(4, 10)]
    run_until_idle(BatchedEngine(batch_model), crowd)
    assert crowd[0].tokens == alone.tokens
    assert any(s.tokens != alone.tokens for s in crowd[1:])


def test_stop_token_ends_a_sequence_without_being_reported(batch_model):
    free = greedy([1, 2, 3], 10)
    run_until_idle(BatchedEngine(batch_model), [free])
    stop = free.tokens[3]
    seq = Sequence([1, 2, 3], 10, temperature=0, stop_tokens=[stop])
    events = run_until_idle(BatchedEngine(batch_model), [seq])
    assert seq.tokens == free.tokens[:free.tokens.index(stop)]
    assert [e.finish for e in events if e.finish] == ["stop"]
    assert [e.token for e in events if e.token is not None] == seq.tokens


def test_a_cancelled_sequence_leaves_within_one_step(batch_model):
    seqs = [greedy([1, 2], 30), greedy([3, 4], 30), greedy([5, 6], 30)]
    engine = BatchedEngine(batch_model)
    for s in seqs:
        engine.submit(s)
    engine.step()
    engine.step()
    seqs[1].cancelled = True
    so_far = len(seqs[1].tokens)
    events = engine.step()
    assert [e.finish for e in events if e.seq is seqs[1]] == ["cancelled"]
    assert engine.rows == [seqs[0], seqs[2]] or engine.rows == [seqs[2], seqs[0]]
    assert len(seqs[1].tokens) == so_far
    while engine.has_work():
        engine.step()
    assert seqs[0].tokens == list(generate(batch_model, [1, 2], 30, temperature=0))
    assert seqs[2].tokens == list(generate(batch_model, [5, 6], 30, temperature=0))


def test_an_exception_in_one_sequence_ends_only_that_one(batch_model):
    class Faulty(Sequence):
        def sample(self, logits):
            if len(self.tokens) == 4:
                raise RuntimeError("injected fault")
            return super().sample(logits)

    bad = Faulty([9, 9], 20, temperature=0)
    good = [greedy([1, 2], 20), greedy([7], 20)]
    events = run_until_idle(BatchedEngine(batch_model), [good[0], bad, good[1]])
    errors = [e for e in events if e.finish == "error"]
    assert len(errors) == 1 and errors[0].seq is bad and "injected" in str(errors[0].error)
    assert len(bad.tokens) == 4
    assert good[0].tokens == list(generate(batch_model, [1, 2], 20, temperature=0))
    assert good[1].tokens == list(generate(batch_model, [7], 20, temperature=0))


def test_a_failing_prefill_ends_only_that_sequence(batch_model):
    bad = Sequence([1, 2], 5, temperature=0)
    bad.prompt = [1, V_BATCH + 5]  # passes submit's check (done before), fails in the forward
    good = greedy([3], 5)
    engine = BatchedEngine(batch_model)
    engine.submit(good)
    engine.waiting.append(bad)
    events = run_until_idle(engine, [])
    assert [e.finish for e in events if e.seq is bad] == ["error"]
    assert good.tokens == list(generate(batch_model, [3], 5, temperature=0))


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt=[], max_tokens=3), "non-empty"),
    (dict(prompt=[V_BATCH], max_tokens=3), "ids in"),
    (dict(prompt=[1] * 60, max_tokens=5), "context of 64"),
    (dict(prompt=[1], max_tokens=-1), "max_tokens"),
    (dict(prompt=[1], max_tokens=3, temperature=-1), "temperature"),
])
def test_submit_rejects_bad_requests(batch_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchedEngine(batch_model).submit(Sequence(**kwargs))


def test_max_batch_must_be_positive(batch_model):
    with pytest.raises(ValueError, match="max_batch"):
        BatchedEngine(batch_model, max_batch=0)


def test_batch_cache_rows_keep_their_contents_when_others_leave():
    cache = BatchKVCache(3, 1, 2, 1, 8)
    for n in (2, 3, 4):
        single = KVCache(1, 1, 2, 1)
        single.insert_kv(0, np.full((1, 1, n, 2), float(n), np.float32), np.full((1, 1, n, 2), -float(n), np.float32))
        single.advance(n)
        cache.join(single)
    assert cache.pos.tolist() == [2, 3, 4]
    cache.leave(0)  # the last row (4 tokens) moves into row 0
    assert cache.pos.tolist() == [4, 3]
    k, v = cache.insert_kv(0, np.zeros((2, 1, 1, 2), np.float32), np.zeros((2, 1, 1, 2), np.float32))
    assert k.shape == (2, 1, 5, 2)
    assert (k.data[0, 0, :4] == 4).all() and (k.data[1, 0, :3] == 3).all() and (v.data[1, 0, :3] == -3).all()
    assert (k.data[0, 0, 4] == 0).all() and (k.data[1, 0, 3] == 0).all()
    mask = cache.attn_mask(1)
    assert mask.shape == (2, 1, 1, 5)
    assert mask[0, 0, 0].tolist() == [True] * 5 and mask[1, 0, 0].tolist() == [True] * 4 + [False]


def test_batch_cache_rejects_overflow_and_bad_rows():
    cache = BatchKVCache(1, 1, 2, 1, 4)
    single = KVCache(1, 1, 2, 1)
    single.insert_kv(0, np.zeros((1, 1, 4, 2), np.float32), np.zeros((1, 1, 4, 2), np.float32))
    single.advance(4)
    cache.join(single)
    with pytest.raises(RuntimeError, match="batch is full"):
        cache.join(single)
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.insert_kv(0, np.zeros((1, 1, 1, 2), np.float32), np.zeros((1, 1, 1, 2), np.float32))
    with pytest.raises(ValueError, match="insert_kv expects"):
        cache.insert_kv(0, np.zeros((2, 1, 1, 2), np.float32), np.zeros((2, 1, 1, 2), np.float32))
    with pytest.raises(IndexError):
        cache.leave(1)
    with pytest.raises(ValueError, match="max_len"):
        BatchKVCache(1, 1, 2, 1, 0)


def test_step_hands_events_to_emit_as_they_happen(batch_model):
    seen = []

    class Watched(Sequence):
        def sample(self, logits):
            seen.append(("sample", self))
            return super().sample(logits)

    a, b = Watched([1, 2], 3, temperature=0), Watched([3], 3, temperature=0)
    engine = BatchedEngine(batch_model)
    engine.submit(a)
    engine.submit(b)
    assert engine.step(emit=lambda e: seen.append(("event", e.seq))) == []
    # a's first token is out before b's prefill has even sampled
    assert seen[:3] == [("sample", a), ("event", a), ("sample", b)]
    reference = [greedy([1, 2], 3), greedy([3], 3)]
    run_until_idle(BatchedEngine(batch_model), reference)
    while engine.has_work():
        engine.step(emit=lambda e: None)
    assert [a.tokens, b.tokens] == [s.tokens for s in reference]


def test_a_2026_model_with_sliding_windows_decodes_batched_as_alone():
    """nanochat's 2026 preset (smear, value embeddings, windows): rows at their own positions, past the
    128-key short window, give the tokens each prompt gets alone through generate."""
    m = GPT(GPTConfig.nanochat_2026(sequence_len=512, vocab_size=V_BATCH, n_layer=2, n_head=2, n_kv_head=1, n_embd=32))
    assert m.window_sizes[0] == 128 < 512
    rng = np.random.default_rng(1)
    for _, p in m.named_parameters():
        p.data[...] = rng.normal(0, 0.3, p.shape)
    prompts = [list(rng.integers(0, V_BATCH, n)) for n in (150, 3, 200, 131)]
    together = [greedy(p, 8) for p in prompts]
    run_until_idle(BatchedEngine(m, max_batch=4), together, join_after=[0, 0, 2, 3])
    assert [s.tokens for s in together] == [list(generate(m, p, 8, temperature=0)) for p in prompts]
