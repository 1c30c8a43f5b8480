"""Decode benchmarks beyond batch-1 float32 (issue 18, part 3), minigrad against PyTorch in one run:

    python benchmarks/bench_decode.py [--threads N] [--sections batched,bf16,context] [--json PATH]

- batched: aggregate tokens/s of 1, 2, 4, 8, 16 sequences decoded together through one KV cache
  (one forward per step for the whole batch, as BatchedEngine runs it) on the small config, against
  one sequence; the batch sizes alternate, cells are medians over the rounds.
- bf16: minigrad with bfloat16 weights (nanochat.interop.bfloat16.cast_to_bfloat16) against PyTorch
  float32 decode (TorchGPT and its TorchKVCache) and minigrad float32, on small and medium, alternating;
  plus the bfloat16 model's logit error against float32 on one 64-token forward.
- context: ms per decoded token after a prefill of 2k and of 8k positions (4 layers, width 256,
  sequence_len 8192), both sides, alternating; growth = 8k / 2k.
Decode helpers, sizes and `build` come from bench_gpt.py (same weights on both sides).
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_gpt  # noqa: E402  (sets the thread counts from --threads before numpy and torch load)
from bench_gpt import PREFILL, build, minigrad_decode, torch_decode  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from minigrad import no_grad  # noqa: E402
from nanochat.interop.bfloat16 import cast_to_bfloat16  # noqa: E402


def alternate(contenders, rounds):
    """{name: [result of each round]}, running the contenders in rotating order each round."""
    names, out = list(contenders), {name: [] for name in contenders}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name].append(contenders[name]())
    return out


def batched(rounds, steps, batches=(1, 2, 4, 8, 16), size="small"):
    """{batch: aggregate tokens/s} of decoding `steps` tokens per sequence after a PREFILL-token prefill."""
    config, _, model, _, _, _ = build(size, sides=("minigrad",))
    rng = np.random.default_rng(1)
    prompts = {b: rng.integers(0, config.vocab_size, (b, PREFILL)) for b in batches}
    total = PREFILL + steps
    minigrad_decode(model, prompts[max(batches)], PREFILL + 4)  # warm-up (compiles every shape path)
    runs = alternate({b: (lambda b=b: b * steps / sum(minigrad_decode(model, prompts[b], total)))
                      for b in batches}, rounds)
    return {b: statistics.median(v) for b, v in runs.items()}


def forward_logits(model, tokens):
    """Logits of one forward (float32 numpy array)."""
    with no_grad():
        return model(tokens).data


def bf16(size, rounds, steps):
    config, _, model, tmodel, x, _ = build(size)
    ref = build(size, sides=("minigrad",))[2]  # an untouched float32 copy
    tokens = x[:1, :64]
    fp32_logits = forward_logits(ref, tokens)
    cast_to_bfloat16(model)
    bf_logits = forward_logits(model, tokens)
    diff = bf_logits - fp32_logits
    err = dict(max_abs=float(np.abs(diff).max()), max_abs_logit=float(np.abs(fp32_logits).max()),
               rel_rms=float(np.sqrt((diff ** 2).mean() / (fp32_logits ** 2).mean())),
               argmax_agree=float((bf_logits.argmax(-1) == fp32_logits.argmax(-1)).mean()))
    prompt, total = [int(i) for i in x[0, :PREFILL]], PREFILL + steps
    sides = {"minigrad bf16": lambda: minigrad_decode(model, prompt, total),
             "torch fp32": lambda: torch_decode(tmodel, prompt, total),
             "minigrad fp32": lambda: minigrad_decode(ref, prompt, total)}
    for fn in sides.values():
        fn()  # warm-up
    runs = alternate(sides, rounds)
    tok_s = {k: statistics.median(steps / sum(t) for t in v) for k, v in runs.items()}
    return dict(tok_per_s=tok_s, logit_error=err)


def context(rounds, steps, positions=(2048, 8192)):
    """{position: {side: median ms per decoded token}} after a prefill of position - steps tokens."""
    config, _, model, tmodel, x, _ = build(bench_gpt._long(max(positions)))
    minigrad_decode(model, [int(i) for i in x[0, :PREFILL]], PREFILL + 2)  # warm-up
    torch_decode(tmodel, [int(i) for i in x[0, :PREFILL]], PREFILL + 2)
    out = {}
    for pos in positions:
        prompt = [int(i) for i in x[0, :pos - steps]]
        runs = alternate({"minigrad": lambda: minigrad_decode(model, prompt, pos),
                          "torch": lambda: torch_decode(tmodel, prompt, pos)}, rounds)
        out[pos] = {k: 1e3 * statistics.median(t for ts in v for t in ts) for k, v in runs.items()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--sections", default="batched,bf16,context")
    ap.add_argument("--bf16-sizes", default="small,medium")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=32, help="decoded tokens per sequence and run")
    ap.add_argument("--context-steps", type=int, default=8, help="decoded tokens per run at 2k and 8k")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    results = dict(threads=args.threads, load_avg=os.getloadavg())
    if "batched" in sections:
        results["batched"] = batched(args.rounds, args.steps)
    if "bf16" in sections:
        results["bf16"] = {s: bf16(s, args.rounds, args.steps) for s in args.bf16_sizes.split(",")}
    if "context" in sections:
        results["context"] = context(args.rounds, args.context_steps)
    results["load_avg_end"] = os.getloadavg()

    print(f"threads: {args.threads}; load average at start {results['load_avg'][0]:.2f}, "
          f"at end {results['load_avg_end'][0]:.2f}")
    if "batched" in results:
        b = results["batched"]
        print("\n| small, sequences decoded together | aggregate tok/s | / one sequence |")
        print("|---:|---:|---:|")
        for n, v in b.items():
            print(f"| {n} | {v:.0f} | {v / b[1]:.2f} |")
    if "bf16" in results:
        print("\n| decode tok/s | minigrad bf16 | PyTorch fp32 | minigrad fp32 | bf16 / PyTorch | "
              "logit max abs err (max abs logit) | rel RMS err | argmax agrees |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for s, r in results["bf16"].items():
            t, e = r["tok_per_s"], r["logit_error"]
            print(f"| {s} | {t['minigrad bf16']:.0f} | {t['torch fp32']:.0f} | {t['minigrad fp32']:.0f} | "
                  f"{t['minigrad bf16'] / t['torch fp32']:.2f} | {e['max_abs']:.2g} ({e['max_abs_logit']:.2g}) | "
                  f"{e['rel_rms']:.2g} | {100 * e['argmax_agree']:.0f}% |")
    if "context" in results:
        c = results["context"]
        print("\n| ms per decoded token (4 layers, width 256) | minigrad | PyTorch | minigrad / PyTorch |")
        print("|---|---:|---:|---:|")
        for pos, v in c.items():
            print(f"| at {pos} positions | {v['minigrad']:.2f} | {v['torch']:.2f} | {v['minigrad'] / v['torch']:.2f} |")
        lo, hi = min(c), max(c)
        g = {k: c[hi][k] / c[lo][k] for k in ("minigrad", "torch")}
        print(f"| growth {hi} / {lo} | {g['minigrad']:.2f} | {g['torch']:.2f} | {g['minigrad'] / g['torch']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
    main()
