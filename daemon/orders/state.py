"""The order state machine and the mutable order record.

States and the events (triggers) that move them, as an explicit table:

    INITIALIZED      --submit--> SUBMITTED   --reject--> REJECTED   --cancel--> CANCELLED
    SUBMITTED        --accept--> ACCEPTED    --partial_fill--> PARTIALLY_FILLED
                     --fill--> FILLED   --reject--> REJECTED   --cancel--> CANCELLED
                     --expire--> EXPIRED
    ACCEPTED         --partial_fill / fill / cancel / expire--> (as above)
    PARTIALLY_FILLED --partial_fill--> PARTIALLY_FILLED   --fill / cancel / expire--> (as above)
    FILLED, CANCELLED, REJECTED, EXPIRED: terminal, nothing leaves them.

A fill may arrive before the venue's acknowledgement (SUBMITTED -> FILLED), as fast simulated and
real venues do. A rejection after acceptance, a second acceptance, or anything after a terminal
state is illegal and raises `IllegalTransition` without touching the order.

A cancel *request* is not a state: until the venue answers, the order is still what the venue last
said it was (it can still fill), so a request only sets `cancel_requested_ns`. This keeps a fill
that races a cancel an ordinary PARTIAL_FILL / FILL, and a late rejection of a submitted order an
ordinary REJECT.

Fills are accounted exactly: `notional` is the integer sum of lots * price_ticks, the average fill
price is `Fraction(notional, filled)` ticks.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction


class OrderState(StrEnum):
    INITIALIZED = "initialized"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Trigger(StrEnum):
    SUBMIT = "submit"
    ACCEPT = "accept"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    CANCEL = "cancel"
    REJECT = "reject"
    EXPIRE = "expire"


S, T = OrderState, Trigger

TRANSITIONS: dict[tuple[OrderState, Trigger], OrderState] = {
    (S.INITIALIZED, T.SUBMIT): S.SUBMITTED,
    (S.INITIALIZED, T.REJECT): S.REJECTED,  # refused locally before it reached a venue
    (S.INITIALIZED, T.CANCEL): S.CANCELLED,
    (S.SUBMITTED, T.ACCEPT): S.ACCEPTED,
    (S.SUBMITTED, T.REJECT): S.REJECTED,
    (S.SUBMITTED, T.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.SUBMITTED, T.FILL): S.FILLED,
    (S.SUBMITTED, T.CANCEL): S.CANCELLED,
    (S.SUBMITTED, T.EXPIRE): S.EXPIRED,
    (S.ACCEPTED, T.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.ACCEPTED, T.FILL): S.FILLED,
    (S.ACCEPTED, T.CANCEL): S.CANCELLED,
    (S.ACCEPTED, T.EXPIRE): S.EXPIRED,
    (S.PARTIALLY_FILLED, T.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, T.FILL): S.FILLED,
    (S.PARTIALLY_FILLED, T.CANCEL): S.CANCELLED,
    (S.PARTIALLY_FILLED, T.EXPIRE): S.EXPIRED,
}

TERMINAL_STATES = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED})
WORKING_STATES = frozenset({S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED})

ORDER_TYPES = ("market", "limit", "stop")
TIMES_IN_FORCE = ("gtc", "ioc", "day")
ROLES = ("entry", "stop_loss", "take_profit")


class OrderError(Exception):
    """Base of the errors an order refuses to apply; the order is left unchanged."""


class IllegalTransition(OrderError):
    def __init__(self, order_id: str, state: OrderState, trigger: Trigger) -> None:
        self.order_id, self.state, self.trigger = order_id, state, trigger
        super().__init__(f"order {order_id}: event '{trigger}' is illegal in state '{state}'")


class Overfill(OrderError):
    def __init__(self, order_id: str, quantity: int, leaves: int) -> None:
        self.order_id, self.quantity, self.leaves = order_id, quantity, leaves
        super().__init__(f"order {order_id}: fill of {quantity} lots exceeds leaves {leaves}")


class InvalidFill(OrderError):
    def __init__(self, order_id: str, value: object) -> None:
        self.order_id, self.value = order_id, value
        super().__init__(f"order {order_id}: fill quantity / price {value!r} must be an int"
                         " (quantity > 0)")


def next_state(order_id: str, state: OrderState, trigger: Trigger) -> OrderState:
    """The state `trigger` leads to from `state`, or IllegalTransition."""
    new = TRANSITIONS.get((state, trigger))
    if new is None:
        raise IllegalTransition(order_id, state, trigger)
    return new


@dataclass(slots=True, eq=False)
class Order:
    """One order as the order manager tracks it (internal and mutable; not a bus event).

    Bracket links: an entry holds the requested `stop_loss` / `take_profit` (ticks) and the ids of
    every protective leg placed for it in `leg_order_ids`; a leg has `role` "stop_loss" or
    "take_profit" and `parent_order_id` = its entry. `history` holds (state entered, ts_ns) for
    each transition, starting with INITIALIZED at creation.
    """

    order_id: str
    client_order_id: str
    instrument_id: str
    side: int
    quantity: int
    order_type: str
    price: int | None
    time_in_force: str
    ts_init: int
    decision_id: str = ""
    intent_id: str = ""
    strategy_id: str = ""
    reduce_only: bool = False
    role: str = "entry"
    parent_order_id: str = ""
    stop_loss: int | None = None
    take_profit: int | None = None
    leg_order_ids: list[str] = field(default_factory=list)
    state: OrderState = OrderState.INITIALIZED
    filled: int = 0
    notional: int = 0  # sum of lots * price_ticks over fills
    fees: Decimal = Decimal(0)
    venue_order_id: str = ""
    reason: str = ""
    cancel_requested_ns: int | None = None
    venue_filled: int = 0  # lots the venue last reported filled (status report); 0 if never asked
    history: list[tuple[OrderState, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.history:
            self.history.append((self.state, self.ts_init))

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def is_working(self) -> bool:
        return self.state in WORKING_STATES

    @property
    def leaves(self) -> int:
        """Lots still able to fill: 0 once the order is terminal."""
        return 0 if self.state in TERMINAL_STATES else max(0, self.quantity - self.filled)

    @property
    def avg_fill_price(self) -> Fraction | None:
        """Average fill price in ticks, exact; None before the first fill."""
        return Fraction(self.notional, self.filled) if self.filled else None

    @property
    def ts_last(self) -> int:
        return self.history[-1][1]

    def ts_of(self, state: OrderState) -> int | None:
        """When the order (last) entered `state`, or None."""
        for st, ts in reversed(self.history):
            if st is state:
                return ts
        return None

    def apply(self, trigger: Trigger, ts_ns: int) -> OrderState:
        """Apply a non-fill event. Raises IllegalTransition and leaves the order unchanged."""
        if trigger in (Trigger.FILL, Trigger.PARTIAL_FILL):
            raise ValueError("fills go through apply_fill, which accounts quantity and price")
        self.state = next_state(self.order_id, self.state, trigger)
        self.history.append((self.state, ts_ns))
        return self.state

    def apply_fill(self, quantity: int, price: int, fee: Decimal, ts_ns: int, *,
                   allow_overfill: bool = False) -> OrderState:
        """Account one execution. Validates everything before mutating: InvalidFill for a
        quantity that is not a positive int or a price that is not an int, IllegalTransition
        when the state cannot fill, Overfill when `quantity` exceeds the leaves (unless
        `allow_overfill`: the venue executed it, so it is booked and the order is FILLED with
        `filled` above `quantity`)."""
        self._check_fill(quantity, price)
        remaining = self.quantity - self.filled
        trigger = Trigger.FILL if quantity >= remaining else Trigger.PARTIAL_FILL
        new = next_state(self.order_id, self.state, trigger)  # FILL and PARTIAL_FILL share sources
        if quantity > remaining and not allow_overfill:
            raise Overfill(self.order_id, quantity, remaining)
        self._account(quantity, price, fee)
        self.state = new
        self.history.append((new, ts_ns))
        return new

    def book_late_fill(self, quantity: int, price: int, fee: Decimal) -> None:
        """Account an execution the venue reports after the order became terminal (a fill that
        raced a confirmed cancel, an overfill after FILLED). The state does not change: nothing
        leaves a terminal state, but the order's fills stay equal to the venue's."""
        self._check_fill(quantity, price)
        self._account(quantity, price, fee)

    def _check_fill(self, quantity: int, price: int) -> None:
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise InvalidFill(self.order_id, quantity)
        if isinstance(price, bool) or not isinstance(price, int):
            raise InvalidFill(self.order_id, price)

    def _account(self, quantity: int, price: int, fee: Decimal) -> None:
        self.filled += quantity
        self.notional += quantity * price
        self.fees += fee


def validate(order: Order, instrument_ids: Collection[str]) -> str:
    """'' when a new order may be sent, else why not (the manager rejects it locally)."""
    if order.instrument_id not in instrument_ids:
        return f"unknown instrument {order.instrument_id!r}"
    if order.side not in (1, -1):
        return f"side {order.side!r} must be +1 or -1"
    q = order.quantity
    if isinstance(q, bool) or not isinstance(q, int) or q <= 0:
        return f"quantity {q!r} must be an int > 0"
    if order.order_type not in ORDER_TYPES:
        return f"order_type {order.order_type!r} must be one of {ORDER_TYPES}"
    if order.time_in_force not in TIMES_IN_FORCE:
        return f"time_in_force {order.time_in_force!r} must be one of {TIMES_IN_FORCE}"
    if order.order_type != "market" and order.price is None:
        return f"a {order.order_type} order needs a price"
    d = order.side
    sl, tp = order.stop_loss, order.take_profit
    if sl is not None and tp is not None and d * (tp - sl) <= 0:
        return f"bracket stop_loss {sl} and take_profit {tp} are on the wrong sides"
    if order.price is not None and order.order_type != "market":
        if sl is not None and d * (order.price - sl) <= 0:
            return f"stop_loss {sl} is not on the losing side of price {order.price}"
        if tp is not None and d * (tp - order.price) <= 0:
            return f"take_profit {tp} is not on the winning side of price {order.price}"
    return ""
