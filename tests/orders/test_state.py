"""The order state machine: every transition in the table works, every other one is refused."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

import pytest

from himari.daemon.orders.state import (TERMINAL_STATES, TRANSITIONS, IllegalTransition,
                                        InvalidFill, Order, OrderState, Overfill, Trigger)

S, T = OrderState, Trigger
NON_FILL = [t for t in Trigger if t not in (T.FILL, T.PARTIAL_FILL)]
ILLEGAL = [(s, t) for s, t in itertools.product(OrderState, Trigger) if (s, t) not in TRANSITIONS]


def make(state: OrderState = S.INITIALIZED, quantity: int = 10, filled: int = 0) -> Order:
    order = Order(order_id="O-1", client_order_id="C-1", instrument_id="ES", side=1,
                  quantity=quantity, order_type="limit", price=100, time_in_force="gtc",
                  ts_init=0)
    order.state, order.filled, order.notional = state, filled, filled * 100
    order.history[:] = [(state, 0)]
    return order


def test_table_is_explicit_and_terminal_states_are_final() -> None:
    for (src, _), dst in TRANSITIONS.items():
        assert src not in TERMINAL_STATES
        assert isinstance(dst, OrderState)
    for state in TERMINAL_STATES:
        assert not any(src is state for src, _ in TRANSITIONS)
    # A fill may overtake the venue's acknowledgement; a reject may not follow an acceptance.
    assert TRANSITIONS[(S.SUBMITTED, T.FILL)] is S.FILLED
    assert (S.ACCEPTED, T.REJECT) not in TRANSITIONS
    assert len(ILLEGAL) == len(OrderState) * len(Trigger) - len(TRANSITIONS)


@pytest.mark.parametrize(("state", "trigger"), [k for k in TRANSITIONS if k[1] in NON_FILL])
def test_legal_transition(state: OrderState, trigger: Trigger) -> None:
    order = make(state)
    assert order.apply(trigger, 42) is TRANSITIONS[(state, trigger)]
    assert order.state is TRANSITIONS[(state, trigger)]
    assert order.history[-1] == (order.state, 42)
    assert order.ts_of(order.state) == 42


@pytest.mark.parametrize(("state", "trigger"), ILLEGAL)
def test_illegal_transition_is_refused(state: OrderState, trigger: Trigger) -> None:
    order = make(state, filled=3 if state is S.PARTIALLY_FILLED else 0)
    before = (order.state, order.filled, order.notional, list(order.history))
    with pytest.raises(IllegalTransition) as info:
        if trigger in (T.FILL, T.PARTIAL_FILL):
            qty = order.quantity - order.filled if trigger is T.FILL else 1
            order.apply_fill(qty, 100, Decimal("0"), 7)
        else:
            order.apply(trigger, 7)
    message = str(info.value)
    assert "O-1" in message and str(state) in message and str(trigger) in message
    assert (info.value.order_id, info.value.state, info.value.trigger) == ("O-1", state, trigger)
    assert (order.state, order.filled, order.notional, list(order.history)) == before


def test_apply_rejects_fill_triggers() -> None:
    with pytest.raises(ValueError):
        make(S.ACCEPTED).apply(T.FILL, 1)


def test_partial_fills_accumulate_exactly() -> None:
    order = make(S.ACCEPTED, quantity=3)
    assert order.apply_fill(1, 100, Decimal("0.10"), 1) is S.PARTIALLY_FILLED
    assert order.leaves == 2
    assert order.apply_fill(1, 101, Decimal("0.20"), 2) is S.PARTIALLY_FILLED
    assert order.apply_fill(1, 101, Decimal("0.30"), 3) is S.FILLED
    assert order.avg_fill_price == Fraction(302, 3)  # not a terminating decimal: exact anyway
    assert order.fees == Decimal("0.60")
    assert order.leaves == 0
    assert [s for s, _ in order.history] == [S.ACCEPTED, S.PARTIALLY_FILLED, S.PARTIALLY_FILLED,
                                             S.FILLED]


def test_fill_before_accept_is_allowed() -> None:
    order = make(S.SUBMITTED, quantity=2)
    assert order.apply_fill(2, 99, Decimal(0), 5) is S.FILLED


def test_overfill_is_refused_without_change() -> None:
    order = make(S.ACCEPTED, quantity=3)
    order.apply_fill(2, 100, Decimal(0), 1)
    with pytest.raises(Overfill) as info:
        order.apply_fill(2, 100, Decimal(0), 2)
    assert (info.value.quantity, info.value.leaves) == (2, 1)
    assert (order.state, order.filled, order.leaves) == (S.PARTIALLY_FILLED, 2, 1)


@pytest.mark.parametrize("qty", [0, -1, True, 1.0])
def test_invalid_fill_quantity(qty: object) -> None:
    order = make(S.ACCEPTED)
    with pytest.raises(InvalidFill):
        order.apply_fill(qty, 100, Decimal(0), 1)  # type: ignore[arg-type]
    assert order.filled == 0 and order.state is S.ACCEPTED


def test_non_integer_price_is_refused() -> None:
    order = make(S.ACCEPTED)
    with pytest.raises(InvalidFill):
        order.apply_fill(1, 100.0, Decimal(0), 1)  # type: ignore[arg-type]
    assert order.filled == 0 and order.notional == 0


def test_leaves_are_zero_once_terminal() -> None:
    order = make(S.ACCEPTED, quantity=5)
    order.apply_fill(2, 100, Decimal(0), 1)
    order.apply(T.CANCEL, 2)
    assert order.leaves == 0 and order.filled == 2 and order.is_terminal and not order.is_working


def test_allowed_overfill_fills_the_order_with_the_venue_quantity() -> None:
    order = make(S.ACCEPTED, quantity=3)
    order.apply_fill(2, 100, Decimal(0), 1)
    assert order.apply_fill(2, 101, Decimal("0.5"), 2, allow_overfill=True) is S.FILLED
    assert (order.filled, order.notional, order.leaves) == (4, 402, 0)
    assert order.fees == Decimal("0.5")


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_late_fill_is_accounted_without_leaving_the_terminal_state(state: OrderState) -> None:
    order = make(state, quantity=3)
    order.book_late_fill(2, 100, Decimal("0.1"))
    assert order.state is state and order.history == [(state, 0)]
    assert (order.filled, order.notional, order.fees) == (2, 200, Decimal("0.1"))
    with pytest.raises(InvalidFill):
        order.book_late_fill(0, 100, Decimal(0))
    assert order.filled == 2
