"""The budgets file and run-time changes (SPEC 13): at start a budget changes only when its own entry changed."""

from pathlib import Path

import pytest
from mcp import Client

from budget_mcp.config import Settings
from budget_mcp.errors import InvalidInputError
from budget_mcp.ledger import open_ledger
from budget_mcp.server import build_server
from tests.conftest import FakeClock
from tests.server.test_tools import call

pytestmark = pytest.mark.anyio

ACME = '[budgets."acme"]\nlimit_usd = "100"\nperiod = "monthly"\n\n'
BOT = '[budgets."acme/bot"]\nlimit_usd = "5"\nlimit_calls = 50\n'


async def limits(settings: Settings, clock: FakeClock) -> dict[str, tuple[str | None, int | None]]:
    """Start the server on the file (a restart), and read each budget's primary limit."""
    async with Client(build_server(settings, clock=clock)) as client:
        found = {}
        for budget_id in ("acme", "acme/bot"):
            status = await call(client, "get_budget", budget_id=budget_id)
            found[budget_id] = (status["limit_usd"], status["limit_calls"])
        return found


async def test_run_time_changes_survive_restarts_until_their_own_entry_in_the_file_changes(
    clock: FakeClock, settings: Settings, tmp_path: Path
) -> None:
    declared = tmp_path / "budgets.toml"
    declared.write_text(ACME + BOT)
    with_file = settings.model_copy(update={"budgets_file": declared})
    assert await limits(with_file, clock) == {"acme": ("100.000000", None), "acme/bot": ("5.000000", 50)}

    async with Client(build_server(with_file, clock=clock)) as client:  # an operator changes both at run time
        await call(client, "allocate", budget_id="acme", limit_usd="150")
        await call(client, "allocate", budget_id="acme/bot", limit_usd="8", limit_calls=80)
    # restart 1: the same file; what was changed at run time stays
    assert await limits(with_file, clock) == {"acme": ("150.000000", None), "acme/bot": ("8.000000", 80)}

    declared.write_text(ACME.replace('"100"', '"120"') + BOT)  # only acme's entry changes
    # restart 2: acme takes its new entry; the bot keeps its run-time limits
    assert await limits(with_file, clock) == {"acme": ("120.000000", None), "acme/bot": ("8.000000", 80)}

    async with Client(build_server(with_file, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="130")
    # restart 3: the file as last applied; the new run-time change stays
    assert await limits(with_file, clock) == {"acme": ("130.000000", None), "acme/bot": ("8.000000", 80)}

    ledger = await open_ledger(settings.db_path)
    allocations = [e for e in await ledger.entries("acme") if e.kind == "allocate"]
    assert await ledger.reconcile() == []
    await ledger.close()
    assert len(allocations) == 6  # 2 from the file, 2 at run time, acme's changed entry, 1 at run time


async def test_a_bad_entry_stops_the_start_and_writes_nothing(
    clock: FakeClock, settings: Settings, tmp_path: Path
) -> None:
    declared = tmp_path / "budgets.toml"
    declared.write_text('[budgets."acme"]\nlimit_usd = "100"\nlimit_calls = -1\n')
    with_file = settings.model_copy(update={"budgets_file": declared})
    with pytest.raises(InvalidInputError, match="limit_calls must be a whole number of calls"):
        async with Client(build_server(with_file, clock=clock)):
            pass
    ledger = await open_ledger(settings.db_path)
    assert await ledger.budget_ids() == []
    await ledger.close()
