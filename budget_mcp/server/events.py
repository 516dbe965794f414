"""The live event stream: one event per ledger entry (and per alert it crossed), read from the ledger in commit order.

The ledger is the stream's only source, so a write by any server on the ledger appears, and a client that
reconnects with the last id it saw (`Last-Event-ID`, `?after=`) gets exactly what it missed. One `EventHub` per
server reads the new entries (woken by this server's own writes, by PostgreSQL's change notices, and otherwise
polling every `POLL_SECONDS` while anyone listens) and hands each page to every live subscription, rendered once
per page and per view. A subscription starts by replaying from its own position, page by page, and joins the
live feed once it has caught up with the hub; positions are compared in commit order, so the overlap between
its replay and the hub's next page is dropped and nothing is delivered twice. Each live subscription has a
bounded queue the hub fills without waiting: one that falls `QUEUE_ENTRIES` entries behind is ended
(`TooFarBehind`), and its client resumes from its last id, so a slow client never stalls the others.
"""

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, Field

from budget_mcp.domain.ids import is_within, path_of, validate_budget_id
from budget_mcp.domain.records import EntryKind
from budget_mcp.domain.results import AlertInfo, BudgetStatus, LedgerEntry
from budget_mcp.engine import BudgetEngine
from budget_mcp.engine.reports import alert_info, ledger_entry, with_filters
from budget_mcp.errors import InvalidInputError
from budget_mcp.ledger import LoggedEntry, LogPage, Position
from budget_mcp.server.access import Grant

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how often the hub looks for other processes' entries while anyone listens (SQLite)
PAGE_ENTRIES = 500  # entries per ledger read: a replay of any length is read in bounded pages
QUEUE_ENTRIES = 2_000  # entries a live subscription may fall behind before it is ended
KEEPALIVE_SECONDS = 15.0  # a comment line this often keeps proxies from closing a quiet stream
_UNSET: Position = (2**63, 0)  # the hub's position while nobody listens


class EntryEvent(BaseModel):
    """The data of an entry's event (SSE `data:`, one /ws message); `event` and `id` repeat SSE's fields."""

    id: int = Field(description="the entry's sequence number; resume after it with Last-Event-ID or ?after=")
    event: EntryKind
    entry: LedgerEntry
    budgets: list[BudgetStatus] = Field(
        description="the current figures of the entry's budget and its ancestors that the token may see"
    )


class AlertEvent(BaseModel):
    """The data of an alert's event: a threshold the entry `entry_id` (event `id`) crossed."""

    id: int
    event: Literal["alert"]
    entry_id: str
    alert: AlertInfo
    budgets: list[BudgetStatus]


@dataclass(frozen=True)
class Event:
    """One message: `kind` is the entry's kind or 'alert', `seq` its entry's sequence number, `data` its JSON."""

    seq: int
    kind: str
    data: str


@dataclass(frozen=True)
class View:
    """What one subscriber may see: budgets within its token's grant and under its `prefix`, if it gave one."""

    grant: Grant
    prefix: str | None = None

    def allows(self, budget_id: str) -> bool:
        """Whether events of this budget are for this subscriber."""
        return (self.prefix is None or is_within(budget_id, self.prefix)) and self.grant.allows(budget_id)

    @property
    def prefixes(self) -> tuple[str, ...] | None:
        """The ledger filter that narrows what is read (the grant still decides): None reads every entry."""
        if self.prefix is not None:
            return (self.prefix,)
        if self.grant.prefixes is None or self.grant.create_roots:
            return None  # a token that creates roots may own new ones: read everything, `allows` decides
        return (*self.grant.prefixes, *self.grant.owned)


class TooFarBehind(Exception):
    """A live subscription fell too far behind; its client should reconnect with the last id it received."""


