"""Data parallelism over MPI (mpi4py): ranks, gradient averaging in large buffers, parameter broadcast.

Launch N copies of one script with `mpiexec -n N python script.py`; each copy (a rank) builds the
same model, reads its own share of every batch and, after backward, averages the gradients with
the others, so every rank takes the same optimizer step and the weights stay identical:

    from minigrad import distributed
    world = distributed.init()                    # size 1, and mpi4py never imported, without mpiexec
    ddp = distributed.DataParallel(model, world)  # every rank starts from rank 0's weights
    for x, y in batches:
        x, y = world.shard(x), world.shard(y)     # this rank's rows of the global batch
        model(x, targets=y).backward()
        ddp.sync_gradients()                      # every rank now holds the mean gradient
        opt.step(); opt.zero_grad()

Gradients travel in a few contiguous buffers (buckets of about `bucket_bytes`), one MPI
all-reduce per bucket rather than one per tensor. ShardedOptimizer is the alternative to
DataParallel that keeps each parameter's optimizer state on one rank only (ZeRO-2 style). A
single process without mpiexec gets a one-rank World whose collectives are no-ops, and never
imports mpi4py; `init(comm)` takes an explicit mpi4py communicator instead of the launch.
"""
import atexit
import hashlib
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import time
import warnings

import numpy as np

from minigrad.nn.utils import clip_grad_norm_

# 32 MiB: few enough calls that per-call latency is negligible, small enough to be cheap to allocate
BUCKET_BYTES = 32 << 20
# what MPI launchers export to every process they start (MPICH/Intel MPI/hydra, Open MPI, MVAPICH)
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class CollectiveError(RuntimeError):
    """A collective failed, most likely because another rank died."""


def launched_size(environ=None):
    """How many processes the MPI launcher started, from the environment; 1 when not launched by one."""
    environ = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        if environ.get(name):
            try:
                return int(environ[name])
            except ValueError:
                raise RuntimeError(f"{name}={environ[name]!r} is not a process count") from None
    return 1


def init(comm=None, name="minigrad"):
    """The World of this process: MPI's COMM_WORLD when an MPI launcher started more than one
    process (or `comm`, an mpi4py communicator, when given), else a single-process World.

    Under a launcher, a rank that dies without a word (killed, out of memory) is named in one line
    on rank 0's stderr, starting with `name`, before the launcher stops the others."""
    if comm is not None:
        return World(comm)
    if launched_size() <= 1:
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("started by an MPI launcher with several processes, but mpi4py is not "
                           "installed: pip install 'minigrad-nanochat[mpi]'") from None
    world = World(MPI.COMM_WORLD)
    world.watch_for_deaths(name)
    return world


