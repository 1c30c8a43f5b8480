"""Inference: the KV caches, next-token sampling, generation from a prompt (prefill once, then
decode through the cache, one or several samples), chat turns (Engine) and continuous batching of
many requests (BatchedEngine). The model (nanochat/gpt.py) knows nothing of this module."""
from collections import deque, namedtuple

import numpy as np

import minigrad
from minigrad import Tensor, is_grad_enabled
from minigrad.kernels import concat


class KVCache:
    """Keys and values of every layer for the tokens seen so far, shape (B, H_kv, T, D) per layer.

    Storage is preallocated and grows (by concatenation) when a step needs more room; insert_kv
    returns views whose contents equal the concatenation of everything inserted so far."""

    def __init__(self, batch_size, n_kv_head, head_dim, n_layer, max_len=None):
        for name, value in dict(batch_size=batch_size, n_kv_head=n_kv_head, head_dim=head_dim, n_layer=n_layer).items():
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"KVCache {name} must be a positive integer, got {value!r}")
        if max_len is not None and max_len < 1:
            raise ValueError(f"KVCache max_len must be positive or None, got {max_len!r}")
        self.batch_size, self.n_kv_head, self.head_dim, self.n_layer = batch_size, n_kv_head, head_dim, n_layer
        self.max_len = max_len
        self.pos = 0  # tokens already cached, advanced once per forward after the last layer
        self.keys = self.values = None  # (n_layer, B, H, capacity, D), allocated on first insert
        self.prev_embedding = None  # (B, 1, C): the last token's normalised embedding, for a model with smear

    def reset(self):
        self.pos = 0
        self.prev_embedding = None

    def insert_kv(self, layer_idx, k, v):
        k, v = _arrays_to_cache(self, layer_idx, k, v)
        t0, t1 = self.pos, self.pos + k.shape[2]
        if self.max_len is not None and t1 > self.max_len:
            raise ValueError(f"KV cache is full: {t1} tokens would exceed max_len={self.max_len}")
        self._ensure_capacity(t1, k.dtype)
        self.keys[layer_idx, :, :, t0:t1] = k
        self.values[layer_idx, :, :, t0:t1] = v
        return Tensor(self.keys[layer_idx, :, :, :t1]), Tensor(self.values[layer_idx, :, :, :t1])

    def advance(self, num_tokens):
        self.pos += num_tokens

    def expand_batch(self, n):
        """Repeat a batch-1 cache n times, so one prefill serves n continuations."""
        if self.batch_size != 1:
            raise ValueError(f"expand_batch needs a batch-1 cache, this one has batch {self.batch_size}")
        if self.keys is not None:
            self.keys, self.values = (np.repeat(a, n, axis=1) for a in (self.keys, self.values))
        if self.prev_embedding is not None:
            self.prev_embedding = np.repeat(self.prev_embedding, n, axis=0)
        self.batch_size = n

    def _ensure_capacity(self, needed, dtype):
        capacity = 0 if self.keys is None else self.keys.shape[3]
        if needed <= capacity:
            return
        # grow geometrically so a long decode reallocates O(log T) times, never past max_len
        new_capacity = max(needed, 2 * capacity, 64)
        if self.max_len is not None:
            new_capacity = min(new_capacity, self.max_len)
        extra = np.zeros((self.n_layer, self.batch_size, self.n_kv_head, new_capacity - capacity, self.head_dim), dtype)
        self.keys = extra if self.keys is None else concat([self.keys, extra], 3)
        self.values = extra.copy() if self.values is None else concat([self.values, extra], 3)


