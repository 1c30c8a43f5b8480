"""Supervised fine-tuning: masked targets carry no gradient, the padded loader is deterministic
and resumable, malformed data stops the command with a one-line error naming the line, and a
short run on the synthetic tasks lifts exact-match accuracy above the starting model's."""
import json
import shutil

import numpy as np
import pytest

import minigrad
from minigrad import Tensor
from nanochat.checkpoint import load_checkpoint, save_checkpoint
from nanochat.checkpoint import load_model_and_tokenizer
from nanochat.commands import main
from nanochat.gpt import GPT, GPTConfig
from nanochat.sft import SFTLoader, collate, render_rows

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]},
    {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "And 3 + 3?"}, {"role": "assistant", "content": "6"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"},
                  {"role": "assistant", "content": "Blue"}]},
]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tok):
    """A fresh (untrained) GPT saved as a checkpoint with its tokenizer: the starting point."""
    directory = tmp_path_factory.mktemp("base")
    config = GPTConfig(sequence_len=48, vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_kv_head=1, n_embd=64)
    save_checkpoint(directory, GPT(config, seed=0), 0)
    tok.save(directory)
    return directory


def _rows(tok, conversations=CONVERSATIONS, max_tokens=None):
    return render_rows(tok, [(f"conversation {i}", c) for i, c in enumerate(conversations)], max_tokens)


def _write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_batch_targets_are_minus_one_where_masked_or_padded(tok):
    rows = _rows(tok)
    pad = tok.encode_special("<|assistant_end|>")
    x, y = collate(rows, pad)
    assert x.shape == y.shape == (3, max(len(ids) for ids, _ in rows) - 1)
    for i, (ids, mask) in enumerate(rows):
        n = len(ids) - 1
        np.testing.assert_array_equal(x[i, :n], ids[:-1])
        np.testing.assert_array_equal(y[i, :n], np.where(mask[1:], ids[1:], -1))
        assert np.all(x[i, n:] == pad) and np.all(y[i, n:] == -1)
    # the targets left are exactly the assistant's words and its <|assistant_end|>
    assistant = tok.decode([t for t in y[0] if t >= 0])
    assert assistant == "Hello there!<|assistant_end|>"


def test_masked_positions_get_exactly_zero_gradient_on_their_logits(tok, monkeypatch):
    """Run GPT.forward's own loss on an SFT batch, catching the logits as a leaf to read their gradient."""
    model = GPT(GPTConfig(sequence_len=48, vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_kv_head=1, n_embd=32))
    model.lm_head.weight.data[...] = np.random.default_rng(0).normal(0, 0.1, model.lm_head.weight.shape)
    x, y = collate(_rows(tok), tok.encode_special("<|assistant_end|>"))
    caught = []
    real_cross_entropy = minigrad.nn.functional.cross_entropy

    def spy(logits, targets, **kwargs):
        leaf = Tensor(logits.data.copy(), requires_grad=True)
        caught.append(leaf)
        return real_cross_entropy(leaf, targets, **kwargs)

    monkeypatch.setattr(minigrad.nn.functional, "cross_entropy", spy)
    model(x, targets=y).backward()
    grad = caught[0].grad.reshape(*y.shape, -1)
    masked = y == -1
    assert masked.any() and (~masked).any()
    assert np.all(grad[masked] == 0.0)
    assert np.all(np.abs(grad[~masked]).sum(axis=-1) > 0)


def test_loader_is_deterministic_and_resumes_mid_epoch_and_across_epochs(tok):
    rows = _rows(tok, CONVERSATIONS * 4)  # 12 conversations: 3 batches of 4 per epoch
    a, b, other = (SFTLoader(rows, 4, pad_id=0, seed=s) for s in (7, 7, 8))
    first = [a.next_batch() for _ in range(7)]
    for (xa, ya), (xb, yb) in zip(first, (b.next_batch() for _ in range(7))):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xo) for (xa, _), (xo, _) in zip(first, (other.next_batch() for _ in range(7))))

    for split in (2, 3, 5):
        before = SFTLoader(rows, 4, pad_id=0, seed=7)
        for _ in range(split):
            before.next_batch()
        state = json.loads(json.dumps(before.state_dict()))  # it must survive the checkpoint's JSON
        after = SFTLoader(rows, 4, pad_id=0, seed=0)
        after.load_state_dict(state)
        for x, y in first[split:]:
            xr, yr = after.next_batch()
            np.testing.assert_array_equal(x, xr)
            np.testing.assert_array_equal(y, yr)


