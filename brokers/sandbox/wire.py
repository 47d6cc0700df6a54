"""Alpaca's JSON shapes (Trading API v2), rendered from the sandbox's exact records.

Field names, enums and types follow what alpaca-py's models parse (`alpaca/trading/models.py`):
ids are UUIDs, prices and quantities decimal strings, times RFC 3339 in UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from himari.brokers.sandbox.state import AccountState, FillRec, OrderRec, PositionRec
from himari.daemon.instruments import Instrument

_NS = uuid.UUID("6b1f3f2e-5a8e-4c59-9a1e-2f4d2c7a0b11")  # namespace of the sandbox's asset ids


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(_NS, "asset/" + symbol))


def ts(ns: int | None) -> str | None:
    """RFC 3339 UTC with microseconds, as Alpaca's REST API writes times."""
    if ns is None:
        return None
    dt = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000 // 1000:06d}Z"


def dec(value: Decimal) -> str:
    """A decimal string without exponent or trailing zeros ("12.5", "0", "-3")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def asset(inst: Instrument) -> dict[str, Any]:
    return {
        "id": asset_id(inst.id), "class": "us_equity", "exchange": "NASDAQ", "symbol": inst.id,
        "name": f"{inst.id} (himari sandbox, synthetic)", "status": "active", "tradable": True,
        "marginable": True, "shortable": True, "easy_to_borrow": True, "fractionable": False,
        "maintenance_margin_requirement": 30, "min_order_size": dec(inst.lot_size),
        "min_trade_increment": dec(inst.lot_size), "price_increment": dec(inst.tick_size),
        "attributes": [],
    }


def order(o: OrderRec, inst: Instrument) -> dict[str, Any]:
    avg = (inst.tick_size * o.filled_value / o.filled).quantize(inst.tick_size / 10_000) \
        if o.filled else None
    return {
        "id": o.id, "client_order_id": o.client_order_id,
        "created_at": ts(o.created_ns), "updated_at": ts(o.updated_ns),
        "submitted_at": ts(o.created_ns), "filled_at": ts(o.filled_ns),
        "expired_at": ts(o.expired_ns), "expires_at": ts(o.expires_ns),
        "canceled_at": ts(o.canceled_ns), "failed_at": ts(o.failed_ns),
        "replaced_at": None, "replaced_by": None, "replaces": None,
        "asset_id": asset_id(o.symbol), "symbol": o.symbol, "asset_class": "us_equity",
        "notional": None, "qty": dec(inst.lot_size * o.qty),
        "filled_qty": dec(inst.lot_size * o.filled),
        "filled_avg_price": dec(avg) if avg is not None else None,
        "order_class": "simple", "order_type": o.type, "type": o.type,
        "side": "buy" if o.side > 0 else "sell", "position_intent": None,
        "time_in_force": o.time_in_force,
        "limit_price": dec(inst.ticks_to_price(o.limit_ticks)) if o.limit_ticks is not None else None,
        "stop_price": None, "status": o.status, "extended_hours": False, "legs": None,
        "trail_percent": None, "trail_price": None, "hwm": None,
    }


def position(symbol: str, pos: PositionRec, last_ticks: int, inst: Instrument) -> dict[str, Any]:
    qty = inst.lot_size * pos.qty
    avg_ticks = Decimal(pos.avg_num) / Decimal(pos.avg_den)  # exact up to 28 digits, then rounded
    cost = inst.tick_value * pos.qty * avg_ticks
    market = inst.tick_value * pos.qty * last_ticks
    pnl = market - cost
    plpc = pnl / abs(cost) if cost else Decimal(0)
    q2, q8 = Decimal("0.01"), Decimal("1e-8")
    return {
        "asset_id": asset_id(symbol), "symbol": symbol, "exchange": "NASDAQ",
        "asset_class": "us_equity", "asset_marginable": True,
        "avg_entry_price": dec((inst.tick_size * avg_ticks).quantize(inst.tick_size / 10_000)),
        "qty": dec(qty), "qty_available": dec(qty), "side": "long" if pos.qty > 0 else "short",
        "market_value": dec(market.quantize(q2)), "cost_basis": dec(cost.quantize(q2)),
        "unrealized_pl": dec(pnl.quantize(q2)), "unrealized_plpc": dec(plpc.quantize(q8)),
        "unrealized_intraday_pl": dec(pnl.quantize(q2)),
        "unrealized_intraday_plpc": dec(plpc.quantize(q8)),
        "current_price": dec(inst.ticks_to_price(last_ticks)),
        "lastday_price": dec(inst.ticks_to_price(last_ticks)), "change_today": "0",
    }


def account(st: AccountState, insts: dict[str, Instrument], now_ns: int) -> dict[str, Any]:
    long_value = short_value = Decimal(0)
    for symbol, pos in st.positions.items():
        value = insts[symbol].tick_value * pos.qty * st.last_ticks.get(symbol, 0)
        if pos.qty > 0:
            long_value += value
        else:
            short_value += value
    equity = st.cash + long_value + short_value
    # 1x margin: the equity not tied up in positions (= the cash less a short's proceeds)
    buying_power = max(Decimal(0), equity - long_value + short_value)
    c2 = Decimal("0.01")
    money = {k: dec(v.quantize(c2)) for k, v in (
        ("cash", st.cash), ("equity", equity), ("portfolio_value", equity),
        ("long_market_value", long_value), ("short_market_value", short_value),
        ("buying_power", buying_power), ("regt_buying_power", buying_power),
        ("daytrading_buying_power", buying_power), ("non_marginable_buying_power", buying_power),
        ("accrued_fees", Decimal(0)), ("last_equity", equity), ("initial_margin", Decimal(0)),
        ("maintenance_margin", Decimal(0)), ("last_maintenance_margin", Decimal(0)),
        ("sma", Decimal(0)), ("pending_transfer_in", Decimal(0)),
        ("pending_transfer_out", Decimal(0)), ("options_buying_power", Decimal(0)))}
    return {
        "id": st.account_id, "account_number": "PA" + st.account_id.replace("-", "")[:10].upper(),
        "status": "ACTIVE", "crypto_status": "INACTIVE", "currency": "USD", **money,
        "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
        "account_blocked": False, "created_at": ts(st.created_ns),
        "trade_suspended_by_user": False, "multiplier": "1", "shorting_enabled": True,
        "daytrade_count": 0, "options_approved_level": 0, "options_trading_level": 0,
    }


def trade_update(event: str, o: OrderRec, inst: Instrument, now_ns: int,
                 fill: FillRec | None = None, position_lots: int | None = None) -> dict[str, Any]:
    """One message of the trade_updates stream, as Alpaca sends it."""
    data: dict[str, Any] = {"event": event, "timestamp": ts(now_ns), "order": order(o, inst)}
    if fill is not None:
        data["execution_id"] = fill.execution_id
        data["price"] = dec(inst.ticks_to_price(fill.price_ticks))
        data["qty"] = dec(inst.lot_size * fill.qty)
        data["timestamp"] = ts(fill.ts_ns)
    if position_lots is not None:
        data["position_qty"] = dec(inst.lot_size * position_lots)
    return {"stream": "trade_updates", "data": data}


def fill_activity(f: FillRec, o: OrderRec, cum_lots: int, inst: Instrument) -> dict[str, Any]:
    """A FILL account activity (`GET /v2/account/activities`): its id is `<time>::<execution id>`,
    so a client names the execution the same whether it heard of it on the stream or here."""
    dt = datetime.fromtimestamp(f.ts_ns // 1_000_000_000, tz=timezone.utc)
    leaves = o.qty - cum_lots
    return {"id": f"{dt:%Y%m%d%H%M%S}{f.ts_ns % 1_000_000_000 // 1_000_000:03d}::{f.execution_id}",
            "activity_type": "FILL", "transaction_time": ts(f.ts_ns),
            "type": "fill" if leaves == 0 else "partial_fill",
            "price": dec(inst.ticks_to_price(f.price_ticks)), "qty": dec(inst.lot_size * f.qty),
            "side": "buy" if f.side > 0 else "sell", "symbol": f.symbol,
            "leaves_qty": dec(inst.lot_size * leaves), "cum_qty": dec(inst.lot_size * cum_lots),
            "order_id": f.order_id, "order_status": "filled" if leaves == 0 else "partially_filled"}
