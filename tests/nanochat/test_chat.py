"""The `nanochat chat` command answers -p, reads a pipe line by line, and exits 0 on EOF and Ctrl-C
(Engine itself is tested in test_engine.py)."""
import signal
import subprocess
import sys

import pytest

from nanochat.checkpoint import save_checkpoint

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok, chat_model):
    directory = tmp_path_factory.mktemp("chat")
    save_checkpoint(directory, chat_model, 0)
    tok.save(directory)
    return directory


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
    from nanochat.commands import main
    assert main(["chat", "--checkpoint", str(checkpoint), "-p", "hi", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
