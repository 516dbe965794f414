"""Fake Anthropic, OpenAI and OpenRouter APIs on 127.0.0.1, in a thread, for pointing the real SDKs at.

    with fake_providers() as providers:
        providers.usage = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=800)
        client = anthropic.Anthropic(base_url=providers.anthropic_base_url, api_key="test", max_retries=0)

Routes (POST): `/v1/messages` (and `/v1/messages/count_tokens`), `/v1/chat/completions`, `/v1/responses`,
`/openrouter/v1/chat/completions`. Anything else answers 404 in the provider's error format. Every request is
recorded in `providers.requests` before it is answered, failed ones included. Streams are chunked SSE on HTTP/1.1,
one event per chunk, like the real APIs.

How `Usage` lands on the wire (every provider's `output_tokens` already INCLUDES the reasoning tokens):

- Anthropic: `usage.input_tokens` = input_tokens (uncached only), `cache_read_input_tokens` = cache_read_tokens,
  `cache_creation_input_tokens` = cache_write_tokens, `output_tokens` = output_tokens and, when reasoning_tokens,
  `output_tokens_details.thinking_tokens`. Streamed: `message_start` has the input and cache fields and
  `output_tokens` 1; `message_delta` has only the final `output_tokens` (and the thinking tokens).
- OpenAI chat: `prompt_tokens` = input + cache_read + cache_write, the prompt total (so input + cache_read while
  cache_write_tokens is 0, the default; openai 3.57 has a `cache_write_tokens` detail, a part of the prompt),
  `prompt_tokens_details` {`cached_tokens`: cache_read, `cache_write_tokens`: cache_write}, `completion_tokens` =
  output_tokens, `completion_tokens_details.reasoning_tokens` = reasoning_tokens (a part of completion_tokens),
  `total_tokens` the sum.
  Streamed, usage comes only with `stream_options={"include_usage": True}`: a last chunk with empty `choices`.
- OpenAI Responses: the same totals as `input_tokens` / `output_tokens` / `total_tokens`, with
  `input_tokens_details` {`cached_tokens`, `cache_write_tokens`} and `output_tokens_details.reasoning_tokens`.
  Streamed, the usage is only on `response.completed` (`event.response.usage`).
- OpenRouter: OpenAI chat plus `usage.cost` (a JSON number, `float(cost_usd)`) when `cost_usd` is set. The SDK
  keeps it as an extra field: `(completion.usage.model_extra or {})["cost"]`, a float. Streamed, the usage chunk
  always comes, `stream_options` or not (OpenRouter's documented behaviour), after a `: OPENROUTER PROCESSING` comment.

Read back with the SDKs: anthropic `message.usage.input_tokens` / `.cache_read_input_tokens` /
`.cache_creation_input_tokens` / `.output_tokens` / `.output_tokens_details.thinking_tokens` (streamed: the
`message_start` event's `event.message.usage`, the `message_delta` event's `event.usage.output_tokens`, or
`stream.get_final_message().usage` which merges them); openai chat `completion.usage.prompt_tokens` /
`.prompt_tokens_details.cached_tokens` / `.completion_tokens` / `.completion_tokens_details.reasoning_tokens`
(streamed: `chunk.usage` of the last chunk, None on the others); responses `response.usage.input_tokens` /
`.input_tokens_details.cached_tokens` / `.output_tokens` / `.output_tokens_details.reasoning_tokens` (streamed:
`event.response.usage` of the `response.completed` event).

Failures: `fail_next(status)` answers the next request (any route) with that status and the provider's error JSON,
so the SDK raises its `APIStatusError` subclass (`InternalServerError` for 5xx, `RateLimitError` for 429, ...).
Each attempt the SDK makes is a request here (recorded, and using up one queued failure): build the clients with
`max_retries=0` unless the test is about retries.
`cut_next_stream()` breaks the next streamed answer after its text deltas, before anything carrying the final usage:

- mode "drop" (default): the connection closes mid-body (no last chunk). Iterating then raises, with anthropic
  2.15 `httpx2.RemoteProtocolError` itself (not an `anthropic.APIError`), with openai 3.57 `openai.APIConnectionError`.
- mode "end": the body ends cleanly but short. Both SDKs' raw streams end quietly: anthropic's last events are the
  text deltas (`messages.stream(...).get_final_message()` returns the snapshot, with `message_start`'s
  `output_tokens` 1 and `stop_reason` None); openai chat yields no usage chunk; responses yields no
  `response.completed` (the `responses.stream()` helper's `get_final_response()` raises RuntimeError).
- mode "error": the provider's in-stream error event, then a clean end. anthropic raises `APIStatusError`
  (status 200 — the HTTP status of the stream); openai chat raises `openai.APIError`; openai responses yields
  a `ResponseErrorEvent` (type "error") and ends quietly.

On exit the server closes every connection still open (an SDK client's pooled keep-alive ones included) and joins
its threads; the tests still close their SDK clients (`with anthropic.Anthropic(...) as client:`), as always.
"""

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count as counter
from typing import Any, Literal
from urllib.parse import urlsplit

