"""Status queries of the Alpaca execution client, for reconciliation (daemon/orders/reconcile.py):
one order by client order id, the open orders, FILL account activities since a time, positions
and the account, as the Structs of daemon/venue.py. Symbols that name no configured instrument
are left out (logged).

A FILL activity gets the execution id the stream gave the same execution when this client saw
it (matched by Alpaca order id and cumulative quantity), else the uuid in the activity's id, so
the order manager's dedupe by execution id holds across both sources.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import structlog

from himari.brokers.alpaca import convert
from himari.brokers.alpaca.rest import AlpacaRest
from himari.daemon.instruments import Instrument
from himari.daemon.venue import AccountReport, FillReport, OrderStatusReport, PositionReport

log = structlog.get_logger("himari.alpaca")


class QueriesMixin:
    instruments: dict[str, Instrument]
    rest: AlpacaRest | None
    counters: dict[str, int]
    _instrument_of: dict[str, str]
    _client_ids: dict[str, str]
    _venue_ids: dict[str, str]
    _exec_by_cum: dict[tuple[str, Decimal], str]
    _unsent: dict[str, asyncio.Event]

    def _remember(self, client_order_id: str, order: Any) -> None:
        if isinstance(order, dict) and order.get("id"):
            self._venue_ids[client_order_id] = str(order["id"])
            self._client_ids[str(order["id"])] = client_order_id

    async def _lookup(self, coid: str) -> dict[str, Any] | None:
        found = await self._api().query("GET", "/v2/orders:by_client_order_id",
                                        params={"client_order_id": coid}, ok_404=True)
        return found if isinstance(found, dict) else None

    def _known(self, symbol: Any, what: str) -> tuple[str, Instrument] | None:
        iid = self._instrument_of.get(str(symbol))
        if iid is None:
            log.info("alpaca_unconfigured_symbol", symbol=symbol, what=what)
            return None
        return iid, self.instruments[iid]

    def _api(self) -> AlpacaRest:
        if self.rest is None:
            raise RuntimeError("AlpacaExecutionClient is not connected: call connect first")
        return self.rest

    async def query_order(self, client_order_id: str) -> OrderStatusReport | None:
        self._api()
        unsent = self._unsent.get(client_order_id)
        if unsent is not None:
            # its POST is still queued or running (a 429 waits for Retry-After): Alpaca not
            # knowing it yet does not make it absent, so ask once the POST has ended
            self.counters["queries_after_post"] = self.counters.get("queries_after_post", 0) + 1
            await unsent.wait()
        found = await self._lookup(client_order_id)
        if found is None:
            return None
        self._remember(client_order_id, found)
        known = self._known(found.get("symbol"), "order")
        if known is None:
            return None
        return convert.order_report(found, known[1], known[0])

    async def open_orders(self) -> list[OrderStatusReport]:
        data = await self._api().query("GET", "/v2/orders", params={
            "status": "open", "limit": "500", "direction": "asc", "nested": "false"})
        reports = []
        for o in data or []:
            known = self._known(o.get("symbol"), "order")
            if known is not None:
                self._remember(str(o.get("client_order_id", "")), o)
                reports.append(convert.order_report(o, known[1], known[0]))
        return reports

    async def fills_since(self, ts_ns: int) -> list[FillReport]:
        """FILL account activities after `ts_ns` (a second earlier: the order manager drops
        executions it has booked), oldest first, all pages."""
        api = self._api()
        params = {"activity_types": "FILL", "direction": "asc", "page_size": "100"}
        if ts_ns > 0:
            params["after"] = convert.format_ts(ts_ns - 1_000_000_000)
        fills: list[FillReport] = []
        for _ in range(1000):  # pages; 100k fills is beyond any session
            page = await api.query("GET", "/v2/account/activities", params=params) or []
            for a in page:
                report = await self._fill_report(a)
                if report is not None:
                    fills.append(report)
            if len(page) < 100:
                break
            params["page_token"] = str(page[-1].get("id", ""))
        return fills

    async def _fill_report(self, a: dict[str, Any]) -> FillReport | None:
        known = self._known(a.get("symbol"), "fill")
        if known is None:
            return None
        vid = str(a.get("order_id", ""))
        coid = self._client_ids.get(vid)
        if coid is None and vid:
            order = await self._api().query("GET", f"/v2/orders/{vid}", ok_404=True)
            coid = str(order.get("client_order_id", "")) if isinstance(order, dict) else ""
            self._remember(coid, order)
        cum = a.get("cum_qty")
        exec_id = (self._exec_by_cum.get((vid, convert.dec(cum, "cum_qty")))
                   if cum is not None else None) or convert.activity_exec_id(str(a.get("id", "")))
        try:
            return convert.fill_report(a, known[1], known[0], coid or "", exec_id)
        except ValueError as exc:
            self.counters["updates_unbookable"] += 1
            log.error("alpaca_fill_unbookable", exec_id=exec_id, error=str(exc))
            return None

    async def positions(self) -> list[PositionReport]:
        data = await self._api().query("GET", "/v2/positions")
        reports = []
        for p in data or []:
            known = self._known(p.get("symbol"), "position")
            if known is not None:
                reports.append(PositionReport(instrument_id=known[0], quantity=known[1].qty_to_lots(
                    convert.dec(p.get("qty"), "position qty"))))
        return reports

    async def account(self) -> AccountReport:
        a = await self._api().query("GET", "/v2/account")
        return AccountReport(currency=str(a.get("currency") or "USD"),
                             cash=convert.dec(a.get("cash"), "cash"),
                             equity=convert.dec(a.get("equity"), "equity"))
