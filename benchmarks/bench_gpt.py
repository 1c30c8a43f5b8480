"""Benchmark minigrad's nanochat GPT against the same model in PyTorch (TorchGPT), CPU, float32.

    python benchmarks/bench_gpt.py [--sizes tiny,small] [--sections train,decode,memory,mfu,arch]
                                   [--repeats 7] [--threads N] [--json PATH]
    python benchmarks/bench_gpt.py --sizes medium,long2k,long4k --sections train,memory
    python benchmarks/bench_gpt.py --sections scaling --json scaling.json --plot scaling.png

Both sides get the same weights, the same data and the same thread count (OpenBLAS, numba and
torch.set_num_threads). Sections:
- train: one step = forward, backward and an AdamW step over every parameter; the two
  contenders alternate (order rotating each round) after warm-up; cells are medians.
- decode: batch-1 single-token decode through a KV cache, after a 16-token prefill, up to the
  full sequence length; tokens/s, and ms/token over the first and the last quarter of the
  positions (growth = last / first). TorchGPT decodes through its TorchKVCache, as nanochat's
  model does. Batched, bfloat16-weight and 2k/8k-context decode: benchmarks/bench_decode.py.
- memory: peak RSS of a fresh subprocess per side that runs three training steps (VmHWM; it is
  ru_maxrss without the parent's RSS that Linux carries into a child across fork + exec).
- mfu: model FLOPs utilisation = estimate_flops() * tokens/s / peak, with peak the float32
  throughput of a large GEMM measured in this run.
- arch (only when asked for): minigrad's classic GPT against nanochat's 2026 preset and each of its
  options alone, all at one width. Step time (forward, backward, the model's own optimizers) at a
  1024-token context (batch 2), where the short windows are a quarter of it; then the validation loss after
  the default `nanochat train` budget on the bundled corpus (each run in-process, as the command
  runs it, with --arch naming the variant).
- window (only when asked for): the fused attention kernel's forward + backward at T = 1024 with
  sliding windows of 256 and 128 keys against full causal attention.
- causal: minigrad's attention forward + backward at T=2048 and 4096 (B=1, 2 heads of 128) with the
  causal mask against no mask: skipping the key blocks above the diagonal should make it about half.
- scaling: train step time and tokens/s of both sides over depth (nanochat's sizing: n_layer = depth,
  width 64 x depth, heads of width 128; B=1, T=512) and over the context (4 layers, width 256, B=1,
  T = 128 ... 4096), each point a race as in train (--scaling-repeats rounds); --plot draws it (log axes).
Sizes: tiny, small; medium (nanochat d12: 12 layers, width 768, vocab 32768, B=4, T=512); long2k and
long4k (4 layers, width 256, B=1, T=2048 / 4096).
Prints a Markdown table (ratio = minigrad / PyTorch; for arch, variant / classic) and writes JSON
with --json.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _set_threads(n):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


# thread counts must be fixed before numpy / numba / torch load their pools
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--threads", type=int, default=os.cpu_count())
_set_threads(_pre.parse_known_args()[0].threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minigrad import no_grad  # noqa: E402
from minigrad.optim import AdamW  # noqa: E402
from nanochat.engine import KVCache  # noqa: E402
from nanochat.gpt import GPT, GPTConfig  # noqa: E402
from nanochat.torch_gpt import TorchGPT, TorchKVCache  # noqa: E402

def _long(T):
    return dict(sequence_len=T, vocab_size=4096, n_layer=4, n_head=2, n_kv_head=2, n_embd=256), 1


def _depth(d, T=512):
    """nanochat's sizing for a depth: width 64 x depth, heads of width 128."""
    heads = max(1, d // 2)
    return dict(sequence_len=T, vocab_size=4096, n_layer=d, n_head=heads, n_kv_head=heads, n_embd=64 * d), 1


SIZES = {
    "tiny": (dict(sequence_len=128, vocab_size=256, n_layer=4, n_head=4, n_kv_head=4, n_embd=128), 8),
    "small": (dict(sequence_len=256, vocab_size=4096, n_layer=6, n_head=6, n_kv_head=6, n_embd=384), 8),
    "medium": (dict(sequence_len=512, vocab_size=32768, n_layer=12, n_head=6, n_kv_head=6, n_embd=768), 4),
    "long2k": _long(2048),
    "long4k": _long(4096),
}
# the scaling sheet: (axis, value) -> size
SCALING = {**{("depth", d): _depth(d) for d in (2, 4, 8, 12)},
           **{("T", t): _long(t) for t in (128, 256, 512, 1024, 2048, 4096)}}
PREFILL = 16


def build(size, seed=0, sides=("minigrad", "torch")):
    """(config, batch, minigrad GPT, TorchGPT with the same weights, inputs, targets); a side
    not in `sides` is None (the memory subprocesses build only their own). size: a name of SIZES
    or a (kwargs, batch) pair."""
    kw, batch = SIZES[size] if isinstance(size, str) else size
    config = GPTConfig(**kw)
    model = GPT(config, seed=seed)
    # random weights everywhere (the default init zeroes lm_head and c_proj, which would make
    # the step unrepresentative)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0.0, 0.02, p.shape)
    tmodel = None
    if "torch" in sides:
        tmodel = TorchGPT(config)
        tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    if "minigrad" not in sides:
        model = None
    x = rng.integers(0, config.vocab_size, (batch, config.sequence_len))
    y = rng.integers(0, config.vocab_size, (batch, config.sequence_len))
    return config, batch, model, tmodel, x, y


def minigrad_train_step(model, x, y):
    opt = AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

    def step():
        for p in model.parameters():
            p.grad = None
        loss = model(x, y)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def torch_train_step(tmodel, x, y):
    opt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4, weight_decay=0.0, foreach=False)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = tmodel(tx, ty)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def race(contenders, repeats, warmup=2):
    """Median seconds per call of each contender, timed in alternating rounds."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - t)
    return {name: statistics.median(s) for name, s in samples.items()}


# ---- decode -------------------------------------------------------------------------------------

def minigrad_decode(model, prompt, total):
    """Per-step seconds of decoding positions len(prompt)..total-1 after a prefill (greedy). prompt:
    a list of token ids, or a (batch, length) array of prompts decoded together through one cache."""
    cfg, prompts = model.config, np.atleast_2d(np.asarray(prompt))
    cache = KVCache(len(prompts), cfg.n_kv_head, cfg.head_dim, cfg.n_layer, max_len=total)
    times = []
    with no_grad():
        logits = model(prompts, kv_cache=cache).data[:, -1]
        for _ in range(total - prompts.shape[1]):
            t = time.perf_counter()
            nxt = np.argmax(logits, axis=-1)
            logits = model(nxt[:, None], kv_cache=cache).data[:, -1]
            times.append(time.perf_counter() - t)
    return times


@torch.no_grad()
def torch_decode(tmodel, prompt, total):
    cfg, prompts = tmodel.config, torch.from_numpy(np.atleast_2d(np.asarray(prompt)))
    cache = TorchKVCache(len(prompts), cfg.n_kv_head, cfg.head_dim, cfg.n_layer, total)
    times = []
    logits = tmodel(prompts, kv_cache=cache)[:, -1]
    for _ in range(total - prompts.shape[1]):
        t = time.perf_counter()
        nxt = torch.argmax(logits, dim=-1)
        logits = tmodel(nxt[:, None], kv_cache=cache)[:, -1]
        times.append(time.perf_counter() - t)
    return times


def decode_stats(times):
    q = max(1, len(times) // 4)
    first, last = statistics.median(times[:q]), statistics.median(times[-q:])
    return dict(tok_per_s=len(times) / sum(times), ms_first=1e3 * first, ms_last=1e3 * last,
                growth=last / first)


# ---- memory (subprocess) ------------------------------------------------------------------------

def _memory_child(side, size):
    config, batch, model, tmodel, x, y = build(size, sides=(side,))
    step = minigrad_train_step(model, x, y) if side == "minigrad" else torch_train_step(tmodel, x, y)
    for _ in range(3):
        step()
    print(json.dumps(dict(maxrss_mb=_peak_rss_mb())))


def _peak_rss_mb():
    """Peak RSS of this process image in MiB. Linux carries ru_maxrss across fork + exec (a child
    reports at least its parent's RSS at the fork), so VmHWM, which exec resets, is read first."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(side, size, threads):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--threads", str(threads),
                          "--_memory-child", side, "--sizes", size], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["maxrss_mb"]


