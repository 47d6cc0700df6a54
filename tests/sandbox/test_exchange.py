"""The sandbox's venue without HTTP: position bookkeeping, IOC and day orders, state file."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from himari.brokers.sandbox.config import SandboxConfig
from himari.brokers.sandbox.exchange import DAY_NS, ApiError, Exchange
from himari.brokers.sandbox.state import PositionRec, StateStore, book_fill
from himari.daemon.configbase import ConfigError

FAST = dict(speed=100.0, ticks_per_day=500_000.0)


def test_book_fill_keeps_the_average_entry_through_partial_close_and_flip() -> None:
    pos = PositionRec()
    book_fill(pos, +1, 3, 100)
    book_fill(pos, +1, 1, 104)  # 4 lots at an average of 101 ticks
    assert (pos.qty, pos.avg_ticks) == (4, 101)
    book_fill(pos, -1, 1, 200)  # a partial close keeps the average of the rest
    assert (pos.qty, pos.avg_ticks) == (3, 101)
    book_fill(pos, -1, 5, 90)  # through zero: 2 lots short at the fill price
    assert (pos.qty, pos.avg_ticks) == (-2, 90)
    book_fill(pos, +1, 2, 80)
    assert (pos.qty, pos.avg_ticks) == (0, 0)


def test_uneven_average_stays_exact() -> None:
    pos = PositionRec()
    book_fill(pos, +1, 1, 100)
    book_fill(pos, +1, 2, 101)  # average 302/3 ticks: not an integer
    book_fill(pos, -1, 1, 150)
    assert pos.qty == 2 and pos.avg_ticks == Fraction(302, 3)


def order(symbol: str = "AAPL", **kw: object) -> dict[str, object]:
    return {"symbol": symbol, "qty": "1", "side": "buy", "type": "limit", "limit_price": "1",
            "time_in_force": "gtc", **kw}


def test_ioc_limit_that_does_not_execute_on_its_first_tick_is_canceled() -> None:
    ex = Exchange(SandboxConfig(**FAST))
    now = [ex.clock.now_ns()]
    ex.clock.now_ns = lambda: now[0]  # type: ignore[method-assign]  # a frozen market clock
    sent: list[dict] = []
    ex.on_trade_update = sent.append
    ex.step()  # caught up: AAPL's next tick comes after the order
    o = ex.submit(order(time_in_force="ioc"))
    ex.commit()
    now[0] = ex.market.tapes["AAPL"].next_ts()
    assert now[0] > o.created_ns
    ex.step()
    assert o.status == "canceled" and ex.engine.get(o.client_order_id) is None
    assert [m["data"]["event"] for m in sent] == ["new", "canceled"]


def test_day_order_expires_at_the_end_of_the_sandbox_day() -> None:
    ex = Exchange(SandboxConfig(**FAST))
    sent: list[dict] = []
    ex.on_trade_update = sent.append
    day = ex.submit(order(time_in_force="day"))
    gtc = ex.submit(order(time_in_force="gtc"))
    assert day.expires_ns is not None and day.expires_ns % DAY_NS == 0
    assert 0 < day.expires_ns - day.created_ns <= DAY_NS and gtc.expires_ns is None
    ex.expire(day.expires_ns - 1)
    assert day.status == "new"
    ex.expire(day.expires_ns)
    ex.commit()
    assert (day.status, gtc.status) == ("expired", "new")
    assert ex.engine.get(day.client_order_id) is None
    assert [m["data"]["event"] for m in sent] == ["new", "new", "expired"]
    assert sent[-1]["data"]["order"]["expired_at"] is not None


def test_state_file_is_written_atomically_and_names_itself_when_corrupt(tmp_path) -> None:
    path = tmp_path / "s.json"
    ex = Exchange(SandboxConfig(state_path=str(path), **FAST))
    ex.submit(order(client_order_id="x"))
    ex.commit()
    saved = json.loads(path.read_text())
    assert [o["client_order_id"] for o in saved["orders"].values()] == ["x"]
    assert saved["cash"] == "100000"  # Decimals are strings: exact
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left behind
    path.write_text('{"cash": 5}')
    with pytest.raises(ValueError, match="s.json"):
        StateStore(str(path)).load()


def test_rejections_name_the_problem_and_change_nothing() -> None:
    ex = Exchange(SandboxConfig(**FAST))
    for body, status, word in [
        (order(side="hold"), 422, "side"), (order(type="stop"), 422, "type"),
        (order(qty="-1"), 422, "qty"), (order(limit_price=None), 422, "limit_price"),
        (order(notional="10"), 422, "notional"), (order(symbol="TSLA"), 422, "TSLA"),
        (order(limit_price="2000000"), 403, "buying power"),
    ]:
        with pytest.raises(ApiError) as err:
            ex.submit(body)
        assert err.value.status == status and word in err.value.message
    assert ex.state.orders == {}


@pytest.mark.parametrize("kw, key", [({"symbols": []}, "sandbox.symbols"),
                                     ({"symbols": ["aapl"]}, "sandbox.symbols"),
                                     ({"speed": 0.0}, "sandbox.speed"),
                                     ({"start_price": "100.005"}, "sandbox.start_price"),
                                     ({"starting_cash": "lots"}, "sandbox.starting_cash")])
def test_config_errors_name_the_key(kw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        SandboxConfig(**kw)
    assert err.value.key == key


def test_a_saved_account_needs_its_symbols_and_grid(tmp_path) -> None:
    path = str(tmp_path / "s.json")
    ex = Exchange(SandboxConfig(symbols=["AAPL", "MSFT"], state_path=path, **FAST))
    ex.submit(order("MSFT"))
    ex.commit()
    with pytest.raises(ConfigError) as err:
        Exchange(SandboxConfig(symbols=["AAPL"], state_path=path, **FAST))
    assert err.value.key == "sandbox.symbols" and "MSFT" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Exchange(SandboxConfig(symbols=["AAPL", "MSFT"], tick_size="0.05", state_path=path,
                               **FAST))
    assert "0.01" in str(err.value) and path in str(err.value)
    again = Exchange(SandboxConfig(symbols=["MSFT", "AAPL", "IBM"], state_path=path, **FAST))
    assert [o.symbol for o in again.state.orders.values()] == ["MSFT"]
