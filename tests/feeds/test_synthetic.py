"""The synthetic generator: determinism, the tick grid, spreads, arrivals, volatility and jumps."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import numpy as np
import pytest

from himari.daemon.events import TickKind
from himari.daemon.feeds import synthetic
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.synthetic import SyntheticFeed, start_ns

HOUR = 3_600_000_000_000
DAY = 24 * HOUR


def feed(n: int = 50_000, batch_size: int = 65536, **model) -> SyntheticFeed:
    raw = {"synthetic": {"n_ticks": n, **model}, "batch_size": batch_size}
    return SyntheticFeed(msgspec.convert(raw, FeedConfig))


def test_same_seed_same_arrays_other_seed_differs():
    a, b = feed().arrays(), feed().arrays()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = feed(seed=8).arrays()
    assert not np.array_equal(a.price, c.price) and not np.array_equal(a.ts_ns, c.ts_ns)


def test_batches_are_trade_batches_independent_of_batch_size():
    ref = feed(20_000).arrays()
    for bs in (1000, 7777):
        batches = list(feed(20_000, batch_size=bs).batches())
        assert all(b.kind == TickKind.TRADES and len(b) <= bs for b in batches)
        assert np.array_equal(np.concatenate([b.price for b in batches]), ref.price)
        assert np.array_equal(np.concatenate([b.side for b in batches]), ref.side)
        assert np.array_equal(np.concatenate([b.ts_ns for b in batches]), ref.ts_ns)


def test_state_carries_across_chunks(monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK", 1000)
    a = feed(5500).arrays()
    assert len(a.ts_ns) == 5500 and np.all(np.diff(a.ts_ns) >= 0)
    jumps = np.abs(np.diff(np.log(a.bid.astype(float))))[999::1000]  # at the chunk seams
    assert jumps.max() < 0.01


def test_prices_on_grid_positive_trades_at_bid_or_ask_spread_at_least_one_tick():
    a = feed(100_000).arrays()
    assert a.price.dtype == np.int64 and a.size.dtype == np.int64
    assert np.all(a.bid >= 1) and np.all(a.ask - a.bid >= 1)
    assert np.array_equal(a.price, np.where(a.side > 0, a.ask, a.bid))
    assert set(np.unique(a.side).tolist()) == {-1, 1}
    assert np.all(a.size >= 1) and 2 <= np.median(a.size) <= 4  # median 3 lots


def test_positive_even_when_a_cheap_instrument_is_very_volatile():
    a = feed(100_000, start_price="0.05", daily_vol=0.9, vol_of_vol=3.0, jumps_per_day=500,
              jump_std=0.3, ticks_per_day=20_000).arrays()
    assert np.all(a.bid >= 1) and np.all(a.price >= 1) and np.all(a.ask > a.bid)


def test_spread_widens_with_volatility():
    a = feed(200_000).arrays()
    mid = (a.bid + a.ask) / 2.0
    r = np.diff(np.log(mid))
    blocks = len(r) // 2000
    vol = r[: blocks * 2000].reshape(blocks, 2000).std(axis=1)
    spread = (a.ask - a.bid)[1: blocks * 2000 + 1].reshape(blocks, 2000).mean(axis=1)
    assert spread.max() > spread.min() + 0.5
    assert np.corrcoef(vol, spread)[0, 1] > 0.3


def test_intraday_activity_is_u_shaped():
    a = feed(300_000, ticks_per_day=100_000, u_shape=3.0).arrays()  # three days from midnight
    hours = np.bincount(((a.ts_ns % DAY) // HOUR).astype(np.int64), minlength=24)
    edges, midday = hours[[0, 23]].mean(), hours[[11, 12]].mean()
    assert 2.2 < edges / midday < 3.2  # u(0) / u(1/2) = 3, averaged over the edge hours
    assert hours[0] > hours[6] > hours[11] and hours[23] > hours[17] > hours[12]
    flat = feed(100_000, u_shape=1.0).arrays()
    h = np.bincount(((flat.ts_ns % DAY) // HOUR).astype(np.int64), minlength=24)
    assert h.max() / h.min() < 1.2


def test_ticks_start_at_the_configured_time_and_rate():
    f = feed(100_000, start="2024-03-04T09:30:00+00:00", ticks_per_day=50_000, u_shape=1.0)
    a = f.arrays()
    t0 = start_ns("2024-03-04T09:30:00Z")
    assert a.ts_ns[0] >= t0 and a.ts_ns[0] - t0 < 60_000_000_000
    assert abs((a.ts_ns[-1] - t0) / DAY - 2.0) < 0.05  # 100k ticks at 50k/day
    assert f.instrument.tick_size == Decimal("0.01") and f.expected_ticks == 100_000
    assert f.stats.ticks == 100_000 and "seed 7" in f.describe


def test_jumps_alone_move_the_price_at_the_poisson_rate():
    a = feed(200_000, daily_vol=0.0, vol_of_vol=0.0, jumps_per_day=20.0, jump_std=0.01,
              spread_bps=0.0).arrays()
    days = (a.ts_ns[-1] - a.ts_ns[0]) / DAY
    moves = int(np.count_nonzero(np.diff(a.bid)))
    assert abs(moves - 20.0 * days) < 5 * np.sqrt(20.0 * days)
    assert np.all(a.ask - a.bid == 1)  # no diffusion: the minimum spread


def test_volatility_clusters():
    a = feed(200_000).arrays()
    r = np.abs(np.diff(np.log((a.bid + a.ask) / 2.0)))
    block = r[: len(r) // 500 * 500].reshape(-1, 500).mean(axis=1)
    assert np.corrcoef(block[:-1], block[1:])[0, 1] > 0.3


@pytest.mark.parametrize("bad", [{"n_ticks": 0}, {"leverage": 1.5}, {"tick_size": "0"}])
def test_bad_model_parameters_are_refused(bad):
    with pytest.raises(msgspec.ValidationError, match="feed.synthetic"):
        msgspec.convert({"synthetic": bad}, FeedConfig)