Provider = Literal["anthropic", "openai", "openrouter"]
CutMode = Literal["drop", "end", "error"]

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass
class Usage:
    """What every response reports; `output_tokens` includes `reasoning_tokens`, `input_tokens` excludes the cache."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: str | None = None

    @property
    def prompt_tokens(self) -> int:
        """The prompt total as OpenAI and OpenRouter count it: uncached, read from and written to the cache."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


@dataclass(frozen=True)
class ProviderRequest:
    """One request the server received; `headers` has lower-case names, `body` is the parsed JSON (None if not)."""

    provider: Provider
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True


@dataclass(frozen=True)
class _Failure:
    status: int
    message: str
    error_type: str | None


@dataclass
class FakeProviders:
    """The running server: base URLs, the usage to report, what it received, and failures to inject."""

    url: str
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=100, output_tokens=20))
    text: str = "Hello from the fake provider."
    delay_seconds: float = 0.0
    """Wait before answering anything (headers included); released early when the server stops."""
    event_delay_seconds: float = 0.0
    """Wait before each SSE event of a stream."""
    requests: list[ProviderRequest] = field(default_factory=list)
    _failures: deque[_Failure] = field(default_factory=deque)
    _cuts: deque[CutMode] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _ids: Iterator[int] = field(default_factory=lambda: counter(1))

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def openrouter_base_url(self) -> str:
        return f"{self.url}/openrouter/v1"

    def fail_next(self, status: int = 500, message: str = "injected failure", error_type: str | None = None) -> None:
        """Answer the next request (of any route) with `status` and the provider's error body; calls queue up."""
        with self._lock:
            self._failures.append(_Failure(status, message, error_type))

    def cut_next_stream(self, mode: CutMode = "drop") -> None:
        """Break the next streamed answer after its text deltas (see the module docstring); calls queue up."""
        with self._lock:
            self._cuts.append(mode)

    def count(self, path_suffix: str = "", provider: Provider | None = None) -> int:
        """How many requests had a path ending in `path_suffix` (and came to `provider`, if given)."""
        return len(self.received(path_suffix, provider))

    def received(self, path_suffix: str = "", provider: Provider | None = None) -> list[ProviderRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path.endswith(path_suffix) and (provider is None or r.provider == provider)
            ]

    def _record(self, request: ProviderRequest) -> tuple[_Failure | None, CutMode | None, int]:
        with self._lock:
            self.requests.append(request)
            failure = self._failures.popleft() if self._failures else None
            cut = self._cuts.popleft() if failure is None and request.stream and self._cuts else None
            return failure, cut, next(self._ids)


def provider_of(path: str) -> Provider:
    if path.startswith("/openrouter/"):
        return "openrouter"
    return "anthropic" if path.startswith("/v1/messages") else "openai"


# --- what each provider answers -----------------------------------------------------------------------------------


@dataclass
class _Answer:
    """A JSON body, or an SSE stream split where a cut goes: `head` is sent either way, `tail` only in full."""

    status: int = 200
    body: Any = None
    head: list[bytes] = field(default_factory=list)
    tail: list[bytes] = field(default_factory=list)
    error_event: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _sse(data: Any, event: str | None = None) -> bytes:
    lines = f"event: {event}\n" if event else ""
    return f"{lines}data: {data if isinstance(data, str) else _json(data)}\n\n".encode()


