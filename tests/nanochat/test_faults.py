"""What happens when things go wrong: bad data, edited or corrupt checkpoints, sizes that cannot
fit, a full disk, closed or broken standard streams, concurrent runs, crashed saves, poisoned
updates. Each ends in a one-line error (or a quiet exit) with nothing lost and nothing half-written."""
import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minigrad
from nanochat.checkpoint import latest_step, load_checkpoint
from nanochat.commands import main
from nanochat.sft import read_jsonl

REPO = Path(__file__).resolve().parents[2]
TINY = ["--depth", "1", "--n-embd", "32", "--n-head", "2", "--vocab-size", "300", "--batch-size", "4",
        "--seq-len", "32", "--eval-every", "0", "--sample-tokens", "0"]


def run_cli(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def run_entry_point(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nanochat", *map(str, args)], capture_output=True, env=env,
                          timeout=240, **kwargs)


def assert_one_line_error(rc, stderr, command, *fragments, during_training=False):
    """Exit 1 with one line on stderr (after the progress bar's, for errors during training)."""
    assert rc == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    if during_training:
        lines = [line for line in lines if line.strip() and not line.startswith(("train:", "step "))]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"nanochat {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def saved(directory):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(("meta_", "model_", "optim_")))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over lazy dog while a small cat sleeps under warm sun".split()
    path.write_text("\n".join(" ".join(rng.choice(words, 12)) + "." for _ in range(400)))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_file):
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("run") / "out"
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 4, "--save-every", 2])
    assert rc == 0, stderr
    return out


def copy_of(run, tmp_path):
    return Path(shutil.copytree(run, tmp_path / "copy"))


# ---- bad data -----------------------------------------------------------------------------------

def test_a_folder_named_like_a_text_file_inside_data_is_skipped(tmp_path, data_file):
    (tmp_path / "data" / "x.txt").mkdir(parents=True)
    shutil.copy(data_file, tmp_path / "data" / "corpus.txt")
    rc, _, stderr = run_cli(["train", "--data", tmp_path / "data", "--out", tmp_path / "out", *TINY, "--steps", 1])
    assert rc == 0, stderr


def test_non_utf8_text_is_one_line_error_naming_file_and_line(tmp_path):
    data = tmp_path / "latin1.txt"
    data.write_bytes(b"first line\nsecond line\ncaf\xe9\n")
    rc, _, stderr = run_cli(["train", "--data", data, "--out", tmp_path / "out", *TINY, "--steps", 1])
    assert_one_line_error(rc, stderr, "train", f"{data} line 3", "not UTF-8")


@pytest.mark.parametrize("content, fragment", [
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1: JSON nested too deeply"),
    (b'{"messages": []}\n' * 0 + b'\n\n{"messages": [{"role": "user", "content": "caf\xe9"}]}\n', "line 3: not UTF-8"),
])
def test_deeply_nested_or_non_utf8_jsonl_names_the_line(tmp_path, run, content, fragment):
    data = tmp_path / "conversations.jsonl"
    data.write_bytes(content)
    with pytest.raises(ValueError, match=fragment):
        read_jsonl(data)
    rc, _, stderr = run_cli(["sft", "--checkpoint", run, "--out", tmp_path / "sft", "--data", data, "--steps", 1])
    assert_one_line_error(rc, stderr, "sft", f"{data} {fragment}")


# ---- where the output goes ------------------------------------------------------------------------

def test_out_that_is_a_file_is_refused_before_the_tokenizer_is_trained(tmp_path, data_file):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    rc, stdout, stderr = run_cli(["train", "--data", data_file, "--out", target, *TINY, "--steps", 1])
    assert_one_line_error(rc, stderr, "train", "exists and is not a directory")
    assert "tokenizer" not in stdout and target.read_text() == "keep me"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs, unwritable even for root")
def test_unwritable_out_is_one_line_error_before_anything_is_loaded(data_file):
    rc, stdout, stderr = run_cli(["train", "--data", data_file, "--out", "/sys/kernel/nanochat_run", *TINY, "--steps", 1])
    assert_one_line_error(rc, stderr, "train", "/sys/kernel/nanochat_run")
    assert "tokenizer" not in stdout