def gemm_peak(n=2048, repeats=5):
    """Measured float32 GEMM throughput (FLOP/s) of minigrad's matmul (numpy's OpenBLAS, split over
    numba's threads) and of torch (MKL); the larger is the peak."""
    from minigrad import kernels
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ta = torch.from_numpy(a)
    best = {}
    for name, fn in (("minigrad", lambda: kernels.matmul(a, a)), ("torch", lambda: ta @ ta)):
        fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        best[name] = 2 * n ** 3 / min(ts)
    return max(best.values()), best


# ---- arch: the classic model against the 2026 preset and each option alone ----------------------

ARCH_VARIANTS = {
    "classic": {}, "pad_vocab_size_to=64": dict(pad_vocab_size_to=64), "window_pattern=SSSL": dict(window_pattern="SSSL"),
    "rope_base=1e5": dict(rope_base=100000.0), "qk_scale=1.2": dict(qk_scale=1.2),
    "layer_lambdas": dict(layer_lambdas=True), "value_embeds": dict(value_embeds=True), "smear": dict(smear=True),
    "backout": dict(backout=True), "recipe=2026": dict(recipe="2026"), "2026 preset": "preset",
}
ARCH_SIZES = dict(vocab_size=2048, n_layer=4, n_head=2, n_kv_head=2, n_embd=256)  # depth 4's width


