"""Config, exact conversions, the plugin shape, and keys never shown."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import msgspec
import pytest
from structlog.testing import capture_logs

from himari.brokers.alpaca import convert, plugin
from himari.brokers.alpaca.client import AlpacaExecutionClient, read_keys
from himari.brokers.alpaca.config import AlpacaConfig
from himari.brokers.alpaca.data import AlpacaDataClient
from himari.daemon.configbase import ConfigError
from himari.daemon.instruments import Instrument, InstrumentError
from himari.daemon.venue import OrderRequest

from .conftest import ENV, INSTRUMENTS, Recorder, Sleeps, config
from .fake_alpaca import KEY, SECRET, FakeAlpaca
from .test_execution import drain, req


def test_paper_by_default_live_only_when_asked() -> None:
    cfg = AlpacaConfig()
    assert cfg.rest_url == "https://paper-api.alpaca.markets"
    assert cfg.trade_stream_url == "wss://paper-api.alpaca.markets/stream"
    assert cfg.market_data_url == "wss://stream.data.alpaca.markets/v2/iex"
    assert AlpacaConfig(live=True).rest_url == "https://api.alpaca.markets"
    with pytest.raises(ConfigError, match="venue.params.base_url.*live = true"):
        AlpacaConfig(base_url="https://api.alpaca.markets")
    with pytest.raises(ConfigError, match="venue.params.feed"):
        AlpacaConfig(feed="nasdaq")
    local = AlpacaConfig(base_url="http://127.0.0.1:8080/")
    assert local.trade_stream_url == "ws://127.0.0.1:8080/stream"


def test_plugin_shape() -> None:
    cfg = msgspec.convert({"feed": "sip", "symbols": {"BTC": "BTC/USD"}}, plugin.CONFIG)
    assert isinstance(plugin.build(cfg, INSTRUMENTS, None, "s1"), AlpacaExecutionClient)
    assert isinstance(plugin.build_data(cfg, INSTRUMENTS), AlpacaDataClient)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"api_key": "x"}, plugin.CONFIG)  # keys never live in the config


def test_timestamps_are_exact_to_the_nanosecond() -> None:
    assert convert.parse_ts("2024-01-02T14:30:00.123456789Z") == 1704205800123456789
    assert convert.parse_ts("2024-01-02T09:30:00.5-05:00") == 1704205800500000000
    assert convert.parse_ts("2024-01-02T14:30:00Z") == 1704205800000000000
    assert convert.format_ts(1704205800123456789) == "2024-01-02T14:30:00.123456789Z"
    with pytest.raises(ValueError, match="RFC 3339"):
        convert.parse_ts("yesterday")


def test_order_body_prices_are_exact_and_off_grid_is_refused() -> None:
    inst = Instrument(id="X", tick_size=Decimal("0.0001"), lot_size=Decimal("0.001"))
    body = convert.order_body(OrderRequest(
        client_order_id="c", instrument_id="X", side=-1, quantity=1500, order_type="limit",
        price=12345, time_in_force="gtc", ts_ns=0), inst, "X")
    assert (body["qty"], body["limit_price"]) == ("1.500", "1.2345")
    big = Instrument(id="Y", tick_size=Decimal("1E+1"))
    assert convert.plain(big.ticks_to_price(3)) == "30"
    with pytest.raises(InstrumentError, match="tick_size 0.0001"):
        inst.price_to_ticks(convert.dec("1.23456", "price"))
    assert convert.dec(150.01, "p") == Decimal("150.01")  # a JSON float by its shortest repr


def test_missing_keys_name_the_variable_not_a_value() -> None:
    with pytest.raises(RuntimeError, match="APCA_API_SECRET_KEY") as err:
        read_keys(AlpacaConfig(), {"APCA_API_KEY_ID": KEY})
    assert KEY not in str(err.value)


async def test_keys_never_appear_in_logs_errors_or_reprs(fake: FakeAlpaca,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with capture_logs() as logs:
        c = AlpacaExecutionClient(config(fake, max_retries=1), INSTRUMENTS, sleep=Sleeps(),
                                  jitter=lambda: 1.0, env=ENV)
        rec = Recorder()
        c.set_listener(rec)
        await c.connect()
        await rec.until(lambda: c.connected)
        fake.post_script = [("status", 429, {"Retry-After": "0"}, {"message": "slow down"}),
                            ("status", 403, {}, {"message": "forbidden"}), ("reset",)]
        c.submit(req("C1"))
        c.submit(req("C2"))
        c.cancel("C-unknown", 0)
        await drain(c)
        texts += [repr(c), repr(c.rest), repr(c.stream)]
        await fake.trade_ws[-1].close()  # a drop, then a refused authentication
        fake.auth_ok = False
        async with asyncio.timeout(5):  # until the stream has tried the refused keys
            while not any(e["event"] == "alpaca_stream_auth_failed" for e in logs):
                await asyncio.sleep(0)
        await c.close()
        d = AlpacaDataClient(config(fake), INSTRUMENTS, sleep=Sleeps(), env=ENV)
        await d.connect()
        texts.append(repr(d))
        await d.close()
        with pytest.raises(RuntimeError, match="not connected") as err:
            await c.positions()
        texts.append(str(err.value))
    texts += [str(e) for e in logs] + [r.getMessage() for r in caplog.records]
    texts += [str(a) for call in rec.calls for a in call[1]]
    assert any("forbidden" in t for t in texts)  # the capture did see the errors
    assert any(e["event"] == "alpaca_stream_auth_failed" for e in logs)
    for t in texts:
        assert KEY not in t and SECRET not in t, t
