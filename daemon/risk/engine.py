"""The pre-trade risk engine: every `OrderIntent` passes `validate` before the order manager sees it.

State it keeps (all from events, never from the wall clock):
- the last tick actually seen, price and time (`on_last_tick` / `on_tick_batch`): the reference for
  market orders and the price collar; its time is the stale-data clock. `on_trade_price` (a bar's
  close) moves only the reference price: a bar's time is not a tick's, and feeding it to the stale
  clock made the check pass on "recent" bars with no recent tick;
- Wilder ATR(`atr_period`) in ticks from `on_bar` (spec 1.3: 5-minute bars; `atr_bar_spec` filters);
- equity (`on_equity`): start-of-UTC-day equity (the equity at the first update or validation of a
  new UTC day; `starting_equity` for the first day), the high-water mark and the drawdown from it;
  reaching `max_drawdown_pct` trips the kill switch, which stays HALTED until `resume()`;
- the last `kelly_window_trades` closed-trade results (`on_trade_closed`) for Kelly sizing;
- the times of approved orders in a ring of `max_orders_per_minute` for the 60 s rate window.

`validate(intent, position_lots, ts_ns, working_buy_lots, working_sell_lots)` takes the filled
position and the leaves of the working orders that are not reduce-only, per side: the limits count
the worst case, position plus every working order on the intent's side (see `kernels.py`). A
reducing order (reduce-only, or against the position and not larger) is an exit: only
`invalid_order`, `reduce_only`, `no_market_data` and the collar can refuse it, so the kill switch
always lets a flatten through. With `intent.quantity > 0` the order is checked as given. With
`quantity == 0` `validate` plans and sizes an entry: an ATR stop/target around the reference price
(the intent's own `stop_loss` / `take_profit` replace the planned levels when they lie on the
protective side; the size then uses the stop actually used), Kelly lots (spec 1.2), then the same
checks. The reference price is the
limit/stop price, or the last trade price for market orders. The checks, their order and their
exact integer arithmetic are documented in `kernels.py`; the state the hot path reads lives in the
flat arrays of `hotpath.py` so that one numba call does the work. Money is Decimal here and int64
micro-units (floored) inside the kernels.
"""

from __future__ import annotations

import math
from collections import deque
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import numpy as np
import structlog

from himari.daemon.events import Bar, OrderIntent, RiskVerdict, TickBatch
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.risk import hotpath as H
from himari.daemon.risk import kernels as K
from himari.daemon.risk.config import RiskConfig, pct_to_ppm

log = structlog.get_logger("himari.risk")

NS_PER_DAY = 86_400 * 1_000_000_000
RATE_WINDOW_NS = 60 * 1_000_000_000
_MICRO = Decimal(1_000_000)
_I64_MAX = 2**63 - 1


def _to_lots(quantity: Decimal | int, instrument: Instrument) -> int:
    """A quantity limit in instrument units as whole lots, rounded down (never loosened)."""
    return min(_I64_MAX, int((Decimal(quantity) / instrument.lot_size).to_integral_value(
        rounding=ROUND_FLOOR)))


def to_micro(amount: Decimal) -> int:
    """Money to int64 micro-units, floored (a lower equity only ever rejects more)."""
    units = int((amount * _MICRO).to_integral_value(rounding=ROUND_FLOOR))
    return max(-_I64_MAX, min(_I64_MAX, units))


