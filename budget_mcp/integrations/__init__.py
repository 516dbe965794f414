"""Guards for agent frameworks, one module each; each imports its framework only when it is itself imported.

- `budget_mcp.integrations.pydantic_ai.BudgetedModel`: a pydantic-ai model whose every request is guarded.
- `budget_mcp.integrations.openai_agents.BudgetHooks`: OpenAI Agents SDK run hooks that hold and charge.
"""
