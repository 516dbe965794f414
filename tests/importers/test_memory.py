"""A 1,000,000-row hal0 file imports in bounded memory: the peak RSS of the importing process stays under 200 MB."""

import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import anyio

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.money import to_nanos
from tests.conftest import FakeClock
from tests.importers.sources import NOW

ROWS = 1_000_000
PEAK_LIMIT_KB = 200 * 1024
COSTS = ("0.000125", "0.0042", "0.013", "1.5")
# VmHWM is the peak of this process's own memory; ru_maxrss would keep the parent's after a vfork and exec.
CHILD = """
import sys
from datetime import datetime
from budget_mcp.cli import main
from budget_mcp.cli.common import CliContext
now = datetime.fromisoformat(sys.argv[1])
try:
    main(sys.argv[2:], obj=CliContext(clock=lambda: now), standalone_mode=False)
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print("peak_kb", peak.split()[1], file=sys.stderr)
"""


def write_rows(path: Path) -> int:
    """ROWS hal0 rows, one every 20 s until a minute before NOW; returns what they cost in nano-USD."""
    start = NOW - timedelta(seconds=20 * ROWS + 60)
    total = 0
    with path.open("w") as f:
        chunk = []
        for i in range(ROWS):
            ts = (start + timedelta(seconds=20 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            cost = COSTS[i % 4]
            chunk.append(
                f'{{"ts": "{ts}", "persona_id": "bulk", "surface": "api", "model": "gpt-4o-mini", '
                f'"cost_usd": {cost}, "request_id": "req-{i}"}}\n'
            )
            if len(chunk) == 10_000:
                f.writelines(chunk)
                chunk = []
        f.writelines(chunk)
    for cost in COSTS:
        total += to_nanos(Decimal(cost)) * (ROWS // 4)
    return total


def test_a_million_row_hal0_file_imports_in_bounded_memory(tmp_path: Path) -> None:
    source, db = tmp_path / "spend.jsonl", tmp_path / "ledger.db"
    expected = write_rows(source)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, NOW.isoformat(), "import", "hal0", str(source), "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'"imported": {ROWS}' in done.stdout
    peak_kb = int(done.stderr.rsplit("peak_kb", 1)[1])
    assert peak_kb < PEAK_LIMIT_KB, f"peak RSS {peak_kb // 1024} MB"

    async def spent() -> str:
        ledger = await open_ledger(db)
        try:
            return (await BudgetEngine(ledger, PriceCatalog(), FakeClock(NOW)).status("hal0")).spent_usd
        finally:
            await ledger.close()

    assert to_nanos(Decimal(anyio.run(spent))) == expected  # the running total; other tests reconcile entries
