"""Alert webhook: POSTs each crossed threshold as JSON from a background task, with retries and backoff.

A charge only drops its alerts into an in-memory queue (`submit` never waits), so a slow or failing
webhook can never delay or fail a charge. Each alert is delivered in its own task; every attempt,
answered or not, is recorded in the ledger and shown in reports.
"""

import logging
import math
from decimal import Decimal
from importlib.metadata import version

import anyio
import httpx2

from budget_mcp.domain.records import DeliveryAttempt, limit_key
from budget_mcp.domain.results import AlertInfo
from budget_mcp.domain.windows import Period, parse_period, window
from budget_mcp.engine import BudgetEngine
from budget_mcp.errors import BudgetMcpError

logger = logging.getLogger(__name__)

EVENT = "budget_crossed"


class AlertWebhook:
    """Delivers alerts to one URL: up to `attempts` tries per alert, waiting `backoff_seconds` x 2^n between them."""

    def __init__(
        self,
        url: str,
        engine: BudgetEngine,
        *,
        attempts: int = 5,
        backoff_seconds: float = 1.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.engine = engine
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._send, self._receive = anyio.create_memory_object_stream[AlertInfo](max_buffer_size=math.inf)

    def submit(self, alerts: list[AlertInfo]) -> None:
        """Queue alerts for delivery; returns at once."""
        for alert in alerts:
            try:
                self._send.send_nowait(alert)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):  # shutting down: the charge still stands
                logger.warning("alert for %s at %s not sent: the server is stopping", alert.budget_id, alert.threshold)

    async def run(self) -> None:
        """Deliver queued alerts until cancelled (run it in the server's task group)."""
        timeout = httpx2.Timeout(self.timeout_seconds)
        headers = {"User-Agent": f"budget-mcp/{version('budget-mcp')}"}
        async with (
            self._send,
            self._receive,
            httpx2.AsyncClient(timeout=timeout, headers=headers) as client,
            anyio.create_task_group() as tasks,
        ):
            async for alert in self._receive:
                tasks.start_soon(self._deliver, client, alert)

    async def _deliver(self, client: httpx2.AsyncClient, alert: AlertInfo) -> None:
        try:
            payload = await self._payload(alert)
            for attempt in range(1, self.attempts + 1):
                status, error = await self._post(client, payload)
                await self._record(alert, attempt, status, error)
                if status is not None and 200 <= status < 300:
                    return
                if attempt < self.attempts:
                    await anyio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            logger.warning(
                "alert for %s at %s not delivered after %d attempts", alert.budget_id, alert.threshold, attempt
            )
        except Exception:  # a background task logs its own failures and keeps going
            logger.exception("delivering an alert for %s failed", alert.budget_id)

    async def _post(self, client: httpx2.AsyncClient, payload: dict[str, object]) -> tuple[int | None, str | None]:
        try:
            response = await client.post(self.url, json=payload)
        except httpx2.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]
        error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return response.status_code, error

    async def _payload(self, alert: AlertInfo) -> dict[str, object]:
        projected, window_end = None, None
        try:
            status = await self.engine.status(alert.budget_id)
            projected = status.forecast.projected_spend_usd
            period = parse_period(alert.period)
            if isinstance(period, Period):  # a rolling window has no end of its own
                window_end = window(period, status.timezone, alert.window_start)[1]
        except BudgetMcpError:
            logger.warning("budget %s vanished before its alert was sent", alert.budget_id)
        return {
            "event": EVENT,
            "budget_id": alert.budget_id,
            "period": alert.period,
            "threshold": alert.threshold,
            "spent_usd": alert.spent_usd,
            "limit_usd": alert.limit_usd,
            "spent_tokens": alert.spent_tokens,
            "limit_tokens": alert.limit_tokens,
            "models": alert.models,
            "providers": alert.providers,
            "window_start": alert.window_start.isoformat(),
            "window_end": window_end.isoformat() if window_end else None,
            "projected_spend_usd": projected,
            "sent_at": self.engine.clock().isoformat(),
        }

    async def _record(self, alert: AlertInfo, attempt: int, status: int | None, error: str | None) -> None:
        period = parse_period(alert.period)
        filtered = alert.models or alert.providers
        record = DeliveryAttempt(
            budget_id=alert.budget_id,
            period=period,
            window_key=int(alert.window_start.timestamp()),
            threshold=Decimal(alert.threshold),
            attempt=attempt,
            at=self.engine.clock(),
            status=status,
            error=error,
            filtered_key=limit_key(period, alert.models, alert.providers) if filtered else None,
        )
        await self.engine.record_delivery(record)
