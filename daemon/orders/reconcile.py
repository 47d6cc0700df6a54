"""Discrepancies, outcomes that never come, status reports, reconciliation and restart (a mixin
of `OrderManager`, sharing its state).

The broker is the truth. Nothing here ever re-sends an order: an order whose acknowledgement (or
whose cancel's answer) is overdue is *asked about* by client order id, and the answer is applied:
- `overdue(now_ns)`: SUBMITTED orders with no ack after `ack_timeout_ns`, and working orders
  whose cancel request got no answer in that time. The owner queries the client for each
  (`client.query_order`) and applies the answer with `apply_status_report`.
- `apply_status_report(report | None, ts_ns, client_order_id=..., fills=...)`: fills are booked only
  from `FillReport`s (by exec id, each once); then the state machine is moved to the venue's status
  (accepted, cancelled, rejected, expired; a fill status waits for its fills; a cancel the venue
  never saw is forgotten, so `cancel` may ask again). An order the venue
  does not know is rejected (never acknowledged) or expired (it was), reason "absent at venue",
  with an `order_absent` discrepancy. A report that is behind the stream changes nothing.
- `reconcile(client, ts_ns)`: the whole startup / periodic pass: book the venue's fills we lack,
  query every non-terminal order, then compare positions: a mismatch raises `position_mismatch`
  and the position is adjusted to the venue's (at the last mark or the average entry).
- `restore(state)`: adopt orders, positions and exec ids rebuilt from the journal, re-link
  brackets. Then `reconcile` before any new order.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING

import structlog

from ..events import ExecutionDiscrepancy, Fill
from ..venue import ExecutionClient, FillReport, OrderStatusReport
from .recovery import RecoveredState
from .state import Order, OrderState

if TYPE_CHECKING:
    from .manager import OrderManager

log = structlog.get_logger("himari.orders")
POSITION_READS = 3  # tries for a positions read with no execution booked around it


class ReconcileMixin:
    def overdue(self: OrderManager, now_ns: int) -> list[Order]:
        """Orders whose outcome is overdue: ask the venue about them, never resend."""
        late = now_ns - self.ack_timeout_ns
        out = []
        for order in self.orders.values():
            if order.is_terminal:
                continue
            sent = order.ts_of(OrderState.SUBMITTED)
            if order.state is OrderState.SUBMITTED and sent is not None and sent <= late:
                out.append(order)
            elif order.cancel_requested_ns is not None and order.cancel_requested_ns <= late:
                out.append(order)
        return out

    def apply_fill_report(self: OrderManager, report: FillReport) -> bool:
        """Book one fill from a status query unless its exec id is already booked (a report
        racing the stream is expected to repeat fills: that is not a discrepancy, and neither is
        the stream's own message for a fill this report booked first)."""
        if report.exec_id in self._exec_ids:
            return False
        self.on_fill(report.client_order_id, report.exec_id, report.quantity, report.price,
                     report.fee, report.liquidity, report.ts_ns,
                     instrument_id=report.instrument_id, side=report.side)
        if report.exec_id:
            self._exec_by_report.add(report.exec_id)
        return True

    def apply_status_report(self: OrderManager, report: OrderStatusReport | None, ts_ns: int, *,
                            client_order_id: str = "",
                            fills: Iterable[FillReport] = ()) -> Order | None:
        """Apply the venue's answer about one order (None: the venue does not know it)."""
        coid = report.client_order_id if report is not None else client_order_id
        if not coid:
            raise ValueError("apply_status_report needs a report or a client_order_id")
        for fill in fills:
            self.apply_fill_report(fill)
        order = self._by_client.get(coid)
        if order is None:
            self.counters["unknown_orders"] += 1
            log.error("status_report_for_unknown_order", client_order_id=coid)
            return None
        if report is None:
            if not order.is_terminal:
                self.counters["orders_absent"] += 1
                log.error("order_absent", order_id=order.order_id, client_order_id=coid,
                          state=str(order.state))
                self._discrepancy("order_absent", ts_ns, order.instrument_id, coid,
                                  detail=f"venue does not know the order (was {order.state})")
                if order.state is OrderState.SUBMITTED:
                    self._reject(order, "absent at venue", ts_ns)
                else:
                    self.on_expired(coid, "absent at venue", ts_ns)
            return order
        order.venue_filled = max(order.venue_filled, report.filled)
        if report.filled > order.filled:  # fills still in flight on the stream, or lost
            self.counters["reports_ahead_of_fills"] += 1
            log.info("status_report_ahead_of_fills", order_id=order.order_id,
                     venue_filled=report.filled, filled=order.filled)
        if order.is_terminal:
            return order
        status = report.status
        if status in ("accepted", "partially_filled", "filled"):
            if order.state is OrderState.SUBMITTED:
                self.on_accepted(coid, report.venue_order_id, ts_ns)
            asked = order.cancel_requested_ns
            if asked is not None and asked <= ts_ns - self.ack_timeout_ns and status != "filled":
                # the cancel was lost (the order still works long after): let the owner ask again
                order.cancel_requested_ns = None
                self.counters["cancels_lost"] += 1
                log.warning("cancel_lost", order_id=order.order_id, client_order_id=coid)
        elif status == "cancelled":
            self.on_cancelled(coid, "cancelled at venue (status report)", ts_ns)
        elif status == "expired":
            self.on_expired(coid, "expired at venue (status report)", ts_ns)
        elif status == "rejected":
            if order.state is OrderState.SUBMITTED:
                self._reject(order, "rejected at venue (status report)", ts_ns)
            else:
                self._discrepancy("status_conflict", ts_ns, order.instrument_id, coid,
                                  detail=f"venue says rejected, order is {order.state}")
        else:
            log.error("unknown_order_status", client_order_id=coid, status=status)
        return order

    def _external_fill(self: OrderManager, client_order_id: str, exec_id: str, quantity: int,
                       price: int, fee: Decimal, liquidity: str, ts_ns: int, instrument_id: str,
                       side: int) -> None:
        """A fill for an order this manager never placed: the position follows the venue."""
        self.counters["external_fills"] += 1
        if instrument_id not in self._instruments or side not in (1, -1):
            self.counters["unknown_orders"] += 1
            log.error("external_fill_unbookable", client_order_id=client_order_id,
                      exec_id=exec_id, instrument_id=instrument_id, side=side)
            self._discrepancy("external_fill", ts_ns, instrument_id, client_order_id, exec_id,
                              0, "not booked: unknown instrument or side")
            return
        if exec_id:
            self._exec_ids.add(exec_id)
        fill_id = self._ids.next("F")
        fill = Fill(event_id=self._ids.next("E"), ts_ns=ts_ns, fill_id=fill_id, order_id="",
                    client_order_id=client_order_id, instrument_id=instrument_id, side=side,
                    quantity=quantity, price=price, fee=fee, liquidity=liquidity, exec_id=exec_id)
        self._book(None, fill)
        log.error("external_fill", client_order_id=client_order_id, exec_id=exec_id,
                  instrument_id=instrument_id, side=side, quantity=quantity, price=price)
        self._discrepancy("external_fill", ts_ns, instrument_id, client_order_id, exec_id,
                          side * quantity, "fill for an order this manager does not know: booked")
        self._brackets_after_fill(None, instrument_id)

    def _discrepancy(self: OrderManager, kind: str, ts_ns: int, instrument_id: str = "",
                     client_order_id: str = "", exec_id: str = "", quantity: int = 0,
                     detail: str = "", price: int = 0) -> None:
        self.counters["discrepancies"] += 1
        self._emit(ExecutionDiscrepancy(
            event_id=self._ids.next("E"), ts_ns=ts_ns, kind=kind, instrument_id=instrument_id,
            client_order_id=client_order_id, exec_id=exec_id, quantity=quantity, price=price,
            detail=detail))

    async def reconcile(self: OrderManager, client: ExecutionClient, ts_ns: int) -> dict[str, int]:
        """Startup / periodic reconciliation with the venue (the truth). Returns what it did."""
        done = {"fills_booked": 0, "orders_queried": 0, "positions_adjusted": 0}
        since = self._fills_since_ns
        done["fills_booked"] += await self._book_fills_since(client, since)
        for order in self.open_orders():
            report = await client.query_order(order.client_order_id)
            done["orders_queried"] += 1
            self.apply_status_report(report, ts_ns, client_order_id=order.client_order_id)
        # The positions are compared only once every execution they include is booked: one
        # that happened after the fills were read (or is still on its way over the stream)
        # would otherwise be "adjusted" here and then booked again when its fill arrives.
        for _ in range(POSITION_READS):
            booked = len(self._exec_ids)  # from any source: this read or the stream
            venue = {p.instrument_id: p.quantity for p in await client.positions()}
            done["fills_booked"] += await self._book_fills_since(client, since)
            if len(self._exec_ids) == booked:
                break
        else:
            log.warning("positions_unsettled", reads=POSITION_READS)
            log.info("reconciled", **done)
            return done  # executions keep coming: the next reconciliation compares
        ours = {i for i in self._instruments if self.positions.quantity(i)}
        for instrument_id in sorted(set(venue) | ours):
            diff = venue.get(instrument_id, 0) - self.positions.quantity(instrument_id)
            if diff and instrument_id in self._instruments:
                self._adjust_position(instrument_id, diff, ts_ns)
                done["positions_adjusted"] += 1
            self.check_brackets(instrument_id)
        log.info("reconciled", **done)
        return done

    async def _book_fills_since(self: OrderManager, client: ExecutionClient, since: int) -> int:
        """Book the venue's fills after `since` not yet booked (by exec id); how many."""
        booked = 0
        for fill in sorted(await client.fills_since(since), key=lambda f: f.ts_ns):
            booked += self.apply_fill_report(fill)
            self._fills_since_ns = max(self._fills_since_ns, fill.ts_ns)
        return booked

    def _adjust_position(self: OrderManager, instrument_id: str, diff: int, ts_ns: int) -> None:
        """Move our position by `diff` lots to match the venue, at the last mark (else the
        average entry, else 0): realized PnL of the adjustment is an estimate, said in the log."""
        pos = self.positions.get(instrument_id)
        price = 0
        if pos is not None and pos.mark is not None:
            price = pos.mark
        elif pos is not None and pos.avg_entry is not None:
            price = round(pos.avg_entry)
        self.counters["position_mismatches"] += 1
        log.error("position_mismatch", instrument_id=instrument_id,
                  ours=self.positions.quantity(instrument_id), diff=diff, price=price)
        # journaled first (a rebuild books the adjustment again), then applied
        ours = self.positions.quantity(instrument_id)
        self._discrepancy("position_mismatch", ts_ns, instrument_id, quantity=diff, price=price,
                          detail=f"position {ours} -> {ours + diff} lots (the venue's), "
                                 f"adjusted by {diff} at {price} ticks")
        self.positions.apply_fill(instrument_id, 1 if diff > 0 else -1, abs(diff), price,
                                  Decimal(0), ts_ns)
        self._publish(self.positions.update_event(instrument_id, self._ids.next("E"), ts_ns))

    def restore(self: OrderManager, state: RecoveredState) -> None:
        """Adopt the state rebuilt from the journal. Call before any order, then `reconcile`."""
        if self.orders:
            raise RuntimeError("restore must run before any order is submitted "
                               f"({len(self.orders)} orders exist)")
        self.orders = dict(state.orders)
        self._by_client = {o.client_order_id: o for o in self.orders.values()}
        self.positions = state.positions
        self._exec_ids = set(state.exec_ids)
        in_flight = [o.ts_init for o in state.in_flight()]
        self._fills_since_ns = min([state.last_ts_ns, *in_flight])
        self._relink_brackets()
        log.info("restored", orders=len(self.orders), in_flight=len(in_flight),
                 exec_ids=len(self._exec_ids), cut=state.cut)
