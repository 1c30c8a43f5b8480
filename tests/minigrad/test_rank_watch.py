"""The death watch (minigrad/_rank_watch.py): one line naming a rank whose connection closed without
"bye", nothing when every rank ended well or one already printed its own error. (Under `mpiexec`:
tests/minigrad/test_distributed.py.)"""
import io
import json
import socket
import threading
import time

from minigrad import _rank_watch

TOKEN = "secret"


class Watch:
    """The watcher in a thread, its listener on loopback, what it wrote in `out`."""

    def __init__(self, size):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.out = io.StringIO()
        self.thread = threading.Thread(target=_rank_watch.watch, args=(self.listener, TOKEN, size, "job", self.out))
        self.thread.start()

    def connect(self, rank, token=TOKEN, then=b""):
        sock = socket.create_connection(self.listener.getsockname())
        sock.sendall(json.dumps({"token": token, "rank": rank, "pid": 100 + rank, "host": "h"}).encode() + b"\n" + then)
        return sock

    def finish(self, timeout=10):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the watcher did not end"
        return self.out.getvalue()


def test_ranks_that_say_bye_end_the_watch_without_a_word():
    watch = Watch(2)
    zero, one = watch.connect(0), watch.connect(1, then=b"bye\n")  # hello and bye in one packet
    one.close()
    zero.sendall(b"bye\n")
    zero.close()
    assert watch.finish() == ""


def test_a_rank_that_closes_without_bye_is_named_once():
    watch = Watch(3)
    socks = [watch.connect(rank) for rank in range(3)]
    socks[2].close()  # died; then the launcher kills the others
    time.sleep(0.05)
    socks[0].close()
    socks[1].close()
    assert watch.finish() == ("\njob: error: rank 2 of 3 (pid 102 on h) died without a word (killed, or crashed "
                              "outside Python); the launcher stops every rank\n")


def test_a_rank_that_printed_its_own_error_silences_the_watch():
    watch = Watch(2)
    zero, one = watch.connect(0), watch.connect(1)
    one.sendall(b"quiet\n")  # then it aborts the job: rank 0 is killed first, rank 1 after
    zero.close()
    one.close()
    assert watch.finish() == ""


def test_a_stranger_without_the_token_is_not_a_rank():
    watch = Watch(1)
    stranger = watch.connect(1, token="guess")
    stranger.close()
    zero = watch.connect(0, then=b"bye\n")
    zero.close()
    assert watch.finish() == ""


def test_the_watch_ends_soon_after_rank_0_even_if_a_rank_hangs_on():
    watch = Watch(2)
    zero, one = watch.connect(0, then=b"bye\n"), watch.connect(1, then=b"bye\n")
    zero.close()
    start = time.monotonic()
    watch.finish(timeout=_rank_watch.LINGER_SECONDS + 5)
    assert time.monotonic() - start < _rank_watch.LINGER_SECONDS + 2
    one.close()
