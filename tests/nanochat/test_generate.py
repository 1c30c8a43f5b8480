"""GPT.generate and sample_next_token: determinism, greedy = argmax of the full forward, top-k/top-p support,
stop tokens, several samples, argument validation, no graph recorded."""
import numpy as np
import pytest

import minigrad
from nanochat.engine import sample_next_token
from nanochat.gpt import GPT, GPTConfig

V = 41
PROMPT = [3, 17, 5, 29]


@pytest.fixture(scope="module")
def model():
    cfg = GPTConfig(sequence_len=4, vocab_size=V, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)  # rotary: 40
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


# ---- generate -------------------------------------------------------------------------------------

def test_same_seed_same_tokens_different_seed_different(model):
    a = list(model.generate(PROMPT, 25, temperature=1.0, seed=123))
    b = list(model.generate(PROMPT, 25, temperature=1.0, seed=123))
    c = list(model.generate(PROMPT, 25, temperature=1.0, seed=124))
    assert len(a) == 25 and all(isinstance(t, int) and 0 <= t < V for t in a)
    assert a == b
    assert a != c


def test_greedy_equals_argmax_of_full_forward(model):
    out = list(model.generate(PROMPT, 20, temperature=0.0))
    assert out == greedy_by_full_forward(model, PROMPT, 20)
    assert len(set(out)) > 2  # the check is not trivially satisfied by a constant sequence


def test_top_k_1_equals_greedy(model):
    greedy = list(model.generate(PROMPT, 15, temperature=0.0))
    assert list(model.generate(PROMPT, 15, temperature=1.5, top_k=1, seed=5)) == greedy


def test_generation_up_to_the_end_of_the_rotary_table(model):
    prompt = [1, 2, 3]
    out = list(model.generate(prompt, 37, temperature=0.0))  # 3 + 37 = 40 positions
    assert out == greedy_by_full_forward(model, prompt, 37)


def test_stop_token_ends_generation_without_being_yielded(model):
    greedy = list(model.generate(PROMPT, 15, temperature=0.0))
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    stop = greedy[k]
    assert list(model.generate(PROMPT, 15, temperature=0.0, stop_tokens=[stop])) == greedy[:k]
    assert list(model.generate(PROMPT, 15, temperature=0.0, stop_tokens={stop, V + 100})) == greedy[:k]
    assert list(model.generate(PROMPT, 15, temperature=0.0, stop_tokens=[greedy[0]])) == []
    sampled = list(model.generate(PROMPT, 30, temperature=1.0, seed=3, stop_tokens=[stop]))
    assert stop not in sampled


def test_num_samples_greedy_rows_equal_single_greedy(model):
    greedy = list(model.generate(PROMPT, 12, temperature=0.0))
    out = list(model.generate(PROMPT, 12, temperature=0.0, num_samples=3))
    assert len(out) == 12
    for step, row in zip(greedy, out):
        assert isinstance(row, list) and row == [step] * 3


def test_num_samples_rows_sample_independently(model):
    out = list(model.generate(PROMPT, 20, temperature=1.0, seed=11, num_samples=4))
    assert all(len(row) == 4 and all(isinstance(t, int) and 0 <= t < V for t in row) for row in out)
    columns = [tuple(row[i] for row in out) for i in range(4)]
    assert len(set(columns)) == 4
    # the same seed gives the same rows
    assert list(model.generate(PROMPT, 20, temperature=1.0, seed=11, num_samples=4)) == out


def test_num_samples_with_stop_tokens(model):
    greedy = list(model.generate(PROMPT, 15, temperature=0.0))
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    out = list(model.generate(PROMPT, 15, temperature=0.0, stop_tokens=[greedy[k]], num_samples=2))
    assert [row for row in out[:k]] == [[t, t] for t in greedy[:k]]
    assert all(greedy[k] not in row for row in out)
    assert out[k:] == [[None, None]]  # the step every row stopped at ends generation

    # a row that has stopped stays None while the others go on
    sampled = list(model.generate(PROMPT, 30, temperature=1.0, seed=2, stop_tokens=[greedy[0]], num_samples=5))
    for i in range(5):
        col = [row[i] for row in sampled]
        if None in col:
            first = col.index(None)
            assert all(t is None for t in col[first:])
        assert greedy[0] not in col


def test_max_tokens_zero_yields_nothing(model):
    assert list(model.generate(PROMPT, 0)) == []
    assert list(model.generate(PROMPT, 0, num_samples=3)) == []


@pytest.mark.parametrize("kwargs", [
    dict(tokens=[]),
    dict(tokens=[1, V]),
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
def test_bad_arguments_raise_before_anything_is_yielded(model, kwargs):
    args = dict(tokens=PROMPT, max_tokens=5) | kwargs
    gen = model.generate(args.pop("tokens"), args.pop("max_tokens"), **args)
    with pytest.raises(ValueError):
        next(gen)


def test_generation_records_no_graph(model, monkeypatch):
    seen = []
    forward = model.forward

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.append((minigrad.is_grad_enabled(), out.requires_grad, out._ctx is None))
        return out

    monkeypatch.setattr(model, "forward", spy)
    assert minigrad.is_grad_enabled()
    for _ in model.generate(PROMPT, 5, temperature=1.0, seed=0, num_samples=2):
        assert minigrad.is_grad_enabled()  # generating does not switch gradients off for the caller
    assert len(seen) == 5  # one prefill, then one decode per token but the last
    assert all(s == (False, False, True) for s in seen), seen
    assert all(p.grad is None for p in model.parameters())


# ---- sample_next_token ----------------------------------------------------------------------------

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
