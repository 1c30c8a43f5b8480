"""nanochat's commands under `mpiexec -n N`: the process's World, each rank's share of the batches,
rank 0 alone printing, and errors that end every rank instead of leaving the others waiting.

The gradient averaging itself is minigrad.distributed; nanochat.train.fit takes its DataParallel
(or, with --shard-optimizer, its ShardedOptimizer).
"""
import contextlib
import functools
import os
import sys
import time

from minigrad import distributed
from nanochat.run_lock import RunLock


@functools.cache
def world():
    """This process's World (a one-rank World without mpiexec). Under several ranks, the others'
    stdout goes to /dev/null, so the job prints once, and an uncaught exception ends every rank."""
    w = distributed.init(name="nanochat")
    if w.size > 1:
        if not w.is_main:
            sys.stdout = open(os.devnull, "w")
        previous = sys.excepthook

        def abort_all(kind, error, trace):
            if issubclass(kind, distributed.CollectiveError):  # not a bug here: say so in one line
                print(f"nanochat: error: {error}; stopping every rank", file=sys.stderr, flush=True)
            else:
                previous(kind, error, trace)
                sys.stderr.flush()
            w.abort(1)
        sys.excepthook = abort_all
    return w


@contextlib.contextmanager
def run_lock(directory):
    """Rank 0 alone locks the run directory (the other ranks write nothing there); they start once it
    holds the lock and has removed a dead writer's leftovers."""
    w = world()
    with RunLock(directory) if w.is_main else contextlib.nullcontext():
        w.broadcast_object(None)
        yield


def report_error(message, code=1):
    """Print a one-line error and return the exit code; under several ranks, end them all (the
    others may be waiting in a collective for this rank and would hang). Ranks other than 0 wait
    a moment first: an error every rank meets (a bad option) is printed by rank 0 alone, whose
    abort ends them before they speak."""
    w = world()
    if w.size == 1:
        print(message, file=sys.stderr)
        return code
    if not w.is_main:
        time.sleep(1.0)
    print(f"{message} [rank {w.rank} of {w.size}; stopping every rank]", file=sys.stderr, flush=True)
    w.abort(code)


class ShardedLoader:
    """This rank's share of a loader: each call draws world.size batches and keeps the rank's own.

    So N ranks together see, per call, the N batches one process would see in N micro-batches
    (rank r gets the r-th), and the wrapped loader's state, which rank 0 saves, is the same on
    every rank and the same as a one-process run's after the same batches."""

    def __init__(self, loader, world):
        self.loader, self.world = loader, world

    def next_batch(self):
        batches = [self.loader.next_batch() for _ in range(self.world.size)]
        return batches[self.world.rank]

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


def shard_loader(loader, world):
    return loader if world.size == 1 else ShardedLoader(loader, world)


def ranks_changed(meta, world):
    """A note for a run resumed with another number of ranks: the batches go on from where they
    stopped, and the run is the same as before if ranks x --grad-accum is."""
    saved = meta.get("ranks", 1)
    if saved == world.size:
        return ""
    return (f" (the checkpoint was written by {saved} rank{'s' if saved > 1 else ''}, this run has {world.size}: "
            f"the global batch is as before only if ranks x --grad-accum is)")


def describe_global_batch(world, batch, grad_accum, unit):
    """The log line naming what one optimizer step sees over all ranks."""
    return (f"global batch: {batch} {unit} x {world.size} rank{'s' if world.size > 1 else ''} x {grad_accum} "
            f"micro-batch{'es' if grad_accum > 1 else ''} = {batch * world.size * grad_accum:,} {unit} per step")


def add_shard_option(parser):
    parser.add_argument("--shard-optimizer", action="store_true",
                        help="under mpiexec: each rank keeps and updates the optimizer state of its own share of "
                             "the parameters (about 1/ranks of it); checkpoints hold the whole state as usual (default: off)")


def data_parallel(model, optimizers, world, shard_optimizer):
    """What fit synchronises the ranks with: a DataParallel of the model, or a ShardedOptimizer of
    the optimizers (built after a resumed state is loaded: it keeps this rank's share of it)."""
    if shard_optimizer:
        return distributed.ShardedOptimizer(optimizers, world)
    return distributed.DataParallel(model, world)