def _pieces(text: str) -> list[str]:
    """The text in a few deltas (word by word, spaces kept), at least one."""
    words = text.split(" ")
    return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)] if text else [""]


def error_body(provider: Provider, status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """The provider's error JSON for an HTTP status."""
    if provider == "anthropic":
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        kind = error_type or ANTHROPIC_ERROR_TYPES.get(status, fallback)
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake_error"}
    if provider == "openrouter":
        return {"error": {"code": status, "message": message, "metadata": {}}}
    code = "rate_limit_exceeded" if status == 429 else None
    kind = error_type or ("requests" if status == 429 else "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def anthropic_usage(usage: Usage, *, streaming_start: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_write_tokens, "ephemeral_1h_input_tokens": 0},
        "output_tokens": min(1, usage.output_tokens) if streaming_start else usage.output_tokens,
        "service_tier": "standard",
    }
    if usage.reasoning_tokens and not streaming_start:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def chat_usage(usage: Usage, openrouter: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if openrouter and usage.cost_usd is not None:
        out["cost"] = float(Decimal(usage.cost_usd))
        out["is_byok"] = False
    return out


def responses_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }


def anthropic_messages(body: dict[str, Any], usage: Usage, text: str, n: int) -> _Answer:
    message: dict[str, Any] = {
        "id": f"msg_fake{n:06d}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-fake"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }
    headers = {"request-id": f"req_fake{n:06d}"}
    if not body.get("stream"):
        return _Answer(body=message, headers=headers)
    start = {**message, "content": [], "stop_reason": None, "usage": anthropic_usage(usage, streaming_start=True)}
    delta_usage: dict[str, Any] = {"output_tokens": usage.output_tokens}
    if usage.reasoning_tokens:
        delta_usage["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}

    def event(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, **fields}, kind)

    head = [
        event("message_start", message=start),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
        *(event("content_block_delta", index=0, delta={"type": "text_delta", "text": p}) for p in _pieces(text)),
    ]
    tail = [
        event("content_block_stop", index=0),
        event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage=delta_usage),
        event("message_stop"),
    ]
    error = _sse(error_body("anthropic", 529, "Overloaded"), "error")
    return _Answer(head=head, tail=tail, error_event=error, headers=headers)


def anthropic_count_tokens(usage: Usage) -> _Answer:
    return _Answer(body={"input_tokens": usage.prompt_tokens})


def chat_completions(body: dict[str, Any], usage: Usage, text: str, n: int, provider: Provider) -> _Answer:
    openrouter = provider == "openrouter"
    common: dict[str, Any] = {
        "id": f"gen-fake{n:06d}" if openrouter else f"chatcmpl-fake{n:06d}",
        "created": int(time.time()),
        "model": body.get("model", "gpt-fake"),
        "system_fingerprint": "fp_fake",
    }
    if not openrouter:
        common["service_tier"] = "default"
    headers = {"x-request-id": f"req_fake{n:06d}"}
    if not body.get("stream"):
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
        usage_body = chat_usage(usage, openrouter)
        completion = {**common, "object": "chat.completion", "choices": [choice], "usage": usage_body}
        return _Answer(body=completion, headers=headers)
    stream_options = body.get("stream_options")
    with_usage = openrouter or (isinstance(stream_options, dict) and stream_options.get("include_usage") is True)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        data = {**common, "object": "chat.completion.chunk", "choices": [choice]}
        return _sse({**data, "usage": None} if with_usage else data)

    head = [b": OPENROUTER PROCESSING\n\n"] if openrouter else []
    head += [chunk({"role": "assistant", "content": "", "refusal": None})]
    head += [chunk({"content": piece}) for piece in _pieces(text)]
    tail = [chunk({}, "stop")]
    if with_usage:
        usage_body = chat_usage(usage, openrouter)
        tail.append(_sse({**common, "object": "chat.completion.chunk", "choices": [], "usage": usage_body}))
    tail.append(_sse("[DONE]"))
    error = _sse(error_body(provider, 500, "The server had an error while processing your request."))
    return _Answer(head=head, tail=tail, error_event=error, headers=headers)


