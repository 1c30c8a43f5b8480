"""`nanochat serve`: the OpenAI-compatible API and the chat page over a checkpoint, on uvicorn."""
import socket
import sys
from pathlib import Path

from nanochat.commands.options import add_model_args
from nanochat.interop import load_any

SWITCH_INTERVAL_S = 0.0005


def register(sub):
    p = sub.add_parser("serve", help="serve a checkpoint over an OpenAI-compatible HTTP API and a chat page",
                       allow_abbrev=False)
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 routes (default: no key)")
    p.add_argument("--max-batch", type=int, default=8, help="sequences decoded together (default %(default)s)")
    p.add_argument("--max-queue", type=int, default=32,
                   help="sequences that may wait for a free row before requests get 429 (default %(default)s)")
    p.add_argument("--model-name", default=None, help="the model id the API reports (default: the directory name)")
    p.set_defaults(run=cmd_serve)


def cmd_serve(args):
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    for name in ("max_batch", "max_queue"):
        if getattr(args, name) < (1 if name == "max_batch" else 0):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.api_key is not None and not args.api_key.strip():
        raise ValueError("--api-key must not be empty")
    try:
        import uvicorn

        from nanochat.serve.app import Server, create_app
    except ImportError as e:
        raise ValueError(f"serving needs the 'serve' extra (pip install 'minigrad-nanochat[serve]'): {e}") from None
    model, tokenizer = load_any(args.checkpoint, args.dtype, args.step)
    model_id = args.model_name or Path(args.checkpoint).resolve().name
    server = Server(model, tokenizer, model_id, api_key=args.api_key, max_batch=args.max_batch,
                    max_queue=args.max_queue)
    try:
        sock = socket.create_server((args.host, args.port), family=_family(args.host))
    except (OSError, OverflowError) as e:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror if isinstance(e, OSError) else e}") from None
    port = sock.getsockname()[1]
    # the generation thread holds the GIL through minigrad's Python between kernels; the event loop
    # needs it several times per streamed token, and waited up to the default 5 ms switch interval
    # each time
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    config = uvicorn.Config(create_app(server), log_level="warning", timeout_graceful_shutdown=3)
    runner = uvicorn.Server(config)
    host = f"[{args.host}]" if ":" in args.host else args.host
    _announce_when_ready(runner, f"http://{host}:{port}")
    _end_streams_on_shutdown(runner, server)
    try:
        runner.run(sockets=[sock])  # Ctrl-C: uvicorn stops accepting, ends open streams, stops the worker
    except KeyboardInterrupt:  # uvicorn raises the captured signal again once it has shut down
        pass
    finally:
        sock.close()
    print("nanochat serve: stopped", flush=True)
    return 0


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _end_streams_on_shutdown(runner, server):
    """Stop generating as soon as uvicorn starts to shut down: every open stream then ends with an
    error event and closes properly, rather than being cut when the graceful timeout runs out."""
    shutdown = runner.shutdown

    async def stop_generation_first(*a, **k):
        server.worker.stop()
        await shutdown(*a, **k)
    runner.shutdown = stop_generation_first


def _announce_when_ready(runner, url):
    """Print the URL once uvicorn serves (after the app's startup has started the worker)."""
    startup = runner.startup

    async def announce(*a, **k):
        await startup(*a, **k)
        if runner.started:
            print(f"nanochat serve: listening on {url} (chat page at {url}/, API at {url}/v1)", flush=True)
    runner.startup = announce
