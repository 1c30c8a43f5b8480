"""The `nanochat` command end to end: train (in-process and through `python -m nanochat`), resume,
Ctrl-C, every bad-input message, and sample. Sizes are tiny so each run takes seconds; runs are
shared through module-scoped fixtures."""
import contextlib
import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minigrad
from nanochat.checkpoint import latest_step, load_checkpoint
from nanochat.commands import main
from nanochat.tokenizer import Tokenizer

TINY = ["--depth", "1", "--n-embd", "32", "--n-head", "2", "--vocab-size", "300",
        "--batch-size", "4", "--seq-len", "32"]
STEPS = 12
SAVE_EVERY = 6


def run_cli(args):
    """main(args) in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def read_log(directory):
    # parse_constant rejects NaN/Infinity: the log must be strict JSON
    def reject(name):
        raise AssertionError(f"non-JSON constant {name} in log.jsonl")
    return [json.loads(line, parse_constant=reject) for line in (Path(directory) / "log.jsonl").read_text().splitlines()]


def saved_steps(directory):
    return sorted(int(p.stem.split("_")[1]) for p in Path(directory).glob("meta_*.json"))


def write_corpus(path):
    rng = random.Random(0)
    words = ("the quick brown fox jumps over lazy dog while a small cat sleeps under warm sun "
             "and birds sing in tall green trees").split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(400)))
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus.txt")


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, data_file):
    """An uninterrupted in-process run of STEPS steps, checkpoints every SAVE_EVERY."""
    out = tmp_path_factory.mktemp("run_a") / "out"
    rc, stdout, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", STEPS,
                                  "--eval-every", 6, "--save-every", SAVE_EVERY, "--sample-tokens", 10])
    return dict(out=out, rc=rc, stdout=stdout, stderr=stderr, log=read_log(out))


def copy_run(run, dest):
    shutil.copytree(run["out"], dest)
    return dest


def drop_checkpoints_after(directory, step):
    for p in list(Path(directory).iterdir()):
        parts = p.stem.split("_")
        if p.name.startswith(("model_", "optim_", "meta_")) and int(parts[1]) > step:
            p.unlink()


# ---- one short run --------------------------------------------------------------------------------

def test_train_exits_zero_and_loss_falls(run_a):
    assert run_a["rc"] == 0, run_a["stderr"]
    losses = [r["loss"] for r in run_a["log"]]
    assert all(math.isfinite(x) for x in losses)
    # lm_head starts at zero, so the first loss is that of uniform logits over the 300 tokens
    assert losses[0] == pytest.approx(math.log(300), abs=1e-3)
    assert losses[-1] < 0.6 * losses[0], losses


def test_log_has_one_record_per_step_and_evals_on_eval_steps(run_a):
    log = run_a["log"]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    for r in log:
        assert {"step", "loss", "lr", "tok_per_s"} <= r.keys()
        assert r["tok_per_s"] > 0 and r["lr"] > 0
        assert not r.get("skipped")
        if r["step"] % 6 == 0:
            assert math.isfinite(r["val_loss"]) and r["val_bpb"] > 0
        else:
            assert "val_loss" not in r and "val_bpb" not in r
    assert log[-1]["val_loss"] < log[5]["val_loss"]
    # nanochat's schedule: flat, then the last 20% (round(2.4) = 2 steps) warm down to 0
    assert log[-1]["lr"] == pytest.approx(log[0]["lr"] / 2)
    assert all(r["lr"] == log[0]["lr"] for r in log[:-1])


def test_checkpoints_at_save_steps_and_end_with_tokenizer_beside(run_a):
    out = run_a["out"]
    assert saved_steps(out) == [6, 12]
    for step in (6, 12):
        assert (out / f"model_{step:06d}.safetensors").is_file()
        assert (out / f"optim_{step:06d}.safetensors").is_file()
        model, meta, optim = load_checkpoint(out, step)
        assert meta["step"] == step and len(optim) == 2
        assert meta["loss"] == run_a["log"][step - 1]["loss"]
        assert meta["loader"] == {"epoch": 0, "position": step, "seed": 0}
        assert model.config.vocab_size == 300 and model.config.n_embd == 32 and model.config.n_layer == 1
    tokenizer = Tokenizer.load(out)
    assert tokenizer.vocab_size == 300
    assert "tokenizer: training a 300-token BPE" in run_a["stdout"]


def test_loss_plot_and_sample_written(run_a):
    png = run_a["out"] / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"loss curve: {png}" in run_a["stdout"]
    sample = run_a["stdout"].split("sample:\n", 1)[1]
    assert sample.strip(), run_a["stdout"]


def test_entry_point_trains_on_default_corpus(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nanochat", "train", "--out", str(out), *TINY, "--steps", "6",
                           "--eval-every", "3", "--eval-batches", "2", "--save-every", "3", "--sample-tokens", "10"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 7))
    assert [r["step"] for r in log if "val_bpb" in r] == [3, 6]
    assert log[-1]["loss"] < log[0]["loss"] - 1.0, [r["loss"] for r in log]
    assert saved_steps(out) == [3, 6]
    assert Tokenizer.load(out).vocab_size == 300
    assert (out / "loss.png").is_file()
    assert proc.stdout.split("sample:\n", 1)[1].strip()

    # and the sample command through the entry point
    proc = subprocess.run([sys.executable, "-m", "nanochat", "sample", "--checkpoint", str(out), "--prompt", "def ",
                           "--max-tokens", "12", "--seed", "3"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("def ") and len(proc.stdout) > len("def \n")


def test_short_seq_len_with_default_sample_tokens_still_ends_cleanly(tmp_path, data_file):
    # the model runs 10 x seq_len positions (80 here), fewer than the default 120 sample tokens
    out = tmp_path / "run"
    rc, stdout, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY[:-1], "8", "--steps", 2,
                                  "--eval-every", 0])
    assert rc == 0, stderr
    assert saved_steps(out) == [2]
    assert stdout.split("sample:\n", 1)[1].strip()


# ---- resume -------------------------------------------------------------------------------------

def test_resume_from_mid_run_checkpoint_matches_uninterrupted_run(tmp_path, run_a, data_file):
    out = copy_run(run_a, tmp_path / "b")
    drop_checkpoints_after(out, SAVE_EVERY)
    (out / "loss.png").unlink()
    tokenizer_files = {p.name: p.read_bytes() for p in out.glob("tokenizer.*")}
    # log.jsonl keeps A's lines past step 6: resume must drop them, not append after them
    rc, stdout, stderr = run_cli(["train", "--out", out, "--resume", "--sample-tokens", 0])
    assert rc == 0, stderr
    assert f"tokenizer: reusing {out}" in stdout
    assert f"resuming from step {SAVE_EVERY}" in stdout
    assert {p.name: p.read_bytes() for p in out.glob("tokenizer.*")} == tokenizer_files

    log_b = read_log(out)
    assert [r["step"] for r in log_b] == list(range(1, STEPS + 1))
    for a, b in zip(run_a["log"], log_b):
        assert (b["loss"], b["lr"], b.get("val_loss"), b.get("val_bpb")) == \
            (a["loss"], a["lr"], a.get("val_loss"), a.get("val_bpb")), b["step"]
    assert saved_steps(out) == [6, 12]
    # the final weights and optimizer moments are bit-identical too
    for kind in ("model", "optim"):
        a = minigrad.load(run_a["out"] / f"{kind}_{STEPS:06d}.safetensors")
        b = minigrad.load(out / f"{kind}_{STEPS:06d}.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{kind} {name}")


def test_resume_options_given_on_command_line_win_over_checkpoint(tmp_path, run_a):
    out = copy_run(run_a, tmp_path / "c")
    drop_checkpoints_after(out, SAVE_EVERY)
    rc, _, stderr = run_cli(["train", "--out", out, "--resume", "--unembedding-lr", 0.008, "--sample-tokens", 0])
    assert rc == 0, stderr
    log = read_log(out)
    lr_scale = (32 / 768) ** -0.5  # AdamW rates scale with 1/sqrt(width), as in nanochat
    assert log[0]["lr"] == pytest.approx(0.004 * lr_scale)  # steps before the resume: the old rate
    for r in log[SAVE_EVERY:-1]:
        assert r["lr"] == pytest.approx(0.008 * lr_scale), r
    assert log[-1]["lr"] == pytest.approx(0.008 * lr_scale / 2)
    _, meta, _ = load_checkpoint(out)
    assert meta["train_args"]["unembedding_lr"] == 0.008


@pytest.mark.parametrize("option, value", [("--depth", 4), ("--n-embd", 64), ("--seed", 5), ("--batch-size", 2),
                                           ("--seq-len", 16), ("--vocab-size", 280)])
def test_resume_refuses_options_that_fix_the_model_or_data(tmp_path, run_a, option, value):
    out = copy_run(run_a, tmp_path / "c")
    drop_checkpoints_after(out, SAVE_EVERY)
    before = sorted(p.name for p in out.iterdir())
    rc, _, stderr = run_cli(["train", "--out", out, "--resume", option, value])
    assert_one_line_error(rc, stderr, "train", f"{option} cannot change on --resume")
    assert sorted(p.name for p in out.iterdir()) == before


def test_resume_without_optimizer_state_is_one_line_error(tmp_path, run_a, data_file):
    from nanochat.checkpoint import save_checkpoint
    out = tmp_path / "weights_only"
    model, meta, _ = load_checkpoint(run_a["out"])
    save_checkpoint(out, model, 3, meta={"train_args": meta["train_args"], "loader": meta["loader"]})
    shutil.copy(run_a["out"] / "tokenizer.json", out)
    shutil.copy(run_a["out"] / "tokenizer.tiktoken", out)
    rc, _, stderr = run_cli(["train", "--out", out, "--resume"])
    assert_one_line_error(rc, stderr, "train", "holds no state for this run's optimizers")


@pytest.mark.parametrize("extra, fragment", [
    (["--clip", "-1"], "--clip must not be negative, got -1.0"),
    (["--matrix-lr", "-0.1"], "--matrix-lr must not be negative"),
    (["--warmup-ratio", "0.9"], "--warmup-ratio + --warmdown-ratio must be at most 1"),
    (["--warmdown-ratio", "1.5"], "--warmdown-ratio must be in [0, 1]"),
    (["--val-fraction", "0"], "--val-fraction must be in (0, 1)"),
    (["--sample-tokens", "-5"], "--sample-tokens must not be negative"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, data_file, extra, fragment):
    out = tmp_path / "out"
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 2, *extra])
    assert_one_line_error(rc, stderr, "train", fragment)
    assert not out.exists()


# ---- Ctrl-C -------------------------------------------------------------------------------------

def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, data_file):
    out = tmp_path / "run"
    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(stdout_path, "w") as so, open(stderr_path, "w") as se:
        proc = subprocess.Popen([sys.executable, "-m", "nanochat", "train", "--data", str(data_file), "--out", str(out),
                                 *TINY, "--steps", "400", "--eval-every", "0", "--save-every", "0",
                                 "--sample-tokens", "5"], cwd=tmp_path, stdout=so, stderr=se)
        try:
            deadline = time.monotonic() + 120
            log = out / "log.jsonl"
            while not (log.exists() and log.read_text().strip()):
                assert proc.poll() is None, stderr_path.read_text()
                assert time.monotonic() < deadline, "no step was logged within 120 s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout, stderr = stdout_path.read_text(), stderr_path.read_text()
    assert rc == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    records = read_log(out)
    n = len(records)
    assert 1 <= n < 400
    assert [r["step"] for r in records] == list(range(1, n + 1))
    assert f"interrupted: saved a checkpoint at step {n} in {out}" in stdout
    assert saved_steps(out) == [n] and latest_step(out) == n
    _, meta, _ = load_checkpoint(out)
    assert meta["step"] == n and meta["loader"] == {"epoch": 0, "position": n, "seed": 0}


# ---- bad input ----------------------------------------------------------------------------------

def assert_one_line_error(rc, stderr, command, fragment):
    assert rc != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"nanochat {command}: error: "), lines[0]
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case, extra, fragment", [
    ("missing", [], "text path does not exist"),
    ("empty", [], "no text in"),
    ("short", [], "not enough tokens for one batch"),
    ("ok", ["--steps", "0"], "--steps must be positive, got 0"),
    ("ok", ["--steps", "-3"], "--steps must be positive, got -3"),
    ("ok", ["--batch-size", "0"], "--batch-size must be positive, got 0"),
    ("ok", ["--batch-size", "-2"], "--batch-size must be positive, got -2"),
])
def test_bad_training_input_is_one_line_error(tmp_path, data_file, case, extra, fragment):
    data = {"missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt",
            "short": tmp_path / "short.txt", "ok": data_file}[case]
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("hello world, a short text.\n")
    rc, _, stderr = run_cli(["train", "--data", data, "--out", tmp_path / "out", *TINY, "--steps", 2, *extra])
    assert_one_line_error(rc, stderr, "train", fragment)
    assert not list((tmp_path / "out").glob("meta_*.json"))  # glob of a missing folder is empty too


def test_training_from_scratch_refuses_a_directory_with_checkpoints(tmp_path, run_a, data_file):
    out = copy_run(run_a, tmp_path / "d")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 2])
    assert_one_line_error(rc, stderr, "train", "already holds checkpoints (latest step 12)")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing lost


def test_leftover_tokenizer_without_checkpoints_is_replaced_not_reused(tmp_path, data_file):
    # a failed run's tokenizer, from other data: a fresh run must train its own, not inherit this one
    out = tmp_path / "out"
    other_text = " ".join(f"zq{i % 97}x" for i in range(3000))
    Tokenizer.train([other_text], 300).save(out)
    leftover = {p.name: p.read_bytes() for p in out.glob("tokenizer.*")}
    rc, stdout, stderr = run_cli(["train", "--data", data_file, "--out", out, *TINY, "--steps", 2, "--sample-tokens", 0])
    assert rc == 0, stderr
    assert "tokenizer: training a 300-token BPE" in stdout
    assert {p.name: p.read_bytes() for p in out.glob("tokenizer.*")} != leftover
    assert Tokenizer.load(out).encode("the quick brown fox") == Tokenizer.train([data_file.read_text()], 300).encode(
        "the quick brown fox")


def test_failed_run_leaves_no_tokenizer_behind(tmp_path):
    (tmp_path / "short.txt").write_text("hello world, a short text.\n")
    rc, _, _ = run_cli(["train", "--data", tmp_path / "short.txt", "--out", tmp_path / "out", *TINY, "--steps", 2])
    assert rc == 1 and not (tmp_path / "out" / "tokenizer.json").exists()


@pytest.mark.parametrize("option", ["--n-embd", "--n-head", "--n-layer", "--n-kv-head"])
def test_zero_model_sizes_are_rejected_not_ignored(tmp_path, data_file, option):
    args = [a for a in TINY]
    if option in args:
        i = args.index(option)
        del args[i:i + 2]
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", tmp_path / "out", *args, option, 0, "--steps", 2])
    assert_one_line_error(rc, stderr, "train", "must be a positive number, got 0")


def test_resume_without_checkpoint_is_one_line_error(tmp_path, data_file):
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", tmp_path / "absent", "--resume"])
    assert_one_line_error(rc, stderr, "train", "does not exist")
    (tmp_path / "empty").mkdir()
    rc, _, stderr = run_cli(["train", "--data", data_file, "--out", tmp_path / "empty", "--resume"])
    assert_one_line_error(rc, stderr, "train", "no checkpoint")


def replace_tokenizer(directory, data_file, vocab_size):
    for p in Path(directory).glob("tokenizer.*"):
        p.unlink()
    tokenizer = Tokenizer.train([data_file.read_text()], vocab_size)
    assert tokenizer.vocab_size == vocab_size
    tokenizer.save(directory)


def test_vocab_mismatch_between_tokenizer_and_model_is_one_line_error(tmp_path, run_a, data_file):
    out = copy_run(run_a, tmp_path / "d")
    replace_tokenizer(out, data_file, 280)
    rc, _, stderr = run_cli(["sample", "--checkpoint", out, "--prompt", "the", "--max-tokens", 5])
    assert_one_line_error(rc, stderr, "sample", "the tokenizer has 280 tokens but the model expects 300")
    rc, _, stderr = run_cli(["train", "--out", out, "--resume"])
    assert_one_line_error(rc, stderr, "train", "the tokenizer has 280 tokens but the model expects 300")
    assert saved_steps(out) == [6, 12]


def test_sample_on_missing_directory_is_one_line_error(tmp_path):
    rc, _, stderr = run_cli(["sample", "--checkpoint", tmp_path / "nowhere"])
    assert_one_line_error(rc, stderr, "sample", f"checkpoint directory {tmp_path / 'nowhere'} does not exist")


@pytest.mark.parametrize("argv, command, fragment", [
    (["train", "--data", "{tmp}/nope.txt", "--out", "{tmp}/out"], "train", "text path does not exist"),
    (["sample", "--checkpoint", "{tmp}/nowhere"], "sample", "does not exist"),
    (["train", "--out", "{tmp}/out", "--resume"], "train", "does not exist"),
])
def test_entry_point_exits_nonzero_with_one_line(tmp_path, argv, command, fragment):
    argv = [a.format(tmp=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "nanochat", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert_one_line_error(proc.returncode, proc.stderr, command, fragment)


# ---- sample -------------------------------------------------------------------------------------

def sample(run, *extra):
    rc, stdout, stderr = run_cli(["sample", "--checkpoint", run["out"], "--prompt", "the quick", *extra])
    assert rc == 0, stderr
    assert stdout.startswith("the quick") and stdout.endswith("\n")
    return stdout


def test_sample_same_seed_same_text(run_a):
    args = ["--max-tokens", 20, "--temperature", 0.9, "--top-k", 50, "--top-p", 0.95]
    first = sample(run_a, *args, "--seed", 7)
    assert len(first) > len("the quick\n")
    assert sample(run_a, *args, "--seed", 7) == first
    others = {sample(run_a, *args, "--seed", s) for s in (1, 2, 3)}
    assert others - {first}, "every seed gave the same text"


def test_sample_temperature_zero_is_greedy(run_a):
    text = sample(run_a, "--max-tokens", 15, "--temperature", 0)
    assert sample(run_a, "--max-tokens", 15, "--temperature", 0, "--seed", 99) == text
    # greedy decoding by hand: argmax of the full forward pass, one token at a time
    model, _, _ = load_checkpoint(run_a["out"])
    tokenizer = Tokenizer.load(run_a["out"])
    ids = [tokenizer.bos_token_id] + tokenizer.encode("the quick")
    prompt_len = len(ids)
    with minigrad.no_grad():
        for _ in range(15):
            ids.append(int(np.argmax(model(np.array([ids])).data[0, -1])))
    assert text == "the quick" + tokenizer.decode(ids[prompt_len:]) + "\n"


def test_sample_streams_token_by_token(run_a, monkeypatch):
    class Recorder:
        def __init__(self):
            self.writes, self.flushes = [], 0

        def write(self, s):
            self.writes.append(s)
            return len(s)

        def flush(self):
            self.flushes += 1

    recorder = Recorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    assert main(["sample", "--checkpoint", str(run_a["out"]), "--prompt", "the", "--max-tokens", "12",
                 "--temperature", "0"]) == 0
    assert recorder.flushes >= 12  # flushed after every token, not once at the end
    assert sum(1 for w in recorder.writes if w) >= 2
    assert "".join(recorder.writes).startswith("the")