def _arrays_to_cache(cache, layer_idx, k, v):
    """k and v as arrays, once their shapes fit the cache's (B, H, T, D) and no gradient would be lost."""
    if is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in (k, v)):
        # the cache stores plain arrays, so a gradient could not flow back through it
        raise RuntimeError("the KV cache is for inference: run the forward under minigrad.no_grad()")
    k, v = (t.data if isinstance(t, Tensor) else t for t in (k, v))
    expected = (cache.batch_size, cache.n_kv_head, None, cache.head_dim)
    if k.shape != v.shape or k.ndim != 4 or any(e is not None and e != n for e, n in zip(expected, k.shape)):
        raise ValueError(f"insert_kv expects k and v of shape (B={cache.batch_size}, H={cache.n_kv_head}, T, "
                         f"D={cache.head_dim}), got {k.shape} and {v.shape}")
    if not 0 <= layer_idx < cache.n_layer:
        raise IndexError(f"layer_idx {layer_idx} out of range for {cache.n_layer} layers")
    return k, v


class BatchKVCache:
    """The KV cache of a batch of independent sequences, each at its own length.

    Row i of the storage (n_layer, max_batch, H, max_len, D) holds the i-th active sequence, and
    the active rows stay packed at the front: a sequence joins in the first free row (copied from
    its own prefilled KVCache) and a leaving one's row takes the last row's contents, so every
    forward reads plain views. GPT.forward reads `pos` as the per-row lengths (rotary positions)
    and the attention asks `attn_mask` which keys each query sees."""

    def __init__(self, max_batch, n_kv_head, head_dim, n_layer, max_len, dtype=np.float32):
        for name, value in dict(max_batch=max_batch, n_kv_head=n_kv_head, head_dim=head_dim, n_layer=n_layer,
                                max_len=max_len).items():
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"BatchKVCache {name} must be a positive integer, got {value!r}")
        self.max_batch, self.n_kv_head, self.head_dim, self.n_layer, self.max_len = (
            max_batch, n_kv_head, head_dim, n_layer, max_len)
        shape = (n_layer, max_batch, n_kv_head, max_len, head_dim)
        self.keys, self.values = np.zeros(shape, dtype), np.zeros(shape, dtype)
        self.lengths = np.zeros(max_batch, np.int64)
        self.batch_size = 0  # active rows
        self._prev = None  # (max_batch, 1, C): each row's last token embedding, for a model with smear

    @property
    def pos(self):
        """Tokens cached per active row, (batch_size,)."""
        return self.lengths[:self.batch_size]

    @property
    def prev_embedding(self):  # a copy: smear reads it, then sets this forward's last embedding
        return None if self._prev is None else self._prev[:self.batch_size].copy()

    @prev_embedding.setter
    def prev_embedding(self, x):  # (batch_size, 1, C)
        self._prev_rows(x)[:self.batch_size] = x

    def _prev_rows(self, like):
        if self._prev is None:
            self._prev = np.zeros((self.max_batch,) + like.shape[1:], like.dtype)
        return self._prev

    def join(self, cache):
        """Copy a prefilled batch-1 KVCache into the first free row; returns that row."""
        n = cache.pos
        if self.batch_size == self.max_batch:
            raise RuntimeError(f"the batch is full ({self.max_batch} rows)")
        if cache.batch_size != 1 or n > self.max_len:
            raise ValueError(f"join needs a batch-1 cache of at most {self.max_len} tokens, got batch "
                             f"{cache.batch_size} with {n} tokens")
        row = self.batch_size
        if n:
            self.keys[:, row, :, :n] = cache.keys[:, 0, :, :n]
            self.values[:, row, :, :n] = cache.values[:, 0, :, :n]
        self.lengths[row] = n
        self.batch_size += 1
        if cache.prev_embedding is not None:  # a model with smear
            self._prev_rows(cache.prev_embedding)[row] = cache.prev_embedding[0]
        return row

    def leave(self, row):
        """Free a row: the last active row moves into it (the caller renumbers that sequence)."""
        if not 0 <= row < self.batch_size:
            raise IndexError(f"row {row} is not active (batch of {self.batch_size})")
        last = self.batch_size - 1
        if row != last:
            n = self.lengths[last]
            self.keys[:, row, :, :n] = self.keys[:, last, :, :n]
            self.values[:, row, :, :n] = self.values[:, last, :, :n]
            self.lengths[row] = n
            if self._prev is not None:
                self._prev[row] = self._prev[last]
        self.batch_size = last

    def insert_kv(self, layer_idx, k, v):
        """Write k, v (B, H, T, D) after each row's own tokens; returns views (B, H, max length, D)
        whose keys past a row's length are stale and must be masked (attn_mask)."""
        k, v = _arrays_to_cache(self, layer_idx, k, v)
        T = k.shape[2]
        lengths = self.pos
        if lengths.size and lengths.max() + T > self.max_len:
            raise ValueError(f"KV cache is full: {lengths.max() + T} tokens would exceed max_len={self.max_len}")
        for b, n in enumerate(lengths.tolist()):
            self.keys[layer_idx, b, :, n:n + T] = k[b]
            self.values[layer_idx, b, :, n:n + T] = v[b]
        end = int(lengths.max()) + T
        return Tensor(self.keys[layer_idx, :self.batch_size, :, :end]), Tensor(self.values[layer_idx, :self.batch_size, :, :end])

    def attn_mask(self, T, window=None):
        """(B, 1, T, Tk) booleans for the T queries a forward adds: query t of row b sits at position
        lengths[b] + t and sees keys 0..lengths[b] + t of its own row (only the last `window` + 1 of
        them with a sliding window)."""
        lengths = self.pos
        query_pos = (lengths[:, None] + np.arange(T))[:, None, :, None]  # (B, 1, T, 1)
        key_pos = np.arange(int(lengths.max()) + T)
        visible = key_pos <= query_pos
        return visible if window is None else visible & (key_pos >= query_pos - window)

    def advance(self, num_tokens):
        self.lengths[:self.batch_size] += num_tokens


