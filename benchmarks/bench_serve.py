"""Benchmark `nanochat serve`: aggregate tokens/s and time to first token with 1, 4, 8 and 16
concurrent greedy streams, against the same requests served one at a time.

    python benchmarks/bench_serve.py [--concurrency 1,4,8,16] [--max-tokens 48]
                                     [--max-batch 16] [--threads N] [--rounds 3] [--json PATH]

The model is bench_gpt.py's "small" config with random weights, saved as a checkpoint with a BPE
tokenizer of its vocabulary, and served by `python -m nanochat serve` in a subprocess on a free
loopback port (so the clients do not share its interpreter). For each concurrency c, c distinct
chat requests (greedy, max_tokens fixed) are run one at a time and then all at once, back to back,
for --rounds rounds; the table shows the round whose ratio is the median. tokens/s counts the
completion tokens the server reports; TTFT is from sending a request to its first text chunk. speedup = concurrent
aggregate tokens/s / one-at-a-time aggregate tokens/s, measured in the same run.
"""
import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from nanochat.checkpoint import save_checkpoint  # noqa: E402
from nanochat.dataloader import load_text  # noqa: E402
from nanochat.gpt import GPT, GPTConfig  # noqa: E402
from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer  # noqa: E402

SMALL = dict(sequence_len=256, vocab_size=4096, n_layer=6, n_head=6, n_kv_head=6, n_embd=384)  # bench_gpt "small"


def make_checkpoint(directory):
    tok = Tokenizer.train([load_text()[:400_000]], SMALL["vocab_size"])
    model = GPT(GPTConfig(**{**SMALL, "vocab_size": tok.vocab_size}))
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0.0, 0.02, p.shape)
    # special tokens never win, so every request runs to max_tokens
    model.lm_head.weight.data[-len(SPECIAL_TOKENS):] = 0
    save_checkpoint(directory, model, 0)
    tok.save(directory)
    return tok.vocab_size


def start_server(checkpoint, max_batch, threads):
    env = {**os.environ, **{v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    proc = subprocess.Popen([sys.executable, "-m", "nanochat", "serve", "--checkpoint", checkpoint, "--port", "0",
                             "--max-batch", str(max_batch), "--max-queue", "64"],
                            stdout=subprocess.PIPE, text=True, cwd=os.path.join(HERE, ".."), env=env)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split()[4]


async def one_request(client, url, i, max_tokens):
    """(completion tokens, seconds to the first text chunk) of one streamed greedy chat."""
    body = {"messages": [{"role": "user", "content": f"Request number {i}: tell me about topic {i * 7 % 13}."}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    sent, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - sent
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return tokens, first


async def run(url, ids, max_tokens, concurrent):
    """(aggregate tokens/s, TTFTs) of requests ids, all at once or one after another."""
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        if concurrent:
            results = await asyncio.gather(*(one_request(client, url, i, max_tokens) for i in ids))
        else:
            results = [await one_request(client, url, i, max_tokens) for i in ids]
        elapsed = time.perf_counter() - started
    return sum(t for t, _ in results) / elapsed, [f for _, f in results]


def p95(xs):
    return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="the server's BLAS and numba threads")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vocab = make_checkpoint(tmp)
        proc, url = start_server(tmp, args.max_batch, args.threads)
        try:
            asyncio.run(run(url, [0, 1], 8, True))  # warm-up: kernels compiled, caches allocated
            for c in levels:
                ids = list(range(100 * c, 100 * c + c))
                rounds = []
                for _ in range(args.rounds):  # A then B, back to back: each round gives one ratio
                    rounds.append([asyncio.run(run(url, ids, args.max_tokens, concurrent)) for concurrent in (False, True)])
                    (seq_tps, _), (con_tps, _) = rounds[-1]
                    print(f"c={c}: one at a time {seq_tps:.1f} tok/s, concurrent {con_tps:.1f} tok/s "
                          f"(x{con_tps / seq_tps:.2f})", file=sys.stderr, flush=True)
                # the round with the median ratio stands for this level
                (seq_tps, seq_ttft), (con_tps, con_ttft) = sorted(rounds, key=lambda r: r[1][0] / r[0][0])[len(rounds) // 2]
                rows.append(dict(concurrency=c, sequential_tok_s=seq_tps, concurrent_tok_s=con_tps,
                                 speedup=con_tps / seq_tps, ttft_p50_ms=1000 * statistics.median(con_ttft),
                                 ttft_p95_ms=1000 * p95(con_ttft), sequential_ttft_p50_ms=1000 * statistics.median(seq_ttft)))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\nsmall config ({SMALL['n_layer']} layers, width {SMALL['n_embd']}, vocab {vocab}), greedy, "
          f"max_tokens {args.max_tokens}, --max-batch {args.max_batch}, {args.threads} server thread(s), the median-ratio round of {args.rounds}\n")
    print("| streams | one at a time tok/s | concurrent tok/s | speedup | TTFT p50 ms | TTFT p95 ms | TTFT p50 alone ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['sequential_tok_s']:.1f} | {r['concurrent_tok_s']:.1f} | "
              f"{r['speedup']:.2f}x | {r['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} | {r['sequential_ttft_p50_ms']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
