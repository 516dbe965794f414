"""Sources in each import format, built by the tests from the shapes in IMPORT-FORMATS.md, at times before a
fixed instant; each builder returns what the source sums to, per budget and UTC day, in nano-USD."""

import csv
import json
import sqlite3
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from budget_mcp.domain.money import to_nanos

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
Sums = Counter[tuple[str, date]]
COSTS = ("0.001234", "0.25", "1.5", "0.000000001", "0.333333333", "2.75")


def at(days: float, hours: float = 0) -> datetime:
    """An instant `days` (and `hours`) before NOW."""
    return NOW - timedelta(days=days, hours=hours)


def add(sums: Sums, budget_id: str, when: datetime, cost: str) -> None:
    sums[(budget_id, when.astimezone(UTC).date())] += to_nanos(Decimal(cost))


def hal0_file(root: Path, *, rows: int = 12, torn: bool = False) -> tuple[Path, Sums]:
    """A persona's spend.jsonl at hal0's layout (agent 'scout', persona 'Writer Bot'), with persona.toml caps."""
    folder = root / "agents" / "scout" / "personas" / "Writer Bot"
    folder.mkdir(parents=True)
    (folder / "persona.toml").write_text(
        "[persona.budget]\ndaily_usd = 5.0\nmonthly_usd = 60.0\nlifetime_usd = 500.0\nper_call_max_usd = 0.5\n"
    )
    sums: Sums = Counter()
    lines = []
    for i in range(rows):
        when, cost = at(i % 9, i), COSTS[i % len(COSTS)]
        request_id = None if i % 4 == 3 else f"req-{i}"
        stamp = when.isoformat().replace("+00:00", "Z")
        lines.append(
            f'{{"ts": "{stamp}", "persona_id": "Writer Bot", "surface": "chat", "model": "gpt-4o", '
            f'"cost_usd": {cost}, "request_id": {json.dumps(request_id)}}}'
        )
        add(sums, "scout/writer-bot", when, cost)
    if torn:
        lines.insert(5, '{"ts": "2026-11-20T10:00:00Z", "persona_id": "Wri')
    path = folder / "spend.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, sums


def tekton_db(path: Path) -> Sums:
    """Tekton Budget's SQLite tables: two budgets, their policies, usage records at naive UTC times."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE budget (budget_id VARCHAR PRIMARY KEY, name VARCHAR, description TEXT, owner VARCHAR,
            created_at DATETIME, updated_at DATETIME, is_active BOOLEAN, meta_data TEXT);
        CREATE TABLE budget_policy (policy_id VARCHAR PRIMARY KEY, budget_id VARCHAR, type VARCHAR, period VARCHAR,
            tier VARCHAR, provider VARCHAR, component VARCHAR, task_type VARCHAR, token_limit INTEGER,
            cost_limit FLOAT, warning_threshold FLOAT, action_threshold FLOAT, start_date DATETIME,
            end_date DATETIME, enabled BOOLEAN, meta_data TEXT);
        CREATE TABLE budget_allocation (allocation_id VARCHAR PRIMARY KEY, budget_id VARCHAR);
        CREATE TABLE usage_record (record_id VARCHAR PRIMARY KEY, allocation_id VARCHAR, budget_id VARCHAR,
            context_id VARCHAR, component VARCHAR, provider VARCHAR, model VARCHAR, task_type VARCHAR,
            input_tokens INTEGER, output_tokens INTEGER, input_cost FLOAT, output_cost FLOAT, total_cost FLOAT,
            pricing_version VARCHAR, timestamp DATETIME, operation_id VARCHAR, request_id VARCHAR,
            user_id VARCHAR, meta_data TEXT);
        CREATE TABLE alert (alert_id VARCHAR PRIMARY KEY);
        """
    )
    conn.executemany(
        "INSERT INTO budget (budget_id, name, is_active) VALUES (?, ?, 1)",
        [("b-1111", "Research Team"), ("b-2222", "Ops")],
    )
    conn.executemany(
        "INSERT INTO budget_policy (policy_id, budget_id, type, period, provider, token_limit, cost_limit, enabled)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
        [
            ("p1", "b-1111", "hard_limit", "monthly", None, None, 100.0),
            ("p2", "b-1111", "warn", "daily", None, 2000000, 10.0),
            ("p3", "b-1111", "hard_limit", "daily", "anthropic", None, 1.0),  # one provider's: not a limit
            ("p4", "b-2222", "ignore", "monthly", None, None, 5.0),  # ignore: not a limit
        ],
    )
    sums: Sums = Counter()
    rows = []
    for i in range(10):
        budget, name = ("b-1111", "tekton/research-team") if i % 3 else ("b-2222", "tekton/ops")
        when, cost = at(i, 2 * i), COSTS[i % len(COSTS)]
        naive = when.replace(tzinfo=None).isoformat(sep=" ")
        rows.append((f"u{i}", budget, "claude-haiku-4-5", "anthropic", 1000 + i, 50, float(cost), naive))
        add(sums, name, when, cost)
    conn.executemany(
        "INSERT INTO usage_record (record_id, budget_id, model, provider, input_tokens, output_tokens, total_cost,"
        " timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()
    return sums


def rhetor_db(path: Path) -> Sums:
    """Rhetor's budget database: usage rows (two components and none), a budget-wide daily limit."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE usage (id INTEGER PRIMARY KEY, timestamp TEXT, provider TEXT, model TEXT, component TEXT,
            task_type TEXT, input_tokens INTEGER, output_tokens INTEGER, cost REAL, metadata TEXT);
        CREATE TABLE budget_settings (id INTEGER PRIMARY KEY, period TEXT, provider TEXT, limit_amount REAL,
            enforcement TEXT, start_date TEXT, active INTEGER);
        """
    )
    conn.executemany(
        "INSERT INTO budget_settings (period, provider, limit_amount, enforcement, active) VALUES (?, ?, ?, ?, ?)",
        [
            ("daily", "all", 20.0, "enforce", 1),
            ("weekly", "openai", 3.0, "warn", 1),
            ("monthly", "all", 300.0, "warn", 1),
        ],
    )
    sums: Sums = Counter()
    for i in range(9):
        component = ("Apollo", "Ergon", None)[i % 3]
        budget = f"rhetor/{component.lower()}" if component else "rhetor"
        when, cost = at(i % 5, i), COSTS[i % len(COSTS)]
        conn.execute(
            "INSERT INTO usage (timestamp, provider, model, component, task_type, input_tokens, output_tokens, cost)"
            " VALUES (?, 'openai', 'gpt-4o-mini', ?, 'chat', 100, 20, ?)",
            (when.replace(tzinfo=None).isoformat(), component, float(cost)),
        )
        add(sums, budget, when, cost)
    conn.commit()
    conn.close()
    return sums


