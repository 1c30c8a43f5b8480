"""Continuous batching: BatchKVCache keeps every row at its own length, and BatchedEngine gives each
request the same tokens whether it runs alone or beside others, whenever it joins or others leave."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nanochat.engine import BatchedEngine, BatchKVCache, KVCache, Sequence
from nanochat.gpt import GPT, GPTConfig

VOCAB = 300


@pytest.fixture(scope="module")
def model():
    m = GPT(GPTConfig(sequence_len=64, vocab_size=VOCAB, n_layer=2, n_head=4, n_kv_head=2, n_embd=32))
    rng = np.random.default_rng(0)
    for _, p in m.named_parameters():  # non-zero everywhere (init zeroes lm_head and c_proj)
        p.data[...] = rng.normal(0, 0.3, p.shape)
    return m


def run(engine, seqs, join_after=()):
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


prompts_st = st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=20), min_size=16, max_size=16)


@settings(max_examples=5, deadline=None)
@given(prompts=prompts_st, join_after=st.lists(st.integers(0, 6), min_size=16, max_size=16))
def test_greedy_tokens_are_the_same_alone_or_beside_15_others(model, prompts, join_after):
    alone = []
    for p in prompts:
        seq = greedy(p)
        run(BatchedEngine(model, max_batch=16), [seq])
        alone.append(seq.tokens)
    together = [greedy(p) for p in prompts]
    run(BatchedEngine(model, max_batch=16), together, join_after)
    assert [s.tokens for s in together] == alone
    # and the batched path agrees with the single-sequence generator
    assert alone[0] == list(model.generate(prompts[0], 12, temperature=0))


def test_more_requests_than_rows_wait_for_a_free_row(model):
    prompts = [[i + 1, i + 2, i + 3] for i in range(7)]
    seqs = [greedy(p, 5 + i) for i, p in enumerate(prompts)]
    engine = BatchedEngine(model, max_batch=3)
    events = run(engine, seqs)
    assert [s.tokens for s in seqs] == [list(model.generate(p, 5 + i, temperature=0)) for i, p in enumerate(prompts)]
    assert sorted(e.finish for e in events if e.finish) == ["length"] * 7
    assert engine.cache.batch_size == 0


def test_seeded_sampling_does_not_depend_on_the_neighbours(model):
    def sampled(seed):
        return Sequence([5, 6, 7], 15, temperature=1.0, top_k=50, seed=seed)
    alone = sampled(3)
    run(BatchedEngine(model), [alone])
    crowd = [sampled(3)] + [sampled(s) for s in range(4, 10)]
    run(BatchedEngine(model), crowd)
    assert crowd[0].tokens == alone.tokens
    assert any(s.tokens != alone.tokens for s in crowd[1:])


def test_stop_token_ends_a_sequence_without_being_reported(model):
    free = greedy([1, 2, 3], 10)
    run(BatchedEngine(model), [free])
    stop = free.tokens[3]
    seq = Sequence([1, 2, 3], 10, temperature=0, stop_tokens=[stop])
    events = run(BatchedEngine(model), [seq])
    assert seq.tokens == free.tokens[:free.tokens.index(stop)]
    assert [e.finish for e in events if e.finish] == ["stop"]
    assert [e.token for e in events if e.token is not None] == seq.tokens


def test_a_cancelled_sequence_leaves_within_one_step(model):
    seqs = [greedy([1, 2], 30), greedy([3, 4], 30), greedy([5, 6], 30)]
    engine = BatchedEngine(model)
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
    assert seqs[0].tokens == list(model.generate([1, 2], 30, temperature=0))
    assert seqs[2].tokens == list(model.generate([5, 6], 30, temperature=0))


def test_an_exception_in_one_sequence_ends_only_that_one(model):
    class Faulty(Sequence):
        def sample(self, logits):
            if len(self.tokens) == 4:
                raise RuntimeError("injected fault")
            return super().sample(logits)

    bad = Faulty([9, 9], 20, temperature=0)
    good = [greedy([1, 2], 20), greedy([7], 20)]
    events = run(BatchedEngine(model), [good[0], bad, good[1]])
    errors = [e for e in events if e.finish == "error"]
    assert len(errors) == 1 and errors[0].seq is bad and "injected" in str(errors[0].error)
    assert len(bad.tokens) == 4
    assert good[0].tokens == list(model.generate([1, 2], 20, temperature=0))
    assert good[1].tokens == list(model.generate([7], 20, temperature=0))


def test_a_failing_prefill_ends_only_that_sequence(model):
    bad = Sequence([1, 2], 5, temperature=0)
    bad.prompt = [1, VOCAB + 5]  # passes submit's check (done before), fails in the forward
    good = greedy([3], 5)
    engine = BatchedEngine(model)
    engine.submit(good)
    engine.waiting.append(bad)
    events = run(engine, [])
    assert [e.finish for e in events if e.seq is bad] == ["error"]
    assert good.tokens == list(model.generate([3], 5, temperature=0))


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt=[], max_tokens=3), "non-empty"),
    (dict(prompt=[VOCAB], max_tokens=3), "ids in"),
    (dict(prompt=[1] * 60, max_tokens=5), "context of 64"),
    (dict(prompt=[1], max_tokens=-1), "max_tokens"),
    (dict(prompt=[1], max_tokens=3, temperature=-1), "temperature"),
])
def test_submit_rejects_bad_requests(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchedEngine(model).submit(Sequence(**kwargs))


def test_max_batch_must_be_positive(model):
    with pytest.raises(ValueError, match="max_batch"):
        BatchedEngine(model, max_batch=0)


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


def test_step_hands_events_to_emit_as_they_happen(model):
    seen = []

    class Watched(Sequence):
        def sample(self, logits):
            seen.append(("sample", self))
            return super().sample(logits)

    a, b = Watched([1, 2], 3, temperature=0), Watched([3], 3, temperature=0)
    engine = BatchedEngine(model)
    engine.submit(a)
    engine.submit(b)
    assert engine.step(emit=lambda e: seen.append(("event", e.seq))) == []
    # a's first token is out before b's prefill has even sampled
    assert seen[:3] == [("sample", a), ("event", a), ("sample", b)]
    reference = [greedy([1, 2], 3), greedy([3], 3)]
    run(BatchedEngine(model), reference)
    while engine.has_work():
        engine.step(emit=lambda e: None)
    assert [a.tokens, b.tokens] == [s.tokens for s in reference]


def test_a_2026_model_with_sliding_windows_decodes_batched_as_alone():
    """nanochat's 2026 preset (smear, value embeddings, windows): rows at their own positions, past the
    128-key short window, give the tokens each prompt gets alone through model.generate."""
    m = GPT(GPTConfig.nanochat_2026(sequence_len=512, vocab_size=VOCAB, n_layer=2, n_head=2, n_kv_head=1, n_embd=32))
    assert m.window_sizes[0] == 128 < 512
    rng = np.random.default_rng(1)
    for _, p in m.named_parameters():
        p.data[...] = rng.normal(0, 0.3, p.shape)
    prompts = [list(rng.integers(0, VOCAB, n)) for n in (150, 3, 200, 131)]
    together = [greedy(p, 8) for p in prompts]
    run(BatchedEngine(m, max_batch=4), together, join_after=[0, 0, 2, 3])
    assert [s.tokens for s in together] == [list(m.generate(p, 8, temperature=0)) for p in prompts]
