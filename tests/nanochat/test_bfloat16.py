"""bfloat16 inference weights: conversions (bit-exact with PyTorch), the linear kernel against its
NumPy twin, and a converted model against float32.

Tolerances: the bfloat16 model equals a float32 model holding the same bfloat16-rounded weights within
1e-4 on the logits (only float32 summation order differs), and stays within 0.1 of the unrounded float32
model's logits (|logits| <= softcap 15; bfloat16 keeps 8 significant bits, a relative step of 2^-8).
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import minigrad
from minigrad.kernels._bfloat16 import (STREAMED_ROWS, bfloat16_to_float32, float32_to_bfloat16, linear_bf16,
                                       linear_bf16_reference)
from nanochat.engine import generate
from nanochat.gpt import GPT, GPTConfig
from nanochat.interop.bfloat16 import Bfloat16Linear, cast_to_bfloat16



def torch_bits(x):
    return torch.from_numpy(x).bfloat16().view(torch.int16).numpy().view(np.uint16)


@settings(deadline=None, max_examples=50)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=200))
def test_rounding_matches_torch_bit_for_bit(patterns):
    x = np.array(patterns, dtype=np.uint32).view(np.float32)
    ours, theirs = float32_to_bfloat16(x), torch_bits(x)
    nan = np.isnan(x)
    assert np.array_equal(ours[~nan], theirs[~nan])
    assert np.isnan(bfloat16_to_float32(ours[nan])).all()


def test_rounding_edge_cases():
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.3895314e38, np.inf, -np.inf, -0.0, 1e-40, -1e-45],
                 dtype=np.float32)  # exact, ties to even (down and up), overflow to inf, infinities, subnormals
    assert np.array_equal(float32_to_bfloat16(x), torch_bits(x))
    assert np.array_equal(bfloat16_to_float32(float32_to_bfloat16(x)),
                          torch.from_numpy(x).bfloat16().float().numpy())


def test_widening_is_exact():
    bits = np.arange(2**16, dtype=np.uint16)
    ours = bfloat16_to_float32(bits)
    theirs = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@settings(deadline=None, max_examples=40)
@given(m=st.integers(1, 12), n=st.integers(1, 300), k=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_linear_kernel_agrees_with_numpy_twin(m, n, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = float32_to_bfloat16(rng.standard_normal((n, k)).astype(np.float32))
    expected = linear_bf16_reference(x, w)
    np.testing.assert_allclose(linear_bf16(x, w), expected, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@pytest.mark.parametrize("m", [1, 5, STREAMED_ROWS, STREAMED_ROWS + 1, 40])  # both paths of the kernel
def test_linear_kernel_matches_torch_and_keeps_leading_dims(m):
    rng = np.random.default_rng(m)
    x = rng.standard_normal((1, m, 96)).astype(np.float32)
    w = float32_to_bfloat16(rng.standard_normal((701, 96)).astype(np.float32))
    w_torch = torch.from_numpy(w.view(np.int16)).view(torch.bfloat16).float()
    expected = (torch.from_numpy(x) @ w_torch.T).numpy()
    np.testing.assert_allclose(linear_bf16(x, w), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(linear_bf16_reference(x, w), expected, rtol=1e-5, atol=1e-4)


def test_linear_kernel_propagates_nan_and_inf():
    x = np.ones((1, 4), np.float32)
    w = float32_to_bfloat16(np.array([[1, 1, 1, np.nan], [1, np.inf, 1, 1], [1, 1, 1, 1]], np.float32))
    out = linear_bf16(x, w)
    assert np.isnan(out[0, 0]) and out[0, 1] == np.inf and out[0, 2] == 4


@pytest.mark.parametrize("x, w, message", [
    (np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), "uint16"),
    (np.ones((2, 3), np.float64), np.ones((4, 3), np.uint16), "float32 x"),
    (np.ones((2, 5), np.float32), np.ones((4, 3), np.uint16), "float32 x"),
])
def test_linear_kernel_rejects_bad_operands(x, w, message):
    for fn in (linear_bf16, linear_bf16_reference):
        with pytest.raises(ValueError, match=message):
            fn(x, w)


def model_pair(seed=0):
    config = GPTConfig(sequence_len=64, vocab_size=300, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
    model = GPT(config)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0, 1.5 / np.sqrt(p.shape[-1]), p.shape)
    rounded = GPT(config)
    for (_, p), (_, q) in zip(model.named_parameters(), rounded.named_parameters()):
        q.data[...] = bfloat16_to_float32(float32_to_bfloat16(p.data))
    return model, rounded


def logits(model, ids):
    with minigrad.no_grad():
        return model(np.array([ids])).data[0]


def test_bfloat16_model_matches_float32_within_the_stated_tolerances():
    model, rounded = model_pair()
    ids = list(np.random.default_rng(0).integers(0, 300, 20))
    full = logits(model, ids)
    cast_to_bfloat16(model)
    assert not model.parameters()  # every weight is now bfloat16 patterns
    assert isinstance(model.lm_head, Bfloat16Linear) and model.lm_head.weight_bits.dtype == np.uint16
    half = logits(model, ids)
    assert np.abs(half - logits(rounded, ids)).max() < 1e-4
    assert 0 < np.abs(half - full).max() < 0.1
    assert list(generate(model, ids, 10, temperature=0)) == list(generate(rounded, ids, 10, temperature=0))


def test_bfloat16_halves_weight_memory():
    model, _ = model_pair()
    float_bytes = sum(p.data.nbytes for p in model.parameters())
    cast_to_bfloat16(model)
    half_bytes = sum(m.weight_bits.nbytes for m in model.modules() if hasattr(m, "weight_bits"))
    assert half_bytes * 2 == float_bytes


def test_bfloat16_model_refuses_training():
    model, _ = model_pair()
    cast_to_bfloat16(model)
    x = minigrad.Tensor(np.ones((1, 2, 64), np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="for inference"):
        model.lm_head(x)


def test_sample_command_runs_in_bfloat16(tmp_path, capsys):
    from nanochat.checkpoint import save_checkpoint
    from nanochat.commands import main
    from nanochat.tokenizer import Tokenizer
    tokenizer = Tokenizer.train(["hello world " * 50], 300)
    model = GPT(GPTConfig(sequence_len=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_kv_head=2, n_embd=32))
    save_checkpoint(tmp_path, model, 1)
    tokenizer.save(tmp_path)
    args = ["sample", "--checkpoint", str(tmp_path), "--max-tokens", "8", "--temperature", "0", "--prompt", "hello"]
    assert main(args + ["--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.startswith("hello")
    with pytest.raises(SystemExit):  # argparse rejects an unknown dtype
        main(args + ["--dtype", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_unknown_dtype_is_refused_before_loading(tmp_path):
    from nanochat.interop import load_any
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16"):
        load_any(tmp_path / "not-even-there", dtype="float16")
