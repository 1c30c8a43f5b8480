"""Shared by the serve tests: a server running on a free loopback port in a thread (the model and
tokenizer are conftest's fixtures)."""
import socket
import threading
import time

import uvicorn

from nanochat.serve.app import Server, create_app

class RunningServer:
    """A Server's app on uvicorn in a thread, at self.url; use as a context manager."""

    def __init__(self, model, tok, **kwargs):
        self.server = Server(model, tok, "tiny", **kwargs)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(self.server), log_level="warning", timeout_graceful_shutdown=1)
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs=dict(sockets=[self.sock]), daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.uvicorn.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.uvicorn.should_exit = True
        self.thread.join(20)
        self.sock.close()
        assert not self.thread.is_alive(), "the test server did not stop"
