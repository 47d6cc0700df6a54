"""Exact conversion between Alpaca's JSON and the daemon's integer ticks/lots and Structs.

Alpaca sends prices and quantities as decimal strings (sometimes numbers) and times as RFC 3339
with up to nanoseconds; the daemon holds integer ticks, lots and epoch nanoseconds. A price off
the instrument's tick grid (or a quantity off its lot grid) raises `InstrumentError` naming the
instrument and the value: it is never rounded.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from himari.daemon.instruments import Instrument
from himari.daemon.venue import FillReport, OrderRequest, OrderStatusReport

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")

SIDES = {1: "buy", -1: "sell"}
SIDE_OF = {"buy": 1, "sell": -1}
ORDER_TYPES = ("market", "limit", "stop")
TIME_IN_FORCE = ("gtc", "ioc", "day")

# Alpaca order status -> OrderStatusReport.status ("accepted" may become "partially_filled")
STATUS = {
    "new": "accepted", "accepted": "accepted", "pending_new": "accepted",
    "accepted_for_bidding": "accepted", "held": "accepted", "calculated": "accepted",
    "pending_cancel": "accepted", "pending_replace": "accepted", "pending_review": "accepted",
    "done_for_day": "accepted", "stopped": "accepted", "suspended": "accepted",
    "partially_filled": "partially_filled", "filled": "filled",
    "canceled": "cancelled", "replaced": "cancelled", "expired": "expired",
    "rejected": "rejected",
}


def parse_ts(text: str) -> int:
    """RFC 3339 (Alpaca's `2024-01-02T14:30:00.123456789Z`) -> epoch nanoseconds, exactly."""
    m = _RFC3339.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"timestamp {text!r} is not RFC 3339")
    whole, frac, zone = m.groups()
    dt = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return calendar.timegm(dt.utctimetuple()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def format_ts(ts_ns: int) -> str:
    """Epoch nanoseconds -> RFC 3339 UTC with nanoseconds (query parameters)."""
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def dec(value: Any, what: str) -> Decimal:
    """A decimal from Alpaca's string (or JSON number, taken by its shortest repr)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} = {value!r} is not a number")
    try:
        d = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except Exception as exc:
        raise ValueError(f"{what} = {value!r} is not a number") from exc
    if not d.is_finite():
        raise ValueError(f"{what} = {value!r} is not finite")
    return d


def plain(d: Decimal) -> str:
    """A decimal string without exponent (`1E+2` -> `100`)."""
    return format(d, "f")


def order_body(req: OrderRequest, inst: Instrument, symbol: str,
               extended_hours: bool = False) -> dict[str, Any]:
    """The POST /v2/orders JSON body for one request. Prices and quantities are exact strings.
    `reduce_only` has no Alpaca equivalent for equities: it is not sent (the order manager and
    risk enforce it before the order leaves)."""
    if req.side not in SIDES:
        raise ValueError(f"order {req.client_order_id}: side = {req.side!r} is not +1 or -1")
    if req.order_type not in ORDER_TYPES:
        raise ValueError(f"order {req.client_order_id}: order_type = {req.order_type!r} is not "
                         f"one of {ORDER_TYPES}")
    if req.time_in_force not in TIME_IN_FORCE:
        raise ValueError(f"order {req.client_order_id}: time_in_force = {req.time_in_force!r} "
                         f"is not one of {TIME_IN_FORCE}")
    if req.quantity <= 0:
        raise ValueError(f"order {req.client_order_id}: quantity = {req.quantity} must be > 0")
    body: dict[str, Any] = {
        "symbol": symbol, "qty": plain(inst.lots_to_qty(req.quantity)),
        "side": SIDES[req.side], "type": req.order_type, "time_in_force": req.time_in_force,
        "client_order_id": req.client_order_id,
    }
    if req.order_type != "market":
        if req.price is None:
            raise ValueError(f"order {req.client_order_id}: a {req.order_type} order needs a price")
        key = "limit_price" if req.order_type == "limit" else "stop_price"
        body[key] = plain(inst.ticks_to_price(req.price))
    if extended_hours and req.order_type == "limit" and req.time_in_force == "day":
        body["extended_hours"] = True
    return body


def order_report(o: dict[str, Any], inst: Instrument, instrument_id: str) -> OrderStatusReport:
    """An Alpaca Order object -> OrderStatusReport (lots; status in the daemon's words)."""
    filled = inst.qty_to_lots(dec(o.get("filled_qty") or "0", "filled_qty"))
    status = STATUS.get(str(o.get("status")), "")
    if not status:
        raise ValueError(f"order {o.get('client_order_id')}: unknown Alpaca status "
                         f"{o.get('status')!r}")
    if status == "accepted" and filled > 0:
        status = "partially_filled"
    ts = o.get("updated_at") or o.get("submitted_at") or o.get("created_at")
    return OrderStatusReport(
        client_order_id=str(o.get("client_order_id", "")), venue_order_id=str(o.get("id", "")),
        instrument_id=instrument_id, side=SIDE_OF.get(str(o.get("side")), 0),
        quantity=inst.qty_to_lots(dec(o.get("qty") or "0", "qty")), filled=filled,
        status=status, ts_ns=parse_ts(ts) if ts else 0)


def activity_exec_id(activity_id: str) -> str:
    """A FILL activity's id is `<time>::<uuid>`; the uuid names the execution."""
    return activity_id.rsplit("::", 1)[-1]


def fill_report(a: dict[str, Any], inst: Instrument, instrument_id: str, client_order_id: str,
                exec_id: str) -> FillReport:
    """A FILL account activity -> FillReport (fee 0: Alpaca reports no per-fill fee here)."""
    return FillReport(
        exec_id=exec_id, client_order_id=client_order_id, instrument_id=instrument_id,
        side=SIDE_OF.get(str(a.get("side")), 0),
        quantity=inst.qty_to_lots(dec(a.get("qty"), "qty")),
        price=inst.price_to_ticks(dec(a.get("price"), "price")), fee=Decimal(0), liquidity="",
        ts_ns=parse_ts(str(a.get("transaction_time"))))
