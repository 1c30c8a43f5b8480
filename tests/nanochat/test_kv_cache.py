"""KVCache: incremental decoding equals the full forward (GQA, MQA, batch > 1, any chunking), growth, limits."""
import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad
from minigrad import Tensor
from nanochat.engine import KVCache
from nanochat.gpt import GPT, GPTConfig, apply_rotary_emb, precompute_rotary_embeddings

ATOL = 1e-5
T_SEQ = 13  # longer than sequence_len: decoding past the training length uses the 10x rotary table


@pytest.fixture(autouse=True)
def inference_mode():
    """The cache is for inference: every forward here runs as generate runs it, under no_grad."""
    with minigrad.no_grad():
        yield


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


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_chunks_on_top_of_a_non_empty_cache(n_kv_head):
    model = model_with(n_kv_head)
    idx = batch(B=3, seed=1)
    full = model(idx).data
    np.testing.assert_allclose(run_chunks(model, idx, [4, 8, 9]), full, atol=ATOL, rtol=0)


@settings(max_examples=25, deadline=None)
@given(cuts=st.sets(st.integers(1, T_SEQ - 1)), n_kv_head=st.sampled_from([4, 2, 1]))
def test_any_chunking_equals_full_forward(cuts, n_kv_head):
    model = model_with(n_kv_head)
    idx = batch(seed=2)
    np.testing.assert_allclose(run_chunks(model, idx, sorted(cuts)), model(idx).data, atol=ATOL, rtol=0)


def test_batch_rows_are_independent():
    model = model_with(2)
    idx = batch(B=3, seed=3)
    cache = new_cache(model, 3)
    model(idx[:, :6], kv_cache=cache)
    step = model(idx[:, 6:7], kv_cache=cache).data
    for b in range(3):
        alone = model(idx[b:b + 1, :7]).data[0, -1]
        np.testing.assert_allclose(step[b, 0], alone, atol=ATOL, rtol=0)


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


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(n_kv_head=-1), dict(head_dim=2.0), dict(n_layer=0),
                                    dict(max_len=0)])
def test_constructor_validates(kwargs):
    args = dict(batch_size=1, n_kv_head=2, head_dim=4, n_layer=1) | kwargs
    with pytest.raises(ValueError):
        KVCache(**args)


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


def test_expand_batch_of_an_empty_cache():
    model = model_with(1)
    cache = new_cache(model, 1)
    cache.expand_batch(2)
    idx = batch(B=2, T=4)
    np.testing.assert_allclose(model(idx, kv_cache=cache).data, model(idx).data, atol=ATOL, rtol=0)


# ---- rotary slicing -------------------------------------------------------------------------------

def test_rotary_tables_match_the_formula():
    cos, sin = precompute_rotary_embeddings(50, 8, base=100.0)
    assert cos.shape == sin.shape == (1, 50, 1, 4) and cos.dtype == np.float32
    p, i = np.arange(50)[:, None], np.arange(4)[None, :]
    angle = p * 100.0 ** (-2 * i / 8)
    np.testing.assert_allclose(cos[0, :, 0], np.cos(angle), atol=1e-5)
    np.testing.assert_allclose(sin[0, :, 0], np.sin(angle), atol=1e-5)


def test_rotary_slice_at_position_equals_full_table():
    cos, sin = precompute_rotary_embeddings(40, 8)
    x = np.random.default_rng(0).standard_normal((2, 20, 3, 8)).astype(np.float32)
    full = apply_rotary_emb(Tensor(x), Tensor(cos[:, :20]), Tensor(sin[:, :20])).data
    for p in range(20):
        one = apply_rotary_emb(Tensor(x[:, p:p + 1]), Tensor(cos[:, p:p + 1]), Tensor(sin[:, p:p + 1])).data
        np.testing.assert_allclose(one[:, 0], full[:, p], atol=1e-6)


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = precompute_rotary_embeddings(40, 8)
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((1, 1, 1, 8)).astype(np.float32), rng.standard_normal((1, 1, 1, 8)).astype(np.float32)

    def rot(x, p):
        return apply_rotary_emb(Tensor(x), Tensor(cos[:, p:p + 1]), Tensor(sin[:, p:p + 1])).data.ravel()

    for offset in (0, 3, 11):
        scores = [rot(q, p + offset) @ rot(k, p) for p in range(0, 25, 4)]
        np.testing.assert_allclose(scores, scores[0], atol=1e-4)
    assert not np.isclose(rot(q, 3) @ rot(k, 0), rot(q, 0) @ rot(k, 0), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(rot(q, 17)), np.linalg.norm(q), rtol=1e-5)  # a rotation
