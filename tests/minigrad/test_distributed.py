"""minigrad.distributed: launch detection, buckets, and (under `mpiexec -n 2`) gradient averaging that
matches one process on the whole batch, parameter broadcast and bitwise-identical ranks."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigrad import distributed
from minigrad.nn import Parameter

ROOT = Path(__file__).resolve().parents[2]


def mpiexec():
    """The launcher installed beside this Python (the mpich wheel's), else the one on PATH."""
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    assert found, "mpiexec not found: pip install 'minigrad-nanochat[mpi]'"
    return found


def single_thread_env():
    """One numba/BLAS thread per rank (two ranks on two cores), and no launcher variables leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_", "HYDRA_"))}
    env.update(NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def test_launched_size_reads_the_launchers_variables():
    assert distributed.launched_size({}) == 1
    assert distributed.launched_size({"PMI_SIZE": "2", "PMI_RANK": "0"}) == 2
    assert distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    with pytest.raises(RuntimeError, match="PMI_SIZE='x' is not a process count"):
        distributed.launched_size({"PMI_SIZE": "x"})


def test_a_single_process_never_imports_mpi4py():
    code = ("import sys; from minigrad import distributed; w = distributed.init(); "
            "print(w.rank, w.size, 'mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=single_thread_env(), capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["0", "1", "False"]


def test_single_process_world_leaves_everything_as_it_is():
    world = distributed.World()
    p = Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    p.grad = np.ones((2, 3), np.float32)
    grad = p.grad
    distributed.all_reduce_gradients([p], world)
    distributed.broadcast_parameters([p], world)
    assert p.grad is grad and world.bytes_communicated == 0
    assert world.shard([1, 2, 3]) == [1, 2, 3] and world.is_main
    np.testing.assert_array_equal(world.sum_values(1, 2.5), [1.0, 2.5])


def test_buckets_split_by_size_and_dtype():
    ps = [Parameter(np.zeros(n, dtype)) for n, dtype in
          ((10, np.float32), (10, np.float32), (30, np.float32), (5, np.float64), (5, np.float32))]
    groups = distributed.buckets(ps, bucket_bytes=80)
    assert [[id(p) for p in g] for g in groups] == [[id(ps[0]), id(ps[1])], [id(ps[2])], [id(ps[3])], [id(ps[4])]]
    assert sum(len(g) for g in distributed.buckets(ps)) == len(ps) and len(distributed.buckets(ps)) == 3


def test_world_rejects_non_contiguous_buffers_under_mpi():
    class FakeComm:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2
    with pytest.raises(ValueError, match="C-contiguous"):
        distributed.World(FakeComm()).all_reduce(np.zeros((4, 4))[:, 0])


WORKER = r'''
import json, sys
import numpy as np
from minigrad import Tensor, distributed, nn
from minigrad.optim import SGD

world = distributed.init()
bucket_bytes = int(sys.argv[1])
rng = np.random.default_rng(123)
x_all = rng.standard_normal((8, 5)).astype(np.float32)   # the global batch
y_all = rng.standard_normal((8, 3)).astype(np.float32)

class MLP(nn.Module):
    def __init__(self):
        self.fc1, self.fc2 = nn.Linear(5, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.fc1(Tensor(x)).tanh())

def build(seed):
    model = MLP()
    r = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = r.standard_normal(p.shape) * 0.5
    return model

def mse(model, x, y):
    d = model(x) - y
    return (d * d).mean()

unused = nn.Parameter(np.ones(4, np.float32))  # never in the graph: its gradient stays None
model = build(seed=world.rank)                  # different starts: DataParallel must broadcast rank 0's
ddp = distributed.DataParallel(model.parameters() + [unused], world, bucket_bytes=bucket_bytes)
opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
losses, synced = [], []
for step in range(3):
    opt.zero_grad()
    loss = mse(model, world.shard(x_all), world.shard(y_all))
    loss.backward()
    ddp.sync_gradients()
    opt.step()
    losses.append(float(world.sum_values(loss.item())[0]) / world.size)
    synced.append(ddp.in_sync())

# the same three steps in this one process, on the whole batch
reference = build(seed=0)
ref_opt = SGD(reference.parameters(), lr=0.1, momentum=0.9)
ref_losses = []
for step in range(3):
    ref_opt.zero_grad()
    loss = mse(reference, x_all, y_all)
    loss.backward()
    ref_opt.step()
    ref_losses.append(loss.item())
diff = max(float(np.abs(a.data - b.data).max()) for a, b in zip(model.parameters(), reference.parameters()))
report = dict(rank=world.rank, size=world.size, losses=losses, ref_losses=ref_losses, max_diff=diff,
                      synced=synced, unused_grad=unused.grad is None, bytes=world.bytes_communicated,
                      grad_bytes=ddp.gradient_bytes())
with open(f"{sys.argv[2]}/rank{world.rank}.json", "w") as f:  # ranks' stdout lines may interleave
    json.dump(report, f)
'''


@pytest.mark.parametrize("bucket_bytes", [distributed.BUCKET_BYTES, 64])
def test_two_ranks_match_one_process_on_the_whole_batch(tmp_path, bucket_bytes):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script), str(bucket_bytes), str(tmp_path)],
                         env=single_thread_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1] and all(r["size"] == 2 for r in reports)
    for r in reports:
        # float32: the mean of two half-batch means sums in another order than one whole-batch mean
        np.testing.assert_allclose(r["losses"], r["ref_losses"], rtol=1e-5)
        assert r["max_diff"] < 1e-5, r
        assert r["synced"] == [True, True, True]
        assert r["unused_grad"]
    assert reports[0]["losses"] == reports[1]["losses"]
    # per rank: the initial broadcast of the five parameters, then per step the has-a-gradient
    # flags (five int32), the gradients (all but the unused parameter's 4 floats) and the loss
    total = reports[0]["grad_bytes"]
    assert reports[0]["bytes"] == total + 3 * (5 * 4 + (total - 4 * 4) + 8)


def test_a_failed_collective_says_another_rank_is_gone():
    code = """
from mpi4py import MPI
from minigrad import distributed
import numpy as np

class DeadPeer:
    def Get_rank(self): return 0
    def Get_size(self): return 2
    def Allreduce(self, *args, **kwargs): raise MPI.Exception(MPI.ERR_OTHER)

try:
    distributed.World(DeadPeer()).all_reduce(np.zeros(3))
except distributed.CollectiveError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], env=single_thread_env(), capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.startswith("rank 0 of 2 lost the other ranks (one probably died): "), out.stdout


