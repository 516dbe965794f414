"""A separate OS process that uses the ledger as an MCP server process would (run by the ledger tests).

    python worker.py reserve-charge DB BUDGET START_FILE   reserve $1 then charge it, until denied
    python worker.py hold-provider DB BUDGET START_FILE    reserve $0.10 of gpt-4o from openai, until denied
    python worker.py charge-forever DB BUDGET              charge $0.01 in a loop
    python worker.py take-turns DB BUDGET                  one line per command read: `check` prints the
        remaining amount a $1 check sees, `reserve` holds $1, `settle` charges $1 on that hold
Each acknowledged charge id (or, for hold-provider, reservation id) is printed on its own line, flushed, as soon as
the call returns.
"""

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger


async def reserve_charge(db: str, budget_id: str, start_file: str) -> None:
    engine = BudgetEngine(await open_ledger(db), PriceCatalog())
    print("ready", flush=True)
    while not Path(start_file).exists():  # every worker starts at the same moment, so they really overlap
        time.sleep(0.001)
    while True:
        check = await engine.check(budget_id, estimated_cost_usd="1", reserve=True)
        if not check.allowed:
            break
        charged = await engine.charge(budget_id, cost_usd="1", reservation_id=check.reservation_id)
        print(charged.charge_id, flush=True)
    await engine.ledger.close()


async def hold_provider(db: str, budget_id: str, start_file: str) -> None:
    engine = BudgetEngine(await open_ledger(db), PriceCatalog())
    print("ready", flush=True)
    while not Path(start_file).exists():
        time.sleep(0.001)
    while (
        check := await engine.check(
            budget_id, estimated_cost_usd="0.10", model="gpt-4o", provider="openai", reserve=True
        )
    ).allowed:
        print(check.reservation_id, flush=True)
    await engine.ledger.close()


async def charge_forever(db: str, budget_id: str) -> None:
    engine = BudgetEngine(await open_ledger(db), PriceCatalog())
    while True:
        charged = await engine.charge(budget_id, cost_usd="0.01")
        print(charged.charge_id, flush=True)


async def take_turns(db: str, budget_id: str) -> None:
    engine = BudgetEngine(await open_ledger(db), PriceCatalog())
    hold = None
    for line in sys.stdin:
        command = line.strip()
        if command == "check":
            check = await engine.check(budget_id, estimated_cost_usd="1")
            print(check.remaining_usd if check.allowed else "denied", flush=True)
        elif command == "reserve":
            hold = (await engine.check(budget_id, estimated_cost_usd="1", reserve=True)).reservation_id
            print(hold, flush=True)
        elif command == "settle":
            print((await engine.charge(budget_id, cost_usd="1", reservation_id=hold)).spent_usd, flush=True)
    await engine.ledger.close()


MODES: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {
    "reserve-charge": reserve_charge,
    "hold-provider": hold_provider,
    "charge-forever": charge_forever,
    "take-turns": take_turns,
}

if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    asyncio.run(MODES[mode](*args))
