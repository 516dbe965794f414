"""Drop-in proxies of the official SDK clients whose calls are guarded: held before, charged after.

Guarded: `anthropic` `messages.create` (also `stream=True`) and `messages.stream`; `openai`
`chat.completions.create` and `responses.create` (each also with `stream=True`; for chat streams
`stream_options.include_usage` is turned on, so the last chunk carries the usage). Everything else
passes through untouched, and every request option reaches the SDK unchanged. Guard wraps the
async clients, SyncGuard the blocking ones. A denied call raises BudgetExceededError and never
reaches the provider; a provider error releases the hold; a stream is charged from its final usage,
or at the hold when it ends (or breaks) without one.
"""

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from budget_mcp.guard.usage import Usage, input_estimate, output_limit, usage_of

if TYPE_CHECKING:
    from budget_mcp.guard.core import Guard, GuardedCall
    from budget_mcp.guard.sync import SyncGuard, SyncGuardedCall

SUPPORTED = "anthropic.AsyncAnthropic and openai.AsyncOpenAI (Guard), anthropic.Anthropic and openai.OpenAI (SyncGuard)"
Reader = Callable[[Any, "StreamUsage"], None]


class _Proxy:
    """`target`, with some attributes replaced."""

    def __init__(self, target: Any, replaced: Mapping[str, Any]) -> None:
        self._target = target
        self._replaced = replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced[name] if name in self._replaced else getattr(self._target, name)


def _kind(client: Any) -> tuple[str, bool]:
    """("anthropic" or "openai", whether the client is async), or a TypeError naming what is supported."""
    for cls in type(client).__mro__:
        package = cls.__module__.split(".")[0]
        if (package, cls.__name__.removeprefix("Async")) in {("anthropic", "Anthropic"), ("openai", "OpenAI")}:
            return package, cls.__name__.startswith("Async")
    raise TypeError(f"wrap() supports {SUPPORTED}; got {type(client).__module__}.{type(client).__name__}")


def _hold(guard_call: Callable[..., Any], provider: str | None, request: Mapping[str, Any]) -> Any:
    """The guarded call for an SDK request: its model, its output limit, an upper bound of its input."""
    return guard_call(
        model=request.get("model"), provider=provider, input_tokens=input_estimate(request),
        max_output_tokens=output_limit(request),
    )  # fmt: skip


def _provider(kind: str, client: Any) -> str | None:
    base = str(getattr(client, "base_url", ""))
    return None if "openrouter" in base else kind


def _with_usage_chunk(request: dict[str, Any]) -> dict[str, Any]:
    return {**request, "stream_options": {**(request.get("stream_options") or {}), "include_usage": True}}


def _same(request: dict[str, Any]) -> dict[str, Any]:
    return request


def _guarded(client: Any, kind: str, create: Callable[..., Any], stream: Callable[..., Any]) -> _Proxy:
    """The client with its guarded methods in place: `create(method, reader, request_change)` guards a
    create method, `stream(open_stream, request)` Anthropic's `messages.stream`."""
    if kind == "anthropic":
        messages = client.messages
        return _Proxy(client, {"messages": _Proxy(messages, {
            "create": create(messages.create, anthropic_events),
            "stream": lambda **request: stream(messages.stream, request),
        })})  # fmt: skip
    completions = client.chat.completions
    return _Proxy(client, {
        "chat": _Proxy(client.chat, {"completions": _Proxy(completions, {
            "create": create(completions.create, openai_chunks, _with_usage_chunk),
        })}),
        "responses": _Proxy(client.responses, {"create": create(client.responses.create, openai_response_events)}),
    })  # fmt: skip


def _final_usage(stream: Any) -> Usage | None:
    """The usage of an Anthropic `messages.stream` that reached its end (its final delta sets a stop reason)."""
    snapshot = getattr(stream, "current_message_snapshot", None)
    return usage_of(snapshot) if getattr(snapshot, "stop_reason", None) is not None else None


