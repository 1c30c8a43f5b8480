"""`mpiexec -n 2 python -m nanochat train/sft`: the same run as one process with --grad-accum 2,
checkpoints that resume across the two, and a failing or killed rank that ends the job cleanly."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigrad.serialization import load
from nanochat.checkpoint import latest_step, load_checkpoint
from nanochat.parallel import ShardedLoader
from nanochat.sft import SFTLoader

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300
TRAIN = ["--vocab-size", "300", "--depth", "1", "--batch-size", "4", "--seq-len", "32", "--steps", "6",
         "--eval-every", "3", "--eval-batches", "3", "--save-every", "3", "--sample-tokens", "0"]


def mpiexec():
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    assert found, "mpiexec not found: pip install 'minigrad-nanochat[mpi]'"
    return found


def env():
    """One numba/BLAS thread per rank (two ranks on two cores), and no launcher variables leaking in."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_", "HYDRA_"))}
    e.update(NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return e


def nanochat(*args, ranks=1, script=("-m", "nanochat"), check=True):
    launcher = [mpiexec(), "-n", str(ranks)] if ranks > 1 else []
    out = subprocess.run([*launcher, sys.executable, *script, *map(str, args)], env=env(), capture_output=True,
                         text=True, timeout=TIMEOUT, cwd=ROOT)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def drop_last_checkpoint(directory):
    """A copy of a run as it stood at its previous checkpoint (step 3 of 6)."""
    step = latest_step(directory)
    for name in (f"model_{step:06d}.safetensors", f"optim_{step:06d}.safetensors", f"meta_{step:06d}.json"):
        (directory / name).unlink()
    (directory / "log.jsonl").write_text("".join(line + "\n" for line in (directory / "log.jsonl").read_text()
                                                 .splitlines() if json.loads(line)["step"] <= latest_step(directory)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from pydoc_data.topics import topics
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics))[:30000])
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """The same 6 steps of 2 x 128 tokens: one process with --grad-accum 2, and two ranks."""
    base = tmp_path_factory.mktemp("runs")
    one = nanochat("train", "--data", data, "--out", base / "one", "--grad-accum", "2", *TRAIN)
    two = nanochat("train", "--data", data, "--out", base / "two", *TRAIN, ranks=2)
    return base, one, two


# float32 tolerance: the mean gradient sums the two halves in another order (here the halves are
# scaled by 1/2, which is exact, so the runs agree bitwise in practice)
RTOL = 1e-5


def test_two_ranks_train_as_one_process_with_grad_accum_2(runs):
    base, one, two = runs
    a, b = log(base / "one"), log(base / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=RTOL)
    np.testing.assert_allclose([r["grad_norm"] for r in b], [r["grad_norm"] for r in a], rtol=RTOL)
    # evaluation: each rank scores its share of the validation batches, the sums are added
    np.testing.assert_allclose([r["val_loss"] for r in b if "val_loss" in r],
                               [r["val_loss"] for r in a if "val_loss" in r], rtol=RTOL)
    assert "global batch: 128 tokens x 2 ranks x 1 micro-batch = 256 tokens per step" in two.stdout
    assert "global batch: 128 tokens x 1 rank x 2 micro-batches = 256 tokens per step" in one.stdout
    # rank 0 alone prints
    assert two.stdout.count("global batch") == 1 and two.stdout.count("tokenizer:") == 1
    wa, wb = (load(base / run / "model_000006.safetensors") for run in ("one", "two"))
    for name in wa:
        np.testing.assert_allclose(wb[name], wa[name], rtol=RTOL, atol=1e-6, err_msg=name)
    _, meta, _ = load_checkpoint(base / "two")
    assert meta["ranks"] == 2 and meta["loader"] == load_checkpoint(base / "one")[1]["loader"]