def arch_config(variant, **sizes):
    options = ARCH_VARIANTS[variant]
    return GPTConfig.nanochat_2026(**sizes) if options == "preset" else GPTConfig(**sizes, **options)


def arch_step(config, seq_len, seed=0):
    model = GPT(config, seed=seed)
    optimizers = model.setup_optimizers()
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, config.vocab_size, (2, 2, seq_len))

    def step():
        loss = model(x, targets=y)
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
    return step


def arch_train_run(variant, out):
    """`nanochat train --arch VARIANT` with every other option at its default: (final val loss,
    val bpb, median tokens/s)."""
    import contextlib
    import io
    from nanochat import cli, train
    train.ARCHITECTURES[variant] = lambda **sizes: arch_config(variant, **sizes)
    args = cli.build_parser().parse_args(["train", "--out", str(out), "--sample-tokens", "0"])
    args.arch = variant
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli.cmd_train(args)
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    last = [r for r in records if "val_loss" in r][-1]
    return last["val_loss"], last["val_bpb"], statistics.median(r["tok_per_s"] for r in records if "tok_per_s" in r)


def arch_section(repeats, variants, trained, seq_len=1024):
    import tempfile
    sizes = dict(ARCH_SIZES, sequence_len=seq_len)
    times = race({v: arch_step(arch_config(v, **sizes), seq_len) for v in variants}, repeats)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in trained:
            runs[v] = arch_train_run(v, os.path.join(tmp, v.replace("=", "_").replace(" ", "_")))
    rows, untrained = [], (float("nan"),) * 3
    for v in variants:
        run = runs.get(v, untrained)
        rows.append((v, 1e3 * times[v], times[v] / times["classic"], *run, run[0] - runs.get("classic", untrained)[0]))
    return dict(step_s=times, train_runs=runs), rows


def window_section(repeats, T=1024, windows=(None, 256, 128)):
    """Seconds of the attention kernel's forward + backward per window (B 2, 2 heads of 128)."""
    from minigrad import kernels
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.standard_normal((2, T, 2, 128)).astype(np.float32) for _ in range(4))

    def run(window):
        out, p = kernels.attention_forward(q, k, v, 0.1, 0, window)
        kernels.attention_backward(q, k, v, out, p, g, 0.1, 0, window)
    return race({w: (lambda w=w: run(w)) for w in windows}, repeats)


# ---- causal skipping ----------------------------------------------------------------------------

def causal_work(repeats, T_values=(2048, 4096), heads=2, head_dim=128):
    """{T: causal / full seconds} of minigrad's attention forward + backward (B=1, the long-context
    heads): the causal mask skips the key blocks above the diagonal, so about half the work."""
    from minigrad import kernels
    rng = np.random.default_rng(0)
    out = {}
    for T in T_values:
        q, k, v, g = (rng.standard_normal((1, T, heads, head_dim)).astype(np.float32) for _ in range(4))

        def fwd_bwd(offset):
            def run():
                o, p = kernels.attention_forward(q, k, v, head_dim ** -0.5, offset)
                kernels.attention_backward(q, k, v, o, p, g, head_dim ** -0.5, offset)
            return run
        t = race({"causal": fwd_bwd(0), "full": fwd_bwd(T)}, repeats)
        out[T] = dict(seconds=t, ratio=t["causal"] / t["full"])
    return out


# ---- scaling sheet ------------------------------------------------------------------------------