class _Page:
    """A page of entries and the figures of the budgets they touched, rendered to JSON once per page."""

    def __init__(self, entries: Sequence[LoggedEntry], statuses: dict[str, BudgetStatus]) -> None:
        self.entries = entries
        self.statuses = statuses
        self._json: dict[object, str] = {}
        self._groups: dict[tuple[View, Position], list[list[Event]]] = {}

    def groups(self, view: View, after: Position) -> list[list[Event]]:
        """Per entry after `after` that `view` allows: its event, then its alerts' (the same id). Subscribers
        with the same view and place (most of them, usually) share one list."""
        key = (view, after)
        if key not in self._groups:
            self._groups[key] = self._render(view, after)
        return self._groups[key]

    def _render(self, view: View, after: Position) -> list[list[Event]]:
        found = []
        for logged in self.entries:
            entry = logged.entry
            if logged.position <= after or not view.allows(entry.budget_id):
                continue
            budgets = "[" + ",".join(self._status(b) for b in path_of(entry.budget_id) if view.allows(b)) + "]"
            head = f'{{"id":{logged.seq},"event":"{entry.kind.value}"'
            group = [Event(logged.seq, entry.kind.value, f'{head},"entry":{self._entry(logged)},"budgets":{budgets}}}')]
            for n, alert in enumerate(logged.alerts):
                if view.allows(alert.budget_id):
                    data = (
                        f'{{"id":{logged.seq},"event":"alert","entry_id":{json.dumps(entry.entry_id)},'
                        f'"alert":{self._alert(logged, n)},"budgets":{budgets}}}'
                    )
                    group.append(Event(logged.seq, "alert", data))
            found.append(group)
        return found

    def _entry(self, logged: LoggedEntry) -> str:
        key = ("entry", logged.seq)
        if key not in self._json:
            self._json[key] = ledger_entry(logged.entry).model_dump_json()
        return self._json[key]

    def _alert(self, logged: LoggedEntry, n: int) -> str:
        key = ("alert", logged.seq, n)
        if key not in self._json:
            self._json[key] = alert_info(with_filters(logged.alerts[n], self.statuses)).model_dump_json()
        return self._json[key]

    def _status(self, budget_id: str) -> str:
        if budget_id not in self.statuses:
            return "null"
        if budget_id not in self._json:
            self._json[budget_id] = self.statuses[budget_id].model_dump_json()
        return self._json[budget_id]


async def _render(engine: BudgetEngine, page: LogPage) -> _Page:
    """The page with the current figures of every budget its entries and alerts touched (one snapshot)."""
    touched = {b for e in page.entries for b in path_of(e.entry.budget_id)}
    touched |= {a.budget_id for e in page.entries for a in e.alerts}
    return _Page(page.entries, await engine.statuses(touched))


class Subscription:
    """One subscriber's stream: replayed from the ledger until it has caught up, then fed live by the hub."""

    def __init__(self, hub: "EventHub", view: View, position: Position) -> None:
        self.view = view
        self.position = position  # everything up to here (in commit order) was handed to this subscriber
        self.live = False
        self._hub = hub
        self._send: MemoryObjectSendStream[list[Event]]
        self._receive: MemoryObjectReceiveStream[list[Event]]
        self._send, self._receive = anyio.create_memory_object_stream[list[Event]](hub.queue_entries)

    async def receive(self, timeout: float) -> list[Event]:
        """The next events in order (an empty list after `timeout` seconds of nothing); raises TooFarBehind."""
        while not self.live:
            if self.position >= self._hub.position:
                self._hub.join(self)  # no await between the check and joining: the hub cannot move in between
                break
            page = await self._hub.engine.entries_after(self.position, prefixes=self.view.prefixes, limit=PAGE_ENTRIES)
            if page.end <= self.position:  # cannot happen (the hub read this far); never spin if it did
                await anyio.sleep(self._hub.poll_seconds)
                continue
            rendered = await _render(self._hub.engine, page)
            self.position = page.end
            replayed = [e for group in rendered.groups(self.view, (-1, -1)) for e in group]
            if replayed:
                return replayed
        events: list[Event] = []
        with anyio.move_on_after(timeout):
            try:
                events += await self._receive.receive()
            except anyio.EndOfStream:
                raise TooFarBehind from None
        while len(events) < PAGE_ENTRIES:  # what else is queued goes out together
            try:
                events += self._receive.receive_nowait()
            except anyio.WouldBlock:
                break
            except anyio.EndOfStream:
                break
        return events

    def offer(self, page: _Page, end: Position) -> None:
        """Queue what of a page is new to this subscriber, without waiting; end the subscription when it is full."""
        for group in page.groups(self.view, self.position):
            try:
                self._send.send_nowait(group)
            except anyio.WouldBlock:
                logger.warning("an event subscriber fell %d entries behind; ending its stream", self._hub.queue_entries)
                self._send.close()
                self._hub.leave(self)
                return
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._hub.leave(self)
                return
        self.position = max(self.position, end)

    def close(self) -> None:
        """Stop receiving (the client went away)."""
        self._hub.leave(self)
        self._hub.unsubscribed()
        self._send.close()
        self._receive.close()