def sample_next_token(logits, rng, temperature=1.0, top_k=None, top_p=None):
    """logits (B, V) -> token ids (B,): greedy at temperature 0, else top-k, then top-p (nucleus),
    then a draw from rng."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        # keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p
        keep_sorted = np.cumsum(sorted_probs, axis=-1) - sorted_probs < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    cumulative = np.cumsum(probs, axis=-1)
    # a draw scaled to the row's own total lands strictly inside the mass of a token with p > 0,
    # so rounding in the cumulative sum can never pick a token that top-k or top-p removed
    draws = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    return (cumulative <= draws).sum(axis=-1)


def generate(model, tokens, max_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, stop_tokens=(),
             num_samples=1):
    """Yield the model's sampled token ids one at a time: an int per step, or with num_samples > 1 a list
    with one id per continuation (None for a continuation that has hit a stop token).
    The prompt is prefilled once; each new token is decoded through the KV cache. Each forward runs
    under no_grad (a no_grad decorator on a generator would only cover creating it, not running it,
    and a no_grad around the yields would switch gradients off for the caller too)."""
    tokens = list(tokens)
    check_generate_args(tokens, max_tokens, temperature, top_k, top_p, num_samples, model.config.vocab_size)
    if len(tokens) + max_tokens > model.rotary_seq_len:
        raise ValueError(f"prompt ({len(tokens)}) + max_tokens ({max_tokens}) exceeds the "
                         f"{model.rotary_seq_len} positions this model can run")
    if max_tokens == 0:
        return
    rng = np.random.default_rng(seed)
    stop_tokens = set(stop_tokens)
    cfg = model.config
    kv_cache = KVCache(1, cfg.n_kv_head, cfg.head_dim, cfg.n_layer, max_len=len(tokens) + max_tokens)
    with minigrad.no_grad():
        logits = model.forward(np.array([tokens]), kv_cache=kv_cache).data[:, -1, :]  # prefill: (1, V)
    if num_samples > 1:
        kv_cache.expand_batch(num_samples)
        logits = np.repeat(logits, num_samples, axis=0)  # (num_samples, V)
    done = np.zeros(num_samples, dtype=bool)
    for step in range(max_tokens):
        next_ids = sample_next_token(logits, rng, temperature, top_k, top_p)  # (num_samples,)
        stopped = np.array([t in stop_tokens for t in next_ids.tolist()]) | done
        if num_samples == 1:
            if stopped[0]:
                return
            yield int(next_ids[0])
        else:
            yield [None if s else int(t) for t, s in zip(next_ids, stopped)]
            if stopped.all():
                return
        done = stopped
        if step + 1 < max_tokens:
            with minigrad.no_grad():
                logits = model.forward(next_ids[:, None], kv_cache=kv_cache).data[:, -1, :]


def check_generate_args(tokens, max_tokens, temperature, top_k, top_p, num_samples, vocab_size):
    if not tokens or any(not isinstance(t, (int, np.integer)) or not 0 <= t < vocab_size for t in tokens):
        raise ValueError(f"tokens must be a non-empty list of ids in [0, {vocab_size})")
    if not isinstance(max_tokens, (int, np.integer)) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")


class Engine:
    """Chat with a model: render a conversation for the next assistant turn, fit it into the
    model's context (dropping the oldest exchanges) and stream the reply's token ids."""

    def __init__(self, model, tokenizer):
        if tokenizer.vocab_size != model.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model expects "
                             f"{model.config.vocab_size}")
        self.model, self.tokenizer = model, tokenizer
        self.assistant_end = tokenizer.encode_special("<|assistant_end|>")
        # a <|bos|> would start a new document, so it ends the reply too (as in nanochat)
        self.stop_tokens = (self.assistant_end, tokenizer.bos_token_id)

    def fit_context(self, messages, reserve=1):
        """(prompt ids, messages kept): the oldest user/assistant exchanges are dropped until the
        prompt leaves `reserve` tokens of room in sequence_len; a leading system message stays."""
        messages = list(messages)
        head = messages[:1] if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system" else []
        limit = self.model.config.sequence_len
        while True:
            ids = self.tokenizer.render_for_completion({"messages": messages})
            if len(ids) + reserve <= limit:
                return ids, messages
            body = messages[len(head):]
            if len(body) <= 2:  # only the newest question (and perhaps an answer being replaced) is left
                raise ValueError(f"the message is too long: its prompt takes {len(ids)} tokens, and the "
                                 f"model's context is {limit} tokens")
            messages = head + body[2:]

    def chat(self, messages, max_tokens=256, temperature=0.6, top_k=50, seed=None):
        """Yield the reply's token ids, stopping before <|assistant_end|> or at the context limit."""
        ids, _ = self.fit_context(messages)
        budget = min(max_tokens, self.model.config.sequence_len - len(ids))
        yield from generate(self.model, ids, budget, temperature=temperature, top_k=top_k, seed=seed,
                            stop_tokens=self.stop_tokens)

    def reply(self, messages, **kwargs):
        return self.tokenizer.decode(list(self.chat(messages, **kwargs)))


