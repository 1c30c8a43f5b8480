"""Training smoke test: AdamW on one fixed batch overfits it, and gradients reach every parameter."""
import numpy as np

from minigrad.optim import AdamW
from nanochat.gpt import GPT, GPTConfig


def test_adamw_overfits_one_batch_and_updates_every_parameter():
    cfg = GPTConfig(sequence_len=16, vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    model = GPT(cfg, seed=0)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 48, (4, 16))  # tokens 48..63 never occur
    targets = np.roll(idx, -1, axis=1)
    targets[:, -1] = -1
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    # no weight decay: a weight can only move if its gradient was non-zero at some step
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)

    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = model(idx, targets=targets)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and np.all(np.isfinite(p.grad)), name
        opt.step()
        losses.append(float(loss.data))

    assert np.isfinite(losses).all()
    assert abs(losses[0] - np.log(cfg.vocab_size)) < 1e-4  # zero lm_head: uniform logits at the start
    assert losses[-1] < 0.5 * losses[0], losses
    for name, p in model.named_parameters():
        assert not np.array_equal(p.data, before[name]), f"{name} never changed: no gradient reached it"
    # the embedding rows of tokens that never occur get no gradient, so they stay put
    wte_before, wte = before["transformer.wte.weight"], model.transformer["wte"].weight.data
    np.testing.assert_array_equal(wte[48:], wte_before[48:])
    assert np.all(np.any(wte[np.unique(idx)] != wte_before[np.unique(idx)], axis=1))
