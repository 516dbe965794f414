"""A separate OS process guarding its own OpenAI calls on a shared ledger (run by the guard tests).

    python worker.py LEDGER BUDGET OPENAI_BASE_URL START_FILE
It makes guarded gpt-4o calls until one is denied, then prints how many went out.
"""

import sys
import time
from pathlib import Path

import openai

from budget_mcp.errors import BudgetExceededError
from budget_mcp.guard import SyncGuard


def main(ledger: str, budget_id: str, base_url: str, start_file: str) -> None:
    with SyncGuard.open(ledger, budget_id=budget_id) as guard, openai.OpenAI(base_url=base_url, api_key="t") as client:
        guarded = guard.wrap(client)
        print("ready", flush=True)
        while not Path(start_file).exists():  # the workers start together, so they really overlap
            time.sleep(0.001)
        calls = 0
        while True:
            try:
                guarded.chat.completions.create(
                    model="gpt-4o", max_tokens=5_000, messages=[{"role": "user", "content": "hi"}]
                )
            except BudgetExceededError:
                break
            calls += 1
        print(calls, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