class Sequence:
    """One request to a BatchedEngine: a prompt, a token budget and its own sampling settings and rng."""

    def __init__(self, prompt, max_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, stop_tokens=()):
        self.prompt, self.max_tokens = list(prompt), max_tokens
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.stop_tokens = frozenset(stop_tokens)
        self.rng = np.random.default_rng(seed)
        self.tokens = []  # generated so far (stop tokens excluded)
        self.cancelled = False  # set from any thread; the engine drops the sequence at its next step

    def sample(self, logits):
        """logits (1, V) -> the next token id."""
        return int(sample_next_token(logits, self.rng, self.temperature, self.top_k, self.top_p)[0])


# What a step reports for a sequence: a new token, and/or its end ("stop", "length", "cancelled" or
# "error" with the exception).
Event = namedtuple("Event", "seq token finish error", defaults=(None, None, None))


class BatchedEngine:
    """Continuous batching: every step prefills the waiting sequences (each alone, then copied into
    a free row of the batch cache) and decodes one token for all active ones in one batched forward.
    A finished or cancelled sequence leaves at once, so its row is free for the next. An exception
    in one sequence's prefill or sampling ends only that sequence. Not thread-safe: one thread owns
    the engine and calls submit and step (Sequence.cancelled may be set from anywhere)."""

    def __init__(self, model, max_batch=8):
        if not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        cfg = model.config
        self.model, self.max_batch, self.max_len = model, max_batch, cfg.sequence_len
        dtype = model.lm_head.weight.dtype
        self.cache = BatchKVCache(max_batch, cfg.n_kv_head, cfg.head_dim, cfg.n_layer, cfg.sequence_len, dtype)
        self.waiting = deque()
        self.rows = []  # rows[i] is the sequence in cache row i
        self.next_ids = []  # rows[i]'s last sampled token, its input to the next decode

    def submit(self, seq):
        check_generate_args(seq.prompt, seq.max_tokens, seq.temperature, seq.top_k, seq.top_p, 1,
                             self.model.config.vocab_size)
        if len(seq.prompt) + seq.max_tokens > self.max_len:
            raise ValueError(f"prompt ({len(seq.prompt)} tokens) + max_tokens ({seq.max_tokens}) exceeds the "
                             f"model's context of {self.max_len} tokens")
        self.waiting.append(seq)

    def has_work(self):
        return bool(self.waiting or self.rows)

    def step(self, emit=None):
        """Admit, then decode once. Each Event goes to emit(event) as it happens (so a newcomer's first
        token need not wait for the other newcomers' prefills); without emit, step returns them all."""
        events = []
        report = events.append if emit is None else emit
        self._drop_cancelled(report)
        while self.waiting and len(self.rows) < self.max_batch:
            self._admit(self.waiting.popleft(), report)
        if self.rows:
            self._decode(report)
        return events

    def _drop_cancelled(self, report):
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            report(Event(seq, finish="cancelled"))
        self._leave([i for i, s in enumerate(self.rows) if s.cancelled], "cancelled", report)

    def _admit(self, seq, report):
        """Prefill the prompt alone and sample the first token; the sequence joins the batch unless done."""
        if seq.max_tokens == 0:
            report(Event(seq, finish="length"))
            return
        try:
            cfg = self.model.config
            cache = KVCache(1, cfg.n_kv_head, cfg.head_dim, cfg.n_layer, max_len=len(seq.prompt))
            with minigrad.no_grad():
                logits = self.model.forward(np.array([seq.prompt]), kv_cache=cache).data[:, -1, :]
            token = seq.sample(logits)
        except Exception as e:  # noqa: BLE001 - one request's failure must not end the others
            report(Event(seq, finish="error", error=e))
            return
        if self._record(seq, token, report):
            self.cache.join(cache)
            self.rows.append(seq)
            self.next_ids.append(token)

    def _decode(self, report):
        try:
            with minigrad.no_grad():
                logits = self.model.forward(np.array(self.next_ids)[:, None], kv_cache=self.cache).data[:, -1, :]
        except Exception as e:  # noqa: BLE001 - the batch cannot be attributed to one sequence: end them all
            self._leave(list(range(len(self.rows))), "error", report, error=e)
            return
        leaving, errors = [], {}
        for i, seq in enumerate(self.rows):
            try:
                token = seq.sample(logits[i:i + 1])
            except Exception as e:  # noqa: BLE001
                leaving.append(i)
                errors[i] = e
                continue
            if self._record(seq, token, report):
                self.next_ids[i] = token
            else:
                leaving.append(i)
        failed = [i for i in leaving if i in errors]
        for i in failed:
            report(Event(self.rows[i], finish="error", error=errors[i]))
        self._leave(leaving, None, report)

    def _record(self, seq, token, report):
        """Report a sampled token; False when the sequence has ended (stop token or budget)."""
        if token in seq.stop_tokens:
            report(Event(seq, finish="stop"))
            return False
        seq.tokens.append(token)
        done = len(seq.tokens) >= seq.max_tokens
        report(Event(seq, token=token, finish="length" if done else None))
        return not done

    def _leave(self, rows, finish, report, error=None):
        """Free rows (highest first, so a moved last row is never one still to free)."""
        for i in sorted(rows, reverse=True):
            seq = self.rows[i]
            if finish is not None:
                report(Event(seq, finish=finish, error=error))
            self.cache.leave(i)
            last = len(self.rows) - 1
            self.rows[i], self.next_ids[i] = self.rows[last], self.next_ids[last]
            self.rows.pop()
            self.next_ids.pop()
