"""Chat: Engine stops at <|assistant_end|> and the context limit and trims old turns; the
`nanochat chat` command answers -p, reads a pipe line by line, and exits 0 on EOF and Ctrl-C."""
import signal
import subprocess
import sys

import numpy as np
import pytest

import nanochat
import nanochat.gpt
from nanochat.checkpoint import save_checkpoint
from nanochat.dataloader import load_text
from nanochat.engine import Engine
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer

SEQ_LEN = 48


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([load_text()[:50_000]], 300)


@pytest.fixture(scope="module")
def model(tok):
    """An untrained GPT whose replies are one line of visible text: random logits for tokens of
    printable ASCII (not all spaces), zero for the rest, which then never reach the top 50."""
    m = GPT(GPTConfig(sequence_len=SEQ_LEN, vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_kv_head=1, n_embd=32))
    rng = np.random.default_rng(0)
    for name, p in m.named_parameters():  # non-zero blocks, so attention (and the cache) shape every reply
        if name.startswith("transformer.h."):
            p.data[...] = rng.normal(0, 0.3, p.shape)
    weight = rng.normal(0, 1.0, m.lm_head.weight.shape)
    for token in range(tok.vocab_size):
        text = tok.decode_bytes([token])
        if token in tok.special_tokens.values() or not (text.strip() and all(32 <= b < 127 for b in text)):
            weight[token] = 0.0
    m.lm_head.weight.data[...] = weight
    return m


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok, model):
    directory = tmp_path_factory.mktemp("chat")
    save_checkpoint(directory, model, 0)
    tok.save(directory)
    return directory


def _script(monkeypatch, tokens):
    """Make generation emit `tokens` in order (then token 65, forever), whatever the logits."""
    queue = list(tokens)
    monkeypatch.setattr(nanochat.gpt, "sample_next_token",
                        lambda logits, rng, *a, **k: np.array([queue.pop(0) if queue else 65]))


def _user(text):
    return {"role": "user", "content": text}


def test_engine_is_exported_and_stops_before_assistant_end(tok, model, monkeypatch):
    assert nanochat.Engine is Engine
    end = tok.encode_special("<|assistant_end|>")
    _script(monkeypatch, [72, 105, end, 66])
    engine = Engine(model, tok)
    assert list(engine.chat([_user("hello")])) == [72, 105]
    _script(monkeypatch, [72, 105, end])
    assert engine.reply([_user("hello")]) == "Hi"


def test_engine_stops_at_the_context_limit(tok, model, monkeypatch):
    _script(monkeypatch, [])
    engine = Engine(model, tok)
    messages = [_user("hello")]
    prompt = tok.render_for_completion({"messages": messages})
    assert len(list(engine.chat(messages, max_tokens=1000))) == SEQ_LEN - len(prompt)
    assert len(list(engine.chat(messages, max_tokens=3))) == 3


def test_engine_drops_the_oldest_exchanges_when_the_context_is_full(tok, model):
    engine = Engine(model, tok)
    turns = []
    for i in range(6):
        turns += [_user(f"question {i}"), {"role": "assistant", "content": f"answer {i}"}]
    messages = [{"role": "system", "content": "Be kind."}] + turns + [_user("last one")]
    ids, kept = engine.fit_context(messages)
    assert len(ids) < SEQ_LEN and len(kept) < len(messages)
    assert kept[0]["role"] == "system" and kept[-1] == _user("last one")
    assert kept[1:] == messages[len(messages) - len(kept) + 1:]  # a suffix: the newest exchanges stay
    with pytest.raises(ValueError, match="message is too long"):
        engine.fit_context([_user("word " * 60)])


def _chat(checkpoint, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "nanochat", "chat", "--checkpoint", str(checkpoint), *args],
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_prompt_option_answers_once_and_is_reproducible(checkpoint):
    first = _chat(checkpoint, "-p", "Hello!", "--seed", "1", "--max-tokens", "8")
    again = _chat(checkpoint, "-p", "Hello!", "--seed", "1", "--max-tokens", "8")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() and first.stdout.count("\n") == 1
    assert first.stdout == again.stdout
    assert "Traceback" not in first.stderr


def test_piped_lines_are_user_messages_and_eof_exits_cleanly(checkpoint):
    result = _chat(checkpoint, "--seed", "0", "--max-tokens", "4", stdin="Hi\n\nHow are you?\n")
    assert result.returncode == 0, result.stderr
    replies = result.stdout.splitlines()
    assert len(replies) == 2 and all(r.strip() for r in replies), result.stdout  # the blank line is no message
    assert "Traceback" not in result.stderr
    empty = _chat(checkpoint, stdin="")
    assert empty.returncode == 0 and empty.stdout == "" and "Traceback" not in empty.stderr


def test_a_message_too_long_is_reported_and_the_session_goes_on(checkpoint):
    result = _chat(checkpoint, "--max-tokens", "4", stdin="word " * 60 + "\nhi\n")
    assert result.returncode == 0, result.stderr
    assert "error: the message is too long" in result.stderr and len(result.stdout.splitlines()) == 1
    too_long = _chat(checkpoint, "-p", "word " * 60)
    assert too_long.returncode == 1 and too_long.stderr.count("\n") == 1
    assert too_long.stderr.startswith("nanochat chat: error: the message is too long")


def test_ctrl_c_while_waiting_for_input_exits_zero(checkpoint):
    proc = subprocess.Popen([sys.executable, "-m", "nanochat", "chat", "--checkpoint", str(checkpoint),
                             "--max-tokens", "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write("Hi\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip()  # the first reply: the REPL now waits for the next line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/nonexistent/ckpt"], "checkpoint directory /nonexistent/ckpt does not exist"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--top-k", "0"], "--top-k must be positive"),
    (["--max-tokens", "0"], "--max-tokens must be positive"),
])
def test_bad_arguments_give_one_line_errors(checkpoint, capsys, args, message):
    from nanochat.cli import main
    assert main(["chat", "--checkpoint", str(checkpoint), "-p", "hi", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_engine_greedy_reply_equals_uncached_argmax(tok, model):
    """Chat decodes through the KV cache; re-running the whole sequence without one must agree."""
    engine = Engine(model, tok)
    messages = [_user("What is 2 + 2?")]
    reply = list(engine.chat(messages, max_tokens=8, temperature=0))
    ids = tok.render_for_completion({"messages": messages})
    expected = []
    for _ in range(8):
        token = int(np.argmax(model(np.array([ids + expected])).data[0, -1]))
        if token in engine.stop_tokens:
            break
        expected.append(token)
    assert reply == expected and len(reply) > 1
