"""What a guarded call holds and what it is charged, read from the SDKs' requests and responses.

No SDK is imported here: responses are read by their attributes, as the official `anthropic` and
`openai` packages shape them. Every token is counted once:
- Anthropic: `input_tokens` excludes the cache; cache reads and cache writes are their own counts.
- OpenAI chat and Responses: the prompt or input count includes the cached tokens and the cache
  writes (charged as such, the rest as input), and the completion or output count includes the
  reasoning tokens (so they are not added again). Anthropic's thinking is inside its output count too.
- OpenRouter (the openai client on its base URL): `usage.cost` is the provider's cost and wins.

The hold's input estimate is an upper bound: every token of these models' tokenizers stands for at
least one byte of text, so a request's text in UTF-8 bytes, plus a margin per message for the chat
template and a fixed allowance per image, is never below the true count.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

PER_MESSAGE = 8  # tokens a chat template may add around each message
PER_REQUEST = 32
PER_IMAGE = 3_000  # more than either provider bills for one image after its resizing
_TEXT_KEYS = ("messages", "system", "tools", "input", "instructions", "tool_choice", "response_format", "text")


@dataclass(frozen=True)
class Usage:
    """A call's tokens as the ledger counts them, and the provider's own cost when it reported one."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0  # only reasoning billed beyond output_tokens
    cost_usd: Decimal | None = None
    model: str | None = None


def usage_of(response: Any) -> Usage | None:
    """The usage of an Anthropic message, an OpenAI chat completion or Responses response (None if it has none)."""
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    model = getattr(response, "model", None)
    if hasattr(usage, "prompt_tokens"):  # OpenAI chat completions (and OpenRouter)
        return _openai(usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details", model)
    if hasattr(usage, "input_tokens_details"):  # OpenAI Responses (Anthropic has output details only)
        return _openai(usage, "input_tokens", "output_tokens", "input_tokens_details", model)
    return Usage(  # Anthropic messages
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        cache_read_tokens=_count(usage, "cache_read_input_tokens"),
        cache_write_tokens=_count(usage, "cache_creation_input_tokens"),
        model=model,
    )


def _openai(usage: Any, prompt: str, completion: str, details: str, model: str | None) -> Usage:
    """OpenAI's counts: the prompt includes cache reads and writes, the completion includes reasoning."""
    cached = _count(getattr(usage, details, None), "cached_tokens")
    written = _count(getattr(usage, details, None), "cache_write_tokens")
    return Usage(
        input_tokens=max(_count(usage, prompt) - cached - written, 0),
        output_tokens=_count(usage, completion),
        cache_read_tokens=cached,
        cache_write_tokens=written,
        cost_usd=provider_cost(usage),
        model=model,
    )


def provider_cost(usage: Any) -> Decimal | None:
    """OpenRouter's `usage.cost` (an extra field the openai SDK keeps), read by its decimal text."""
    cost = getattr(usage, "cost", None)
    if cost is None:
        extra = getattr(usage, "model_extra", None) or {}
        cost = extra.get("cost") if isinstance(extra, Mapping) else None
    if cost is None or isinstance(cost, bool):
        return None
    return Decimal(str(cost))


def _count(source: Any, name: str) -> int:
    value = getattr(source, name, None) if source is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def input_estimate(request: Mapping[str, Any]) -> int:
    """An upper bound of a request's input tokens (see the module docstring)."""
    images = 0
    messages = 0
    size = 0
    for key in _TEXT_KEYS:
        if key in request:
            found = _measure(request[key])
            size += found[0]
            images += found[1]
    raw = request.get("messages") or request.get("input")
    if isinstance(raw, list):
        messages = len(raw)
    return size + images * PER_IMAGE + messages * PER_MESSAGE + PER_REQUEST


def _measure(value: Any) -> tuple[int, int]:
    """(UTF-8 bytes of the text in `value`, how many images it holds)."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")), 0
    if isinstance(value, Mapping):
        if value.get("type") in {"image", "image_url", "input_image"}:
            return 0, 1
        return _total(_measure(v) for v in value.values()) if value else (0, 0)
    if isinstance(value, list | tuple):
        return _total(_measure(v) for v in value)
    if value is None or isinstance(value, bool | int | float):
        return len(json.dumps(value)), 0
    dumped = getattr(value, "model_dump", None)  # a pydantic object of the SDK, e.g. a tool definition
    return _measure(dumped()) if callable(dumped) else (len(str(value).encode()), 0)


def _total(parts: Iterable[tuple[int, int]]) -> tuple[int, int]:
    size = images = 0
    for part_size, part_images in parts:
        size += part_size
        images += part_images
    return size, images


def output_limit(request: Mapping[str, Any]) -> int | None:
    """The most output tokens the request lets the model write, if it says (else: the model's own limit)."""
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = request.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
