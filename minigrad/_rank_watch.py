"""Names the rank that died when one is killed (SIGKILL, the out-of-memory killer, a crash in
native code). The launcher then kills every other rank at once, before any of them can speak; so
rank 0 starts this watcher as a process of its own, in a session of its own (out of the
launcher's reach) and holding rank 0's stderr, which the launcher forwards until its last holder
closes it.

Every rank keeps a TCP connection to the watcher. A rank that ends well says "bye"; one that has
printed its own error says "quiet", which silences the watcher for the rest of the job. A
connection that closes without either is a rank that died: the watcher writes one line naming it.
The watcher runs as a script (`python _rank_watch.py`, configuration as one JSON line on stdin) so
that it starts without importing minigrad.
"""
import json
import select
import socket
import sys
import time

HELLO_SECONDS = 30  # every rank connects right after MPI starts; give up on the missing after this
GRACE_SECONDS = 0.2  # after a death, a "quiet" may still be on its way from the rank that caused it
LINGER_SECONDS = 2.0  # once rank 0 (or every rank so far) is gone, the rest follow within this or never


def watch(listener, token, size, name, out):
    """Serve the ranks' connections on `listener` until they are all gone; write at most one line."""
    connections = {}  # socket -> {"buffer": bytes not yet a line, "who": its hello, "ended": said bye}
    hellos, quiet, death, rank0_gone, last_close = 0, False, None, None, None
    hello_deadline = time.monotonic() + HELLO_SECONDS
    while True:
        now = time.monotonic()
        everyone_gone = not connections and hellos > 0
        if death is not None and not quiet and (now - death[1] >= GRACE_SECONDS or everyone_gone):
            who = death[0]
            # on a line of its own: a progress bar on rank 0's stderr may have left the cursor mid-line
            print(f"\n{name}: error: rank {who['rank']} of {size} (pid {who['pid']} on {who['host']}) died "
                  f"without a word (killed, or crashed outside Python); the launcher stops every rank",
                  file=out, flush=True)
            quiet = True
        accepting = listener.fileno() >= 0
        if accepting and (hellos == size or now > hello_deadline or rank0_gone is not None):
            listener.close()
            accepting = False
        if not (accepting or connections) or (rank0_gone is not None and now - rank0_gone > LINGER_SECONDS) or (
                everyone_gone and now - last_close > LINGER_SECONDS):
            return
        readable, _, _ = select.select([listener] * accepting + list(connections), [], [],
                                       GRACE_SECONDS if death is not None else LINGER_SECONDS)
        for sock in readable:
            if sock is listener:
                connections[listener.accept()[0]] = {"buffer": b"", "who": None, "ended": False}
                continue
            state = connections[sock]
            try:
                data = sock.recv(4096)
            except OSError:  # reset by a dying peer: as good as closed
                data = b""
            *lines, state["buffer"] = (state["buffer"] + data).split(b"\n")
            for line in lines:
                if state["who"] is None:
                    state["who"] = _parse_hello(line, token)
                    hellos += state["who"] is not None
                    if state["who"] is None:  # not one of ours
                        data = b""
                        break
                quiet |= line == b"quiet"
                state["ended"] |= line == b"bye"
            if not data:
                del connections[sock]
                sock.close()
                last_close = now
                who = state["who"]
                if who is not None and who["rank"] == 0 and rank0_gone is None:
                    rank0_gone = now
                if who is not None and not state["ended"] and death is None:
                    death = (who, now)


def _parse_hello(data, token):
    try:
        hello = json.loads(data.split(b"\n", 1)[0])
        if hello.pop("token") == token:
            return {"rank": int(hello["rank"]), "pid": int(hello["pid"]), "host": str(hello["host"])}
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def main():
    config = json.loads(sys.stdin.readline())
    listener = socket.create_server((config["host"], 0))
    print(listener.getsockname()[1], flush=True)
    sys.stdout.close()
    try:
        watch(listener, config["token"], config["size"], config["name"], sys.stderr)
    except BrokenPipeError:  # the launcher is gone already: nobody left to tell
        pass


if __name__ == "__main__":
    main()