# ---- reading usage from streamed events ----


class StreamUsage:
    """What a stream's events said of its usage so far; `final` once the provider's last figures came."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.final = False


def anthropic_events(event: Any, seen: StreamUsage) -> None:
    """Anthropic: `message_start` carries the input and cache counts, `message_delta` the final output count."""
    kind = getattr(event, "type", None)
    if kind == "message_start":
        seen.usage = usage_of(event.message)
    elif kind == "message_delta" and seen.usage is not None:
        delta = getattr(event, "usage", None)
        count = getattr(delta, "output_tokens", None)
        if isinstance(count, int):
            u = seen.usage
            seen.usage = Usage(u.input_tokens, count, u.cache_read_tokens, u.cache_write_tokens, model=u.model)
            seen.final = True


def openai_chunks(chunk: Any, seen: StreamUsage) -> None:
    """OpenAI chat: the usage rides the last chunk (asked for with include_usage)."""
    if getattr(chunk, "usage", None) is not None:
        seen.usage, seen.final = usage_of(chunk), True


def openai_response_events(event: Any, seen: StreamUsage) -> None:
    """OpenAI Responses: `response.completed` carries the whole response, usage included."""
    if getattr(event, "type", None) == "response.completed":
        found = usage_of(getattr(event, "response", None))
        if found is not None:
            seen.usage, seen.final = found, True


# ---- async ----


def wrap_async(guard: "Guard", client: Any, budget_id: str) -> Any:
    """The guarded proxy of an async client."""
    kind, is_async = _kind(client)
    if not is_async:
        raise TypeError(
            f"{type(client).__name__} is a blocking client: wrap it with SyncGuard (Guard wraps {SUPPORTED})"
        )
    provider = _provider(kind, client)

    def call(**check: Any) -> "GuardedCall":
        return guard.call(budget_id, **check)

    return _guarded(
        client, kind,
        lambda create, reader, request=_same: _async_create(call, provider, create, reader, request),
        lambda open_stream, request: _AsyncStreamManager(_hold(call, provider, request), open_stream(**request)),
    )  # fmt: skip


def _async_create(
    call: Callable[..., "GuardedCall"],
    provider: str | None,
    create: Callable[..., Any],
    reader: Reader,
    streaming_request: Callable[[dict[str, Any]], dict[str, Any]] = _same,
) -> Callable[..., Any]:
    async def guarded(**request: Any) -> Any:
        guarded_call = _hold(call, provider, request)
        await guarded_call.__aenter__()
        streaming = bool(request.get("stream"))
        try:
            response = await create(**(streaming_request(request) if streaming else request))
        except BaseException as exc:  # no response: the hold goes back
            await guarded_call.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if streaming:
            return _AsyncStream(response, guarded_call, reader)
        await guarded_call.settle(response)
        return response

    return guarded


class _AsyncStream:
    """An SDK stream that settles its call when it ends: from its final usage, else at the hold."""

    def __init__(self, stream: Any, call: "GuardedCall", reader: Reader) -> None:
        self._stream = stream
        self._call = call
        self._reader = reader
        self._seen = StreamUsage()
        self._events: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __aiter__(self) -> "_AsyncStream":
        return self

    async def __anext__(self) -> Any:
        if self._events is None:
            self._events = self._stream.__aiter__()
        try:
            event = await self._events.__anext__()
        except BaseException:  # the end, or a break: settle either way
            await self._finish()
            raise
        self._reader(event, self._seen)
        return event

    async def __aenter__(self) -> "_AsyncStream":
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the SDK's stream and settle the call."""
        closer = getattr(self._stream, "close", None)
        if closer is not None:
            await closer()
        await self._finish()

    async def _finish(self) -> None:
        if self._call.result is not None:
            return
        if self._seen.final and self._seen.usage is not None:
            await self._call.charge(self._seen.usage)
        else:
            await self._call.charge_held()


