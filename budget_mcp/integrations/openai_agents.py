"""BudgetHooks: OpenAI Agents SDK run hooks that hold each LLM call's worst case and charge its real cost.

    result = await Runner.run(agent, "...", hooks=BudgetHooks(guard=guard, budget_id="acme/research"))

The hold is taken on `on_llm_start` (a denial raises BudgetExceededError, which stops the run before
the call goes out) and settled on `on_llm_end` from the response's usage. Needs
`pip install 'budget-mcp[openai-agents]'`.
"""

from typing import Any

from agents import Agent, ModelResponse, RunContextWrapper, RunHooks
from agents.models import get_default_model

from budget_mcp.guard import Guard, GuardedCall
from budget_mcp.guard.usage import input_estimate, usage_of

__all__ = ["BudgetHooks"]


class BudgetHooks(RunHooks[Any]):
    """Run hooks guarding every LLM call of a run (agents, handoffs and tools included) on one budget."""

    def __init__(self, *, guard: Guard, budget_id: str | None = None) -> None:
        self.guard = guard
        self.budget_id = guard.resolve(budget_id)
        self._open: dict[tuple[int, str], GuardedCall] = {}

    async def on_llm_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], system_prompt: str | None, input_items: list[Any]
    ) -> None:
        settings = agent.model_settings
        call = self.guard.call(
            self.budget_id, model=_model_name(agent), provider="openai",
            input_tokens=input_estimate({"instructions": system_prompt or "", "input": input_items}),
            max_output_tokens=settings.max_tokens if settings and settings.max_tokens else None,
        )  # fmt: skip
        await call.__aenter__()
        self._open[(id(context), agent.name)] = call

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse) -> None:
        call = self._open.pop((id(context), agent.name), None)
        if call is None:
            return
        usage = usage_of(response)
        if usage is None:
            await call.charge_held()
        else:
            await call.charge(usage)


def _model_name(agent: Agent[Any]) -> str:
    model = agent.model
    if isinstance(model, str):
        return model
    return getattr(model, "model", None) or get_default_model()