SHARDED_WORKER = r"""
import json, sys
import numpy as np
from minigrad import Tensor, distributed, nn
from minigrad.optim import AdamW
from minigrad.nn.utils import clip_grad_norm_

world = distributed.init()
rng = np.random.default_rng(7)
x_all = rng.standard_normal((8, 6)).astype(np.float32)
y_all = rng.standard_normal((8, 2)).astype(np.float32)

class MLP(nn.Module):
    def __init__(self, seed):
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 32), nn.Linear(32, 16), nn.Linear(16, 2)
        r = np.random.default_rng(seed)
        for p in self.parameters():
            p.data[...] = r.standard_normal(p.shape) * 0.3

    def forward(self, x):
        return self.fc3(self.fc2(self.fc1(Tensor(x)).tanh()).tanh())

def train(model, step, zero_grad, x, y):
    for _ in range(4):
        zero_grad()
        d = model(x) - y
        (d * d).mean().backward()
        step()

model = MLP(seed=world.rank)
opt = AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
sharded = distributed.ShardedOptimizer(opt, world)
train(model, sharded.step, sharded.zero_grad, world.shard(x_all), world.shard(y_all))

reference = MLP(seed=0)
ref_opt = AdamW(reference.parameters(), lr=0.05, weight_decay=0.1)
train(reference, ref_opt.step, ref_opt.zero_grad, x_all, y_all)
diff = max(float(np.abs(a.data - b.data).max()) for a, b in zip(model.parameters(), reference.parameters()))
full_state = sum(v.nbytes for e in ref_opt.state.values() for v in e.values() if isinstance(v, np.ndarray))

def state_diff(whole, ref):  # whole state_dicts: the same entries, arrays within float32 rounding
    if whole is None:
        return None
    assert whole["param_groups"] == ref["param_groups"] and whole["state"].keys() == ref["state"].keys()
    return max(float(np.abs(np.asarray(whole["state"][i][k]) - np.asarray(v)).max())
               for i in ref["state"] for k, v in ref["state"][i].items())

# clipping between the reduction and the update: the norm of the whole gradient, from the owners' shares
clipped = MLP(seed=world.rank)
clip_opt = AdamW(clipped.parameters(), lr=0.05)
clip_sharded = distributed.ShardedOptimizer(clip_opt, world)
clip_ref = MLP(seed=0)
clip_ref_opt = AdamW(clip_ref.parameters(), lr=0.05)
norms, ref_norms = [], []
def sharded_clipped_step():
    clip_sharded.sync_gradients()
    norms.append(clip_sharded.clip_grad_norm_(0.05))
    clip_opt.step()
    clip_sharded.share_updates()
def reference_clipped_step():
    ref_norms.append(clip_grad_norm_(clip_ref.parameters(), 0.05))
    clip_ref_opt.step()
train(clipped, sharded_clipped_step, clip_sharded.zero_grad, world.shard(x_all), world.shard(y_all))
train(clip_ref, reference_clipped_step, clip_ref_opt.zero_grad, x_all, y_all)
whole = sharded.full_state_dicts()  # every rank takes part; rank 0 receives
with open(f"{sys.argv[1]}/rank{world.rank}.json", "w") as f:
    json.dump(dict(max_diff=diff, synced=distributed.parameters_match(model.parameters(), world),
                   state_bytes=sharded.state_bytes(), full_state_bytes=full_state,
                   whole_state_diff=state_diff(whole[0] if whole else None, ref_opt.state_dict()),
                   norms=norms, ref_norms=ref_norms,
                   clipped_diff=max(float(np.abs(a.data - b.data).max())
                                    for a, b in zip(clipped.parameters(), clip_ref.parameters()))), f)
"""


