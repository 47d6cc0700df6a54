"""The synthetic generator: determinism, the tick grid, spreads, arrivals, volatility and jumps;
the kernel against a plain-Python reference of the model, and its inline random numbers against
numpy's own SFC64 generator."""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec
import numba
import numpy as np
import pytest

from himari.daemon.events import TickKind
from himari.daemon.feeds import synthetic
from himari.daemon.feeds.config import FeedConfig, SyntheticConfig
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
    for bs in (1000, 7777, 65536):
        batches = list(feed(20_000, batch_size=bs).batches())
        assert all(b.kind == TickKind.TRADES and len(b) <= bs for b in batches)
        assert np.array_equal(np.concatenate([b.price for b in batches]), ref.price)
        assert np.array_equal(np.concatenate([b.side for b in batches]), ref.side)
        assert np.array_equal(np.concatenate([b.size for b in batches]), ref.size)
        assert np.array_equal(np.concatenate([b.ts_ns for b in batches]), ref.ts_ns)


def test_batches_are_views_of_one_generated_chunk_not_copies():
    batches = list(feed(20_000, batch_size=1000).batches())  # 20 batches from one kernel call
    base = batches[0].price.base
    assert base is not None and len(base) == 20_000
    for b in batches:
        assert b.price.base is base and b.bid is b.price and b.ask is b.price
        assert b.ts_ns.base is batches[0].ts_ns.base and b.side.dtype == np.int8


@pytest.mark.parametrize("size", [1, 255, 257, 1000, 4096])
def test_stream_does_not_depend_on_the_chunk_size(size):
    f = feed(5500, jumps_per_day=300.0)
    whole = f.arrays()
    parts = list(f.chunks(size=size))
    assert all(len(p.ts_ns) <= size for p in parts)
    for field in synthetic.SynthTicks._fields:
        assert np.array_equal(np.concatenate([getattr(p, field) for p in parts]), getattr(whole, field))
    assert np.all(np.diff(whole.ts_ns) >= 0)


def test_trades_only_chunks_leave_quotes_empty_and_trades_unchanged():
    f = feed(3000)
    full, trades = next(f.chunks()), next(f.chunks(quotes=False))
    assert len(trades.bid) == 0 and len(trades.ask) == 0
    for k in ("ts_ns", "price", "size", "side"):
        assert np.array_equal(getattr(full, k), getattr(trades, k))


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


def reference(c: SyntheticConfig, n: int) -> dict[str, np.ndarray]:
    """The model of synthetic.py tick by tick in plain Python, with numpy's own SFC64 generators
    drawn in the kernel's order (main: E, Z, W, U, N; jumps: first gap, then N, E per jump)."""
    main = np.random.Generator(np.random.SFC64(c.seed))
    jumps = np.random.Generator(np.random.SFC64(np.random.SeedSequence(c.seed).spawn(1)[0]))
    t0 = start_ns(c.start)
    midnight = t0 - t0 % DAY
    k = c.u_shape - 1.0
    ubar = 1.0 + k / 3.0

    def u_int(phi: float) -> float:
        return phi + k * ((2.0 * phi - 1.0) ** 3 + 1.0) / 6.0

    phi_grid = np.linspace(0.0, 1.0, 1441)
    u_grid = np.array([u_int(float(v)) for v in phi_grid])
    kappa, xi, rho, theta, q = c.vol_mean_reversion, c.vol_of_vol, c.leverage, c.daily_vol, c.side_persistence
    s2 = xi * xi / (2.0 * kappa)
    gap = 86400.0 / c.jumps_per_day
    g, t_prev = u_int((t0 % DAY) / DAY), (t0 - midnight) / 1e9
    t_jump = t_prev + jumps.standard_exponential() * gap
    x, logp, side, tick = 0.0, math.log(float(c.start_price)), 1, float(c.tick_size)
    out: dict[str, list[int]] = {f: [] for f in synthetic.SynthTicks._fields}
    for _ in range(n):
        g += main.standard_exponential() * ubar / c.ticks_per_day
        z, w, u, nz = main.standard_normal(), main.standard_normal(), main.random(), main.standard_normal()
        day = math.floor(g / ubar)
        rem = g - day * ubar
        phi = float(np.interp(rem, u_grid, phi_grid))
        phi -= (u_int(phi) - rem) / (1.0 + k * (2.0 * phi - 1.0) ** 2)
        t = max((day + min(max(phi, 0.0), 1.0)) * 86400.0, t_prev)
        dt = (t - t_prev) / 86400.0
        t_prev = t
        jump = 0.0
        while t_jump <= t:
            jump += c.jump_std * jumps.standard_normal()
            t_jump += jumps.standard_exponential() * gap
        ratio = math.exp(x - s2)
        sigma = theta * ratio
        logp += sigma * math.sqrt(dt) * z - 0.5 * sigma * sigma * dt + jump
        a = math.exp(-kappa * dt)
        x = a * x + xi * math.sqrt((1.0 - a * a) / (2.0 * kappa)) * (rho * z + math.sqrt(1.0 - rho * rho) * w)
        mid = math.exp(logp) / tick
        spread = int(max(c.min_spread_ticks, np.rint(c.spread_bps * 1e-4 * mid * ratio)))
        bid = max(1, math.floor(mid - spread / 2.0))
        if u >= q:  # not a repeat: a fresh side, buying with probability p_buy
            side = 1 if (u - q) / (1.0 - q) < 0.5 + 0.5 * c.flow_impact * z / math.sqrt(1.0 + z * z) else -1
        for f, v in (("ts_ns", midnight + int(np.rint(t * 1e9))), ("bid", bid), ("ask", bid + spread),
                     ("price", bid + spread if side > 0 else bid), ("side", side),
                     ("size", max(1, int(np.rint(c.size_median_lots * math.exp(c.size_sigma * nz)))))):
            out[f].append(v)
    return {f: np.array(v, dtype=np.int64) for f, v in out.items()}