@pytest.mark.parametrize("source, ranks, extra, reference", [
    ("two", 1, ["--grad-accum", "2"], "one"),  # a 2-rank checkpoint resumed by one process
    ("one", 2, ["--grad-accum", "1"], "two"),  # a 1-process checkpoint resumed by two ranks
])
def test_checkpoints_resume_across_rank_counts(runs, data, tmp_path, source, ranks, extra, reference):
    base, _, _ = runs
    out = tmp_path / "resumed"
    shutil.copytree(base / source, out)
    drop_last_checkpoint(out)
    result = nanochat("train", "--data", data, "--out", out, "--resume", *extra, *TRAIN, ranks=ranks)
    assert "resuming from step 3" in result.stdout
    assert "the global batch is as before only if ranks x --grad-accum is" in result.stdout
    resumed, full = log(out), log(base / reference)
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in full], rtol=RTOL)


def test_a_sharded_optimizer_trains_as_the_unsharded_run_on_half_the_memory(runs, data, tmp_path):
    base, _, _ = runs
    out = tmp_path / "sharded"
    result = nanochat("train", "--data", data, "--out", out, *TRAIN, "--shard-optimizer", ranks=2)
    plain, sharded = log(base / "two"), log(out)
    # each gradient is summed onto its owner from the same two halves the all-reduce adds, and
    # clipping adds the owners' squared norms: RTOL (bitwise equal in practice)
    np.testing.assert_allclose([r["loss"] for r in sharded], [r["loss"] for r in plain], rtol=RTOL)
    np.testing.assert_allclose([r["grad_norm"] for r in sharded], [r["grad_norm"] for r in plain], rtol=RTOL)
    # every rank of the plain run holds the whole state; the sharded ranks split it about evenly
    whole, per_rank = plain[0]["optimizer_bytes"], sharded[0]["optimizer_bytes"]
    assert len(per_rank) == 2 and sum(per_rank) == whole[0] and all(0.4 <= b / whole[0] <= 0.6 for b in per_rank)
    assert result.stdout.count("optimizer state per rank:") == 1
    # the checkpoint holds the whole state, gathered on rank 0: the plain run's checkpoint exactly
    for kind in ("optim", "model"):
        a, b = (load(base / "two" / f"{kind}_000006.safetensors"), load(out / f"{kind}_000006.safetensors"))
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=RTOL, atol=1e-7, err_msg=name)
    # and a sharded run resumes from it as if never stopped
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    drop_last_checkpoint(resumed)
    nanochat("train", "--data", data, "--out", resumed, "--resume", "--shard-optimizer", *TRAIN, ranks=2)
    np.testing.assert_allclose([r["loss"] for r in log(resumed)], [r["loss"] for r in plain], rtol=RTOL)


class FakeWorld:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def test_sharded_loaders_together_see_what_one_loader_sees():
    rows = [(np.arange(i + 3), np.ones(i + 3, bool)) for i in range(10)]
    single = SFTLoader(rows, 2, pad_id=0, seed=1)
    ranks = [ShardedLoader(SFTLoader(rows, 2, pad_id=0, seed=1), FakeWorld(r, 2)) for r in (0, 1)]
    for _ in range(7):  # across an epoch boundary (5 batches per epoch)
        for rank in ranks:
            expected = single.next_batch()
            for got, want in zip(rank.next_batch(), expected):
                np.testing.assert_array_equal(got, want)
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()


