"""Bracket legs of the order manager (a mixin of `OrderManager`, sharing its state).

Brackets. An entry that carries stop_loss and/or take_profit gets protective legs, opposite side
and reduce_only: a stop order at stop_loss and a limit order at take_profit. The legs of each kind
always cover `target = min(entry.filled - lots exited by legs, the position on the entry's side)`:
- entry fills (partially or fully): each kind grows by one extra leg for the uncovered lots, so a
  partially filled entry is protected fill by fill and no working leg is ever cancelled to grow;
- a leg fills: the other kind now covers more than the target, so its working legs are cancelled
  and, once the venue confirms the cancels, one leg for the new target is placed (cancel, then
  replace: the legs never cover more than the position except during that cancel round trip).
  A complete fill makes the target 0, so the other kind is just cancelled (one-cancels-other);
- a leg fill also cancels the entry's unfilled remainder: the trade is over once it is exited;
- cancelling the entry cancels only its working remainder: legs protecting filled lots stay;
- a leg the venue rejects, expires or cancels unasked, or that the caller cancels, disables
  that kind for the bracket (logged and counted) rather than being re-placed in a loop;
- the position it protects is closed or reversed by any other fill (the strategy's own exit, an
  external fill): the bracket is over. Its working legs and the entry's remainder are cancelled
  and it never places a leg again, so a stale leg cannot later open a position nobody asked for.
  A leg is reduce_only, and the venue refuses to let it open or increase a position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from .state import Order

if TYPE_CHECKING:
    from .manager import OrderManager

log = structlog.get_logger("himari.orders")

LEG_KINDS = (("stop_loss", "stop"), ("take_profit", "limit"))  # (role, order type)


@dataclass(slots=True)
class Bracket:
    entry: Order
    legs: list[Order] = field(default_factory=list)
    disabled: set[str] = field(default_factory=set)  # leg roles no longer placed
    busy: bool = False
    dirty: bool = False
    closed: bool = False  # the protected position was closed or reversed: no more legs


class BracketsMixin:
    """Bracket handling for `OrderManager`: it owns `_brackets` (entry order id -> Bracket) and
    `_live_brackets` (instrument -> entry order id -> Bracket, those not yet over)."""

    def legs(self: OrderManager, entry_order_id: str) -> list[Order]:
        bracket = self._brackets.get(entry_order_id)
        return list(bracket.legs) if bracket else []

    def _add_bracket(self: OrderManager, entry: Order, legs: list[Order] | None = None) -> Bracket:
        bracket = Bracket(entry, list(legs or []))
        self._brackets[entry.order_id] = bracket
        self._live_brackets.setdefault(entry.instrument_id, {})[entry.order_id] = bracket
        return bracket

    def _brackets_after_fill(self: OrderManager, order: Order | None, instrument_id: str) -> None:
        """React to a booked fill (`order` None for an external fill): the order's own bracket
        first, then every bracket whose position this fill closed or reversed."""
        if order is not None:
            if order.role == "entry":
                own = self._brackets.get(order.order_id)
                if own is not None:
                    self._sync(own)
            else:
                bracket = self._brackets.get(order.parent_order_id)
                if bracket is not None:
                    if not bracket.entry.is_terminal:
                        self._request_cancel(bracket.entry, "bracket_exited")
                    self._sync(bracket)
        live = self._live_brackets.get(instrument_id)
        if not live:
            return
        pos = self.positions.quantity(instrument_id)
        for bracket in list(live.values()):
            if bracket.closed or not bracket.entry.filled:
                continue
            if bracket.entry.side * pos <= 0:
                self._close_bracket(bracket, pos)
            else:  # another order moved the position: the legs may now cover too much
                self._sync(bracket)

    def _close_bracket(self: OrderManager, bracket: Bracket, pos: int) -> None:
        bracket.closed = True
        bracket.disabled.update(role for role, _ in LEG_KINDS)
        self._live_brackets.get(bracket.entry.instrument_id, {}).pop(bracket.entry.order_id, None)
        self.counters["brackets_closed_by_position"] += 1
        log.info("bracket_closed", entry_order_id=bracket.entry.order_id, position=pos)
        if not bracket.entry.is_terminal:
            self._request_cancel(bracket.entry, "position_closed")
        for leg in bracket.legs:
            if not leg.is_terminal:
                self._request_cancel(leg, "position_closed")

    def _leg_ended(self: OrderManager, order: Order, asked: bool) -> None:
        """A terminal cancel / reject / expiry: let the bracket react."""
        if order.role == "entry":
            return  # legs protecting filled lots stay; an unfilled entry has no legs
        bracket = self._brackets.get(order.parent_order_id)
        if bracket is None:
            return
        if not asked and order.role not in bracket.disabled:
            bracket.disabled.add(order.role)
            self.counters["bracket_leg_failures"] += 1
            log.error("bracket_leg_failed", order_id=order.order_id, role=order.role,
                      entry_order_id=bracket.entry.order_id, state=str(order.state),
                      reason=order.reason)
        self._sync(bracket)

    def _sync(self: OrderManager, bracket: Bracket) -> None:
        """Bring the legs to `target` lots per kind; re-entrant calls are folded into a rerun."""
        if bracket.busy:
            bracket.dirty = True
            return
        bracket.busy = True
        try:
            bracket.dirty = True
            while bracket.dirty:
                bracket.dirty = False
                self._sync_once(bracket)
        finally:
            bracket.busy = False

    def _sync_once(self: OrderManager, bracket: Bracket) -> None:
        entry = bracket.entry
        target = 0
        if not bracket.closed:  # never more than the position on the entry's side
            exposure = max(0, entry.side * self.positions.quantity(entry.instrument_id))
            target = min(max(0, entry.filled - sum(leg.filled for leg in bracket.legs)), exposure)
        for role, order_type in LEG_KINDS:
            price = entry.stop_loss if role == "stop_loss" else entry.take_profit
            if price is None:
                continue
            live = [leg for leg in bracket.legs if leg.role == role and not leg.is_terminal]
            active = [leg for leg in live if leg.cancel_requested_ns is None]
            covered = sum(leg.leaves for leg in active)
            if covered > target:  # shrink: cancel now, replace after the venue confirms
                for leg in active:
                    self._request_cancel(leg, "bracket_resize" if target else "oco")
            elif covered < target and len(live) == len(active) and role not in bracket.disabled:
                self._place_leg(bracket, role, order_type, price, target - covered)
        if entry.is_terminal and not target and all(leg.is_terminal for leg in bracket.legs):
            self._live_brackets.get(entry.instrument_id, {}).pop(entry.order_id, None)

    def _place_leg(self: OrderManager, bracket: Bracket, role: str, order_type: str, price: int,
                   quantity: int) -> None:
        entry = bracket.entry
        leg = Order(
            order_id=self._ids.next("O"), client_order_id=self._ids.next("C"),
            instrument_id=entry.instrument_id, side=-entry.side, quantity=quantity,
            order_type=order_type, price=price, time_in_force="gtc",
            ts_init=self._clock.now_ns(), decision_id=entry.decision_id,
            intent_id=entry.intent_id, strategy_id=entry.strategy_id, reduce_only=True,
            role=role, parent_order_id=entry.order_id)
        bracket.legs.append(leg)
        entry.leg_order_ids.append(leg.order_id)
        self.counters["bracket_legs"] += 1
        self._send(leg)

    def _relink_brackets(self: OrderManager) -> None:
        """After a restore: rebuild each bracket from its entry and the legs that name it."""
        self._brackets.clear()
        self._live_brackets.clear()
        for order in self.orders.values():
            if order.role == "entry" and (order.stop_loss is not None
                                          or order.take_profit is not None or order.leg_order_ids):
                legs = [self.orders[i] for i in order.leg_order_ids if i in self.orders]
                self._add_bracket(order, legs)
        for order in self.orders.values():
            if order.role == "entry":
                continue
            bracket = self._brackets.get(order.parent_order_id)
            if bracket is None:
                self.counters["orphan_legs"] += 1
                log.error("orphan_leg", order_id=order.order_id, parent=order.parent_order_id)
            elif order not in bracket.legs:
                bracket.legs.append(order)
                bracket.entry.leg_order_ids.append(order.order_id)
        for bracket in list(self._brackets.values()):  # over already: never place legs again
            entry = bracket.entry
            if entry.filled and entry.side * self.positions.quantity(entry.instrument_id) <= 0:
                if all(leg.is_terminal for leg in bracket.legs):
                    bracket.closed = True
                    self._live_brackets[entry.instrument_id].pop(entry.order_id, None)
        # brackets whose legs still work over a closed position are closed by `reconcile`, once
        # the venue's positions are known (`check_brackets`)

    def check_brackets(self: OrderManager, instrument_id: str) -> None:
        """Close every bracket whose position is closed or reversed (after a restore/reconcile)."""
        self._brackets_after_fill(None, instrument_id)
