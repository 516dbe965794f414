"""BudgetedModel: a pydantic-ai model whose every request (plain or streamed) is held and charged by a Guard.

    model = BudgetedModel(OpenAIChatModel("gpt-4o", provider=...), guard=guard, budget_id="acme/research")
    agent = Agent(model)

Needs `pip install 'budget-mcp[pydantic-ai]'`. pydantic-ai's token counts include cache reads and
writes in the input count (its documented convention); they are charged as cache tokens, the rest as input.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

from budget_mcp.guard import Guard, GuardedCall, Usage
from budget_mcp.guard.usage import PER_MESSAGE, PER_REQUEST, input_estimate

__all__ = ["BudgetedModel"]


class BudgetedModel(WrapperModel):
    """`model`, with each request held before it goes out (BudgetExceededError when denied) and charged after."""

    def __init__(self, wrapped: Model | str, *, guard: Guard, budget_id: str | None = None) -> None:
        super().__init__(wrapped)
        self.guard = guard
        self.budget_id = guard.resolve(budget_id)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        async with self._call(messages, model_settings) as call:
            response = await self.wrapped.request(messages, model_settings, model_request_parameters)
            await call.charge(_usage(response.usage, response.model_name))
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncIterator[StreamedResponse]:
        async with self._call(messages, model_settings) as call:
            async with self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as stream:
                yield stream
            usage = stream.usage
            if usage.output_tokens:  # the stream reached its end (its usage arrived)
                await call.charge(_usage(usage, stream.model_name))
            else:
                await call.charge_held()

    def _call(self, messages: list[ModelMessage], settings: ModelSettings | None) -> GuardedCall:
        request = {"messages": ModelMessagesTypeAdapter.dump_python(messages, mode="json")}
        limit = (settings or {}).get("max_tokens")
        return self.guard.call(
            self.budget_id, model=self.model_name, provider=self.system,
            input_tokens=input_estimate(request) + PER_MESSAGE + PER_REQUEST,
            max_output_tokens=limit if isinstance(limit, int) else None,
        )  # fmt: skip


def _usage(usage: RequestUsage, model: str | None) -> Usage:
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    return Usage(
        input_tokens=max(usage.input_tokens - cached, 0), output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens, model=model,
    )  # fmt: skip
