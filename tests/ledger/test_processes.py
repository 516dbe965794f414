"""Many OS processes on one ledger (a SQLite file, or a PostgreSQL database), and a process killed mid-charge."""

import os
import signal
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger

pytestmark = pytest.mark.anyio
WORKER = str(Path(__file__).with_name("worker.py"))
ROOT = str(Path(__file__).parents[2])


def spawn(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    """A worker process (tests that break the ledger on purpose pass their PYTHONPATH on to it)."""
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, WORKER, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


async def test_eight_processes_reserving_and_charging_never_overspend(ledger_location: str, tmp_path: Path) -> None:
    ledger = await open_ledger(ledger_location)
    engine = BudgetEngine(ledger, PriceCatalog())
    await engine.allocate("shared", limit_usd="120")
    start = tmp_path / "start"
    workers = [spawn("reserve-charge", ledger_location, "shared", str(start)) for _ in range(8)]
    try:
        for worker in workers:  # every worker has opened the ledger before any of them starts
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        start.touch()
        acknowledged: list[str] = []
        workers_that_charged = 0
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            acknowledged += out.split()
            workers_that_charged += bool(out.split())
        assert workers_that_charged >= 2  # the processes really competed for the same money
        status = await engine.status("shared")
        assert Decimal(status.spent_usd) == Decimal(120)  # used up fully, and not a cent more
        assert len(acknowledged) == 120
        recorded = {e.entry_id for e in await ledger.entries("shared", limit=1000) if e.kind == "charge"}
        assert recorded == set(acknowledged)
        assert await ledger.reconcile() == []
    finally:  # a connection left open keeps its thread, and the process, alive
        await ledger.close()


async def test_processes_holding_for_one_provider_at_once_hold_no_more_than_its_cap(
    ledger_location: str, tmp_path: Path
) -> None:
    ledger = await open_ledger(ledger_location)
    engine = BudgetEngine(ledger, PriceCatalog())
    await engine.allocate(
        "shared", limit_usd="10", enforcement="block",
        extra_limits=[{"period": "daily", "limit_usd": "1.00", "providers": ["openai"]}],
    )  # fmt: skip
    start = tmp_path / "start"
    workers = [spawn("hold-provider", ledger_location, "shared", str(start)) for _ in range(4)]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        start.touch()
        held: list[str] = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            held += out.split()
        assert len(held) == 10  # $1.00 of $0.10 holds across the processes, not one more
        for reservation_id in held:
            await engine.charge(
                "shared", model="gpt-4o", provider="openai", cost_usd="0.10", reservation_id=reservation_id
            )
        capped = next(lim for lim in (await engine.status("shared")).limits if lim.providers)
        assert (capped.spent_usd, capped.held_usd) == ("1.000000", "0.000000")
    finally:
        await ledger.close()


async def test_charges_acknowledged_before_sigkill_survive(ledger_location: str) -> None:
    ledger = await open_ledger(ledger_location)
    await BudgetEngine(ledger, PriceCatalog()).allocate("crashy")
    await ledger.close()
    worker = spawn("charge-forever", ledger_location, "crashy")
    assert worker.stdout is not None
    acknowledged = [worker.stdout.readline().strip() for _ in range(200)]
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)
    if not ledger_location.startswith("postgresql://"):
        with sqlite3.connect(ledger_location) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    reopened = await open_ledger(ledger_location)
    recorded = {e.entry_id for e in await reopened.entries("crashy", limit=1_000_000)}
    assert set(acknowledged) <= recorded
    assert await reopened.reconcile() == []
    await reopened.close()