def test_kernel_matches_the_plain_python_model():
    # 1.5 days from mid-afternoon: crosses midnight (the grid restarts), frequent jumps, lively vol
    f = feed(3000, start="2024-01-02T13:17:00Z", ticks_per_day=2000.0, jumps_per_day=300.0,
             jump_std=0.003, daily_vol=0.05, spread_bps=20.0, side_persistence=0.4, flow_impact=0.8)
    got, ref = f.arrays(), reference(f.cfg.synthetic, 3000)
    assert len(set((got.ts_ns // DAY).tolist())) >= 2
    # the ziggurat tables agree with numpy's to ~1e-14, which can move a stamp by one nanosecond
    assert np.abs(got.ts_ns - ref["ts_ns"]).max() <= 1
    for field in ("bid", "ask", "price", "side", "size"):
        assert np.array_equal(getattr(got, field), ref[field]), field
    assert len(np.unique(got.ask - got.bid)) > 3 and np.abs(np.diff(got.bid)).max() > 20


@numba.njit
def _draws(state: np.ndarray, n: int, kind: int) -> np.ndarray:
    out = np.empty(n)
    a, b, c, w = state[0], state[1], state[2], state[3]
    for i in range(n):
        if kind == 0:
            v, a, b, c, w = synthetic._normal(a, b, c, w)
        elif kind == 1:
            v, a, b, c, w = synthetic._exponential(a, b, c, w)
        else:
            v, a, b, c, w = synthetic._uniform(a, b, c, w)
        out[i] = v
    state[0], state[1], state[2], state[3] = a, b, c, w
    return out


@pytest.mark.parametrize("kind, method", [(0, "standard_normal"), (1, "standard_exponential"), (2, "random")])
def test_inline_variates_are_numpys_sfc64_variates(kind, method):
    bits = np.random.SFC64(11)
    state = np.array(bits.state["state"]["state"], dtype=np.uint64)
    n = 300_000  # ~1% of ziggurat draws take the slow path, a few dozen the tail
    mine, ref = _draws(state, n, kind), getattr(np.random.Generator(bits), method)(n)
    assert np.allclose(mine, ref, rtol=1e-13, atol=1e-13)
    assert np.array_equal(state, bits.state["state"]["state"])  # same words consumed: in step
    if kind == 0:
        assert np.abs(ref).max() > synthetic.NOR_R  # the tail was exercised


def test_realized_variance_matches_the_long_run_volatility():
    # E[sigma^2] = theta^2 (the -s^2 in sigma_i) and sigma sqrt(dt) scaling, plus the jump variance
    c = dict(ticks_per_day=20_000.0, daily_vol=0.03, jumps_per_day=2.0, jump_std=0.01)
    a = feed(800_000, **c).arrays()
    mid = np.log((a.bid + a.ask)[::100] / 2.0)  # coarse sampling: the tick rounding is negligible
    days = (a.ts_ns[-1] - a.ts_ns[0]) / DAY
    expected = days * (0.03 ** 2 + 2.0 * 0.01 ** 2)
    assert 0.8 < np.sum(np.diff(mid) ** 2) / expected < 1.25


def test_warmup_compiles_the_kernel():
    synthetic.warmup()
    SyntheticFeed.warmup()
    assert synthetic._ticks.signatures
