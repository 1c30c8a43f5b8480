"""The training loop shared by pretraining (`nanochat train`) and fine-tuning (`nanochat sft`).

One call to `fit` runs steps [start_step, steps): gradient accumulation, a non-finite guard that
refuses a poisoned step before any weight changes (and a check of the weights after each update,
which stops the run unsaved if an update made them non-finite), optional clipping, nanochat's LR schedule and
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
from minigrad import distributed
from minigrad.distributed import optimizer_state_bytes
from minigrad.optim import Muon
from minigrad.stability import first_nonfinite
from nanochat.checkpoint import prune_checkpoints, save_checkpoint
from nanochat.gpt import GPTConfig
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


def find_nonfinite(loss, model):
    """Name of the first non-finite thing in a step: 'loss' or a parameter's gradient, else None."""
    if not np.isfinite(loss):
        return "loss"
    bad = first_nonfinite((name, p.grad) for name, p in model.named_parameters() if p.grad is not None)
    return None if bad is None else f"gradient of {bad}"


@minigrad.no_grad()
def evaluate(model, batches, token_bytes, world=None):
    """Mean loss per target token and bits per byte over fixed batches (special tokens, which have
    no bytes, and ignored targets are left out of bits per byte, as nanochat does). With a World,
    each rank evaluates its share of the batches and the sums are added up over the ranks."""
    total_loss, total_count, total_nats, total_bytes = 0.0, 0, 0.0, 0
    for x, y in (batches if world is None else world.shard(batches)):
        losses = model(x, targets=y, loss_reduction="none").data.astype(np.float64)
        y = y.reshape(-1)
        valid = y >= 0
        nbytes = np.where(valid, token_bytes[np.maximum(y, 0)], 0)
        total_loss += losses[valid].sum()
        total_count += int(valid.sum())
        total_nats += losses[nbytes > 0].sum()
        total_bytes += int(nbytes.sum())
    if world is not None:
        total_loss, total_count, total_nats, total_bytes = world.sum_values(total_loss, total_count, total_nats,
                                                                            total_bytes)
    return total_loss / max(total_count, 1), total_nats / (math.log(2) * max(total_bytes, 1))


def fit(model, optimizers, loader, *, out, steps, start_step=0, grad_accum=1, clip=None,
        eval_every=0, save_every=0, val_batches=(), token_bytes=None, warmup_ratio=0.0,
        warmdown_ratio=0.2, final_lr_frac=0.0, max_bad_steps=3, meta=None, desc="train", keep_last=0, ddp=None):
    """Train until `steps`; returns the list of per-step log records written this call. With
    keep_last, only the newest keep_last checkpoints (and those marked keep_<step>) are kept.

    `ddp`, a minigrad.distributed.DataParallel of `model` (or a ShardedOptimizer of `optimizers`),
    makes this one rank of a data-parallel run: the gradients, the loss and the evaluation are
    averaged over the ranks, and rank 0 alone writes the log, the progress bar and the checkpoints."""
    ddp = distributed.DataParallel(model, distributed.World()) if ddp is None else ddp
    world = ddp.world
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = _Checkpoints(out, model, optimizers, loader, ddp, meta, save_every, keep_last, start_step)
    records, bad_streak, stop = [], 0, _StopFlag()

    def evaluate_now(step):
        return eval_every and val_batches and (step % eval_every == 0 or step == steps)

    bar = tqdm(range(start_step, steps), desc=desc, initial=start_step, total=steps, dynamic_ncols=True,
               disable=not world.is_main)
    say = bar.write if world.is_main else (lambda text: None)
    with bar, stop, _Log(out / "log.jsonl", start_step, world.is_main) as log:
        for step in bar:
            t0 = time.perf_counter()
            lr = set_schedule(optimizers, step, steps, warmup_ratio, warmdown_ratio, final_lr_frac)
            loss, tokens = accumulate_gradients(model, loader, ddp, grad_accum)
            record = {"step": step + 1, "loss": loss if np.isfinite(loss) else None, "lr": lr}
            bad = ddp.any_rank(find_nonfinite(loss, model))
            if bad is not None:  # refused: the weights stay as they were
                for opt in optimizers:
                    opt.zero_grad()
                bad_streak += 1
                record.update(skipped=True, reason=f"non-finite {bad}")
                say(f"step {step + 1}: refused, non-finite {bad}; weights unchanged")
                log.write(record)
                if bad_streak >= max_bad_steps:
                    raise TrainingError(f"stopping: {bad_streak} consecutive steps had a non-finite {bad}; "
                                        f"{checkpoints.nothing_lost()}")
            else:
                bad_streak = 0
                record.update(apply_update(model, optimizers, ddp, clip, step + 1, checkpoints.nothing_lost))
                checkpoints.last_loss, checkpoints.lr = loss, lr
                record["tok_per_s"] = tokens / (time.perf_counter() - t0)
                if world.size > 1 and not records:  # the optimizer state exists once a step has run
                    record["optimizer_bytes"] = world.all_gather_object(optimizer_state_bytes(optimizers))
                    say("optimizer state per rank: " + ", ".join(f"{b / 2**20:.2f} MiB"
                                                                 for b in record["optimizer_bytes"]))
                if evaluate_now(step + 1):
                    record["val_loss"], record["val_bpb"] = evaluate(model, val_batches, token_bytes, world)
                    say(f"step {step + 1}: val loss {record['val_loss']:.4f}, val bpb {record['val_bpb']:.4f}")
                log.write(record)
                records.append(record)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tok_per_s']:.0f}", lr=f"{lr:.2e}")

            # the ranks stop together if any was asked to
            stopping = world.sum_values(stop.requested)[0] > 0
            if checkpoints.due(step + 1, steps) or stopping:
                checkpoints.save(step + 1)
            if stopping:
                say(f"interrupted: saved a checkpoint at step {step + 1} in {out}")
                break
    return records


