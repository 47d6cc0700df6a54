"""Rebuild the order manager's state from its journal (see `journal.py`).

Contract shared by the journal reader (this module) and the order manager (`restore`): the
journal's records, in order, rebuild every order (with its state machine history), the positions,
the set of execution ids already booked (so a fill replayed by the venue after a restart is booked
once) and the id sessions seen (so new client order ids never repeat an old one; see `ids.py`).

How each record type is replayed:
- `OrderSubmitted` creates the `Order` (SUBMITTED); the `OrderRequest` for the same client order id
  (before or after it) adds time in force and reduce_only. A request never followed by its
  OrderSubmitted still creates an order: it may have reached the venue, so it is in flight.
- `OrderAccepted` / `OrderRejected` / `OrderCancelled` / `OrderExpired` move its state machine; a
  rejection of an order never submitted (refused locally) creates it as REJECTED.
- `Fill` is the record of quantity and price: it books the position and fills the order. A Fill
  whose `exec_id` was already booked is skipped (counted in `duplicate_fills`); a fill the order's
  state cannot take (after a cancel, beyond its quantity) or of an unknown order is still booked,
  because the venue is the truth, and noted in `anomalies`. `OrderFilled` /
  `OrderPartiallyFilled` only repeat what the Fill says: counted.
- `CancelRequest` sets `cancel_requested_ns`.
- `ExecutionDiscrepancy(kind="position_mismatch")` books the reconciliation's adjustment to the
  venue's position again (its `quantity` lots at its `price`, no fee).
- `OrderIntent`, `RiskVerdict`, `PositionUpdate`, other discrepancies and anything else are
  counted in `counts`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..instruments import Instrument
from ..statedir import JOURNAL_NAME
from .journal import Journal
from .positions import PositionBook
from .state import IllegalTransition, InvalidFill, Order, OrderError, OrderState, Trigger

_SESSION = re.compile(r"^[A-Z]+-([0-9a-z]+)-\d+$")  # ids look like C-<session>-<n>


class _Instruments(dict[str, Instrument]):
    """Instruments given by the caller, or a minimal one per id (tick 1, lot 1): lots and
    tick-lot PnL stay exact, money is then in ticks."""

    def __missing__(self, key: str) -> Instrument:
        inst = self[key] = Instrument(id=key, tick_size=Decimal(1))
        return inst


@dataclass
class RecoveredState:
    orders: dict[str, Order]  # order id -> order, as the journal last saw it
    positions: PositionBook
    exec_ids: set[str] = field(default_factory=set)  # venue execution ids already booked
    fills: int = 0
    records: int = 0
    cut: list[str] = field(default_factory=list)  # what was cut (a torn or corrupt tail), said
    last_ts_ns: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # records per type
    duplicate_fills: int = 0
    anomalies: list[str] = field(default_factory=list)  # records that did not fit, said
    sessions: set[str] = field(default_factory=set)  # id sessions seen in client order ids
    instruments: set[str] = field(default_factory=set)  # instruments with orders or fills

    def in_flight(self) -> list[Order]:
        """Orders the venue may still be working: resolve them before any new order."""
        return [o for o in self.orders.values() if not o.is_terminal]

    def by_client_id(self) -> dict[str, Order]:
        return {o.client_order_id: o for o in self.orders.values()}

    def summary(self) -> dict[str, Any]:
        """The JSON `himari journal` prints: orders by status, positions, counts, what was cut."""
        by_status: dict[str, list[str]] = {}
        for o in self.orders.values():
            by_status.setdefault(str(o.state), []).append(o.order_id)
        positions = {}
        for inst_id in sorted(self.instruments):
            pos = self.positions.get(inst_id)
            if pos is None:
                continue
            positions[inst_id] = {"quantity_lots": pos.quantity, "fills": pos.fills,
                                  "avg_entry_ticks": str(pos.avg_entry) if pos.avg_entry else None,
                                  "realized_tick_lots": pos.realized, "fees": format(pos.fees, "f")}
        return {
            "records": self.records, "fills": self.fills, "duplicate_fills": self.duplicate_fills,
            "order_counts": {k: len(v) for k, v in sorted(by_status.items())},
            "orders": {k: v for k, v in sorted(by_status.items())},  # ids in journal order
            "in_flight": [{"order_id": o.order_id, "client_order_id": o.client_order_id,
                           "state": str(o.state), "filled": o.filled, "quantity": o.quantity}
                          for o in self.in_flight()],
            "positions": positions, "counts": dict(sorted(self.counts.items())),
            "last_ts_ns": self.last_ts_ns, "sessions": sorted(self.sessions),
            "anomalies": self.anomalies, "cut": self.cut,
        }


def rebuild(records: Iterable[Any], instruments: dict[str, Instrument] | None = None
            ) -> RecoveredState:
    """Replay journal records (dicts from `Journal.read` or Structs) into a RecoveredState."""
    insts = _Instruments(instruments or {})
    state = RecoveredState(orders={}, positions=PositionBook(insts))
    r = _Rebuilder(state)
    counts: Counter[str] = Counter()
    for raw in records:
        rec = Journal.decode(raw) if isinstance(raw, dict) else raw
        name = type(rec).__name__
        counts[name] += 1
        state.records += 1
        ts = getattr(rec, "ts_ns", 0)
        if ts > state.last_ts_ns:
            state.last_ts_ns = ts
        handler = getattr(r, f"on_{name}", None)
        if handler is not None:
            handler(rec)
    r.finish()
    state.counts = dict(counts)
    return state


def resolve_in_flight(state: RecoveredState, venue_orders: Iterable[Any], ids: Any,
                      ts_ns: int) -> list[Any]:
    """The records that settle each in-flight order against the venue's open-order reports
    (`OrderStatusReport`s; the broker is the truth), to be journaled (and applied with
    `rebuild`'s handlers or the manager's) before any new order is sent.

    - found: the venue's status wins; an accepted, cancelled, expired or rejected report the
      journal did not yet have becomes that order event (fills arrive as the venue's fill
      reports, booked by exec id, so they are not invented here);
    - absent (the venue never got it, or has forgotten it): `ExecutionDiscrepancy(order_absent)`
      then `OrderCancelled`, so the order is terminal and its lots are no longer counted working.
    """
    from ..events import ExecutionDiscrepancy, OrderAccepted, OrderCancelled, OrderExpired, \
        OrderRejected

    reports = {r.client_order_id: r for r in venue_orders}
    out: list[Any] = []
    for order in state.in_flight():
        keys = {"order_id": order.order_id, "client_order_id": order.client_order_id,
                "instrument_id": order.instrument_id}
        rep = reports.get(order.client_order_id)
        if rep is None:
            out.append(ExecutionDiscrepancy(
                event_id=ids.next("E"), ts_ns=ts_ns, kind="order_absent",
                instrument_id=order.instrument_id, client_order_id=order.client_order_id,
                quantity=order.side * order.leaves,
                detail=f"order {order.order_id} in state {order.state} is not at the venue"))
            out.append(OrderCancelled(event_id=ids.next("E"), ts_ns=ts_ns, **keys,
                                      reason="absent at the venue on restart"))
        elif rep.status == "accepted" and order.state is OrderState.SUBMITTED:
            out.append(OrderAccepted(event_id=ids.next("E"), ts_ns=ts_ns, **keys,
                                     venue_order_id=rep.venue_order_id))
        elif rep.status in ("cancelled", "expired", "rejected"):
            cls = {"cancelled": OrderCancelled, "expired": OrderExpired,
                   "rejected": OrderRejected}[rep.status]
            out.append(cls(event_id=ids.next("E"), ts_ns=ts_ns, **keys,
                           reason=f"{rep.status} at the venue (found on restart)"))
    return out


def load_state(state_dir: str | Path, instruments: dict[str, Instrument] | None = None
               ) -> RecoveredState:
    """Read `STATE_DIR/journal.jsonl` (never modifying it) and rebuild. FileNotFoundError when
    there is no journal; JournalCorrupt when damage precedes intact records."""
    contents = Journal.read(Path(state_dir) / JOURNAL_NAME)
    state = rebuild(contents.records, instruments)
    state.cut = list(contents.cut)
    return state


class _Rebuilder:
    def __init__(self, state: RecoveredState) -> None:
        self.s = state
        self.by_client: dict[str, Order] = {}
        self.requests: dict[str, Any] = {}  # client order id -> OrderRequest not yet matched
        self.verdicts: dict[str, Any] = {}  # intent id -> RiskVerdict (bracket levels)

    def _note(self, text: str) -> None:
        self.s.anomalies.append(text)

    def _add(self, order: Order) -> None:
        self.s.orders[order.order_id] = order
        self.by_client[order.client_order_id] = order
        self.s.instruments.add(order.instrument_id)
        m = _SESSION.match(order.client_order_id)
        if m:
            self.s.sessions.add(m.group(1))

    def _order(self, rec: Any) -> Order | None:
        order = self.s.orders.get(rec.order_id) or self.by_client.get(rec.client_order_id)
        if order is None:
            self._note(f"{type(rec).__name__} {rec.event_id}: unknown order {rec.order_id}")
        return order

    def _move(self, rec: Any, trigger: Trigger) -> Order | None:
        order = self._order(rec)
        if order is None:
            return None
        try:
            order.apply(trigger, rec.ts_ns)
        except IllegalTransition as exc:
            self._note(f"{type(rec).__name__} {rec.event_id}: {exc}")
            return None
        reason = getattr(rec, "reason", "")
        if reason:
            order.reason = reason
        return order

    # ---- record handlers (named on_<type>)

    def on_RiskVerdict(self, rec: Any) -> None:
        if rec.approved and (rec.stop_loss is not None or rec.take_profit is not None):
            self.verdicts[rec.intent_id] = rec

    def on_OrderSubmitted(self, rec: Any) -> None:
        if rec.order_id in self.s.orders:
            self._note(f"OrderSubmitted {rec.event_id}: order {rec.order_id} submitted twice")
            return
        role = "entry"
        if rec.parent_order_id:
            role = "stop_loss" if rec.order_type == "stop" else "take_profit"
        verdict = self.verdicts.get(rec.intent_id) if role == "entry" else None
        order = Order(order_id=rec.order_id, client_order_id=rec.client_order_id,
                      instrument_id=rec.instrument_id, side=rec.side, quantity=rec.quantity,
                      order_type=rec.order_type, price=rec.price, time_in_force="gtc",
                      ts_init=rec.ts_ns, decision_id=rec.decision_id, intent_id=rec.intent_id,
                      role=role, parent_order_id=rec.parent_order_id,
                      stop_loss=verdict.stop_loss if verdict else None,
                      take_profit=verdict.take_profit if verdict else None)
        order.apply(Trigger.SUBMIT, rec.ts_ns)
        parent = self.s.orders.get(rec.parent_order_id) if rec.parent_order_id else None
        if parent is not None:
            parent.leg_order_ids.append(order.order_id)
        self._add(order)
        request = self.requests.pop(rec.client_order_id, None)
        if request is not None:
            self._apply_request(order, request)

    def on_OrderRequest(self, rec: Any) -> None:
        order = self.by_client.get(rec.client_order_id)
        if order is None:
            self.requests[rec.client_order_id] = rec
        else:
            self._apply_request(order, rec)

    @staticmethod
    def _apply_request(order: Order, rec: Any) -> None:
        order.time_in_force = rec.time_in_force
        order.reduce_only = rec.reduce_only

    def on_CancelRequest(self, rec: Any) -> None:
        order = self.s.orders.get(rec.order_id) or self.by_client.get(rec.client_order_id)
        if order is None:
            self._note(f"CancelRequest at {rec.ts_ns}: unknown order {rec.order_id}")
        elif order.cancel_requested_ns is None:
            order.cancel_requested_ns = rec.ts_ns

    def on_OrderAccepted(self, rec: Any) -> None:
        order = self._move(rec, Trigger.ACCEPT)
        if order is not None:
            order.venue_order_id = rec.venue_order_id

    def on_OrderRejected(self, rec: Any) -> None:
        if rec.order_id not in self.s.orders and rec.client_order_id not in self.by_client:
            # refused locally before it was sent: no OrderSubmitted, only its rejection
            order = Order(order_id=rec.order_id, client_order_id=rec.client_order_id,
                          instrument_id=rec.instrument_id, side=0, quantity=0,
                          order_type="market", price=None, time_in_force="gtc",
                          ts_init=rec.ts_ns)
            self._add(order)
        self._move(rec, Trigger.REJECT)

    def on_OrderCancelled(self, rec: Any) -> None:
        self._move(rec, Trigger.CANCEL)

    def on_OrderExpired(self, rec: Any) -> None:
        self._move(rec, Trigger.EXPIRE)

    def on_Fill(self, rec: Any) -> None:
        s = self.s
        if rec.exec_id:
            if rec.exec_id in s.exec_ids:
                s.duplicate_fills += 1
                return
            s.exec_ids.add(rec.exec_id)
        order = s.orders.get(rec.order_id) or self.by_client.get(rec.client_order_id)
        if order is None:
            self._note(f"Fill {rec.fill_id}: unknown order {rec.order_id}; booked")
        else:
            try:
                order.apply_fill(rec.quantity, rec.price, rec.fee, rec.ts_ns)
            except (OrderError, InvalidFill) as exc:
                self._note(f"Fill {rec.fill_id}: {exc}; booked")
        s.instruments.add(rec.instrument_id)
        s.positions.apply_fill(rec.instrument_id, rec.side, rec.quantity, rec.price, rec.fee,
                               rec.ts_ns)
        s.fills += 1

    def on_ExecutionDiscrepancy(self, rec: Any) -> None:
        if rec.kind != "position_mismatch" or not rec.quantity or not rec.instrument_id:
            return
        self.s.instruments.add(rec.instrument_id)
        self.s.positions.apply_fill(rec.instrument_id, 1 if rec.quantity > 0 else -1,
                                    abs(rec.quantity), rec.price, Decimal(0), rec.ts_ns)

    def finish(self) -> None:
        # A request whose OrderSubmitted never reached the journal may have reached the venue.
        for client_id, rec in self.requests.items():
            order = Order(order_id=client_id, client_order_id=client_id,
                          instrument_id=rec.instrument_id, side=rec.side, quantity=rec.quantity,
                          order_type=rec.order_type, price=rec.price,
                          time_in_force=rec.time_in_force, ts_init=rec.ts_ns,
                          reduce_only=rec.reduce_only)
            order.apply(Trigger.SUBMIT, rec.ts_ns)
            self._add(order)
            self._note(f"OrderRequest {client_id} without OrderSubmitted: kept as in flight")
        self.requests.clear()


__all__ = ["JOURNAL_NAME", "RecoveredState", "load_state", "rebuild", "resolve_in_flight"]
