"""The order manager driving the Alpaca client against the fake Alpaca: an order is placed,
acknowledged and filled from the stream, and reconciliation after a reconnect books nothing twice."""

from __future__ import annotations

from himari.brokers.alpaca.client import AlpacaExecutionClient
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.events import OrderIntent
from himari.daemon.ids import IdSource
from himari.daemon.orders.manager import OrderManager

from .conftest import ENV, INSTRUMENTS, Recorder, Sleeps, config
from .fake_alpaca import FakeAlpaca, order_update
from .test_execution import drain


class Tap(Recorder):
    """Wraps the order manager as the client's listener, to wait on its callbacks."""

    def __init__(self, om: OrderManager) -> None:
        super().__init__()
        self.om = om

    def __getattr__(self, name: str):
        record = super().__getattr__(name)
        target = getattr(self.om, name)

        def both(*args, **kwargs):
            target(*args, **kwargs)
            record(*args, **kwargs)
        return both


async def test_order_manager_books_stream_fills_once_through_reconcile(fake: FakeAlpaca) -> None:
    client = AlpacaExecutionClient(config(fake), INSTRUMENTS, sleep=Sleeps(),
                                   jitter=lambda: 1.0, env=ENV)
    om = OrderManager(Bus(), ReplayClock(), IdSource(), INSTRUMENTS, client)
    tap = Tap(om)
    client.set_listener(tap)
    await client.connect()
    try:
        await tap.until(lambda: client.connected)
        order = om.submit(OrderIntent(event_id="I1", ts_ns=0, decision_id="D1", strategy_id="s",
                                      instrument_id="AAPL", side=1, quantity=4), 4)
        await drain(client)
        (alpaca_order,) = fake.orders.values()
        assert alpaca_order["client_order_id"] == order.client_order_id
        await fake.push_update(order_update("new", alpaca_order | {"status": "new"}))
        await fake.push_update(order_update("fill", alpaca_order | {"filled_qty": "4"},
                                            execution_id="e-77", price="150.25", qty="4"))
        await tap.until(lambda: tap.named("on_fill"))
        assert om.position("AAPL") == 4
        # the same execution, as a FILL activity, after a reconnect: not booked again
        fake.activities = [{"id": "20240102143001000::other-uuid", "activity_type": "FILL",
                            "symbol": "AAPL", "side": "buy", "qty": "4", "price": "150.25",
                            "cum_qty": "4", "order_id": alpaca_order["id"],
                            "transaction_time": "2024-01-02T14:30:01.0000005Z"}]
        fake.positions = [{"symbol": "AAPL", "qty": "4", "side": "long"}]
        done = await om.reconcile(client, 0)
        assert done["fills_booked"] == 0 and done["positions_adjusted"] == 0
        assert om.position("AAPL") == 4
    finally:
        await client.close()
