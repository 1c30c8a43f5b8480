"""`nanochat sample`: stream text from a checkpoint."""
import sys

from nanochat.commands.options import add_model_args
from nanochat.engine import generate
from nanochat.interop import load_any


def register(sub):
    p = sub.add_parser("sample", help="stream text from a checkpoint", allow_abbrev=False)
    add_model_args(p)
    p.add_argument("--prompt", default="", help="text to continue (default: empty, start from <|bos|>)")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens to generate (default %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy (default %(default)s)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens (default: all)")
    p.add_argument("--top-p", type=float, default=None,
                   help="sample from the smallest set of tokens whose probability reaches p (default: off)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (default: random)")
    p.set_defaults(run=cmd_sample)


def cmd_sample(args):
    model, tokenizer = load_any(args.checkpoint, args.dtype, args.step)
    prompt = [tokenizer.bos_token_id] + tokenizer.encode(args.prompt)
    sys.stdout.write(args.prompt)
    stream_sample(model, tokenizer, prompt, args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                  top_p=args.top_p, seed=args.seed)
    return 0


def stream_sample(model, tokenizer, prompt_ids, max_tokens, **sampling):
    """Print the continuation as it is generated."""
    print_stream(tokenizer.decode_stream(generate(model, prompt_ids, max_tokens, **sampling)))


def print_stream(pieces):
    """Write text pieces as they come, then a newline; returns the whole text."""
    text = []
    for piece in pieces:
        text.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(text)
