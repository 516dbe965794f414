"""A spend report for people: Markdown (the report resource's `.md`, the CLI) and one self-contained HTML page.

Every amount is shown one way, exactly (`exact_usd`: '$1.20', '$0.00315'), so table rows add up to the
total as the JSON does. The HTML page draws its charts as inline SVG that scales to the screen, and
shows the whole window (quiet days and hours as empty bars, the even pace to the limit as a line):
no script, no network, one file to mail or open.
"""

from collections.abc import Sequence
from datetime import UTC, date, timedelta
from decimal import Decimal
from html import escape

from budget_mcp.domain.money import exact_usd
from budget_mcp.domain.results import ModelSpend, ReportTotals, SpendFigures, SpendReport
from budget_mcp.domain.windows import zone
from budget_mcp.engine.reports import HOURLY_DETAIL

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
    if report.approvals:
        lines += ["", "## Approvals", ""]
        lines += [f"- {text}" for text in approval_lines(report)]
    return "\n".join(lines) + "\n"


def report_html(report: SpendReport) -> str:
    """One self-contained HTML page with the summary, a spend-over-time chart, a by-model chart and the tables."""
    over_time = _time_series(report)
    by_model = [(_model_label(m), Decimal(m.cost_usd)) for m in report.by_model[:12]]
    summary = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in summary_rows(report))
    tables = "".join(_html_table(title, header, rows) for title, header, rows in breakdowns(report))
    alerts = "".join(f"<li>{escape(t)}</li>" for t in alert_lines(report)) or "<li>none in this window</li>"
    approvals = "".join(f"<li>{escape(t)}</li>" for t in approval_lines(report))
    approvals = f"<h2>Approvals</h2>\n<ul>{approvals}</ul>" if approvals else ""
    time_title = "Spend per hour (local time)" if report.by_hour else "Spend per day (local time)"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spend report: {escape(report.budget_id)}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 960px; color: #1f2328; padding: 0 1rem; }}
