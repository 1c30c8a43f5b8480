"""`nanochat chat`: talk to a checkpoint in the terminal.

The conversation is kept across turns; each reply streams token by token through the KV cache
and ends at <|assistant_end|> or the model's context limit, and the oldest exchanges are dropped
when the context is full. `-p PROMPT` answers one message and exits; with stdin from a pipe each
line is a user message. Ctrl-C or Ctrl-D ends the session with exit status 0.
"""
import sys

import numpy as np

from nanochat.commands.options import add_model_args
from nanochat.commands.sample import print_stream
from nanochat.engine import Engine
from nanochat.interop import load_any


def register(sub):
    p = sub.add_parser("chat", help="chat with a checkpoint (REPL, pipe or -p)", allow_abbrev=False)
    add_model_args(p)
    p.add_argument("-p", "--prompt", default=None,
                   help="answer this one message and exit (default: read messages from stdin)")
    p.add_argument("--temperature", type=float, default=0.6, help="0 for greedy (default %(default)s)")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k likeliest tokens (default %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (default: random)")
    p.add_argument("--max-tokens", type=int, default=256, help="longest reply (default %(default)s)")
    p.set_defaults(run=cmd_chat)


def cmd_chat(args):
    if not args.temperature >= 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    for name in ("top_k", "max_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.prompt is None and sys.stdin is None:  # started with stdin closed (<&-)
        raise ValueError("standard input is closed: pass -p PROMPT, or pipe messages in")
    model, tokenizer = load_any(args.checkpoint, args.dtype, args.step)
    engine = Engine(model, tokenizer)
    seeds = np.random.default_rng(args.seed)  # one seed per reply: a fixed --seed replays the session
    sampling = dict(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k)

    if args.prompt is not None:
        stream_reply(engine, [{"role": "user", "content": args.prompt}], seed=int(seeds.integers(2**31)), **sampling)
        return 0

    interactive = sys.stdin.isatty()
    if interactive:
        print("nanochat chat: type a message; /clear starts over, Ctrl-D or Ctrl-C quits.")
    messages = []
    try:
        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            text = line.strip()
            if not text:
                continue
            if text == "/clear":
                messages = []
                continue
            messages.append({"role": "user", "content": text})
            try:
                _, kept = engine.fit_context(messages)
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                messages.pop()
                continue
            if len(kept) < len(messages):
                print(f"(context full: dropped the {(len(messages) - len(kept)) // 2} oldest exchange(s))", file=sys.stderr)
                messages = kept
            if interactive:
                sys.stdout.write("assistant> ")
            reply = stream_reply(engine, messages, seed=int(seeds.integers(2**31)), **sampling)
            messages.append({"role": "assistant", "content": reply})
    except KeyboardInterrupt:
        pass
    if interactive:
        print()
    return 0


def stream_reply(engine, messages, **sampling):
    """Print the reply as it is generated and return its text."""
    return print_stream(engine.tokenizer.decode_stream(engine.chat(messages, **sampling)))
