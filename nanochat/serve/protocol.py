"""Requests of the OpenAI API checked field by field, and errors in OpenAI's shape
{"error": {"message", "type", "param", "code"}}."""
import json
from dataclasses import dataclass, field

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """An HTTP error answer; param names the offending request field."""

    def __init__(self, status, message, param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self):
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


@dataclass
class Limits:
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    max_message_chars: int = 32_000
    max_total_chars: int = 100_000
    max_n: int = 8


@dataclass
class GenerationRequest:
    """What one API request asks the engine for (n sequences sharing a prompt)."""
    prompt: list
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    n: int = 1
    temperature: float = 1.0
    top_k: int = None
    top_p: float = None
    seed: int = None
    stop: list = field(default_factory=list)  # strings that end a choice's text


def parse_json(raw, limits):
    """The body as a JSON object, or a 413 past the size limit and a 400 when it is not JSON."""
    if len(raw) > limits.max_body_bytes:
        raise too_large(limits)
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_kind(body)}", code="invalid_json")
    return body


def too_large(limits):
    return ApiError(413, f"the request body exceeds {limits.max_body_bytes} bytes", code="request_too_large")


def parse_chat(body, tokenizer, context, limits):
    """A chat.completions body -> GenerationRequest (prompt rendered for the next assistant turn)."""
    messages = _messages(body, limits)
    try:
        prompt = tokenizer.render_for_completion({"messages": messages})
    except ValueError as e:
        raise ApiError(400, f"messages: {e}", param="messages", code="invalid_messages") from None
    max_tokens = _optional(body, "max_completion_tokens", int, low=1)
    if max_tokens is None:
        max_tokens = _optional(body, "max_tokens", int, low=1)
        param = "max_tokens"
    else:
        param = "max_completion_tokens"
    return _generation(body, prompt, max_tokens, param, "messages", context, limits)


def parse_completion(body, tokenizer, context, limits):
    """A completions body -> GenerationRequest (the prompt continued as raw text after <|bos|>)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, f"'prompt' must be a string, got {_kind(prompt)}", param="prompt", code="invalid_type")
    if len(prompt) > limits.max_total_chars:
        raise ApiError(400, f"'prompt' has {len(prompt)} characters, more than the {limits.max_total_chars} "
                            "allowed", param="prompt", code="too_long")
    ids = tokenizer.encode(prompt, prepend="<|bos|>")  # ordinary text: special-token strings stay text
    max_tokens = _optional(body, "max_tokens", int, low=1)
    return _generation(body, ids, max_tokens, "max_tokens", "prompt", context, limits)


def _generation(body, prompt, max_tokens, max_tokens_param, prompt_param, context, limits):
    if len(prompt) >= context:
        raise ApiError(400, f"the prompt takes {len(prompt)} tokens, and this model's context is {context} "
                            "tokens (one at least must be left for the reply)", param=prompt_param,
                       code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = context - len(prompt)
    elif len(prompt) + max_tokens > context:
        raise ApiError(400, f"this model's context is {context} tokens, but {len(prompt)} in the prompt + "
                            f"{max_tokens} for the reply were asked for", param=max_tokens_param,
                       code="context_length_exceeded")
    stream = _optional(body, "stream", bool, default=False)
    options = _optional(body, "stream_options", dict, default={})
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise ApiError(400, f"'stream_options.include_usage' must be a boolean, got {_kind(include_usage)}",
                       param="stream_options.include_usage", code="invalid_type")
    top_p = _optional(body, "top_p", float, default=1.0, low=0.0, high=1.0, low_open=True)
    return GenerationRequest(
        prompt=prompt, max_tokens=max_tokens, stream=stream, include_usage=include_usage,
        n=_optional(body, "n", int, default=1, low=1, high=limits.max_n),
        temperature=_optional(body, "temperature", float, default=1.0, low=0.0, high=2.0),
        top_k=_optional(body, "top_k", int, low=1),
        top_p=None if top_p == 1 else top_p,
        seed=_optional(body, "seed", int, low=0, high=2**63 - 1),
        stop=_stop(body))


def _messages(body, limits):
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"'messages' must be a non-empty array, got {_kind(messages)}", param="messages",
                       code="invalid_type" if not isinstance(messages, list) else "empty")
    if len(messages) > limits.max_messages:
        raise ApiError(400, f"'messages' has {len(messages)} messages, more than the {limits.max_messages} allowed",
                       param="messages", code="too_many_messages")
    out, total = [], 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"'{where}' must be an object, got {_kind(message)}", param=where, code="invalid_type")
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"'{where}.role' must be 'system', 'user' or 'assistant', got {role!r}",
                           param=f"{where}.role", code="invalid_value")
        content = _content(message.get("content"), f"{where}.content")
        if len(content) > limits.max_message_chars:
            raise ApiError(400, f"'{where}.content' has {len(content)} characters, more than the "
                                f"{limits.max_message_chars} allowed", param=f"{where}.content", code="too_long")
        total += len(content)
        out.append({"role": role, "content": content})
    if total > limits.max_total_chars:
        raise ApiError(400, f"the messages have {total} characters in all, more than the {limits.max_total_chars} "
                            "allowed", param="messages", code="too_long")
    return out


def _content(content, where):
    """A string, or OpenAI's array of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"'{where}' must be a string or an array of text parts, got {_kind(content)}",
                   param=where, code="invalid_type")


def _stop(body):
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "'stop' must be a non-empty string or an array of at most 4 of them",
                       param="stop", code="invalid_value")
    return stops


def _optional(body, name, kind, default=None, low=None, high=None, low_open=False):
    """body[name] checked for type and range; default when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        what = {int: "an integer", float: "a number", bool: "a boolean", dict: "an object"}[kind]
        raise ApiError(400, f"'{name}' must be {what}, got {_kind(value)}", param=name, code="invalid_type")
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        lo = "none" if low is None else f"{'(' if low_open else '['}{low}"
        raise ApiError(400, f"'{name}' must be in {lo}, {high if high is not None else 'inf'}], got {value}",
                       param=name, code="invalid_value")
    return float(value) if kind is float else value


def _kind(value):
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


class StopScanner:
    """Cuts a choice's text at the first stop string: push returns the text that is safe to send
    (text that could still begin a stop string waits) and whether a stop string was found."""

    def __init__(self, stops):
        self.stops, self.held = stops, ""

    def push(self, text):
        self.held += text
        cuts = [self.held.find(s) for s in self.stops if s in self.held]
        if cuts:
            out, self.held = self.held[:min(cuts)], ""
            return out, True
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.held.endswith(s[:k])), default=0)
        out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return out, False

    def flush(self):
        out, self.held = self.held, ""
        return out
