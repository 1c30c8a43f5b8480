"""nanochat's training schedules: the LR multiplier and Muon's momentum warm-up (from scripts/base_train.py)."""
from __future__ import annotations

import numbers


def _check_step(step) -> None:
    if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")


def lr_multiplier(step: int, num_steps: int, warmup_ratio: float = 0.0, warmdown_ratio: float = 0.2,
                  final_lr_frac: float = 0.0) -> float:
    """Multiplier on the base LR: linear warm-up, flat 1.0, then linear warm-down to ``final_lr_frac``.

    Mirrors nanochat's get_lr_multiplier, including its rounding of the phase lengths and
    ``(step + 1) / warmup`` during warm-up; ``step`` runs from 0 to ``num_steps`` inclusive
    (nanochat's loop visits step == num_iterations for its final evaluation).
    """
    _check_step(step)
    if not isinstance(num_steps, numbers.Integral) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if step > num_steps:
        raise ValueError(f"step {step} is past num_steps {num_steps}")
    for name, value in (("warmup_ratio", warmup_ratio), ("warmdown_ratio", warmdown_ratio),
                        ("final_lr_frac", final_lr_frac)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if warmup_ratio + warmdown_ratio > 1.0:
        raise ValueError(f"warmup_ratio + warmdown_ratio must be at most 1, got {warmup_ratio + warmdown_ratio}")
    warmup_iters = round(warmup_ratio * num_steps)
    warmdown_iters = round(warmdown_ratio * num_steps)
    if step < warmup_iters:
        return (step + 1) / warmup_iters
    if step <= num_steps - warmdown_iters:
        return 1.0
    progress = (num_steps - step) / warmdown_iters
    return progress * 1.0 + (1 - progress) * final_lr_frac


def muon_momentum(step: int) -> float:
    """Muon momentum ramped linearly from 0.85 at step 0 to 0.95 at step 300, then held."""
    _check_step(step)
    frac = min(step / 300, 1.0)
    return (1 - frac) * 0.85 + frac * 0.95