def test_disk_full_during_a_save_is_one_line_error_and_leaves_no_orphan_weights(tmp_path, data_file, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up while the optimizer state of step 2 is written
        if ".optim_000002" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out"
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 3, "--save-every", 1])
    assert_one_line_error(rc, stderr, "train", f"{out / 'optim_000002.safetensors'}: No space left on device",
                          during_training=True)
    assert saved(out) == ["meta_000001.json", "model_000001.safetensors", "optim_000001.safetensors"]
    assert not list(out.glob(".*.tmp"))
    assert load_checkpoint(out)[1]["step"] == 1


def test_files_are_created_with_the_mode_the_umask_allows(tmp_path, data_file):
    old = os.umask(0o027)
    try:
        rc, _, stderr = run_cli(["train", "--data", data_file, "--out", tmp_path / "out", *TINY, "--steps", 1])
    finally:
        os.umask(old)
    assert rc == 0, stderr
    for name in ("model_000001.safetensors", "optim_000001.safetensors", "meta_000001.json", "tokenizer.json"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o640, name


# ---- edited or corrupt checkpoints ----------------------------------------------------------------

def edit_meta(directory, edit, step=4):
    path = directory / f"meta_{step:06d}.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.update(files="x"), '"files" must be an object'),
    (lambda m: m["files"].pop("model"), '"files" must be an object listing model'),
    (lambda m: m["files"]["model"].pop("sha256"), "files.model needs a name and a sha256"),
    (lambda m: m["config"].update(n_layer=2.0), "n_layer must be an integer, got 2.0"),
    (lambda m: m["files"]["model"].update(name="../../../../etc/passwd"), "outside the checkpoint directory"),
    (lambda m: m["files"]["model"].update(name="/etc/passwd"), "outside the checkpoint directory"),
    (lambda m: m["config"].update(n_layer=10**7), "holds 1 layers but the config says n_layer = 10000000"),
    (lambda m: m["config"].update(vocab_size=10**12), "transformer.wte.weight: expected shape [1000000000000, 32]"),
    (lambda m: m["config"].update(sequence_len=10**9), "needs about"),
])
def test_edited_meta_is_one_line_error_before_anything_is_built(tmp_path, run, edit, fragment):
    directory = copy_of(run, tmp_path)
    edit_meta(directory, edit)
    start = time.monotonic()
    rc, _, stderr = run_cli(["sample", "--checkpoint", directory, "--max-tokens", 2])
    assert_one_line_error(rc, stderr, "sample", fragment)
    assert time.monotonic() - start < 10  # refused from the header, not after building the model