class _AsyncStreamManager:
    """`messages.stream(...)`: held on enter, settled on exit from the final message (else at the hold)."""

    def __init__(self, call: "GuardedCall", manager: Any) -> None:
        self._call = call
        self._manager = manager
        self._stream: Any = None

    async def __aenter__(self) -> Any:
        await self._call.__aenter__()
        try:
            self._stream = await self._manager.__aenter__()
        except BaseException as exc:
            await self._call.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self._stream

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> Any:
        try:
            return await self._manager.__aexit__(kind, error, tb)
        finally:
            usage = _final_usage(self._stream)
            if usage is not None:
                await self._call.charge(usage)
            else:
                await self._call.charge_held()


# ---- blocking ----


def wrap_sync(guard: "SyncGuard", client: Any, budget_id: str) -> Any:
    """The guarded proxy of a blocking client."""
    kind, is_async = _kind(client)
    if is_async:
        raise TypeError(f"{type(client).__name__} is an async client: wrap it with Guard (SyncGuard wraps {SUPPORTED})")
    provider = _provider(kind, client)

    def call(**check: Any) -> "SyncGuardedCall":
        return guard.call(budget_id, **check)

    return _guarded(
        client, kind,
        lambda create, reader, request=_same: _sync_create(call, provider, create, reader, request),
        lambda open_stream, request: _SyncStreamManager(_hold(call, provider, request), open_stream(**request)),
    )  # fmt: skip


def _sync_create(
    call: Callable[..., "SyncGuardedCall"],
    provider: str | None,
    create: Callable[..., Any],
    reader: Reader,
    streaming_request: Callable[[dict[str, Any]], dict[str, Any]] = _same,
) -> Callable[..., Any]:
    def guarded(**request: Any) -> Any:
        guarded_call = _hold(call, provider, request)
        guarded_call.__enter__()
        streaming = bool(request.get("stream"))
        try:
            response = create(**(streaming_request(request) if streaming else request))
        except BaseException as exc:  # no response: the hold goes back
            guarded_call.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if streaming:
            return _SyncStream(response, guarded_call, reader)
        guarded_call.settle(response)
        return response

    return guarded


class _SyncStream:
    """A blocking SDK stream that settles its call when it ends: from its final usage, else at the hold."""

    def __init__(self, stream: Any, call: "SyncGuardedCall", reader: Reader) -> None:
        self._stream = stream
        self._call = call
        self._reader = reader
        self._seen = StreamUsage()
        self._events: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __iter__(self) -> "_SyncStream":
        return self

    def __next__(self) -> Any:
        if self._events is None:
            self._events = iter(self._stream)
        try:
            event = next(self._events)
        except BaseException:  # the end, or a break: settle either way
            self._finish()
            raise
        self._reader(event, self._seen)
        return event

    def __enter__(self) -> "_SyncStream":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the SDK's stream and settle the call."""
        closer = getattr(self._stream, "close", None)
        if closer is not None:
            closer()
        self._finish()

    def _finish(self) -> None:
        if self._call.result is not None:
            return
        if self._seen.final and self._seen.usage is not None:
            self._call.charge(self._seen.usage)
        else:
            self._call.charge_held()


class _SyncStreamManager:
    """`messages.stream(...)` on a blocking client: held on enter, settled on exit."""

    def __init__(self, call: "SyncGuardedCall", manager: Any) -> None:
        self._call = call
        self._manager = manager
        self._stream: Any = None

    def __enter__(self) -> Any:
        self._call.__enter__()
        try:
            self._stream = self._manager.__enter__()
        except BaseException as exc:
            self._call.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self._stream

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> Any:
        try:
            return self._manager.__exit__(kind, error, tb)
        finally:
            usage = _final_usage(self._stream)
            if usage is not None:
                self._call.charge(usage)
            else:
                self._call.charge_held()