def test_sft_on_two_ranks(data, tmp_path):
    # a context long enough for the synthetic conversations
    nanochat("train", "--data", data, "--out", tmp_path / "base", *TRAIN, "--seq-len", "96", "--steps", "1")
    out = tmp_path / "sft"
    two = nanochat("sft", "--checkpoint", tmp_path / "base", "--out", out, "--tasks", "count", "--train-items", "64",
                   "--eval-items", "6", "--steps", "3", "--batch-size", "4", "--eval-every", "3", "--save-every", "3",
                   ranks=2)
    assert "global batch: 4 conversations x 2 ranks x 1 micro-batch = 8 conversations per step" in two.stdout
    assert two.stdout.count("fine-tuned model: exact-match accuracy") == 1
    records = log(out)
    assert [r["step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in records)
    _, meta, _ = load_checkpoint(out)
    assert meta["step"] == 3 and meta["ranks"] == 2
    # the held-out items were shared out (3 per rank) and the counts added up
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert accuracy["items"] == 6 and sum(accuracy["finetuned"]["per_task"].values()) * 6 == pytest.approx(
        6 * accuracy["finetuned"]["overall"])


FAILING_RANK = r'''
import sys
from minigrad import distributed
from nanochat import commands, dataloader

if distributed.init().rank == 1:  # rank 1's data breaks at its 3rd batch, rank 0's does not
    real, calls = dataloader.DataLoader.next_batch, []
    def next_batch(self):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("simulated bad batch")
        return real(self)
    dataloader.DataLoader.next_batch = next_batch
sys.exit(commands.main())
'''


def test_an_exception_on_one_rank_ends_the_job_with_its_message(data, tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING_RANK)
    start = time.monotonic()
    out = nanochat("train", "--data", data, "--out", tmp_path / "run", *TRAIN, "--save-every", "1",
                   ranks=2, script=(str(script),), check=False)
    assert out.returncode != 0
    assert "nanochat train: error: simulated bad batch [rank 1 of 2; stopping every rank]" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - start < TIMEOUT  # no rank left waiting
    # (rank 1 draws 2 batches per step) the 2nd step failed: only step 1's checkpoint can exist (rank
    # 0 writes it while rank 1 fails, usually in time), and what exists is whole
    steps = [int(p.name[5:11]) for p in (tmp_path / "run").glob("meta_*.json")]
    assert steps in ([], [1])
    for step in steps:
        load_checkpoint(tmp_path / "run", step)


def _rank_pid(launcher_pid, rank):
    """The pid of a rank started (through hydra's proxy) by our mpiexec, read from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
            except (OSError, IndexError):
                continue
    todo, seen = [launcher_pid], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(children.get(pid, []))
    for pid in seen:
        try:
            environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environ:
            return pid
    return None


def test_a_killed_rank_ends_the_job_and_leaves_whole_checkpoints(data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", out, *TRAIN, "--steps", "400", "--save-every", "1"]
    proc = subprocess.Popen([mpiexec(), "-n", "2", sys.executable, "-m", "nanochat", *map(str, args)], env=env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "meta_000002.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach step 2"
            time.sleep(0.2)
        pid = _rank_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    # rank 0's death watch names the killed rank (mpiexec's own banner follows it)
    said = stdout + stderr
    assert [line for line in said.splitlines() if line.startswith("nanochat: error:")] == [
        f"nanochat: error: rank 1 of 2 (pid {pid} on {socket.gethostname()}) died without a word (killed, or "
        f"crashed outside Python); the launcher stops every rank"], said[-3000:]
    assert "Traceback" not in said
    steps = sorted(int(p.name[5:11]) for p in out.glob("meta_*.json"))
    assert steps and steps[-1] < 400
    for step in steps:  # every checkpoint that has its meta is whole (the hashes in meta match)
        load_checkpoint(out, step)


def test_ctrl_c_stops_every_rank_at_one_step_and_saves_once(data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", out, *TRAIN, "--steps", "400", "--save-every", "1000"]
    proc = subprocess.Popen([mpiexec(), "-n", "2", sys.executable, "-m", "nanochat", *map(str, args)], env=env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "log.jsonl").exists() or len((out / "log.jsonl").read_text().splitlines()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach step 2"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # mpiexec passes it on to every rank
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    assert stdout.count("interrupted: saved a checkpoint at step") == 1
    step = latest_step(out)
    assert 2 <= step < 400 and len(list(out.glob("meta_*.json"))) == 1
    assert load_checkpoint(out)[1]["ranks"] == 2