def rewrite_header(path, edit):
    """Edit a safetensors header in place (data untouched); returns the new file's sha256."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    raw = struct.pack("<Q", len(encoded)) + encoded + raw[8 + n:]
    path.write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("edit, fragment", [
    (lambda h: h["lm_head.weight"].update(dtype="F8_E4M3"), "has dtype F8_E4M3, which minigrad cannot load"),
    (lambda h: h["lm_head.weight"].update(data_offsets="ab"), "malformed header entry for 'lm_head.weight'"),
    (lambda h: h["lm_head.weight"].update(shape=["a", 2]), "malformed header entry for 'lm_head.weight'"),
])
def test_weight_header_with_unloadable_dtype_or_bad_offsets_is_one_line_error(tmp_path, run, edit, fragment):
    directory = copy_of(run, tmp_path)
    digest = rewrite_header(directory / "model_000004.safetensors", edit)
    edit_meta(directory, lambda m: m["files"]["model"].update(sha256=digest))  # the hash matches again
    rc, _, stderr = run_cli(["sample", "--checkpoint", directory, "--max-tokens", 2])
    assert_one_line_error(rc, stderr, "sample", "model_000004.safetensors", fragment)


def test_malformed_optimizer_metadata_on_resume_is_one_line_error(tmp_path, run):
    directory = copy_of(run, tmp_path)

    def edit(header):
        state = json.loads(header["__metadata__"]["optimizer"])
        state["optimizers"][0]["scalars"] = ["x"]
        header["__metadata__"]["optimizer"] = json.dumps(state)

    digest = rewrite_header(directory / "optim_000004.safetensors", edit)
    edit_meta(directory, lambda m: m["files"]["optim"].update(sha256=digest))
    rc, _, stderr = run_cli(["train", "--out", directory, "--resume"])
    assert_one_line_error(rc, stderr, "train", "optim_000004.safetensors: malformed optimizer state")


@pytest.mark.parametrize("value, fragment", [
    ({"steps": None}, "--steps must be given, got null"), ({"steps": "x"}, "--steps must be an integer, got 'x'"),
    ({"steps": 6.5}, "--steps must be an integer, got 6.5"),
    ({"matrix_lr": float("inf")}, "--matrix-lr must be a finite number, got inf"),
    ({"data": 5}, "--data must be text, got 5"),
])
def test_edited_training_options_in_meta_are_refused_on_resume(tmp_path, run, value, fragment):
    directory = copy_of(run, tmp_path)
    edit_meta(directory, lambda m: m["train_args"].update(value))  # json writes inf as Infinity, and reads it
    rc, _, stderr = run_cli(["train", "--out", directory, "--resume"])
    assert_one_line_error(rc, stderr, "train", fragment)
    assert saved(directory) == saved(run)


def test_train_resume_refuses_a_fine_tuning_directory_and_sft_resume_a_pretraining_one(tmp_path, run):
    directory = copy_of(run, tmp_path)
    rc, _, stderr = run_cli(["sft", "--checkpoint", tmp_path, "--out", directory, "--resume"])
    assert_one_line_error(rc, stderr, "sft", "written by nanochat train", "nanochat train --resume")
    edit_meta(directory, lambda m: m.update(sft_args=m.pop("train_args")))  # what sft writes
    rc, _, stderr = run_cli(["train", "--out", directory, "--resume"])
    assert_one_line_error(rc, stderr, "train", "written by nanochat sft", "nanochat sft --resume")


# ---- sizes that cannot fit ------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [["--depth", "100000"], ["--n-embd", "1000000", "--n-head", "1"],
                                   ["--depth", "1", "--seq-len", "1000000000"]])
def test_sizes_that_cannot_fit_are_refused_with_the_estimate_before_allocating(tmp_path, data_file, sizes):
    start = time.monotonic()
    rc, stdout, stderr = run_cli(["train", "--data", data_file, "--out", tmp_path / "out", *sizes])
    assert_one_line_error(rc, stderr, "train", "parameters", "needs about", "of memory available")
    assert time.monotonic() - start < 10 and "tokenizer" not in stdout
    assert not (tmp_path / "out").exists()


# ---- standard streams -----------------------------------------------------------------------------

def test_chat_with_stdin_closed_is_one_line_error(run):
    proc = run_entry_point(["chat", "--checkpoint", run], stdin=None, preexec_fn=lambda: os.close(0))
    assert_one_line_error(proc.returncode, proc.stderr.decode(), "chat", "standard input is closed")


@pytest.mark.parametrize("command", [["sample", "--max-tokens", "5"], ["chat", "-p", "hi", "--max-tokens", "5"]])
def test_closed_or_full_stdout_is_one_line_error(run, command):
    argv = [command[0], "--checkpoint", run, *command[1:]]
    proc = run_entry_point(argv, preexec_fn=lambda: os.close(1))
    assert_one_line_error(proc.returncode, proc.stderr.decode(), command[0], "standard output is closed")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "nanochat", *map(str, argv)], stdout=full, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=240)
    assert_one_line_error(proc.returncode, proc.stderr.decode(), command[0], "No space left on device")


def test_a_reader_that_goes_away_ends_the_output_quietly(run):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "nanochat", "sample", "--checkpoint", str(run), "--max-tokens", "300",
                             "--prompt", "the"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.read(3)
    proc.stdout.close()  # as `| head -c 3` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=240) == 141
    assert stderr == ""


# ---- poisoned training ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["train", "--embedding-lr", "inf"], ["train", "--weight-decay", "nan"], ["train", "--clip", "inf"],
    ["sft", "--weight-decay", "nan"], ["sft", "--lr-scale", "inf"],
])
def test_nonfinite_hyperparameters_are_refused_up_front(tmp_path, run, data_file, argv):
    out = tmp_path / "out"
    source = ["--data", data_file, *TINY] if argv[0] == "train" else ["--checkpoint", run]
    rc, _, stderr = run_cli([argv[0], *source, "--out", out, "--steps", 2, *argv[1:]])
    assert_one_line_error(rc, stderr, argv[0], f"{argv[1]} must be a finite number")
    assert not out.exists()


def test_an_update_that_makes_weights_nonfinite_stops_the_run_without_saving(tmp_path, data_file, monkeypatch):
    from minigrad.optim import AdamW
    real_step = AdamW.step

    def poisoning_step(self):  # finite gradients, yet the update overflows a weight
        real_step(self)
        self.param_groups[0]["params"][0].data[0, 0] = np.inf

    monkeypatch.setattr(AdamW, "step", poisoning_step)
    out = tmp_path / "out"
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 2, "--save-every", 1])
    assert_one_line_error(rc, stderr, "train", "the update of step 1 made", "non-finite", "no checkpoint was saved",
                          during_training=True)
    assert saved(out) == []


def test_bad_steps_before_any_checkpoint_say_that_none_was_saved(tmp_path, data_file, monkeypatch):
    from nanochat import train
    monkeypatch.setattr(train, "find_nonfinite", lambda loss, model: "loss")
    out = tmp_path / "out"
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 5])
    assert_one_line_error(rc, stderr, "train", "3 consecutive steps", f"no checkpoint was saved in {out}",
                          during_training=True)
    assert not (out / "tokenizer.json").exists()  # nor a tokenizer for the next run to pick up


# ---- concurrent runs, crashed saves, pruning --------------------------------------------------------

def test_a_second_run_into_a_locked_directory_is_refused_naming_the_holder(tmp_path, data_file):
    from nanochat.run_lock import RunLock
    out = tmp_path / "out"
    with RunLock(out):
        rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 1])
        assert_one_line_error(rc, stderr, "train", f"{out} is in use by another run", f"pid {os.getpid()} on")
        rc, _, stderr = run_cli(["sft", "--checkpoint", tmp_path, "--out", out])
        assert_one_line_error(rc, stderr, "sft", "is in use by another run")
    assert saved(out) == []
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 1])  # released
    assert rc == 0, stderr


def test_concurrent_runs_into_one_directory_one_wins_the_others_are_refused(tmp_path, data_file):
    out = tmp_path / "out"
    args = ["train", "--data", data_file, "--out", out, *TINY, "--steps", 40, "--save-every", 10]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "nanochat", *map(str, args)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env) for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1, 1], results
    for rc, stderr in results:
        if rc:
            assert "is in use by another run (pid" in stderr.strip().splitlines()[-1]
    assert latest_step(out) == 40
    log = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 41))  # one run's log, not three interleaved


def test_leftovers_of_a_killed_save_are_removed_by_the_next_run(tmp_path, run):
    directory = copy_of(run, tmp_path)
    leftovers = [".model_000006.safetensors.k2j3.tmp", ".optim_000006.safetensors.x9.tmp",
                 ".meta_000006.json.a1.tmp", "model_000006.safetensors"]  # killed before meta_000006 was written
    for name in leftovers:
        (directory / name).write_bytes(b"partial")
    rc, stdout, stderr = run_cli(["train", "--out", directory, "--resume", "--steps", 5])
    assert rc == 0, stderr
    assert "removed 4 file(s) of an interrupted save" in stdout
    assert not any((directory / name).exists() for name in leftovers[:3])
    assert saved(directory) == [f"{kind}_{step:06d}.{ext}" for kind, ext in (("meta", "json"), ("model", "safetensors"),
                                                                           ("optim", "safetensors")) for step in (2, 4, 5)]


def test_keep_last_keeps_the_newest_checkpoints_and_the_marked_ones(tmp_path, data_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep_2").touch()
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 6, "--save-every", 1,
                             "--keep-last", 2])
    assert rc == 0, stderr
    assert sorted(p.name for p in out.glob("meta_*")) == ["meta_000002.json", "meta_000005.json", "meta_000006.json"]
    assert not list(out.glob("model_000003*")) and not list(out.glob("optim_000004*"))


def test_resume_step_resumes_from_an_older_checkpoint_when_the_newest_is_corrupt(tmp_path, run):
    directory = copy_of(run, tmp_path)
    (directory / "model_000004.safetensors").write_bytes(b"corrupt")
    rc, _, stderr = run_cli(["train", "--out", directory, "--resume"])
    assert_one_line_error(rc, stderr, "train", "does not match the hash", "--resume-step", "saved steps: 2")
    rc, stdout, stderr = run_cli(["train", "--out", directory, "--resume-step", 2])
    assert rc == 0, stderr
    assert "resuming from step 2" in stdout
    assert (directory / "superseded" / "model_000004.safetensors").read_bytes() == b"corrupt"
    model, meta, _ = load_checkpoint(directory)  # step 4 retrained from step 2, the same as the original
    assert meta["step"] == 4
    original = minigrad.load(run / "model_000004.safetensors")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.data, original[name], err_msg=name)
