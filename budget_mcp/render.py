"""A spend report for people: Markdown (the report resource's `.md`, the CLI) and one self-contained HTML page.

Tables show the report's exact decimal amounts, so their rows add up to the total as the JSON does.
The HTML page draws its charts as inline SVG: no script, no network, one file to mail or open.
"""

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from html import escape

from budget_mcp.domain.models import SpendFigures, SpendReport
from budget_mcp.domain.money import human_amount
from budget_mcp.domain.windows import zone

Row = tuple[str, ...]


def report_markdown(report: SpendReport) -> str:
    """The report as Markdown: a summary table, then each breakdown and the alerts."""
    lines = [f"# Spend report: {report.budget_id}", "", window_text(report), "", "| | |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in summary_rows(report)]
    for title, header, rows in breakdowns(report):
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("(nothing spent)")
            continue
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "## Alerts", ""]
    lines += [f"- {text}" for text in alert_lines(report)] or ["(none in this window)"]
    return "\n".join(lines) + "\n"


def report_html(report: SpendReport) -> str:
    """One self-contained HTML page with the summary, a spend-over-time chart, a by-model chart and the tables."""
    over_time = _time_series(report)
    by_model = [(f"{m.model or '(no model)'}", Decimal(m.cost_usd)) for m in report.by_model[:12]]
    summary = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in summary_rows(report))
    tables = "".join(_html_table(title, header, rows) for title, header, rows in breakdowns(report))
    alerts = "".join(f"<li>{escape(t)}</li>" for t in alert_lines(report)) or "<li>none in this window</li>"
    time_title = "Spend per hour (local time)" if report.by_hour else "Spend per day (local time)"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spend report: {escape(report.budget_id)}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 960px; color: #1f2328; padding: 0 1rem; }}