h1 {{ margin-bottom: 0; overflow-wrap: anywhere; }} .window {{ color: #59636e; margin-top: .2rem; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ padding: .25rem .8rem; border-bottom: 1px solid #d1d9e0; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
figure {{ margin: 1rem 0 2rem; }} figcaption {{ font-weight: 600; margin-bottom: .4rem; }}
svg {{ display: block; width: 100%; height: auto; }}
svg text {{ font: 12px system-ui, sans-serif; fill: #1f2328; }}
@media (max-width: 600px) {{ body {{ margin: 1rem auto; font-size: 14px; }} th, td {{ padding: .2rem .4rem; }} }}
</style>
</head>
<body>
<h1>Spend report: {escape(report.budget_id)}</h1>
<p class="window">{escape(window_text(report))}</p>
<div class="scroll"><table>{summary}</table></div>
<figure><figcaption>{time_title}</figcaption>{_column_chart(over_time)}</figure>
<figure><figcaption>Spend by model</figcaption>{_bar_chart(by_model)}</figure>
{tables}
<h2>Alerts</h2>
<ul>{alerts}</ul>
{approvals}
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


def _calls(t: ReportTotals) -> str:
    return f"{t.calls:,}" if t.limit_calls is None else f"{t.calls:,} of {t.limit_calls:,}"


def summary_rows(report: SpendReport) -> list[tuple[str, str]]:
    """Label and value of each summary line: spent, tokens, calls, held, allocated, available, burn, forecast."""
    t = report.totals
    limit = f" of {exact_usd(t.limit_usd)}" if t.limit_usd else " (no USD limit)"
    rows = [("Spent", f"{exact_usd(t.spent_usd)}{limit}"), ("Tokens", f"{t.spent_tokens:,}"), ("Calls", _calls(t))]
    rows.append(("Held by open reservations", exact_usd(t.held_usd)))
    if t.allocated_usd is not None:
        rows.append(("Allocated to children", exact_usd(t.allocated_usd)))
    if t.available_usd is not None:
        rows.append(("Available", exact_usd(t.available_usd)))
    rows.append(("Burn rate", f"{exact_usd(report.burn_rate_usd_per_hour)} per hour"))
    forecast = report.forecast
    if forecast.projected_spend_usd is not None and report.resets_at is not None:
        rows.append(("Projected by the window's end", exact_usd(forecast.projected_spend_usd)))
    if forecast.exhausted_at is not None:
        rows.append(("Runs out at this rate", f"{forecast.exhausted_at:%Y-%m-%d %H:%M} UTC"))
    return rows


def _figures(s: SpendFigures) -> Row:
    return (exact_usd(s.cost_usd), f"{s.input_tokens:,}", f"{s.output_tokens:,}", f"{s.calls:,}")


def _model_label(m: ModelSpend) -> str:
    return "(adjustments)" if m.adjustments else m.model or "(no model)"


def breakdowns(report: SpendReport) -> list[tuple[str, Row, list[Row]]]:
    """(title, header, rows) of each breakdown table."""
    numbers = ("cost", "input tokens", "output tokens", "calls")
    found = [
        ("By model", ("model", "provider", *numbers),
         [(_model_label(m), m.provider or "", *_figures(m)) for m in report.by_model]),
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
        limit = exact_usd(a.limit_usd) if a.limit_usd else f"{a.limit_tokens:,} tokens"
        webhook = f"; webhook {a.webhook}" if a.webhook else ""
        share = f"{Decimal(a.threshold) * 100:.0f}%"
        lines.append(
            f"{a.at:%Y-%m-%d %H:%M} UTC: {a.budget_id} reached {share} of its {a.limit_name()} "
            f"({exact_usd(a.spent_usd)} of {limit}){webhook}"
        )
    return lines


def approval_lines(report: SpendReport) -> list[str]:
    """One sentence per approval of going over an `ask` limit in the window."""
    lines = []
    for a in report.approvals:
        over = exact_usd(a.over_usd) if Decimal(a.over_usd) else f"{a.over_tokens:,} tokens"
        who = ", ".join(part for part in (a.client, f"token {a.token}" if a.token else None) if part) or "unknown"
        reason = f': "{a.reason}"' if a.reason else ""
        lines.append(
            f"{a.at:%Y-%m-%d %H:%M} UTC: {a.budget_id} approved {over} over the {a.period} limit of "
            f"{a.approved_for} for a {exact_usd(a.cost_usd)} call (by {who}){reason}"
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
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<h2>{escape(title)}</h2><div class="scroll">{table}</div>'


def _time_series(report: SpendReport) -> tuple[list[tuple[str, Decimal]], Decimal | None]:
    """Spend per hour (hourly and daily windows) or per day over the whole window, quiet ones as zero; and the
    even pace to the limit per bar (None without a USD limit or a window end)."""
    tz = zone(report.timezone)
    start = report.window_start
    end = report.resets_at
    if report.period in HOURLY_DETAIL and end is not None:
        spent_hours = {h.hour.astimezone(UTC): Decimal(h.cost_usd) for h in report.by_hour}
        hours = [start + timedelta(hours=n) for n in range(int((end - start) / timedelta(hours=1)) or 1)]
        points = [(f"{h.astimezone(tz):%H}h", spent_hours.get(h, Decimal(0))) for h in hours]
    else:
        spent = {d.day: Decimal(d.cost_usd) for d in report.by_day}
        today = min(report.generated_at, (end or report.generated_at) - timedelta(microseconds=1)).astimezone(tz)
        first = start.astimezone(tz).date() if end is not None else min([today.date(), *map(_day, spent)])
        last = (end - timedelta(microseconds=1)).astimezone(tz).date() if end is not None else today.date()
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)][-62:]
        points = [(str(d.day), spent.get(d.isoformat(), Decimal(0))) for d in days]
    limit = report.totals.limit_usd
    pace = Decimal(limit) / len(points) if limit is not None and end is not None and points else None
    return points, pace


def _day(text: str) -> date:
    return date.fromisoformat(text)


def _column_chart(series: tuple[list[tuple[str, Decimal]], Decimal | None], width: int = 880, height: int = 220) -> str:
    """Vertical bars, one per point, labelled below, the largest value on the axis, the even pace as a line."""
    points, pace = series
    top = max([v for _, v in points] + ([pace] if pace else []), default=Decimal(0))
    plot = height - 40
    step = (width - 60) / max(len(points), 1)
    bars = []
    for n, (label, value) in enumerate(points):
        h = float(value / top) * plot if top > 0 else 0
        x = 50 + n * step
        bars.append(
            f'<rect x="{x + step * 0.1:.1f}" y="{10 + plot - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" '
            f'fill="#2f81f7"><title>{escape(label)}: {exact_usd(str(value))}</title></rect>'
        )
        if len(points) <= 31 or n % max(len(points) // 15, 1) == 0:
            bars.append(f'<text x="{x + step / 2:.1f}" y="{height - 12}" text-anchor="middle">{escape(label)}</text>')
    if pace and top > 0:
        y = 10 + plot - float(pace / top) * plot
        bars.append(
            f'<line x1="48" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" stroke="#cf222e" stroke-dasharray="6 4"/>'
            f'<text x="{width - 4}" y="{y - 4:.1f}" text-anchor="end">even pace to the limit: '
            f"{escape(exact_usd(str(pace.quantize(Decimal('0.000001')))))}</text>"
        )
    axis = f'<text x="4" y="16">{escape(exact_usd(str(top)))}</text><text x="4" y="{10 + plot}">$0</text>'
    empty = "" if points else f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">nothing spent</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img">{axis}'
        f'<line x1="48" y1="{10 + plot}" x2="{width}" y2="{10 + plot}" stroke="#d1d9e0"/>'
        f"{''.join(bars)}{empty}</svg>"
    )


def _bar_chart(items: Sequence[tuple[str, Decimal]], width: int = 880) -> str:
    """Horizontal bars, one per item, largest first, labelled with the name and amount."""
    row = 26
    height = max(len(items), 1) * row + 10
    top = max((v for _, v in items), default=Decimal(0))
    bars = []
    for n, (label, value) in enumerate(items):
        w = float(value / top) * (width - 420) if top > 0 else 0
        y = 5 + n * row
        bars.append(
            f'<text x="0" y="{y + 17}">{escape(label[:32])}</text>'
            f'<rect x="260" y="{y + 4}" width="{max(w, 1):.1f}" height="{row - 8}" fill="#8250df"/>'
            f'<text x="{266 + max(w, 1):.1f}" y="{y + 17}">{escape(exact_usd(str(value)))}</text>'
        )
    empty = "" if items else '<text x="0" y="20">nothing spent</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img">'
        f"{''.join(bars)}{empty}</svg>"
    )
