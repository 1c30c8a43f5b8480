"""Inference machinery: the KV cache and next-token sampling."""
import numpy as np

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
        if is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in (k, v)):
            # the cache stores plain arrays, so a gradient could not flow back through it
            raise RuntimeError("the KV cache is for inference: run the forward under minigrad.no_grad()")
        k, v = (t.data if isinstance(t, Tensor) else t for t in (k, v))
        expected = (self.batch_size, self.n_kv_head, None, self.head_dim)
        if k.shape != v.shape or k.ndim != 4 or any(e is not None and e != n for e, n in zip(expected, k.shape)):
            raise ValueError(f"insert_kv expects k and v of shape (B={self.batch_size}, H={self.n_kv_head}, T, "
                             f"D={self.head_dim}), got {k.shape} and {v.shape}")
        if not 0 <= layer_idx < self.n_layer:
            raise IndexError(f"layer_idx {layer_idx} out of range for {self.n_layer} layers")
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
        yield from self.model.generate(ids, budget, temperature=temperature, top_k=top_k, seed=seed,
                                       stop_tokens=self.stop_tokens)

    def reply(self, messages, **kwargs):
        return self.tokenizer.decode(list(self.chat(messages, **kwargs)))