class EventHub:
    """Reads the ledger's new entries and feeds every live subscription; run `run` in the server's task group."""

    def __init__(
        self, engine: BudgetEngine, *, poll_seconds: float = POLL_SECONDS, queue_entries: int = QUEUE_ENTRIES
    ) -> None:
        self.engine = engine
        self.queue_entries = queue_entries
        self.position: Position = _UNSET  # where the hub has read to; set when the first subscriber comes
        self.poll_seconds = poll_seconds
        self._live: set[Subscription] = set()
        self._subscribed = 0
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Look for new entries now (a write was made, or a notice heard); never waits. With nobody listening
        there is nothing to look for (the first to join wakes the hub)."""
        if self._live:
            self._wake.set()

    async def subscribe(self, view: View, after: int | None) -> Subscription:
        """A subscription from entry `after` (sequence number; None: from now on). Close it when done."""
        start = await self.engine.log_position(after)
        head = start if after is None else await self.engine.log_position()
        if self.position == _UNSET:  # checked and set with no await between: a hub already reading keeps its place
            self.position = head
        self._subscribed += 1
        return Subscription(self, view, start)

    def join(self, subscription: Subscription) -> None:
        subscription.live = True
        self._live.add(subscription)
        self.wake()

    def leave(self, subscription: Subscription) -> None:
        self._live.discard(subscription)

    def unsubscribed(self) -> None:
        self._subscribed -= 1
        if self._subscribed == 0:
            self.position = _UNSET  # nobody listens: stop reading; the next subscriber sets it afresh

    async def run(self) -> None:
        """Read and hand out new entries whenever woken or every poll interval, while anyone listens."""
        self.engine.on_ledger_change(self.wake)
        while True:
            with anyio.move_on_after(self.poll_seconds if self._live else math.inf):  # joining wakes it
                await self._wake.wait()
            self._wake = anyio.Event()
            if not self._live:
                continue
            try:
                await self._advance()
            except Exception:  # a background task logs its own failures and keeps going
                logger.exception("reading new ledger entries for the event stream failed")

    async def _advance(self) -> None:
        while self._live:
            start = self.position
            page = await self.engine.entries_after(start, limit=PAGE_ENTRIES)
            if page.end <= start:
                return
            rendered = await _render(self.engine, page)
            if self.position != start:
                return  # reset while reading (everyone left): this page is nobody's
            # From here to the end of the loop nothing awaits: joining subscribers see the hub before or after.
            self.position = page.end
            for subscription in list(self._live):
                subscription.offer(rendered, page.end)
            if len(page.entries) < PAGE_ENTRIES:
                return


def event_view(grant: Grant, prefix: str | None, after: str | None) -> tuple[View, int | None]:
    """The view and start of a subscription asked for with `?prefix=` and `Last-Event-ID`/`?after=` (raw text).

    A prefix outside the grant is refused as a budget outside it is, whether or not it exists; one above the
    grant's own budgets streams just those.
    """
    if prefix is not None:
        validate_budget_id(prefix, "prefix")
        grant.check_prefix(prefix)
    start = None
    if after is not None:
        if not (after.isascii() and after.isdigit()) or len(after) > 18:
            raise InvalidInputError(
                f"Last-Event-ID and after must be an event id (a whole number), got {after[:20]!r}; "
                "leave them out to receive events from now on"
            )
        start = int(after)
    return View(grant, prefix), start


def sse_lines(events: Iterable[Event]) -> str:
    """Events in the text/event-stream format (data is one line of JSON)."""
    return "".join(f"id: {e.seq}\nevent: {e.kind}\ndata: {e.data}\n\n" for e in events)
