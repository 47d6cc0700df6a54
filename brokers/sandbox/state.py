"""The sandbox account: orders, fills (execution ids), positions and cash, persisted to one file.

The sandbox is the broker, so it is the source of truth when the daemon dies: every change is
written at once (the file is small) with an atomic replace (temp file + `os.replace`), and a
restarted sandbox loads it back, working orders included. Money stays exact: prices are integer
ticks (average entry prices exact fractions of ticks), quantities integer lots, cash and fees `Decimal`; JSON holds Decimals as strings.
"""

from __future__ import annotations

import os
import tempfile
from decimal import Decimal
from fractions import Fraction

import msgspec

OPEN_STATUSES = frozenset({"accepted", "new", "partially_filled", "pending_new"})


class OrderRec(msgspec.Struct, kw_only=True):
    id: str  # UUID, Alpaca's order id
    client_order_id: str
    symbol: str
    side: int  # +1 buy, -1 sell
    qty: int  # lots
    type: str  # market | limit
    time_in_force: str  # day | gtc | ioc
    limit_ticks: int | None
    status: str
    created_ns: int
    updated_ns: int
    filled: int = 0  # lots
    filled_value: int = 0  # sum of lots * price ticks, for the average fill price
    filled_ns: int | None = None
    canceled_ns: int | None = None
    expired_ns: int | None = None
    failed_ns: int | None = None
    expires_ns: int | None = None  # day orders: the end of the sandbox's trading day

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class FillRec(msgspec.Struct, kw_only=True, frozen=True):
    execution_id: str  # UUID
    order_id: str
    symbol: str
    side: int
    qty: int
    price_ticks: int
    fee: Decimal
    liquidity: str
    ts_ns: int


class PositionRec(msgspec.Struct, kw_only=True):
    qty: int = 0  # lots, signed
    avg_num: int = 0  # average entry price in ticks = avg_num / avg_den, exactly
    avg_den: int = 1

    @property
    def avg_ticks(self) -> Fraction:
        return Fraction(self.avg_num, self.avg_den)


class AccountState(msgspec.Struct, kw_only=True):
    account_id: str
    created_ns: int
    cash: Decimal
    fees: Decimal = Decimal(0)
    orders: dict[str, OrderRec] = {}
    fills: list[FillRec] = []
    positions: dict[str, PositionRec] = {}
    last_ticks: dict[str, int] = {}  # last trade price per symbol (marks the positions)
    clock_ns: int = 0  # the sandbox clock when last saved: a restart never goes back in time
    grid: dict[str, list[str]] = {}  # symbol -> [tick_size, lot_size] the ticks and lots are in


def book_fill(pos: PositionRec, side: int, qty: int, price: int) -> None:
    """Apply a fill to a position, keeping the exact average entry price of what stays open."""
    signed = side * qty
    if pos.qty == 0 or (pos.qty > 0) == (signed > 0):  # open or increase: weighted average
        avg = (pos.avg_ticks * abs(pos.qty) + price * qty) / (abs(pos.qty) + qty)
        pos.qty += signed
    else:
        closing = min(qty, abs(pos.qty))  # what stays open keeps its average entry price
        pos.qty += side * closing
        avg = pos.avg_ticks if pos.qty else Fraction(0)
        if qty > closing:  # flipped through zero: the remainder opens at this price
            pos.qty = side * (qty - closing)
            avg = Fraction(price)
    pos.avg_num, pos.avg_den = avg.numerator, avg.denominator


class StateStore:
    """Loads and saves `AccountState` at `path` ("" = memory only)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.saves = 0

    def load(self) -> AccountState | None:
        if not self.path or not os.path.exists(self.path):
            return None
        with open(self.path, "rb") as f:
            data = f.read()
        try:
            return msgspec.json.decode(data, type=AccountState)
        except msgspec.ValidationError as exc:
            raise ValueError(f"sandbox state file {self.path}: {exc}") from exc

    def save(self, state: AccountState) -> None:
        if not self.path:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sandbox-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.encode(state))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.saves += 1