def apollo_folder(folder: Path) -> list[tuple[str, datetime, str, int, str]]:
    """Apollo's data folder: policies and two usage-record files; returns (budget, time, model, tokens, kind)."""
    folder.mkdir()
    (folder / "budget_policies.json").write_text(
        json.dumps(
            [
                {"policy_id": "a", "type": "hard_limit", "period": "daily", "tier": None, "component": "codex",
                 "task_type": None, "limit": 5_000_000, "enabled": True},
                {"policy_id": "b", "type": "soft_limit", "period": "monthly", "tier": "advanced", "component": None,
                 "task_type": None, "limit": 1000, "enabled": True},
            ]
        )
    )  # fmt: skip
    made = []
    for part in range(2):
        items = []
        for i in range(4):
            n = part * 4 + i
            when = at(n, 1)
            model = "gpt-4o" if n % 4 else "no-such-model-x"
            kind = ("input", "output")[n % 2]
            items.append(
                {"record_id": f"r{n}", "allocation_id": "al", "context_id": "ctx", "component": "Codex",
                 "provider": "openai", "model": model, "task_type": "code", "tokens_used": 1000 * (n + 1),
                 "usage_type": kind, "timestamp": when.replace(tzinfo=None).isoformat(), "operation_id": f"op{n}",
                 "metadata": {}}
            )  # fmt: skip
            made.append(("apollo/codex", when, model, 1000 * (n + 1), kind))
        stamp = int(at(part).timestamp())
        (folder / f"usage_records_{stamp}.json").write_text(json.dumps(items))
    return made


LITELLM_COLUMNS = (
    "request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens", "startTime",
    "endTime", "model", "model_group", "custom_llm_provider", "api_base", "user", "metadata", "cache_hit",
    "request_tags", "team_id", "end_user",
)  # fmt: skip


def litellm_rows(count: int = 8) -> tuple[list[dict[str, object]], Sums]:
    """Spend-log rows of two teams (and none), with what they sum to."""
    rows, sums = [], Counter[tuple[str, date]]()
    for i in range(count):
        team = ("team-A", "ops", "")[i % 3]
        when, cost = at(i % 4, i), COSTS[i % len(COSTS)]
        rows.append(
            {"request_id": f"chatcmpl-{i}", "call_type": "acompletion", "api_key": "88dc28d0f030c55ed4ab77ed8faf098",
             "spend": cost, "total_tokens": 130, "prompt_tokens": 100, "completion_tokens": 30,
             "startTime": when.isoformat(), "endTime": (when + timedelta(seconds=2)).isoformat(),
             "model": "gpt-4o", "model_group": "gpt-4o", "custom_llm_provider": "openai", "api_base": "",
             "user": "ann", "metadata": "{}", "cache_hit": "False", "request_tags": "[]", "team_id": team,
             "end_user": ""}
        )  # fmt: skip
        add(sums, f"litellm/{(team or 'default').lower()}", when, cost)
    return rows, sums


def litellm_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LITELLM_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def litellm_json(path: Path, rows: list[dict[str, object]]) -> None:
    """JSON rows, with spend as a JSON number (read by its decimal text)."""
    text = json.dumps([{**row, "spend": "@@" + str(row["spend"]) + "@@"} for row in rows])
    path.write_text(text.replace('"@@', "").replace('@@"', ""))
