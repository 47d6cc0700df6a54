"""The fake Alpaca's messages parse with alpaca-py's own models, and the adapter's order body
is a valid alpaca-py order request: the tests speak Alpaca's real formats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from himari.brokers.alpaca import convert
from himari.daemon.venue import OrderRequest

from .conftest import INSTRUMENTS
from .fake_alpaca import FakeAlpaca, order_update

models = pytest.importorskip("alpaca.trading.models")
requests = pytest.importorskip("alpaca.trading.requests")


def test_fake_order_and_trade_update_parse_with_alpaca_py() -> None:
    fake = FakeAlpaca()
    order = fake._create({"symbol": "AAPL", "qty": "3", "side": "buy", "type": "limit",
                          "time_in_force": "day", "limit_price": "150.01",
                          "client_order_id": "C1"})
    parsed = models.Order(**order)
    assert parsed.client_order_id == "C1" and str(parsed.id) == order["id"]
    update = models.TradeUpdate(**order_update(
        "fill", order | {"filled_qty": "3"},
        execution_id="8a4c2b6e-1d2f-4a8b-9c3d-0e1f2a3b4c5d", price="150.01", qty="3",
        position_qty="3"))
    assert update.event == "fill" and update.qty == 3.0


def test_order_body_is_a_valid_alpaca_py_request() -> None:
    body = convert.order_body(OrderRequest(
        client_order_id="C1", instrument_id="AAPL", side=-1, quantity=2, order_type="limit",
        price=15001, time_in_force="gtc", ts_ns=0), INSTRUMENTS["AAPL"], "AAPL")
    r = requests.LimitOrderRequest(**body)
    assert (r.symbol, r.qty, r.side.value, r.limit_price) == ("AAPL", 2.0, "sell", 150.01)
    assert Decimal(body["limit_price"]) == Decimal("150.01")