def test_loader_refuses_state_from_other_data(tok):
    state = SFTLoader(_rows(tok), 2, pad_id=0).state_dict()
    with pytest.raises(ValueError, match="same data"):
        SFTLoader(_rows(tok, CONVERSATIONS * 2), 2, pad_id=0).load_state_dict(state)
    with pytest.raises(ValueError, match="must hold"):
        SFTLoader(_rows(tok), 2, pad_id=0).load_state_dict({"epoch": 0})


BAD_LINES = [
    ("{not json", "line 2: not valid JSON"),
    ('["a list"]', 'line 2: expected an object with a "messages" list'),
    ('{"conversation": []}', 'line 2: expected an object with a "messages" list'),
    ('{"messages": []}', "line 2: empty conversation"),
    ({"messages": [{"role": "robot", "content": "beep"}]}, "line 2: message 0: unknown role 'robot'"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "line 2: message 0: expected role 'user'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     "line 2: message 1: expected role 'assistant'"),
    ({"messages": [{"role": "user"}]}, "line 2: message 0 must be a dict with 'role' and 'content'"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "line 2: no assistant message"),
    ({"messages": [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "ok"}]},
     "line 2: no assistant token within the first 49 tokens"),
]


@pytest.mark.parametrize("bad, message", BAD_LINES)
def test_malformed_jsonl_names_the_line_and_stops_before_training(tmp_path, base, capsys, bad, message):
    data = _write_jsonl(tmp_path / "data.jsonl", [CONVERSATIONS[0], bad, CONVERSATIONS[1]])
    out = tmp_path / "out"
    assert main(["sft", "--checkpoint", str(base), "--data", str(data), "--out", str(out), "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nanochat sft: error: ") and message in err, err
    assert not out.exists() or not any(out.glob("meta_*.json"))


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{tmp}/missing"], "checkpoint directory {tmp}/missing does not exist"),
    (["--data", "{tmp}/nothing.jsonl"], "data file {tmp}/nothing.jsonl does not exist"),
    (["--data", "{tmp}/blank.jsonl"], "holds no conversations"),
    (["--steps", "0"], "--steps must be positive"),
    (["--lr-scale", "-1"], "--lr-scale must be positive"),
    (["--tasks", "juggle"], "unknown task(s) juggle"),
    (["--resume"], "no checkpoint (meta_*.json)"),
    (["--out", "{base}"], "--out must differ from --checkpoint"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, base, capsys, args, message):
    (tmp_path / "blank.jsonl").write_text("\n \n")
    (tmp_path / "resume_out").mkdir()
    fill = lambda s: s.format(tmp=tmp_path, base=base)
    argv = ["sft", "--checkpoint", str(base), "--out", str(tmp_path / "resume_out")] + [fill(a) for a in args]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fill(message) in err, err


def test_resume_matches_an_uninterrupted_run_and_output_is_self_contained(tmp_path, base, capsys):
    data = _write_jsonl(tmp_path / "data.jsonl", CONVERSATIONS * 3)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ["sft", "--checkpoint", str(base), "--data", str(data), "--steps", "6", "--batch-size", "2"]
    assert main(common + ["--out", str(straight), "--save-every", "3"]) == 0
    # a run that stopped at step 3: the same directory without the later checkpoint
    shutil.copytree(straight, resumed)
    for name in ("model_000006.safetensors", "optim_000006.safetensors", "meta_000006.json"):
        (resumed / name).unlink()
    assert main(["sft", "--checkpoint", str(base), "--out", str(resumed), "--resume"]) == 0
    assert "resuming from step 3" in capsys.readouterr().out
    a, _, _ = load_checkpoint(straight)
    b, meta, _ = load_checkpoint(resumed)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert meta["step"] == 6 and meta["source"] == str(base)
    steps = [json.loads(line)["step"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    # the output directory loads on its own (tokenizer copied), and starting over there is refused
    load_model_and_tokenizer(resumed)
    assert main(common + ["--out", str(resumed)]) == 1
    assert "already holds a fine-tuned checkpoint" in capsys.readouterr().err


def test_short_sft_run_lifts_accuracy_above_the_starting_model(tmp_path, base, capsys):
    out = tmp_path / "sft"
    argv = ["sft", "--checkpoint", str(base), "--out", str(out), "--tasks", "reverse", "--steps", "150",
            "--lr-scale", "3", "--eval-items", "50", "--eval-every", "75", "--save-every", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "accuracy.json").read_text())
    pretrained, finetuned = report["pretrained"]["overall"], report["finetuned"]["overall"]
    assert pretrained == 0.0  # an untrained model cannot reverse a word
    assert finetuned >= pretrained + 0.1, report
    assert f"fine-tuned model: exact-match accuracy {finetuned:.1%}" in printed
    assert f"pretrained model: exact-match accuracy {pretrained:.1%}" in printed
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_loss" in r] == [75, 150]
    assert log[-1]["loss"] < log[0]["loss"] / 2
