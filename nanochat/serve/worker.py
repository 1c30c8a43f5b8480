"""The generation thread: it owns the model and the BatchedEngine and runs one step after another
while there is work; the event loop only hands it sequences and gets their Events back through
call_soon_threadsafe, so the server answers (/health, new requests) while the model computes."""
import logging
import queue
import threading

from nanochat.engine import Event

log = logging.getLogger("nanochat.serve")


class GenerationWorker:
    def __init__(self, engine):
        self.engine = engine
        self.inbox = queue.SimpleQueue()  # (Sequence, callback) from the event loop
        self.listeners = {}  # Sequence -> callback(Event), touched only by the worker thread
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nanochat-generation", daemon=True)

    def start(self):
        self.thread.start()

    def submit(self, seq, callback):
        """Queue a sequence (from any thread); callback(Event) runs on the worker thread (or here, with
        a "cancelled" Event, once the worker is stopping)."""
        if self.stopping.is_set():
            callback(Event(seq, finish="cancelled"))
            return
        self.inbox.put((seq, callback))

    def stop(self, timeout=10):
        self.stopping.set()
        self.inbox.put(None)  # wakes the thread if it waits for work
        self.thread.join(timeout)

    def _run(self):
        while not self.stopping.is_set():
            try:
                # wait for work only when there is none; otherwise take what arrived and step on
                self._take(self.inbox.get(block=not self.engine.has_work()))
                while True:
                    self._take(self.inbox.get_nowait())
            except queue.Empty:
                pass
            if self.stopping.is_set():
                break
            if self.engine.has_work():
                self.engine.step(emit=self._deliver)
        for seq in list(self.listeners):  # shutting down: end every stream still open
            seq.cancelled = True
        if self.engine.has_work():
            self.engine.step(emit=self._deliver)

    def _take(self, item):
        if item is None:
            return
        seq, callback = item
        try:
            self.engine.submit(seq)
        except ValueError as e:  # the server checks requests first; this is a last guard
            callback(Event(seq, finish="error", error=e))
            return
        self.listeners[seq] = callback

    def _deliver(self, event):
        callback = self.listeners[event.seq] if event.finish is None else self.listeners.pop(event.seq)
        try:
            callback(event)
        except Exception:  # noqa: BLE001 - a listener that fails (its loop closed, say) must not stop the thread
            log.exception("could not deliver a generation event")
