"""The starlette application: OpenAI's chat.completions and completions (whole, or streamed as
server-sent events), models, health, and the chat page at /. Every error leaves in OpenAI's shape."""
import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from importlib.resources import files

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nanochat.engine import BatchedEngine, Engine, Sequence
from nanochat.serve.protocol import ApiError, Limits, StopScanner, parse_chat, parse_completion, parse_json, too_large
from nanochat.serve.worker import GenerationWorker

log = logging.getLogger("nanochat.serve")


class Server:
    """What the routes share: the engine on its worker thread, the limits and the admission count."""

    def __init__(self, model, tokenizer, model_id="nanochat", api_key=None, max_batch=8, max_queue=32,
                 limits=None):
        self.tokenizer, self.model_id, self.api_key = tokenizer, model_id, api_key
        self.context = model.config.sequence_len
        self.chat_stop_tokens = Engine(model, tokenizer).stop_tokens  # <|assistant_end|>, <|bos|>
        self.worker = GenerationWorker(BatchedEngine(model, max_batch))
        self.capacity = max_batch + max_queue  # sequences decoding or waiting for a row
        self.in_flight = 0  # changed only on the event loop
        self.limits = limits or Limits()
        self.created = int(time.time())

    def authorize(self, request):
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    def check_capacity(self, n):
        if self.in_flight + n > self.capacity:
            raise ApiError(429, f"the server is busy ({self.in_flight} sequences queued or running, at most "
                                f"{self.capacity}); retry shortly", code="queue_full")

    async def generate(self, req, stop_tokens, usage):
        """Yield (choice index, text, finish_reason or None) as the request's n sequences decode. Text
        comes in whole characters and is cut at a stop string; a failed generation raises ApiError 500.
        However the caller stops listening (disconnect, error), the sequences leave the batch."""
        self.check_capacity(req.n)
        loop = asyncio.get_running_loop()
        events = asyncio.Queue()
        seqs = [Sequence(req.prompt, req.max_tokens, req.temperature, req.top_k, req.top_p,
                         None if req.seed is None else req.seed + i, stop_tokens) for i in range(req.n)]
        index = {seq: i for i, seq in enumerate(seqs)}
        decoders = [self.tokenizer.stream_decoder() for _ in seqs]
        scanners = [StopScanner(req.stop) for _ in seqs]
        self.in_flight += req.n
        try:
            for seq in seqs:
                self.worker.submit(seq, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
            running = set(range(req.n))
            while running:
                event = await events.get()
                i = index[event.seq]
                if i not in running:
                    continue  # ended by a stop string already
                if event.finish == "cancelled":  # not by us: the worker is stopping
                    raise ApiError(503, "the server is shutting down", code="shutting_down")
                if event.finish == "error":
                    log.error("generation failed: %s", event.error)
                    raise ApiError(500, f"generation failed: {event.error}", code="generation_failed")
                text = ""
                if event.token is not None:
                    usage["completion_tokens"] += 1
                    text = decoders[i].push(event.token)
                if event.finish:
                    text += decoders[i].flush()
                text, hit = scanners[i].push(text)
                finish = "stop" if hit else event.finish
                if finish:
                    text += "" if hit else scanners[i].flush()
                    seqs[i].cancelled = True  # after a stop string the engine drops it at its next step
                    running.discard(i)
                yield i, text, finish
        finally:
            for seq in seqs:
                seq.cancelled = True
            self.in_flight -= req.n


def create_app(server):
    """The ASGI app over a Server; the worker thread runs for the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.worker.start()
        try:
            yield
        finally:
            server.worker.stop()

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
    handlers = {ApiError: api_error, HTTPException: http_error, Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.server = server
    return app


async def page(request):
    return HTMLResponse(files("nanochat.serve").joinpath("static/index.html").read_text(encoding="utf-8"))


async def health(request):
    return JSONResponse({"status": "ok"})


async def models(request):
    server = request.app.state.server
    server.authorize(request)
    return JSONResponse({"object": "list", "data": [
        {"id": server.model_id, "object": "model", "created": server.created, "owned_by": "nanochat",
         "max_model_len": server.context}]})  # the context length, under vLLM's name for it


async def chat_completions(request):
    server, req = await _parse(request, parse_chat)
    return await _respond(request, server, req, server.chat_stop_tokens, "chatcmpl-", "chat.completion", _chat_choice)


async def completions(request):
    server, req = await _parse(request, parse_completion)
    stop_tokens = (server.tokenizer.bos_token_id,)  # a new document ends the continuation
    return await _respond(request, server, req, stop_tokens, "cmpl-", "text_completion", _text_choice)


async def _parse(request, parse):
    server = request.app.state.server
    server.authorize(request)
    limits = server.limits
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise too_large(limits)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body_bytes:
            raise too_large(limits)
    req = parse(parse_json(bytes(raw), limits), server.tokenizer, server.context, limits)
    server.check_capacity(req.n)  # before the response starts, so a full queue still gets its 429
    return server, req


def _chat_choice(i, text, finish, streaming):
    if streaming:
        delta = {"content": text} if text else {}
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}


def _text_choice(i, text, finish, streaming):
    return {"index": i, "text": text, "logprobs": None, "finish_reason": finish}


async def _respond(request, server, req, stop_tokens, id_prefix, kind, choice):
    head = {"id": id_prefix + uuid.uuid4().hex, "object": kind, "created": int(time.time()), "model": server.model_id}
    usage = {"prompt_tokens": len(req.prompt), "completion_tokens": 0, "total_tokens": 0}
    generation = server.generate(req, stop_tokens, usage)
    if req.stream:
        return StreamingResponse(_stream(generation, req, head, usage, choice), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    texts, finishes = [""] * req.n, [None] * req.n

    async def collect():
        async for i, text, finish in generation:
            texts[i] += text
            finishes[i] = finish or finishes[i]

    if not await _unless_disconnected(request, collect()):
        return Response(status_code=499)  # nobody is listening; the sequences have left the batch
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return JSONResponse({**head, "choices": [choice(i, texts[i], finishes[i], False) for i in range(req.n)],
                         "usage": usage})


async def _unless_disconnected(request, work):
    """Run work; False if the client hung up first (work is then cancelled, which ends its generation)."""
    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, watch = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    watch.cancel()
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return False
    work.result()  # raises what the work raised (an ApiError from a failed generation)
    return True


async def _stream(generation, req, head, usage, choice):
    chunk_kind = head["object"] + ".chunk" if head["object"] == "chat.completion" else head["object"]
    head = {**head, "object": chunk_kind}

    def event(choices, **extra):
        return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

    if chunk_kind == "chat.completion.chunk":  # the first delta of each choice carries the role
        for i in range(req.n):
            yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}])
    try:
        async for i, text, finish in generation:
            if text:
                yield event([choice(i, text, None, True)])
            if finish:
                yield event([choice(i, "", finish, True)])
    except ApiError as e:  # the status line is sent already: the error travels as an event
        yield f"data: {json.dumps(e.body())}\n\n"
        return
    finally:
        await generation.aclose()
    if req.include_usage:
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        yield event([], usage=usage)
    yield "data: [DONE]\n\n"


async def api_error(request, exc):
    headers = {"Retry-After": "1"} if exc.status == 429 else None
    return JSONResponse(exc.body(), exc.status, headers=headers)


async def http_error(request, exc):
    message = {404: f"no such route: {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
    return await api_error(request, ApiError(exc.status_code, message, code={404: "not_found"}.get(exc.status_code)))


async def server_error(request, exc):
    log.exception("unexpected error", exc_info=exc)
    return await api_error(request, ApiError(500, "internal server error", code="internal_error"))
