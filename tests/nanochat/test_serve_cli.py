"""`nanochat serve` as a command: prints its URL, serves, and Ctrl-C ends it cleanly with the port
released; bad options end with one line on stderr."""
import json
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from nanochat.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok, serve_model):
    directory = tmp_path_factory.mktemp("serve") / "tinychat"
    save_checkpoint(directory, serve_model, 0)
    tok.save(directory)
    return directory


def serve(*args):
    return subprocess.Popen([sys.executable, "-m", "nanochat", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_serve_prints_its_url_and_stops_cleanly_on_ctrl_c(checkpoint):
    proc = serve("--checkpoint", str(checkpoint), "--port", "0")
    try:
        line = proc.stdout.readline()  # blocks until ready (or the process ends)
        assert line.startswith("nanochat serve: listening on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[4]
        port = int(url.rsplit(":", 1)[1])
        assert httpx.get(url + "/health", timeout=10).json() == {"status": "ok"}
        assert httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"] == "tinychat"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 110, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            next(lines)  # a stream is open when Ctrl-C comes
            proc.send_signal(signal.SIGINT)
            rest = [line for line in lines if line]  # the stream ends properly: no cut chunk, no hang
        last = json.loads(rest[-1][len("data: "):]) if rest[-1] != "data: [DONE]" else "done"
        assert last == "done" or last["error"]["code"] == "shutting_down", rest[-3:]
        assert proc.wait(20) == 0
        assert "stopped" in proc.stdout.read()
        assert "Traceback" not in proc.stderr.read()
        with socket.create_server(("127.0.0.1", port)):  # the port is free again
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/nonexistent/dir"], "/nonexistent/dir"),
    (["--port", "70000"], "--port"),
    (["--max-batch", "0"], "--max-batch"),
    (["--api-key", " "], "--api-key"),
    (["--host", "256.1.1.1"], "cannot listen"),
])
def test_bad_options_end_with_one_line(checkpoint, args, message):
    if args[0] != "--checkpoint":
        args = ["--checkpoint", str(checkpoint)] + args
    proc = serve(*args, *(["--port", "0"] if "--port" not in args else []))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_a_port_in_use_is_one_line(checkpoint):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = serve("--checkpoint", str(checkpoint), "--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and len(err.strip().splitlines()) == 1 and "cannot listen" in err, err