def test_sharded_optimizer_matches_one_process_with_a_share_of_the_state(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_WORKER)
    out = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script), str(tmp_path)],
                         env=single_thread_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for r in reports:
        assert r["max_diff"] < 1e-5 and r["synced"], r
        assert 0 < r["state_bytes"] < r["full_state_bytes"]
    # every parameter's moments live on exactly one rank
    assert reports[0]["state_bytes"] + reports[1]["state_bytes"] == reports[0]["full_state_bytes"]
    # rank 0 gathers the whole state, as one process's optimizer holds it
    assert reports[0]["whole_state_diff"] < 1e-5 and reports[1]["whole_state_diff"] is None
    # clipping uses the norm of the whole gradient (the steps clip: the norms exceed 0.05)
    for r in reports:
        assert min(r["ref_norms"]) > 0.05
        np.testing.assert_allclose(r["norms"], r["ref_norms"], rtol=1e-5)
        assert r["clipped_diff"] < 1e-5, r


KILLED = '''
import os, signal, sys, time
from minigrad import distributed
world = distributed.init(name="toy")
if world.rank == int(sys.argv[1]):
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
'''


@pytest.mark.parametrize("victim", [0, 1])
def test_under_mpiexec_a_killed_rank_is_named_on_the_jobs_stderr(tmp_path, victim):
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    out = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script), str(victim)], env=single_thread_env(),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.startswith("toy: error:")]
    assert len(lines) == 1 and f"rank {victim} of 2 (pid " in lines[0], out.stderr
