"""A separate OS process charging one budget on a ledger (a SQLite file or PostgreSQL), as another server would.

python -m tests.server.event_writer LEDGER BUDGET COUNT COST_USD
"""

import asyncio
import sys

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger


async def main(ledger: str, budget_id: str, count: int, cost_usd: str) -> None:
    engine = BudgetEngine(await open_ledger(ledger), PriceCatalog())
    try:
        # A few charges at a time, as a busy server makes them: they share commits (group commit), so four such
        # processes contend for SQLite's write lock a few hundred times, not a thousand.
        for start in range(0, count, 10):
            await asyncio.gather(*(engine.charge(budget_id, cost_usd=cost_usd) for _ in range(min(10, count - start))))
    finally:
        await engine.ledger.close()


if __name__ == "__main__":
    ledger, budget_id, count, cost = sys.argv[1:]
    asyncio.run(main(ledger, budget_id, int(count), cost))