class RiskEngine:
    def __init__(self, cfg: RiskConfig, instrument: Instrument, ids: IdSource) -> None:
        cfg = cfg.for_instrument(instrument.id)  # `[risk.instruments.<ID>]` over `[risk]`
        self.cfg = cfg
        self.instrument = instrument
        self._ids = ids
        ints, floats = H.new_arrays()
        tick_value = instrument.tick_value
        ints[H.I_MAX_ORDER] = _to_lots(cfg.max_order_quantity, instrument)
        ints[H.I_MAX_POSITION] = _to_lots(cfg.max_position, instrument)
        # floor(max_notional / tick_value) in tick*lot units makes the notional check exact
        ints[H.I_MAX_NOTIONAL_TL] = min(
            _I64_MAX, int((cfg.max_notional / tick_value).to_integral_value(rounding=ROUND_FLOOR)))
        ints[H.I_COLLAR_PPM] = pct_to_ppm(cfg.price_collar_pct)
        ints[H.I_DAILY_PPM] = pct_to_ppm(cfg.daily_loss_limit_pct)
        ints[H.I_DRAWDOWN_PPM] = pct_to_ppm(cfg.max_drawdown_pct)
        ints[H.I_RATE_WINDOW_NS] = RATE_WINDOW_NS
        ints[H.I_STALE_NS] = int(round(cfg.stale_data_s * 1e9))
        floats[H.F_TICK_VALUE] = float(tick_value)
        floats[H.F_MAX_NOTIONAL] = float(cfg.max_notional)
        floats[H.F_M_SL] = cfg.stop_atr_mult
        floats[H.F_M_TP] = cfg.target_atr_mult
        floats[H.F_KELLY_K] = cfg.kelly_fraction
        floats[H.F_MAX_RISK] = cfg.per_trade_risk_pct / 100.0
        # the fee is per contract (unit of quantity); the sizing divides by risk per *lot*
        floats[H.F_FEE_RT] = float(cfg.round_trip_fee * instrument.lot_size)
        self._ints, self._floats = ints, floats
        self._ring = np.zeros(cfg.max_orders_per_minute, dtype=np.int64)
        self._bracket_fixed = cfg.bracket_fixed_size
        self._day_index: int | None = None
        self._next_day_ns = 0  # start of the UTC day after `_day_index`
        self._halt_reason = ""
        self._atr_state = np.zeros(4, dtype=np.float64)
        self._pnls: deque[float] = deque(maxlen=cfg.kelly_window_trades)
        equity = cfg.starting_equity
        self._equity = self._day_start = self._peak = equity
        ints[H.I_EQUITY_U] = ints[H.I_DAY_START_U] = ints[H.I_PEAK_U] = to_micro(equity)
        floats[H.F_EQUITY] = float(equity)
        self.last_price = 0  # reference price in ticks, mirrored from the hot-path array
        self.checked = 0
        self.approved = 0
        self.rejected: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    def warmup(self) -> None:
        """Compile (or load from the numba cache) every kernel; call before reporting ready."""
        H.warmup()

    # ------------------------------------------------------------------ inputs

    def on_last_tick(self, price_ticks: int, ts_ns: int) -> None:
        """The last trade tick seen: reference price for market orders and the collar, and the
        time the stale-data check measures from. The runner calls it (or `on_tick_batch`) with
        the last tick processed before it publishes an event that may lead to an order."""
        ints = self._ints
        ints[H.I_LAST_TICKS] = price_ticks
        ints[H.I_LAST_TS] = ts_ns
        self.last_price = price_ticks

    def on_tick_batch(self, batch: TickBatch, stop: int | None = None) -> None:
        """`on_last_tick` with the last tick of `batch[:stop]` (all of it by default) when the
        batch is this instrument's and that slice is not empty."""
        n = len(batch) if stop is None else min(stop, len(batch))
        if n > 0 and batch.instrument_id == self.instrument.id:
            self.on_last_tick(int(batch.price[n - 1]), int(batch.ts_ns[n - 1]))

    def on_trade_price(self, price_ticks: int, ts_ns: int = 0) -> None:
        """Reference price only (e.g. a bar's close); `ts_ns` is ignored: only a tick moves the
        stale-data clock (`on_last_tick`). Kept for callers that feed bar closes."""
        self._ints[H.I_LAST_TICKS] = price_ticks
        self.last_price = price_ticks

    def set_portfolio_headroom(self, headroom_tl: int, other_gross: float,
                               max_gross: float | None = None) -> None:
        """Portfolio gross-notional room left for this instrument's worst-case exposure, in
        tick*lot units (`PortfolioRisk` writes it before each validation; K.I64_MAX = none);
        `other_gross` and `max_gross` only word a rejection."""
        self._ints[H.I_PORT_NOTIONAL_TL] = headroom_tl
        self._floats[H.F_PORT_OTHER] = other_gross
        if max_gross is not None:
            self._floats[H.F_PORT_MAX] = max_gross

    @property
    def last_tick(self) -> tuple[int, int]:
        """(price ticks, ts_ns) of the reference price and the last tick time; 0 when unseen."""
        return int(self._ints[H.I_LAST_TICKS]), int(self._ints[H.I_LAST_TS])

    def on_bar(self, bar: Bar) -> None:
        if bar.instrument_id != self.instrument.id:
            return
        if self.cfg.atr_bar_spec and bar.spec != self.cfg.atr_bar_spec:
            return
        self._floats[H.F_ATR] = K.wilder_atr_update(
            self._atr_state, float(bar.high), float(bar.low), float(bar.close),
            self.cfg.atr_period)

    def set_regime(self, *, vol_percentile: float | None = None, sigma_now: float | None = None,
                   sigma_base: float | None = None) -> None:
        """Volatility inputs from the risk state (spec 1.1 row 2, 1.2 step 4). Until given:
        vol_percentile 0 (stop D = m_SL x ATR) and a volatility ratio of 1."""
        if vol_percentile is not None:
            self._floats[H.F_VOL_PCT] = vol_percentile
        if sigma_now is not None:
            self._floats[H.F_SIGMA_NOW] = sigma_now
        if sigma_base is not None:
            self._floats[H.F_SIGMA_BASE] = sigma_base

    def on_equity(self, equity: Decimal, ts_ns: int) -> None:
        """Mark equity: rolls the UTC day, raises the high-water mark, trips on max drawdown."""
        self._roll_day(ts_ns, equity)
        ints = self._ints
        self._equity = equity
        ints[H.I_EQUITY_U] = equity_u = to_micro(equity)
        self._floats[H.F_EQUITY] = float(equity)
        if equity > self._peak:
            self._peak = equity
            ints[H.I_PEAK_U] = equity_u
        if not self.halted and K.loss_reaches(int(ints[H.I_PEAK_U]), equity_u,
                                              int(ints[H.I_DRAWDOWN_PPM])):
            self.halt(f"max_drawdown: drawdown {self.drawdown_pct:.4f}% from the high-water mark "
                      f"{self._peak} reached the {self.cfg.max_drawdown_pct:g}% limit")

    def on_trade_closed(self, pnl: Decimal) -> None:
        """A closed trade's net result; the last `kelly_window_trades` feed the Kelly inputs."""
        self._pnls.append(float(pnl))
        wins = [x for x in self._pnls if x > 0.0]
        losses = [-x for x in self._pnls if x < 0.0]
        self._ints[H.I_N_TRADES] = len(self._pnls)
        self._ints[H.I_WINS] = len(wins)
        self._ints[H.I_LOSSES] = len(losses)
        self._floats[H.F_SUM_WIN] = math.fsum(wins)
        self._floats[H.F_SUM_LOSS] = math.fsum(losses)

    # ------------------------------------------------------------------ kill switch

    def halt(self, reason: str) -> None:
        """Enter HALTED (idempotent: the first reason stands). Reducing orders still pass."""
        if self.halted:
            return
        self._ints[H.I_HALTED] = 1
        self._halt_reason = reason
        log.warning("risk_halted", reason=reason, equity=str(self._equity), peak=str(self._peak))

    def resume(self) -> None:
        """Operator reset. The high-water mark restarts at the current equity, so the drawdown
        that tripped the switch does not trip it again at once."""
        if not self.halted:
            return
        self._ints[H.I_HALTED] = 0
        log.warning("risk_resumed", previous_reason=self._halt_reason, equity=str(self._equity))
        self._halt_reason = ""
        self._peak = self._equity
        self._ints[H.I_PEAK_U] = self._ints[H.I_EQUITY_U]

    @property
    def ids(self) -> IdSource:
        return self._ids

    @property
    def halted(self) -> bool:
        return bool(self._ints[H.I_HALTED])

    @property
    def halt_reason(self) -> str:
        return self._halt_reason

    # ------------------------------------------------------------------ views

    @property
    def atr_ticks(self) -> float:
        return float(self._floats[H.F_ATR])

    @property
    def drawdown_pct(self) -> float:
        peak = self._peak
        return 100.0 * float(peak - self._equity) / float(peak) if peak > 0 else 100.0

    @property
    def daily_loss_pct(self) -> float:
        ds = self._day_start
        return 100.0 * float(ds - self._equity) / float(ds) if ds > 0 else 100.0

    def snapshot(self) -> dict[str, Any]:
        return {"equity": str(self._equity), "day_start_equity": str(self._day_start),
                "peak_equity": str(self._peak), "drawdown_pct": self.drawdown_pct,
                "daily_loss_pct": self.daily_loss_pct, "atr_ticks": self.atr_ticks,
                "halted": self.halted, "halt_reason": self._halt_reason,
                "checked": self.checked, "approved": self.approved, "rejected": dict(self.rejected)}

    # ------------------------------------------------------------------ validation

    def validate(self, intent: OrderIntent, position_lots: int, ts_ns: int,
                 working_buy_lots: int = 0, working_sell_lots: int = 0) -> RiskVerdict:
        """Verdict on `intent` given the filled position and the leaves of the working orders
        that are not reduce-only on each side (lots >= 0)."""
        self.checked += 1
        if ts_ns >= self._next_day_ns or self._day_index is None:
            self._roll_day(ts_ns, self._equity)
        if intent.instrument_id != self.instrument.id:
            return self._reject(intent, ts_ns, "instrument", f"intent for {intent.instrument_id} "
                                f"reached the risk engine of {self.instrument.id}", 0.0, 0.0)
        side = intent.side
        order_type = intent.order_type
        if order_type == "market":
            ref = int(self._ints[H.I_LAST_TICKS])
        elif order_type == "limit" or order_type == "stop":
            ref = intent.price if intent.price is not None else 0
        else:
            return self._reject(intent, ts_ns, "invalid_order",
                                f"unknown order type {order_type!r}", 0.0, 0.0)
        qty = intent.quantity
        stop_override = target_override = 0
        if qty == 0:
            mode = H.MODE_SIZE
            early = self._check_entry_request(intent, side, ref, ts_ns)
            if early is not None:
                return early
            if intent.stop_loss is not None:
                stop_override = intent.stop_loss
            if intent.take_profit is not None:
                target_override = intent.take_profit
        elif (self._bracket_fixed and intent.stop_loss is None and intent.take_profit is None
              and not intent.reduce_only
              and not (position_lots * side < 0 and qty <= abs(position_lots))):
            mode = H.MODE_BRACKET
        else:
            mode = H.MODE_CHECK
        ints = self._ints
        working = working_buy_lots if side > 0 else working_sell_lots
        code = H.screen_intent(mode, side, qty, position_lots, intent.reduce_only, ref,
                               stop_override, target_override, ts_ns, ints, self._floats,
                               self._ring, working)
        if code != K.PASS:
            return self._reject_screen(intent, ts_ns, code, side, position_lots, ref, working)
        self.approved += 1
        if mode == H.MODE_CHECK:
            return RiskVerdict(event_id=self._ids.next("RV"), ts_ns=ts_ns,
                               intent_id=intent.event_id, decision_id=intent.decision_id,
                               approved=True, quantity=qty)
        return RiskVerdict(event_id=self._ids.next("RV"), ts_ns=ts_ns, intent_id=intent.event_id,
                           decision_id=intent.decision_id, approved=True,
                           quantity=int(ints[H.I_OUT_QTY]), stop_loss=int(ints[H.I_OUT_STOP]),
                           take_profit=int(ints[H.I_OUT_TARGET]))

    def _check_entry_request(self, intent: OrderIntent, side: int, ref: int,
                             ts_ns: int) -> RiskVerdict | None:
        """Rejections a quantity-0 (sized) intent gets before any planning, or None."""
        if self.halted:  # a sized intent is an entry: say so before any sizing reason
            return self._reject(intent, ts_ns, "kill_switch",
                                f"kill switch is halted ({self._halt_reason}); only "
                                "position-reducing orders pass", 1.0, 0.0)
        if intent.reduce_only or side not in (1, -1) or ref <= 0:
            return self._reject(intent, ts_ns, "invalid_order",
                                f"cannot size an entry: side {side}, reference price {ref} ticks, "
                                f"reduce_only {intent.reduce_only}", float(side), float(ref))
        sl, tp = intent.stop_loss, intent.take_profit
        if sl is not None and (sl <= 0 or (ref - sl) * side <= 0):
            return self._reject(intent, ts_ns, "invalid_order", f"stop_loss {sl} ticks is not "
                                f"on the protective side of {ref}", float(sl), float(ref))
        if tp is not None and (tp <= 0 or (tp - ref) * side <= 0):
            return self._reject(intent, ts_ns, "invalid_order", f"take_profit {tp} ticks is not "
                                f"beyond {ref} in the trade's direction", float(tp), float(ref))
        return None

    # ------------------------------------------------------------------ helpers

    def _roll_day(self, ts_ns: int, equity: Decimal) -> None:
        day = ts_ns // NS_PER_DAY
        if self._day_index is None:
            self._day_index = day
        elif day > self._day_index:
            self._day_index = day
            self._day_start = equity
            self._ints[H.I_DAY_START_U] = to_micro(equity)
        self._next_day_ns = (self._day_index + 1) * NS_PER_DAY

    def _reject(self, intent: OrderIntent, ts_ns: int, rule: str, reason: str, value: float,
                limit: float) -> RiskVerdict:
        self.rejected[rule] = self.rejected.get(rule, 0) + 1
        return RiskVerdict(event_id=self._ids.next("RV"), ts_ns=ts_ns, intent_id=intent.event_id,
                           decision_id=intent.decision_id, approved=False, quantity=0, rule=rule,
                           reason=reason, values={"value": float(value), "limit": float(limit)})

    def _reject_screen(self, intent: OrderIntent, ts_ns: int, code: int, side: int,
                       position: int, ref: int, working: int) -> RiskVerdict:
        value = float(self._floats[H.F_OUT_VALUE])
        limit = float(self._floats[H.F_OUT_LIMIT])
        qty = int(self._ints[H.I_OUT_QTY])
        reason = self._explain(code, side, qty, position, ref, value, limit, working)
        if code == K.MAX_DRAWDOWN:
            self.halt(f"max_drawdown: {reason}")
        return self._reject(intent, ts_ns, H.SCREEN_NAMES[code], reason, value, limit)

    def _explain(self, code: int, side: int, qty: int, position: int, ref: int, value: float,
                 limit: float, working: int = 0) -> str:
        ccy = self.instrument.currency
        new = position + side * (working + qty)  # worst case: same-side working orders fill
        pending = f" with {working} lots working on that side" if working else ""
        if code == K.INVALID_ORDER:
            return (f"invalid order: side {side}, quantity {qty} lots, reference price {ref} ticks "
                    "(need side +1/-1, quantity > 0, price > 0, and stop/target levels > 0)")
        if code == K.REDUCE_ONLY:
            return f"reduce-only order of {side * qty} lots would not reduce position {position}"
        if code == K.KILL_SWITCH:
            return f"kill switch is halted ({self._halt_reason}); only position-reducing orders pass"
        if code == K.MAX_ORDER_QTY:
            return (f"order quantity {qty} lots exceeds max_order_quantity "
                    f"{self.cfg.max_order_quantity} ({int(limit)} lots)")
        if code == K.MAX_POSITION:
            return (f"resulting position {new} lots (position {position}{pending}) exceeds "
                    f"max_position {self.cfg.max_position} ({int(limit)} lots)")
        if code == K.NO_MARKET_DATA:
            return f"no trade price seen yet for {self.instrument.id}"
        if code == K.STALE_DATA:
            return f"last tick is {value:.3f} s old, over stale_data_s {limit:g}"
        if code == K.MAX_NOTIONAL:
            return (f"resulting notional {value:,.2f} {ccy} ({abs(new)} lots at {ref} ticks"
                    f"{pending}) exceeds max_notional {limit:,.2f} {ccy}")
        if code == K.PORTFOLIO_NOTIONAL:
            return (f"portfolio gross notional {value:,.2f} {ccy} ({abs(new)} lots of "
                    f"{self.instrument.id} at {ref} ticks{pending}, plus the other instruments) "
                    f"exceeds risk.portfolio.max_gross_notional {limit:,.2f} {ccy}")
        if code == K.PRICE_COLLAR:
            return (f"reference price {ref} ticks is {value:.4f}% from the last trade "
                    f"{int(self._ints[H.I_LAST_TICKS])} ticks, outside the {limit:g}% collar")
        if code == K.ORDER_RATE:
            return f"{int(value)} orders approved in the last 60 s, limit {int(limit)} per minute"
        if code == K.DAILY_LOSS:
            return (f"daily loss {value:.4f}% of start-of-day equity {self._day_start} reached "
                    f"the {limit:g}% limit (equity {self._equity})")
        if code == K.MAX_DRAWDOWN:
            return (f"drawdown {value:.4f}% from the high-water mark {self._peak} reached the "
                    f"{limit:g}% limit (equity {self._equity}); kill switch tripped")
        if code == H.NO_ATR:
            return "no valid ATR yet: no entry (spec 1.3)"
        if code == H.NO_EDGE:
            return (f"no edge: Kelly fraction {value:.6f} <= 0 over the last "
                    f"{int(self._ints[H.I_N_TRADES])} closed trades")
        if code == H.NO_STOP:
            return "no valid stop distance to size against"
        if code == H.RISK_BUDGET:
            return (f"risk budget f = {value:.6f} of equity {self._equity} buys less than one lot "
                    f"at the planned stop plus {self.cfg.round_trip_fee} round-trip fees")
        if code == H.NO_HEADROOM:
            return f"position {position} leaves no room under the position and notional limits"
        return f"rule {code}"