class World:
    """This process's rank among `size` ranks, and the collectives the ranks run together.

    Every collective must be called by every rank, in the same order. `bytes_communicated` and
    `seconds_communicating` add up the payload this rank handed to collectives and the time it
    spent in them (waiting for slower ranks included)."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.bytes_communicated = 0
        self.seconds_communicating = 0.0
        self._watcher = None  # this rank's connection to the death watch, under a launcher

    @property
    def is_main(self):
        """Rank 0, the one that writes files and prints."""
        return self.rank == 0

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"

    def shard(self, items):
        """This rank's share of a sequence or array (every size-th item, from its rank)."""
        return items[self.rank::self.size]

    def all_reduce(self, array):
        """Sum a contiguous NumPy array over the ranks, in place; returns it."""
        if self.size > 1:
            if not array.flags.c_contiguous:
                raise ValueError("all_reduce needs a C-contiguous array")
            from mpi4py import MPI
            self._timed(array.nbytes, self.comm.Allreduce, MPI.IN_PLACE, array, op=MPI.SUM)
        return array

    def reduce(self, array, root=0):
        """Sum a contiguous NumPy array over the ranks into rank `root`'s array, in place (the
        others' arrays are left as they were); returns it."""
        if self.size > 1:
            if not array.flags.c_contiguous:
                raise ValueError("reduce needs a C-contiguous array")
            from mpi4py import MPI
            send, receive = (MPI.IN_PLACE, array) if self.rank == root else (array, None)
            self._timed(array.nbytes, self.comm.Reduce, send, receive, op=MPI.SUM, root=root)
        return array

    def broadcast(self, array, root=0):
        """Overwrite a contiguous NumPy array with rank `root`'s, in place; returns it."""
        if self.size > 1:
            if not array.flags.c_contiguous:
                raise ValueError("broadcast needs a C-contiguous array")
            self._timed(array.nbytes, self.comm.Bcast, array, root=root)
        return array

    def sum_values(self, *values):
        """Float64 sums over the ranks of a few numbers (losses, counts, flags)."""
        return self.all_reduce(np.array(values, dtype=np.float64))

    def gather_object(self, obj, root=0):
        """[every rank's obj], in rank order, on rank `root`; None on the others."""
        return [obj] if self.size == 1 else self._timed(0, self.comm.gather, obj, root=root)

    def broadcast_object(self, obj, root=0):
        """Rank `root`'s picklable object, on every rank."""
        return obj if self.size == 1 else self._timed(0, self.comm.bcast, obj, root=root)

    def all_gather_object(self, obj):
        """[every rank's obj], in rank order."""
        return [obj] if self.size == 1 else self._timed(0, self.comm.allgather, obj)

    def barrier(self):
        if self.size > 1:
            self._timed(0, self.comm.Barrier)

    def abort(self, code=1):
        """End every rank of the job at once (after an error only some ranks may have met, and
        printed: the death watch stays quiet about the ranks this ends)."""
        _tell_watcher(self._watcher, b"quiet\n")
        self.comm.Abort(code)

    def watch_for_deaths(self, name):
        """Start the death watch (minigrad/_rank_watch.py) on rank 0 and connect every rank to it.
        A collective; without it, a killed rank is reported by the launcher alone."""
        hosts = self.all_gather_object(socket.gethostname())
        address = None
        if self.is_main:
            token = secrets.token_hex(16)
            host = "127.0.0.1" if len(set(hosts)) == 1 else ""  # all interfaces when ranks are elsewhere
            watcher = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "_rank_watch.py")],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
            watcher.stdin.write(json.dumps({"token": token, "size": self.size, "host": host, "name": name})
                                .encode() + b"\n")
            watcher.stdin.close()
            port = watcher.stdout.readline().strip()
            address = (host or hosts[0], int(port), token) if port.isdigit() else None
        address = self.broadcast_object(address)
        if address is None:
            warnings.warn("the death watch did not start: a killed rank is reported by the launcher only")
            return
        try:
            self._watcher = socket.create_connection(address[:2], timeout=30)
            self._watcher.sendall(json.dumps({"token": address[2], "rank": self.rank, "pid": os.getpid(),
                                              "host": socket.gethostname()}).encode() + b"\n")
        except OSError as e:
            warnings.warn(f"cannot reach the death watch at {address[0]}:{address[1]} ({e}): a killed rank "
                          f"is reported by the launcher only")
            self._watcher = None
        atexit.register(_tell_watcher, self._watcher, b"bye\n")
        self.barrier()  # every rank's hello is on its way before any rank can die of its own work

    def _timed(self, nbytes, fn, *args, **kwargs):
        from mpi4py import MPI
        start = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except MPI.Exception as e:
            raise CollectiveError(f"rank {self.rank} of {self.size} lost the other ranks (one probably died): "
                                  f"{' '.join(e.Get_error_string().split())}") from None
        self.seconds_communicating += time.perf_counter() - start
        self.bytes_communicated += nbytes
        return result


def _tell_watcher(connection, message):
    if connection is not None:
        try:
            connection.sendall(message)
        except OSError:  # the watcher is gone: nothing to tell
            pass