def set_schedule(optimizers, step, steps, warmup_ratio, warmdown_ratio, final_lr_frac):
    """nanochat's LR schedule and Muon momentum warm-up for `step`; returns the first group's lr."""
    multiplier = lr_multiplier(step, steps, warmup_ratio, warmdown_ratio, final_lr_frac)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * multiplier
            if isinstance(opt, Muon):
                group["momentum"] = muon_momentum(step)
    return optimizers[0].param_groups[0]["lr"]


def accumulate_gradients(model, loader, ddp, grad_accum):
    """Forward and backward over grad_accum micro-batches, the gradients averaged over the ranks;
    returns the mean loss and the tokens seen, over all ranks."""
    world = ddp.world
    loss, tokens = 0.0, 0
    for _ in range(grad_accum):
        x, y = loader.next_batch()
        micro_loss = model(x, targets=y) / grad_accum
        micro_loss.backward()
        loss += micro_loss.item()
        tokens += x.size
    ddp.sync_gradients()
    return float(world.sum_values(loss)[0]) / world.size, tokens * world.size


def apply_update(model, optimizers, ddp, clip, step, nothing_lost):
    """Clip and step (a sharded optimizer then shares each rank's updated share); finite gradients
    can still make non-finite weights (an inf learning rate): such a step stops the run unsaved.
    Returns what the log records of the update."""
    record = {}
    if clip:
        record["grad_norm"] = float(ddp.clip_grad_norm_(clip))
    for opt in optimizers:
        opt.step()
        opt.zero_grad()
    ddp.share_updates()
    poisoned = first_nonfinite((name, p.data) for name, p in model.named_parameters())
    if poisoned is not None:
        raise TrainingError(f"stopping: the update of step {step} made {poisoned} non-finite; {nothing_lost()}")
    return record


class _Checkpoints:
    """When and what fit saves: every save_every steps, at the last step and on Ctrl-C, rank 0 alone.

    A refused step left the weights as they were, so its checkpoint holds the last good weights (and
    the loader past the refused batch): the end of the run and a Ctrl-C during a refused step still save."""

    def __init__(self, out, model, optimizers, loader, ddp, meta, save_every, keep_last, start_step):
        self.out, self.model, self.optimizers, self.loader, self.ddp = out, model, optimizers, loader, ddp
        self.meta = dict(meta or {}, **({"ranks": ddp.world.size} if ddp.world.size > 1 else {}))
        self.save_every, self.keep_last = save_every, keep_last
        self.saved = start_step if start_step else None  # a resumed run starts from a checkpoint
        self.last_loss = self.lr = None

    def due(self, step, steps):
        return step == steps or bool(self.save_every and step % self.save_every == 0)

    def save(self, step):
        world = self.ddp.world
        if world.size > 1 and not self.ddp.in_sync():
            raise TrainingError(f"the ranks' weights differ at step {step}; no checkpoint was written")
        saved_optimizers = self.ddp.checkpoint_optimizers(self.optimizers)  # a sharded state is gathered to rank 0
        if world.is_main:
            save_checkpoint(self.out, self.model, step, optimizer=saved_optimizers, loss=self.last_loss, lr=self.lr,
                            meta={**self.meta, "loader": self.loader.state_dict()})
            if self.keep_last:
                prune_checkpoints(self.out, self.keep_last)
        self.saved = step

    def nothing_lost(self):
        if self.saved is None:
            return f"no checkpoint was saved in {self.out}"
        return f"the last good checkpoint (step {self.saved}) in {self.out} is untouched"


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
    try:
        fig.savefig(png_path, dpi=100)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(png_path)) from None
    return True


class _Log:
    """log.jsonl, one JSON record per step, written by rank 0 alone."""

    def __init__(self, path, start_step, is_main):
        self.path, self.file = path, None
        if is_main:
            _truncate_log(path, start_step)
            self.file = open(path, "a")

    def write(self, record):
        if self.file is None:  # not rank 0
            return
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:  # a full disk: name the file (a bare write error reads as stdout's)
            raise OSError(e.errno, e.strerror, str(self.path)) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()


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