h1 {{ margin-bottom: 0; }} .window {{ color: #59636e; margin-top: .2rem; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ padding: .25rem .8rem; border-bottom: 1px solid #d1d9e0; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ margin: 1rem 0 2rem; }} figcaption {{ font-weight: 600; margin-bottom: .4rem; }}
svg text {{ font: 12px system-ui, sans-serif; fill: #1f2328; }}
</style>
</head>
<body>
<h1>Spend report: {escape(report.budget_id)}</h1>
<p class="window">{escape(window_text(report))}</p>
<table>{summary}</table>
<figure><figcaption>{time_title}</figcaption>{_column_chart(over_time)}</figure>
<figure><figcaption>Spend by model</figcaption>{_bar_chart(by_model)}</figure>
{tables}
<h2>Alerts</h2>
<ul>{alerts}</ul>
<p class="window">Generated {report.generated_at:%Y-%m-%d %H:%M} UTC by budget-mcp.</p>
</body>
</html>
"""


def window_text(report: SpendReport) -> str:
    """Which window the report covers, in words."""
    end = f"{report.resets_at:%Y-%m-%d %H:%M}" if report.resets_at else "open-ended"
    which = "current window" if report.current else "past window"
    start = "the beginning" if report.period == "total" else f"{report.window_start:%Y-%m-%d %H:%M}"
    return f"{report.period} budget, {which}: {start} to {end} UTC (budget timezone {report.timezone})"


def summary_rows(report: SpendReport) -> list[tuple[str, str]]:
    """Label and value of each summary line: spent, tokens, calls, held, allocated, available, burn, forecast."""
    t = report.totals
    limit = f" of {human_amount(t.limit_usd)}" if t.limit_usd else " (no USD limit)"
    rows = [("Spent", f"${t.spent_usd}{limit}"), ("Tokens", f"{t.spent_tokens:,}"), ("Calls", f"{t.calls:,}")]
    rows.append(("Held by open reservations", f"${t.held_usd}"))
    if t.allocated_usd is not None:
        rows.append(("Allocated to children", f"${t.allocated_usd}"))
    if t.available_usd is not None:
        rows.append(("Available", f"${t.available_usd}"))
    rows.append(("Burn rate", f"{human_amount(report.burn_rate_usd_per_hour)} per hour"))
    forecast = report.forecast
    if forecast.projected_spend_usd is not None and report.resets_at is not None:
        rows.append(("Projected by the window's end", human_amount(forecast.projected_spend_usd)))
    if forecast.exhausted_at is not None:
        rows.append(("Runs out at this rate", f"{forecast.exhausted_at:%Y-%m-%d %H:%M} UTC"))
    return rows


def _figures(s: SpendFigures) -> Row:
    return (f"${s.cost_usd}", f"{s.input_tokens:,}", f"{s.output_tokens:,}", f"{s.calls:,}")


def breakdowns(report: SpendReport) -> list[tuple[str, Row, list[Row]]]:
    """(title, header, rows) of each breakdown table."""
    numbers = ("cost", "input tokens", "output tokens", "calls")
    found = [
        ("By model", ("model", "provider", *numbers),
         [(m.model or "(no model)", m.provider or "", *_figures(m)) for m in report.by_model]),
        ("By provider", ("provider", *numbers), [(p.provider or "(none)", *_figures(p)) for p in report.by_provider]),
        ("By child budget", ("budget", *numbers), [(c.budget_id, *_figures(c)) for c in report.by_child]),
        ("By day", ("day", *numbers), [(d.day, *_figures(d)) for d in report.by_day]),
    ]  # fmt: skip
    if report.by_hour:
        found.append(
            ("By hour", ("hour", *numbers), [(f"{h.hour:%Y-%m-%d %H:00}", *_figures(h)) for h in report.by_hour])
        )
    return found


def alert_lines(report: SpendReport) -> list[str]:
    """One sentence per alert of the window."""
    lines = []
    for a in report.alerts:
        limit = f"${a.limit_usd}" if a.limit_usd else f"{a.limit_tokens:,} tokens"
        webhook = f"; webhook {a.webhook}" if a.webhook else ""
        share = f"{Decimal(a.threshold) * 100:.0f}%"
        lines.append(
            f"{a.at:%Y-%m-%d %H:%M} UTC: {a.budget_id} reached {share} of its {a.period} limit "
            f"(${a.spent_usd} of {limit}){webhook}"
        )
    return lines


def _html_table(title: str, header: Row, rows: list[Row]) -> str:
    if not rows:
        return f"<h2>{escape(title)}</h2><p>nothing spent</p>"
    numeric = len(header) - 4
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if i >= numeric else ''}>{escape(v)}</td>" for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<h2>{escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _time_series(report: SpendReport) -> list[tuple[str, Decimal]]:
    """Spend per hour (hourly and daily windows) or per day, with the quiet days in between as zero."""
    if report.by_hour:
        return [(f"{h.hour:%H}h", Decimal(h.cost_usd)) for h in report.by_hour]
    spent = {d.day: Decimal(d.cost_usd) for d in report.by_day}
    if not spent:
        return []
    tz = zone(report.timezone)
    first = date.fromisoformat(min(spent))
    if report.period != "total":
        first = min(first, report.window_start.astimezone(tz).date())
    last_moment = min(report.resets_at or report.generated_at, report.generated_at) - timedelta(microseconds=1)
    last = max(date.fromisoformat(max(spent)), last_moment.astimezone(tz).date())
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)][-62:]
    return [(str(d.day), spent.get(d.isoformat(), Decimal(0))) for d in days]


def _column_chart(points: Sequence[tuple[str, Decimal]], width: int = 880, height: int = 220) -> str:
    """Vertical bars, one per point, labelled below and with the largest value on the axis."""
    top = max((v for _, v in points), default=Decimal(0))
    plot = height - 40
    step = (width - 60) / max(len(points), 1)
    bars = []
    for n, (label, value) in enumerate(points):
        h = float(value / top) * plot if top > 0 else 0
        x = 50 + n * step
        bars.append(
            f'<rect x="{x + step * 0.1:.1f}" y="{10 + plot - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" '
            f'fill="#2f81f7"><title>{escape(label)}: ${value}</title></rect>'
        )
        if len(points) <= 31 or n % max(len(points) // 15, 1) == 0:
            bars.append(f'<text x="{x + step / 2:.1f}" y="{height - 12}" text-anchor="middle">{escape(label)}</text>')
    axis = f'<text x="4" y="16">{escape(human_amount(str(top)))}</text><text x="4" y="{10 + plot}">$0</text>'
    empty = "" if points else f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">nothing spent</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img">{axis}<line x1="48" y1="{10 + plot}" x2="{width}" y2="{10 + plot}" stroke="#d1d9e0"/>'
        f"{''.join(bars)}{empty}</svg>"
    )


def _bar_chart(items: Sequence[tuple[str, Decimal]], width: int = 880) -> str:
    """Horizontal bars, one per item, largest first, labelled with the name and amount."""
    row = 26
    height = max(len(items), 1) * row + 10
    top = max((v for _, v in items), default=Decimal(0))
    bars = []
    for n, (label, value) in enumerate(items):
        w = float(value / top) * (width - 330) if top > 0 else 0
        y = 5 + n * row
        bars.append(
            f'<text x="0" y="{y + 17}">{escape(label[:36])}</text>'
            f'<rect x="240" y="{y + 4}" width="{max(w, 1):.1f}" height="{row - 8}" fill="#8250df"/>'
            f'<text x="{246 + w:.1f}" y="{y + 17}">{escape(human_amount(str(value)))}</text>'
        )
    empty = "" if items else '<text x="0" y="20">nothing spent</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img">{"".join(bars)}{empty}</svg>'
    )
