"""SQLite kept snapshots: another process's commit is seen by the very next decision, every time.

The ledger decides on snapshots it kept from its own last writes while `PRAGMA data_version` says no
other connection committed. These tests take turns between processes, and then break that check on
purpose to show that they, and the suite's other sharing tests, would catch a stale snapshot.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from tests.ledger.test_processes import ROOT, spawn

pytestmark = pytest.mark.anyio
STALE = Path(__file__).with_name("stale_snapshots")


def ask(worker: subprocess.Popen[str], command: str) -> str:
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(command + "\n")
    worker.stdin.flush()
    return worker.stdout.readline().strip()


async def test_two_processes_taking_turns_each_decide_on_the_others_last_write(ledger_path: Path) -> None:
    ledger = await open_ledger(ledger_path)
    await BudgetEngine(ledger, PriceCatalog()).allocate("turns", limit_usd="12")
    await ledger.close()
    workers = [spawn("take-turns", str(ledger_path), "turns", stdin=subprocess.PIPE) for _ in range(2)]
    try:
        for turn in range(12):
            mine, other = workers[turn % 2], workers[(turn + 1) % 2]
            assert ask(mine, "check") == f"{12 - turn}.000000"  # a read on its kept snapshot
            assert ask(mine, "reserve").startswith("res_")
            left = "denied" if turn == 11 else f"{11 - turn}.000000"  # what a $1 check sees after this turn
            assert ask(other, "check") == left  # counting the hold the other process just made
            assert ask(mine, "settle") == f"{turn + 1}.000000"  # a write decided on its kept snapshot
            assert ask(other, "check") == left
        assert [ask(w, "check") for w in workers] == ["denied", "denied"]
    finally:
        for worker in workers:
            out, err = worker.communicate(timeout=30)
            assert worker.returncode == 0, err


def test_with_the_change_counter_broken_the_sharing_tests_fail() -> None:
    """The check that proves a kept snapshot current, broken on purpose: these tests must catch it."""
    tests = [
        "tests/ledger/test_kept_snapshots.py::test_two_processes_taking_turns_each_decide_on_the_others_last_write",
        "tests/engine/test_shared_ledger.py",
        "tests/ledger/test_processes.py::test_eight_processes_reserving_and_charging_never_overspend",
    ]
    path = [str(STALE), ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not postgres", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout[-3000:]
    failed = {line.split(" ")[1].split("[")[0] for line in run.stdout.splitlines() if line.startswith("FAILED ")}
    assert (
        "tests/ledger/test_kept_snapshots.py::test_two_processes_taking_turns_each_decide_on_the_others_last_write"
        in failed
    )
    assert "tests/ledger/test_processes.py::test_eight_processes_reserving_and_charging_never_overspend" in failed
    assert sum(name.startswith("tests/engine/test_shared_ledger.py") for name in failed) >= 3, failed
