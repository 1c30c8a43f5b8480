"""Import a d20-shaped PyTorch nanochat checkpoint and chat with it in float32 and bfloat16.

    python benchmarks/bench_interop.py [--tokens 20] [--rounds 2] [--keep DIR]

The model has nanochat d20's shape (20 layers, width 1280, 10 heads, vocab 65536, ~560M parameters)
and random weights; the tokenizer has a synthetic 65536-token vocabulary. Steps, each in a fresh
subprocess so its memory is its own:
1. write model_000000.pt (float32, wte in bfloat16 as nanochat's GPU runs save it), meta and tokenizer.pkl;
2. `nanochat import` it into this project's layout;
3. chat: load the imported checkpoint and answer one message with `--tokens` greedy tokens, in float32
   and bfloat16 alternately (`--rounds` times each): load time, prefill time, decode tokens/s,
   RSS after loading and at the end, and peak RSS (VmHWM).
Prints a Markdown table and the bfloat16 / float32 ratios of the medians.
"""
import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

D20 = dict(sequence_len=2048, vocab_size=65536, n_layer=20, n_head=10, n_kv_head=10, n_embd=1280)


def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def synthetic_tokenizer():
    from nanochat.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer
    ranks = {bytes([b]): b for b in range(256)}
    for i in range(D20["vocab_size"] - len(SPECIAL_TOKENS) - 256):
        ranks[b" t%d" % i] = len(ranks)
    return Tokenizer(ranks, SPLIT_PATTERN)


def make(directory):
    """A nanochat-style checkpoint with random weights, written as PyTorch nanochat writes it."""
    import tiktoken
    import torch
    from nanochat.gpt import GPTConfig
    config = GPTConfig(**D20)
    C, V = config.n_embd, config.vocab_size
    shapes = {"transformer.wte.weight": (V, C), "lm_head.weight": (V, C)}
    for i in range(config.n_layer):
        for name, shape in (("attn.c_q", (C, C)), ("attn.c_k", (C, C)), ("attn.c_v", (C, C)), ("attn.c_proj", (C, C)),
                            ("mlp.c_fc", (4 * C, C)), ("mlp.c_proj", (C, 4 * C))):
            shapes[f"transformer.h.{i}.{name}.weight"] = shape
    gen = torch.Generator().manual_seed(0)
    state = {name: torch.randn(shape, generator=gen) / shape[1] ** 0.5 for name, shape in shapes.items()}
    state["transformer.wte.weight"] = state["transformer.wte.weight"].mul(C ** 0.5).bfloat16()
    torch.save({"_orig_mod." + k: v for k, v in state.items()}, directory / "model_000000.pt")
    (directory / "meta_000000.json").write_text(json.dumps({"step": 0, "model_config": D20}))
    tokenizer = synthetic_tokenizer()
    enc = tiktoken.Encoding(name="rustbpe", pat_str=tokenizer.pattern, mergeable_ranks=tokenizer.mergeable_ranks,
                            special_tokens=tokenizer.special_tokens)
    with open(directory / "tokenizer.pkl", "wb") as f:
        pickle.dump(enc, f)
    return {"parameters": sum(v.numel() for v in state.values())}


def run_import(src, out):
    from nanochat.commands import main
    t0 = time.perf_counter()
    if main(["import", str(src), "--out", str(out)]) != 0:
        raise SystemExit("import failed")
    return {"seconds": time.perf_counter() - t0}


def chat(checkpoint, dtype, tokens):
    from nanochat.engine import Engine, generate
    from nanochat.interop import load_any
    t0 = time.perf_counter()
    model, tokenizer = load_any(checkpoint, dtype)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb("VmRSS")
    ids = Engine(model, tokenizer).fit_context([{"role": "user", "content": "Why is the sky blue?"}])[0]
    stream = generate(model, ids, tokens, temperature=0)  # no stop tokens: always `tokens` tokens
    t1 = time.perf_counter()
    first = next(stream)  # the prefill and the first token
    t2 = time.perf_counter()
    rest = list(stream)
    t3 = time.perf_counter()
    return {"load_s": load_s, "prefill_s": t2 - t1, "prompt_tokens": len(ids), "decode_tok_s": len(rest) / (t3 - t2),
            "rss_loaded_mb": rss_loaded, "rss_end_mb": rss_mb("VmRSS"), "peak_rss_mb": rss_mb("VmHWM"),
            "tokens": [first] + rest}


def subprocess_step(*args):
    out = subprocess.run([sys.executable, __file__, "--step", *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"step {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temp dir); "
                   "rerunning with the same folder reuses its checkpoint and times the chats only")
    p.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:  # one step in this fresh process; its result is the last line of stdout
        name, *rest = args.step
        result = {"make": lambda: make(Path(rest[0])), "import": lambda: run_import(*rest),
                  "chat": lambda: chat(rest[0], rest[1], int(rest[2]))}[name]()
        result["peak_rss_mb"] = rss_mb("VmHWM")
        print(json.dumps(result))
        return

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_interop."))
    (work / "native").mkdir(parents=True, exist_ok=True)
    if (work / "ours").is_dir():  # a --keep folder from an earlier run: time the chats only
        print(f"reusing {work}: the checkpoint and its import from an earlier run")
    else:
        made = subprocess_step("make", work / "native")
        print(f"d20-shaped checkpoint: {made['parameters']:,} parameters, "
              f"{(work / 'native' / 'model_000000.pt').stat().st_size / 2**30:.2f} GiB")
        imported = subprocess_step("import", work / "native", work / "ours")
        print(f"import: {imported['seconds']:.1f} s, peak RSS {imported['peak_rss_mb']:.0f} MB")

    runs = {"float32": [], "bfloat16": []}
    for _ in range(args.rounds):
        for dtype in runs:
            runs[dtype].append(subprocess_step("chat", work / "ours", dtype, args.tokens))
    print(f"\nchat, {args.tokens} greedy tokens after a {runs['float32'][0]['prompt_tokens']}-token prompt "
          f"(medians of {args.rounds} alternating runs)\n")
    keys = ["load_s", "prefill_s", "decode_tok_s", "rss_loaded_mb", "rss_end_mb", "peak_rss_mb"]
    med = {d: {k: statistics.median(r[k] for r in rs) for k in keys} for d, rs in runs.items()}
    print("| dtype | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for dtype in runs:
        print(f"| {dtype} | " + " | ".join(f"{med[dtype][k]:.2f}" for k in keys) + " |")
    print("| bf16 / f32 | " + " | ".join(f"{med['bfloat16'][k] / med['float32'][k]:.2f}" for k in keys) + " |")
    same = sum(a == b for a, b in zip(runs["float32"][0]["tokens"], runs["bfloat16"][0]["tokens"]))
    print(f"\ngreedy tokens equal in float32 and bfloat16: {same} of {args.tokens}")
    if not args.keep:
        import shutil
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