def responses(body: dict[str, Any], usage: Usage, text: str, n: int) -> _Answer:
    created = int(time.time())
    item_id = f"msg_fake{n:06d}"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    response: dict[str, Any] = {
        "id": f"resp_fake{n:06d}",
        "object": "response",
        "created_at": created,
        "status": "completed",
        "completed_at": created,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model", "gpt-fake"),
        "output": [item],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": responses_usage(usage),
        "user": None,
        "metadata": {},
    }
    headers = {"x-request-id": f"req_fake{n:06d}"}
    if not body.get("stream"):
        return _Answer(body=response, headers=headers)
    pending = {**response, "status": "in_progress", "completed_at": None, "output": [], "usage": None}
    seq = counter(0)

    def event(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    head = [
        event("response.created", response=pending),
        event("response.in_progress", response=pending),
        event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []}),
        event("response.content_part.added", **at, part={**part, "text": ""}),
        *(event("response.output_text.delta", **at, delta=piece, logprobs=[]) for piece in _pieces(text)),
    ]
    tail = [
        event("response.output_text.done", **at, text=text, logprobs=[]),
        event("response.content_part.done", **at, part=part),
        event("response.output_item.done", output_index=0, item=item),
        event("response.completed", response=response),
    ]
    error = event("error", code="server_error", message="The server had an error.", param=None)
    return _Answer(head=head, tail=tail, error_event=error, headers=headers)


def answer(provider: Provider, path: str, body: Any, usage: Usage, text: str, n: int) -> _Answer:
    """What `path` answers; 404 (in the provider's format) for a path it does not serve, 400 for a non-object body."""
    if path not in {
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/chat/completions",
        "/v1/responses",
        "/openrouter/v1/chat/completions",
    }:
        return _Answer(404, error_body(provider, 404, f"no route {path}"))
    if not isinstance(body, dict):
        return _Answer(400, error_body(provider, 400, "the body is not a JSON object"))
    if path == "/v1/messages":
        return anthropic_messages(body, usage, text, n)
    if path == "/v1/messages/count_tokens":
        return anthropic_count_tokens(usage)
    if path == "/v1/responses":
        return responses(body, usage, text, n)
    return chat_completions(body, usage, text, n, provider)


# --- the server -----------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many guarded calls at once: the default backlog of 5 resets connections


@contextmanager
def fake_providers() -> Iterator[FakeProviders]:
    """Start FakeProviders on a free port; on exit stop it, close every open connection and join its threads."""
    state = FakeProviders(url="")
    connections: set[socket.socket] = set()
    connections_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as separate small writes: without this, Nagle's algorithm and the
            # client's delayed ACK hold each answer back ~40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with connections_lock:
                connections.add(self.connection)

        def finish(self) -> None:
            with connections_lock:
                connections.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def do_POST(self) -> None:
            try:
                self._answer()
            except OSError:  # the client went away (a cancelled request, a closed stream)
                self.close_connection = True

        do_GET = do_PUT = do_DELETE = do_POST

        def _answer(self) -> None:
            path = urlsplit(self.path).path
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            provider = provider_of(path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = ProviderRequest(provider, self.command, path, headers, body, raw)
            failure, cut, n = state._record(request)
            if state.delay_seconds and state._stopping.wait(state.delay_seconds):
                self.close_connection = True
                return
            if failure is not None:
                failed = error_body(provider, failure.status, failure.message, failure.error_type)
                reply = _Answer(failure.status, failed)
            else:
                reply = answer(provider, path, body, state.usage, state.text, n)
            if reply.body is not None or not (reply.head or reply.tail):
                self._send_json(reply)
            else:
                self._send_stream(reply, cut)

        def _send_json(self, reply: _Answer) -> None:
            data = _json(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_stream(self, reply: _Answer, cut: CutMode | None) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            events = reply.head + ([reply.error_event] if cut == "error" else [] if cut else reply.tail)
            for data in events:
                if state.event_delay_seconds and state._stopping.wait(state.event_delay_seconds):
                    self.close_connection = True
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if cut == "drop":
                self.close_connection = True  # no last chunk: the body breaks off
                return
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = _Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = False
    httpd.block_on_close = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="fake-providers", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state._stopping.set()
        httpd.shutdown()
        with connections_lock:
            for conn in connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        httpd.server_close()  # joins the handler threads
        thread.join()