def scaling(repeats, warmup):
    """{axis: [{value, tokens, step_s: {side: s}, tok_per_s: {side: tok/s}}]} over SCALING."""
    sheet = {}
    for (axis, value), size in SCALING.items():
        config, batch, model, tmodel, x, y = build(size)
        t = race({"minigrad": minigrad_train_step(model, x, y), "torch": torch_train_step(tmodel, x, y)},
                 repeats, warmup)
        tokens = batch * config.sequence_len
        sheet.setdefault(axis, []).append(dict(value=value, tokens=tokens, step_s=t,
                                               tok_per_s={k: tokens / v for k, v in t.items()}))
        print(f"scaling {axis}={value}: minigrad {t['minigrad']:.3g} s, torch {t['torch']:.3g} s, "
              f"ratio {t['minigrad'] / t['torch']:.2f}", file=sys.stderr)
        del model, tmodel
    return sheet


def plot_scaling(sheet, path, threads):
    """Step time of both sides over each axis (log-log), the ratio on a second axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = {"depth": "depth (layers; width 64 x depth; B=1, T=512)", "T": "context T (4 layers, width 256, B=1)"}
    fig, axes = plt.subplots(1, len(sheet), figsize=(6 * len(sheet), 4.5))
    for ax, (axis, points) in zip(np.atleast_1d(axes), sheet.items()):
        xs = [p["value"] for p in points]
        for side, style in (("minigrad", "o-"), ("torch", "s--")):
            ax.plot(xs, [1e3 * p["step_s"][side] for p in points], style, label=side)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.set_xlabel(labels.get(axis, axis))
        ax.set_ylabel("train step (ms)")
        ratio = ax.twinx()
        ratio.plot(xs, [p["step_s"]["minigrad"] / p["step_s"]["torch"] for p in points], "k:", alpha=0.6)
        ratio.set_ylabel("minigrad / PyTorch (dotted)")
        ratio.set_ylim(0, 2)
        ax.legend(loc="upper left")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Train step cost, minigrad vs PyTorch, float32, {threads} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---- main ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--sections", default="train,decode,memory,mfu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--decode-len", type=int, default=None, help="decode up to this many positions "
                    "(default: the full sequence length)")
    ap.add_argument("--arch-variants", default=",".join(ARCH_VARIANTS),
                    help="for --sections arch: which of " + ", ".join(ARCH_VARIANTS))
    ap.add_argument("--arch-train", default="classic,2026 preset",
                    help="for --sections arch: the variants also trained with the default budget ('' for none)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps of each side before a race")
    ap.add_argument("--scaling-repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="PNG of the scaling sheet")
    ap.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = args.sizes.split(",")
    if args.memory_child:
        return _memory_child(args.memory_child, sizes[0])
    sections = set(args.sections.split(","))
    import numba
    results = dict(threads=args.threads, numba_threads=numba.get_num_threads(),
                   torch_threads=torch.get_num_threads(), load_avg=os.getloadavg(), sizes={})
    rows = []
    if "mfu" in sections:
        peak, per_lib = gemm_peak()
        results["gemm_peak_gflops"] = peak / 1e9
        results["gemm_gflops"] = {k: v / 1e9 for k, v in per_lib.items()}
    for size in (sizes if sections & {"train", "decode", "memory", "mfu"} else []):
        config, batch, model, tmodel, x, y = build(size)
        res = results["sizes"][size] = {}
        if "train" in sections or "mfu" in sections:
            t = race({"minigrad": minigrad_train_step(model, x, y), "torch": torch_train_step(tmodel, x, y)},
                     args.repeats, args.warmup)
            res["train_s"] = t
            rows.append((f"{size} train step (ms)", 1e3 * t["minigrad"], 1e3 * t["torch"]))
            if "mfu" in sections:
                tokens = batch * config.sequence_len
                flops = model.estimate_flops()
                mfu = {k: flops * tokens / v / results["gemm_peak_gflops"] / 1e9 for k, v in t.items()}
                res["mfu"] = mfu
                rows.append((f"{size} train MFU (%)", 100 * mfu["minigrad"], 100 * mfu["torch"]))
        if "decode" in sections:
            total = args.decode_len or config.sequence_len
            prompt = [int(i) for i in x[0, :PREFILL]]
            stats = {"minigrad": [], "torch": []}
            minigrad_decode(model, prompt, min(total, PREFILL + 8))  # warm-up
            torch_decode(tmodel, prompt, min(total, PREFILL + 8))
            for r in range(3):
                for side in (("minigrad", "torch") if r % 2 == 0 else ("torch", "minigrad")):
                    fn = minigrad_decode if side == "minigrad" else torch_decode
                    stats[side].append(fn(model if side == "minigrad" else tmodel, prompt, total))
            # per position, the median over the runs
            med = {k: [statistics.median(col) for col in zip(*v)] for k, v in stats.items()}
            d = res["decode"] = {k: decode_stats(v) for k, v in med.items()}
            rows.append((f"{size} decode (tok/s)", d["minigrad"]["tok_per_s"], d["torch"]["tok_per_s"]))
            rows.append((f"{size} decode ms/token, first quarter", d["minigrad"]["ms_first"], d["torch"]["ms_first"]))
            rows.append((f"{size} decode ms/token, last quarter", d["minigrad"]["ms_last"], d["torch"]["ms_last"]))
            rows.append((f"{size} decode growth (last/first)", d["minigrad"]["growth"], d["torch"]["growth"]))
        if "memory" in sections:
            m = res["peak_rss_mb"] = {side: peak_memory(side, size, args.threads) for side in ("minigrad", "torch")}
            rows.append((f"{size} train peak RSS (MiB)", m["minigrad"], m["torch"]))
        del model, tmodel
    arch_rows = []
    if "arch" in sections:
        variants, trained = args.arch_variants.split(","), [v for v in args.arch_train.split(",") if v]
        unknown = (set(variants) | set(trained)) - set(ARCH_VARIANTS)
        if unknown or "classic" not in variants or (trained and "classic" not in trained) or not set(trained) <= set(variants):
            sys.exit(f"--arch-variants/--arch-train: unknown {sorted(unknown)}; classic must be timed (and trained "
                     "when any variant is), and every trained variant timed")
        results["arch"], arch_rows = arch_section(args.repeats, variants, trained)
    window_rows = []
    if "window" in sections:
        t = window_section(args.repeats)
        results["window_s"] = {str(w): v for w, v in t.items()}
        window_rows = [(w, 1e3 * v, v / t[None]) for w, v in t.items()]
    if "causal" in sections:
        causal = results["causal"] = causal_work(args.repeats)
        for T, c in causal.items():
            rows.append((f"attention fwd+bwd T={T}: causal vs full (ms; ratio column = causal / full)",
                         1e3 * c["seconds"]["causal"], 1e3 * c["seconds"]["full"]))
    if "scaling" in sections:
        sheet = results["scaling"] = scaling(args.scaling_repeats, args.warmup)
        for axis, points in sheet.items():
            for p in points:
                rows.append((f"scaling {axis}={p['value']} train step (ms)", 1e3 * p["step_s"]["minigrad"],
                             1e3 * p["step_s"]["torch"]))
        if args.plot:
            plot_scaling(sheet, args.plot, args.threads)
    results["load_avg_end"] = os.getloadavg()

    print(f"threads: {args.threads} (numba {results['numba_threads']}, torch {results['torch_threads']}); "
          f"load average at start {results['load_avg'][0]:.2f}, at end {results['load_avg_end'][0]:.2f}")
    if "gemm_peak_gflops" in results:
        g = results["gemm_gflops"]
        print(f"float32 GEMM 2048^3: minigrad {g['minigrad']:.1f} GFLOP/s, torch {g['torch']:.1f} GFLOP/s "
              f"(peak = {results['gemm_peak_gflops']:.1f})")
    if rows:
        print()
        print("| measure | minigrad | PyTorch | minigrad / PyTorch |")
        print("|---|---:|---:|---:|")
        for name, a, b in rows:
            print(f"| {name} | {a:.3g} | {b:.3g} | {a / b:.2f} |")
    if window_rows:
        print("\n| attention window (T = 1024) | forward + backward (ms) | / full causal |")
        print("|---|---:|---:|")
        for w, ms, ratio in window_rows:
            print(f"| {'full causal' if w is None else w} | {ms:.0f} | {ratio:.2f} |")
    if arch_rows:
        s = ARCH_SIZES
        print(f"\nstep: {s['n_layer']} layers, width {s['n_embd']}, 2 x 1024 tokens; val loss: `nanochat train` "
              f"defaults (--arch VARIANT)\n")
        print("| variant | step (ms) | step / classic | val loss | val bpb | train tok/s | val loss - classic |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for v, ms, ratio, loss, bpb, tok_s, delta in arch_rows:
            print(f"| {v} | {ms:.0f} | {ratio:.2f} | {loss:.4f} | {bpb:.4f} | {tok_s:.0f} | {delta:+.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