def buckets(tensors, bucket_bytes=BUCKET_BYTES):
    """Consecutive runs of tensors of one dtype holding about bucket_bytes each (a larger tensor
    gets a bucket of its own)."""
    groups, current, size = [], [], 0
    for t in tensors:
        if current and (t.data.dtype != current[0].data.dtype or size + t.data.nbytes > bucket_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += t.data.nbytes
    if current:
        groups.append(current)
    return groups


def all_reduce_gradients(params, world, bucket_bytes=BUCKET_BYTES):
    """Replace every parameter's gradient by its mean over the ranks, one all-reduce per bucket.

    A parameter that has no gradient on any rank keeps None (the optimizer skips it, as it would
    in one process); one that has a gradient on some ranks only counts zeros for the others."""
    params = list(params)
    if world.size == 1 or not params:
        return
    anywhere = world.all_reduce(np.array([p.grad is not None for p in params], dtype=np.int32)) > 0
    params = [p for p, has in zip(params, anywhere) if has]
    for bucket in buckets(params, bucket_bytes):
        flat = np.empty(sum(p.data.size for p in bucket), dtype=bucket[0].data.dtype)
        offset = 0
        for p in bucket:
            n = p.data.size
            flat[offset:offset + n] = 0 if p.grad is None else p.grad.reshape(-1)
            offset += n
        world.all_reduce(flat)
        flat /= world.size
        offset = 0
        for p in bucket:
            # views into a buffer made for this call: nothing else holds it
            p.grad = flat[offset:offset + p.data.size].reshape(p.data.shape)
            offset += p.data.size


def broadcast_parameters(params, world, root=0, bucket_bytes=BUCKET_BYTES):
    """Copy rank `root`'s parameter values into every rank's arrays, in place (optimizers that hold
    those arrays stay valid)."""
    if world.size == 1:
        return
    for bucket in buckets(list(params), bucket_bytes):
        flat = np.concatenate([p.data.reshape(-1) for p in bucket])
        world.broadcast(flat, root=root)
        offset = 0
        for p in bucket:
            p.data[...] = flat[offset:offset + p.data.size].reshape(p.data.shape)
            offset += p.data.size


def parameters_match(params, world):
    """True on every rank when every rank's parameters are bitwise identical to rank 0's."""
    digest = hashlib.blake2b(digest_size=16)
    for p in params:
        digest.update(np.ascontiguousarray(p.data).view(np.uint8))
    digests = world.all_gather_object(digest.hexdigest())
    return all(d == digests[0] for d in digests)


class DataParallel:
    """Keeps one model's copies on every rank identical: rank 0's weights at the start, then the
    mean gradient before each optimizer step.

    Args:
        module: an nn.Module, or a list of parameters.
        world: a World (default: distributed.init()).
        bucket_bytes: the size of the contiguous buffers gradients travel in.
    """

    def __init__(self, module, world=None, bucket_bytes=BUCKET_BYTES):
        self.world = init() if world is None else world
        self.params = module.parameters() if hasattr(module, "parameters") else list(module)
        self.bucket_bytes = bucket_bytes
        broadcast_parameters(self.params, self.world, bucket_bytes=bucket_bytes)

    def sync_gradients(self):
        """Average the gradients over the ranks; call after backward, before clipping and step."""
        all_reduce_gradients(self.params, self.world, self.bucket_bytes)

    def in_sync(self):
        """True on every rank when all ranks hold bitwise identical weights."""
        return parameters_match(self.params, self.world)

    def any_rank(self, problem):
        """A problem found in the gradients (a string or None): every rank holds them all, so
        every rank found the same."""
        return problem

    def clip_grad_norm_(self, max_norm):
        """clip_grad_norm_ over the (averaged) gradients; returns the norm before clipping."""
        return clip_grad_norm_(self.params, max_norm)

    def share_updates(self):
        """Nothing to share: every rank made the same update."""

    def checkpoint_optimizers(self, optimizers):
        """What a checkpoint saves of the optimizers: they are whole on every rank."""
        return optimizers

    def gradient_bytes(self):
        """Bytes of gradient one step's sync_gradients hands to MPI on each rank."""
        return sum(p.data.nbytes for p in self.params)


class ShardedOptimizer:
    """ZeRO-2 style data parallelism with whole parameters as the unit (as nanochat's DistMuon):
    each parameter has one owner rank, which alone keeps its optimizer state and updates it.

    A step reduces each gradient onto its owner (the others drop theirs), runs the optimizers on
    the owned parameters, then broadcasts every updated parameter from its owner. That moves as
    many bytes as an all-reduce, and each rank holds about 1/size of the optimizer state (AdamW's
    two moments, Muon's momentum) and of the gradients after the step's reduction.

    Args:
        optimizers: one optimizer or a list, built over the model's parameters as usual (and
            perhaps loaded with a whole state_dict); their param groups and state are cut down to
            this rank's parameters.
        world: a World (default: distributed.init()).

    Use it in place of DataParallel and the optimizers' own step: after backward, `step()`; or,
    to clip in between, `sync_gradients()`, `clip_grad_norm_(max_norm)`, the optimizers' step,
    `share_updates()`. The optimizers' own state_dict() holds this rank's share;
    `full_state_dicts()` gathers the whole of it, as one process would save it.
    """

    def __init__(self, optimizers, world=None, bucket_bytes=BUCKET_BYTES):
        self.world = init() if world is None else world
        self.optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        self.bucket_bytes = bucket_bytes
        # each optimizer's groups as built, for whole state_dicts
        self.full_groups = [[list(group["params"]) for group in opt.param_groups] for opt in self.optimizers]
        self.params = [p for groups in self.full_groups for group in groups for p in group]
        # largest first, each to the least-loaded rank: every rank computes the same assignment
        load, self.owner = [0] * self.world.size, {}
        for p in sorted(self.params, key=lambda p: -p.data.nbytes):
            rank = load.index(min(load))
            self.owner[id(p)] = rank
            load[rank] += p.data.nbytes
        broadcast_parameters(self.params, self.world, bucket_bytes=bucket_bytes)
        mine = self.owned_by(self.world.rank)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["params"] = [p for p in group["params"] if self.owner[id(p)] == self.world.rank]
            for p in [p for p in opt.state if self.owner[id(p)] != self.world.rank]:  # a loaded state's others
                del opt.state[p]
        self._mine = {id(p) for p in mine}

    def owned_by(self, rank):
        return [p for p in self.params if self.owner[id(p)] == rank]

    def step(self):
        """Average each gradient onto its owner, update the owned parameters, share the results."""
        self.sync_gradients()
        for opt in self.optimizers:
            opt.step()
        self.share_updates()

    def sync_gradients(self):
        """Average each gradient onto its owner rank; the other ranks' copies become None."""
        world = self.world
        # a parameter with no gradient on any rank keeps None, as in one process
        anywhere = world.all_reduce(np.array([p.grad is not None for p in self.params], dtype=np.int32)) > 0
        with_grad = {id(p) for p, has in zip(self.params, anywhere) if has}
        for rank in range(world.size):
            for bucket in buckets([p for p in self.owned_by(rank) if id(p) in with_grad], self.bucket_bytes):
                flat = np.concatenate([np.zeros(p.data.size, p.data.dtype) if p.grad is None else p.grad.reshape(-1)
                                       for p in bucket])
                world.reduce(flat, root=rank)
                offset = 0
                for p in bucket:
                    p.grad = (flat[offset:offset + p.data.size].reshape(p.data.shape) / world.size
                              if rank == world.rank else None)
                    offset += p.data.size

    def any_rank(self, problem):
        """The first rank's problem found in its own gradients (a string or None), on every rank."""
        return next((found for found in self.world.all_gather_object(problem) if found is not None), None)

    def clip_grad_norm_(self, max_norm):
        """minigrad.nn.utils.clip_grad_norm_ (2-norm) over all the ranks' owned gradients: the global
        norm is the square root of the owners' squared norms summed over the ranks."""
        grads = [p.grad for p in self.params if id(p) in self._mine and p.grad is not None]
        squares = sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)
        total = math.sqrt(float(self.world.sum_values(squares)[0]))
        coefficient = float(max_norm) / (total + 1e-6)
        if math.isfinite(total) and coefficient < 1.0:
            for g in grads:
                g *= coefficient
        return total

    def share_updates(self):
        """Broadcast every parameter from its owner, after the owners' optimizer step."""
        for rank in range(self.world.size):
            broadcast_parameters(self.owned_by(rank), self.world, root=rank, bucket_bytes=self.bucket_bytes)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def in_sync(self):
        """True on every rank when all ranks hold bitwise identical weights."""
        return parameters_match(self.params, self.world)

    def full_state_dicts(self, root=0):
        """The optimizers' whole state_dicts, as one process's optimizers would give them, gathered
        on rank `root` (None on the others): a checkpoint any number of ranks can resume."""
        shares = []
        for opt, groups in zip(self.optimizers, self.full_groups):
            index = {id(p): i for i, p in enumerate(p for group in groups for p in group)}
            shares.append({index[id(p)]: entries for p, entries in opt.state.items()})
        gathered = self.world.gather_object(shares, root=root)
        if gathered is None:
            return None
        whole = []
        for i, (opt, groups) in enumerate(zip(self.optimizers, self.full_groups)):
            params = [p for group in groups for p in group]
            state = type(opt.state)()
            for rank_shares in gathered:
                for idx, entries in rank_shares[i].items():
                    state[params[idx]] = entries
            # the optimizer's own state_dict, over its whole groups for a moment
            cut_groups, own_state = [group["params"] for group in opt.param_groups], opt.state
            try:
                for group, full in zip(opt.param_groups, groups):
                    group["params"] = full
                opt.state = state
                whole.append(opt.state_dict())
            finally:
                for group, cut in zip(opt.param_groups, cut_groups):
                    group["params"] = cut
                opt.state = own_state
        return whole

    def checkpoint_optimizers(self, optimizers):
        """What a checkpoint saves of the optimizers (call on every rank): on rank 0, stand-ins whose
        state_dict() is the whole gathered state; None on the others."""
        whole = self.full_state_dicts()
        return None if whole is None else [_SavedState(state) for state in whole]

    def state_bytes(self):
        """Bytes of optimizer state (arrays) this rank holds."""
        return optimizer_state_bytes(self.optimizers)


class _SavedState:
    """Stands for an optimizer in save_checkpoint: its state_dict() is one gathered from the ranks."""

    def __init__(self, state):
        self._state = state

    def state_dict(self):
        return self._state


def optimizer_state_bytes(optimizers):
    """Bytes of the arrays (moments, momentum buffers) the optimizers keep on this rank."""
    return sum(v.nbytes for opt in optimizers for entries in opt.state.values()
               for v in entries.values() if isinstance(v, np.ndarray))
