"""A seeded synthetic trade stream with realistic microstructure, generated with vectorized numpy.

Time runs in seconds T on a 24 h UTC clock from the configured start; a "day" is [00:00, 24:00) UTC
and phi = (T mod 86400) / 86400 its fraction. Per chunk of ticks (state carried between chunks, so
the output depends on the seed and config only, never on batch_size):

1. Arrivals: an inhomogeneous Poisson process with rate lambda(phi) = R u(phi) / Ubar, where
   R = ticks_per_day / 86400 and u(phi) = 1 + (u_shape - 1)(2 phi - 1)^2 is U-shaped (u_shape times
   busier at the day's open and close than at midday); Ubar = 1 + (u_shape - 1)/3 is its mean. Unit
   exponential gaps are summed and mapped through the inverse of the integrated rate
   U(phi) = phi + (u_shape - 1)((2 phi - 1)^3 + 1)/6 (interpolated on a 1-minute grid, then one
   Newton step).
2. Stochastic volatility (Heston-like, log-normal): x = ln(sigma / theta) follows an OU process,
   exact on irregular steps: x_i = a_i x_{i-1} + xi sqrt((1 - a_i^2)/(2 kappa)) e_i with
   a_i = exp(-kappa dt_i) (dt in days), e_i = rho Z_i + sqrt(1 - rho^2) W_i (leverage: the price
   shock Z_i moves the next volatility). sigma_i = theta exp(x_{i-1} - s^2), s^2 = xi^2/(2 kappa), so
   E[sigma^2] = theta^2. The linear recursion is solved in closed form, x_i = A_i (x_0 + sum b_j/A_j)
   with A_i = exp(-kappa (t_i - t_0)), in blocks where kappa (t_i - t_0) <= 20 to stay well scaled.
3. Log price: r_i = sigma_i sqrt(dt_i) Z_i - sigma_i^2 dt_i / 2 + J_i; jumps arrive as a Poisson
   process (jumps_per_day) with N(0, jump_std) log sizes, each applied at the next tick.
4. Quotes: efficient mid M (ticks) = exp(log p)/tick_size; spread in ticks
   s = max(min_spread_ticks, rint(spread_bps 1e-4 M sigma_i/theta)) widens with volatility;
   bid = max(1, floor(M - s/2)), ask = bid + s, so prices are on the grid and always > 0.
5. Trades: the aggressor buys with probability 1/2 + flow_impact Z_i / (2 sqrt(1 + Z_i^2)) (order flow follows
   the price shock), or repeats the previous side with probability side_persistence; a buy prints at
   the ask, a sell at the bid. Sizes are log-normal lots: max(1, rint(median exp(size_sigma N))).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from himari.daemon.events import TickBatch
from himari.daemon.feeds.base import FeedStats
from himari.daemon.feeds.config import FeedConfig, SyntheticConfig
from himari.daemon.instruments import Instrument

CHUNK = 1 << 20  # ticks generated per step (fixed: output must not depend on batch size)
DAY_S = 86400.0
DAY_NS = 86_400_000_000_000


class SynthTicks(NamedTuple):
    ts_ns: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray
    bid: np.ndarray
    ask: np.ndarray


def start_ns(text: str) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


class _Generator:
    """Carries the process state from one chunk to the next."""

    def __init__(self, c: SyntheticConfig) -> None:
        self.c = c
        self.rng = np.random.Generator(np.random.PCG64(c.seed))
        t0 = start_ns(c.start)
        self.midnight_ns = t0 - t0 % DAY_NS
        self.tick = float(Decimal(c.tick_size))
        k = c.u_shape - 1.0
        self.ubar = 1.0 + k / 3.0
        self.k = k
        self.phi_grid = np.linspace(0.0, 1.0, 1441)  # 1-minute grid, refined by a Newton step
        self.u_grid = self._u_int(self.phi_grid)
        self.g = float(self._u_int(np.array((t0 % DAY_NS) / DAY_NS)))  # integrated rate, in days
        self.t_last = (t0 - self.midnight_ns) / 1e9  # seconds since the first midnight
        self.x = 0.0  # ln(sigma/theta), starts at its median
        self.logp = float(np.log(float(Decimal(c.start_price))))
        self.side = 1

    def _u_int(self, phi: np.ndarray) -> np.ndarray:
        """U(phi): the arrival rate integrated over the day so far, in units of the midday rate."""
        y = 2.0 * phi - 1.0
        return phi + self.k * (y * y * y + 1.0) / 6.0

    def _times(self, n: int) -> np.ndarray:
        c = self.c
        g = self.g + np.cumsum(self.rng.standard_exponential(n)) * (self.ubar / c.ticks_per_day)
        self.g = float(g[-1])
        day = np.floor(g / self.ubar)
        rem = g - day * self.ubar
        phi = np.interp(rem, self.u_grid, self.phi_grid)
        y = 2.0 * phi - 1.0
        phi -= (self._u_int(phi) - rem) / (1.0 + self.k * y * y)  # Newton: U'(phi) = u(phi)
        return np.maximum.accumulate((day + np.clip(phi, 0.0, 1.0)) * DAY_S)  # guard round-off

    def _log_vol(self, t: np.ndarray, dt_days: np.ndarray, eps: np.ndarray) -> np.ndarray:
        c = self.c
        kappa = c.vol_mean_reversion
        b = c.vol_of_vol * np.sqrt(-np.expm1(-2.0 * kappa * dt_days) / (2.0 * kappa)) * eps
        x = np.empty_like(t)
        start, x_ref, t_ref = 0, self.x, self.t_last
        horizon = 20.0 / kappa * DAY_S
        while start < t.size:
            stop = max(start + 1, int(np.searchsorted(t, t_ref + horizon, side="right")))
            tau = (t[start:stop] - t_ref) / DAY_S
            grow = np.exp(kappa * tau)  # 1 / A_i
            x[start:stop] = (x_ref + np.cumsum(b[start:stop] * grow)) / grow
            start, x_ref, t_ref = stop, float(x[stop - 1]), float(t[stop - 1])
        return x

    def chunk(self, n: int) -> SynthTicks:
        c, rng = self.c, self.rng
        t = self._times(n)
        dt_days = np.diff(t, prepend=self.t_last) / DAY_S
        z = rng.standard_normal(n)
        w = rng.standard_normal(n)
        rho = c.leverage
        x = self._log_vol(t, dt_days, rho * z + np.sqrt(1.0 - rho * rho) * w)
        s2 = c.vol_of_vol ** 2 / (2.0 * c.vol_mean_reversion)
        vol_ratio = np.exp(np.concatenate(([self.x], x[:-1])) - s2)  # sigma / theta
        sigma = c.daily_vol * vol_ratio
        r = sigma * np.sqrt(dt_days) * z - 0.5 * sigma * sigma * dt_days
        n_jumps = int(rng.poisson(c.jumps_per_day * (t[-1] - self.t_last) / DAY_S))
        if n_jumps:
            when = rng.uniform(self.t_last, t[-1], n_jumps)
            np.add.at(r, np.minimum(np.searchsorted(t, when), n - 1),
                      rng.normal(0.0, c.jump_std, n_jumps))
        logp = self.logp + np.cumsum(r)
        mid = np.exp(logp) / self.tick
        spread = np.clip(np.rint(c.spread_bps * 1e-4 * mid * vol_ratio),
                         c.min_spread_ticks, 1e6).astype(np.int64)
        bid = np.maximum(1, np.floor(mid - spread / 2.0)).astype(np.int64)
        ask = bid + spread
        p_buy = 0.5 + 0.5 * c.flow_impact * z / np.sqrt(1.0 + z * z)
        fresh = np.where(rng.random(n) < p_buy, 1, -1).astype(np.int8)
        repeat = rng.random(n) < c.side_persistence
        src = np.where(repeat, -1, np.arange(n))
        src = np.maximum.accumulate(src)  # index of the last fresh draw, -1 before the first
        side = np.where(src >= 0, fresh[np.maximum(src, 0)], np.int8(self.side)).astype(np.int8)
        size = np.clip(np.rint(c.size_median_lots * np.exp(c.size_sigma * rng.standard_normal(n))),
                       1, 1e12).astype(np.int64)
        price = np.where(side > 0, ask, bid)
        ts = self.midnight_ns + np.rint(t * 1e9).astype(np.int64)
        self.t_last, self.x, self.logp, self.side = float(t[-1]), float(x[-1]), float(logp[-1]), int(side[-1])
        return SynthTicks(ts, price, size, side, bid, ask)


class SyntheticFeed:
    """The built-in demo stream: `n_ticks` trade ticks from `cfg.synthetic` (see module docstring)."""

    kind = "trades"

    def __init__(self, cfg: FeedConfig, instrument_id: str = "SYNTH") -> None:
        self.cfg = cfg
        c = cfg.synthetic
        self.instrument = Instrument(id=instrument_id, tick_size=Decimal(c.tick_size),
                                     lot_size=Decimal(c.lot_size), currency=cfg.currency)
        self.stats = FeedStats(rows=c.n_ticks, ticks=c.n_ticks)
        self.describe = (
            f"Synthetic trade ticks (seed {c.seed}): {c.n_ticks:,} ticks from {c.start}, start price "
            f"{c.start_price}, tick {c.tick_size}; log-OU stochastic volatility ({c.daily_vol:g}/day, "
            f"leverage {c.leverage:g}), Poisson jumps ({c.jumps_per_day:g}/day), bid/ask bounce with a "
            f"vol-widened spread, log-normal sizes, U-shaped intraday arrivals "
            f"(~{c.ticks_per_day:,.0f} ticks/day)")

    @property
    def expected_ticks(self) -> int:
        return self.cfg.synthetic.n_ticks

    def chunks(self) -> Iterator[SynthTicks]:
        gen = _Generator(self.cfg.synthetic)
        left = self.cfg.synthetic.n_ticks
        while left > 0:
            n = min(CHUNK, left)
            left -= n
            yield gen.chunk(n)

    def arrays(self) -> SynthTicks:
        """Every tick at once (tests, small runs)."""
        parts = list(self.chunks())
        return SynthTicks(*(np.concatenate([getattr(p, f) for p in parts]) for f in SynthTicks._fields))

    def batches(self) -> Iterator[TickBatch]:
        step = self.cfg.batch_size
        inst = self.instrument.id
        for ch in self.chunks():
            for i in range(0, len(ch.ts_ns), step):
                j = i + step
                yield TickBatch.from_trades(inst, ch.ts_ns[i:j], ch.price[i:j], ch.size[i:j], ch.side[i:j])
