"""The training loop shared by pretraining (`nanochat train`) and fine-tuning (`nanochat sft`).

One call to `fit` runs steps [start_step, steps): gradient accumulation, a non-finite guard that
refuses a poisoned step before any weight changes, optional clipping, nanochat's LR schedule and
Muon momentum warm-up, periodic evaluation, checkpoints, log.jsonl and a progress bar. Ctrl-C
stops at the next step boundary and saves, so no update is ever half-applied.
"""
import json
import math
import signal
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import minigrad
from minigrad.nn.utils import clip_grad_norm_
from minigrad.stability import first_nonfinite
from nanochat.checkpoint import save_checkpoint
from nanochat.gpt import GPTConfig
from nanochat.muon import Muon
from nanochat.schedule import lr_multiplier, muon_momentum


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why."""


ARCHITECTURES = {"classic": GPTConfig, "2026": GPTConfig.nanochat_2026}


def config_for_depth(depth, vocab_size, sequence_len, n_layer=None, n_embd=None, n_head=None, n_kv_head=None,
                     arch="classic"):
    """nanochat's sizing: width = 64 x depth, heads of width 128; explicit sizes override. arch picks
    the classic model or nanochat's 2026 one."""
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    n_embd = depth * 64 if n_embd is None else n_embd
    n_head = max(1, (n_embd + 127) // 128) if n_head is None else n_head
    return ARCHITECTURES[arch](sequence_len=sequence_len, vocab_size=vocab_size, n_layer=depth if n_layer is None else n_layer,
                     n_head=n_head, n_kv_head=n_head if n_kv_head is None else n_kv_head, n_embd=n_embd)


def resume(optimizers, optimizer_state, loader, meta):
    """Restore the optimizers' and the loader's state from a checkpoint; returns the step to go on
    from. The optimizers were built from this run's hyperparameters, and those win over the saved
    ones (load_state_dict would otherwise bring back the old learning rates)."""
    if not isinstance(optimizer_state, list) or len(optimizer_state) != len(optimizers):
        raise ValueError("the checkpoint holds no state for this run's optimizers, so it cannot be resumed")
    for opt, state in zip(optimizers, optimizer_state):
        hyperparameters = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
        opt.load_state_dict(state)
        for group, values in zip(opt.param_groups, hyperparameters):
            group.update(values)
    loader.load_state_dict(meta["loader"])
    return meta["step"]


def check_unchanged_on_resume(given, saved, names):
    """Options that fix the model or the data stream cannot change when a run resumes."""
    for name in names:
        if name in given and given[name] != saved.get(name):
            raise ValueError(f"--{name.replace('_', '-')} cannot change on --resume (the checkpoint's run used "
                             f"{saved.get(name)!r}); start a new run in another --out instead")


def find_nonfinite(loss, model):
    """Name of the first non-finite thing in a step: 'loss' or a parameter's gradient, else None."""
    if not np.isfinite(loss):
        return "loss"
    bad = first_nonfinite((name, p.grad) for name, p in model.named_parameters() if p.grad is not None)
    return None if bad is None else f"gradient of {bad}"


@minigrad.no_grad()
def evaluate(model, batches, token_bytes):
    """Mean loss per target token and bits per byte over fixed batches (special tokens, which have
    no bytes, and ignored targets are left out of bits per byte, as nanochat does)."""
    total_loss, total_count, total_nats, total_bytes = 0.0, 0, 0.0, 0
    for x, y in batches:
        losses = model(x, targets=y, loss_reduction="none").data.astype(np.float64)
        y = y.reshape(-1)
        valid = y >= 0
        nbytes = np.where(valid, token_bytes[np.maximum(y, 0)], 0)
        total_loss += losses[valid].sum()
        total_count += int(valid.sum())
        total_nats += losses[nbytes > 0].sum()
        total_bytes += int(nbytes.sum())
    return total_loss / max(total_count, 1), total_nats / (math.log(2) * max(total_bytes, 1))


def fit(model, optimizers, loader, *, out, steps, start_step=0, grad_accum=1, clip=None,
        eval_every=0, save_every=0, val_batches=(), token_bytes=None, warmup_ratio=0.0,
        warmdown_ratio=0.2, final_lr_frac=0.0, max_bad_steps=3, meta=None, desc="train"):
    """Train until `steps`; returns the list of per-step log records written this call."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    _truncate_log(log_path, start_step)
    meta = dict(meta or {})
    records, bad_streak, last_loss, lr = [], 0, None, None
    stop = _StopFlag()

    def checkpoint(step):
        save_checkpoint(out, model, step, optimizer=optimizers, loss=last_loss, lr=lr,
                        meta={**meta, "loader": loader.state_dict()})

    bar = tqdm(range(start_step, steps), desc=desc, initial=start_step, total=steps, dynamic_ncols=True)
    with bar, stop, open(log_path, "a") as log:
        for step in bar:
            t0 = time.perf_counter()
            multiplier = lr_multiplier(step, steps, warmup_ratio, warmdown_ratio, final_lr_frac)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * multiplier
                    if isinstance(opt, Muon):
                        group["momentum"] = muon_momentum(step)
            lr = optimizers[0].param_groups[0]["lr"]

            loss, tokens = 0.0, 0
            for _ in range(grad_accum):
                x, y = loader.next_batch()
                micro_loss = model(x, targets=y) / grad_accum
                micro_loss.backward()
                loss += micro_loss.item()
                tokens += x.size
            record = {"step": step + 1, "loss": loss if np.isfinite(loss) else None, "lr": lr}

            bad = find_nonfinite(loss, model)
            if bad is not None:
                for opt in optimizers:
                    opt.zero_grad()
                bad_streak += 1
                record.update(skipped=True, reason=f"non-finite {bad}")
                bar.write(f"step {step + 1}: refused, non-finite {bad}; weights unchanged")
                _write(log, record)
                if bad_streak >= max_bad_steps:
                    raise TrainingError(f"stopping: {bad_streak} consecutive steps had a non-finite {bad}; "
                                        f"the last good checkpoint in {out} is untouched")
            else:
                bad_streak = 0
                if clip:
                    record["grad_norm"] = float(clip_grad_norm_(model.parameters(), clip))
                for opt in optimizers:
                    opt.step()
                    opt.zero_grad()
                last_loss = loss

                elapsed = time.perf_counter() - t0
                record["tok_per_s"] = tokens / elapsed
                if eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps) and val_batches:
                    record["val_loss"], record["val_bpb"] = evaluate(model, val_batches, token_bytes)
                    bar.write(f"step {step + 1}: val loss {record['val_loss']:.4f}, val bpb {record['val_bpb']:.4f}")
                _write(log, record)
                records.append(record)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tok_per_s']:.0f}", lr=f"{lr:.2e}")

            # a refused step left the weights as they were, so its checkpoint holds the last good
            # weights (and the loader past the refused batch): the end of the run and a Ctrl-C
            # during a refused step still save
            if step + 1 == steps or (save_every and (step + 1) % save_every == 0) or stop.requested:
                checkpoint(step + 1)
            if stop.requested:
                bar.write(f"interrupted: saved a checkpoint at step {step + 1} in {out}")
                break
    return records


def plot_losses(log_path, png_path):
    """A loss-curve PNG from log.jsonl; returns False (and draws nothing) without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (a notebook's) alone
    except ImportError:
        return False
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if not r.get("skipped")]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return True


def _write(log, record):
    log.write(json.dumps(record) + "\n")
    log.flush()


def _truncate_log(log_path, start_step):
    """On resume, drop log lines past the checkpoint, so the log reads as one uninterrupted run."""
    if not log_path.exists():
        return
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed run, after the last checkpoint
            continue
        if record["step"] <= start_step:
            keep.append(line)
    log_path.write_text("".join(line + "\n" for line in keep))


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop at the next step boundary; a second one
    interrupts at once."""
    requested = False

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)
