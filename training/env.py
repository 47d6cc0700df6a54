"""The training environment of spec decision.md 4.0: one step = one closed 5-minute bar.

At bar t the agent sees x_t (the 257-value vector, z-scored) and acts; the action sets the target
position (section 0): BUY -> +1, SELL -> -1, HOLD keeps it; the opposite action on an open position
closes it (no reversal in one step). The position is taken at C_t and held to C_{t+1}:

    r~_t = (pos_t (C_{t+1} - C_t) / C_t - fee |pos_t - pos_{t-1}|) / sigma_t

fee = (fee_bps + slippage_bps) 1e-4 per unit of position changed, default 1 bp fee + 1 bp
slippage (the simulated venue's taker fee is 1 bp; slippage is our allowance for crossing the
spread; `training/run.env_config_from` reads the fee from the daemon config). A replay fills the
market order at the first tick after the bar close, not at C_t: the slippage allowance stands for
that gap too; sigma_t = EWMA std (span 100, zero mean, bias-corrected weights, returns up to C_t only,
restarted per segment) of 5-minute simple returns, floored at `sigma_floor` (a flat stretch must not
divide by ~0).

Position state in x (decision/features.py): sign, unrealised PnL / ATR14 (entry at the close the
position opened on), bars in position, and the drawdown buffer 1 - dd / max_drawdown (dd = peak -
current of the episode's cumulative unscaled net return per unit position, i.e. a fraction of
notional; max_drawdown default 0.05 as risk.max_drawdown_pct = 5).

Episodes run over contiguous ready bars of one segment (`episode_runs`): they end at a segment (or
ready-run) boundary or after `episode_bars` steps, both reported as truncation (the market goes on);
a run of L bars gives L - 1 steps (the last bar has no next close). The whole-path helpers
(`simulate`, `rewards_for_actions`) run the same kernel in Numba, so trainers and the walk-forward
get a whole action sequence's rewards in one call; no per-tick work happens here at all.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import msgspec
import numba
import numpy as np

from himari.decision import layout as L
from himari.decision.features import UPNL_CLIP, Z_CLIP, FeatureStats, feature_matrix
from himari.decision.regime import regimes as regime_rule


class EnvConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fee_bps: float = 1.0
    slippage_bps: float = 1.0
    episode_bars: int = 1024
    sigma_span: int = 100
    sigma_floor: float = 5e-5
    max_drawdown: float = 0.05

    def __post_init__(self) -> None:
        for k in ("fee_bps", "slippage_bps", "sigma_floor", "max_drawdown"):
            v = getattr(self, k)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"env.{k} = {v!r}: expected a finite number >= 0")
        if self.episode_bars < 1 or self.sigma_span < 1:
            raise ValueError(f"env.episode_bars = {self.episode_bars}, env.sigma_span = "
                             f"{self.sigma_span}: both must be >= 1")

    @property
    def fee(self) -> float:
        return (self.fee_bps + self.slippage_bps) * 1e-4


@numba.njit(cache=True)
def ewma_sigma(close: np.ndarray, segment: np.ndarray, span: int, floor: float) -> np.ndarray:
    """sigma_t from returns up to bar t, restarted at each segment; sigma_0 of a segment = floor."""
    n = len(close)
    out = np.empty(n)
    decay = 1.0 - 2.0 / (span + 1.0)
    s = 0.0
    w = 0.0
    for i in range(n):
        if i == 0 or segment[i] != segment[i - 1]:
            s = 0.0
            w = 0.0
        else:
            r = (close[i] - close[i - 1]) / close[i - 1]
            s = decay * s + r * r
            w = decay * w + 1.0
        v = np.sqrt(s / w) if w > 0 else 0.0
        out[i] = v if v > floor else floor
    return out


@numba.njit(cache=True)
def transition(pos: int, action: int) -> int:
    """Section 0: BUY/SELL go to +1/-1, or close the opposite position; HOLD keeps it."""
    if action == 2:
        return 0 if pos < 0 else 1
    if action == 0:
        return 0 if pos > 0 else -1
    return pos


@numba.njit(cache=True)
def _step(st: np.ndarray, action: int, c0: float, c1: float, sigma: float, fee: float,
          out_state: np.ndarray) -> float:
    """One step on st = [pos, entry, bars_in, equity, peak]; writes the raw position state seen
    BEFORE acting into out_state (4,) and returns the reward; updates st for the next bar."""
    pos = int(st[0])
    out_state[0] = pos
    out_state[1] = (c0 - st[1]) * pos  # divided by ATR by the caller
    out_state[2] = st[2] if pos != 0 else 0.0
    out_state[3] = st[4] - st[3]  # drawdown, turned into the buffer by the caller
    new = transition(pos, action)
    ret = new * (c1 - c0) / c0 - fee * abs(new - pos)
    if new != 0 and new != pos:
        st[1] = c0
        st[2] = 0.0
    st[0] = new
    st[2] += 1.0
    st[3] += ret
    if st[3] > st[4]:
        st[4] = st[3]
    return ret / sigma


@numba.njit(cache=True)
def _simulate(actions: np.ndarray, close: np.ndarray, atr: np.ndarray, sigma: np.ndarray,
              fee: float, max_dd: float, p0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(actions)
    pos = np.empty(n, np.int8)
    rew = np.empty(n)
    state = np.empty((n, 4))
    st = np.zeros(5)
    st[0] = p0
    st[1] = close[0]
    for k in range(n):
        rew[k] = _step(st, actions[k], close[k], close[k + 1], sigma[k], fee, state[k])
        pos[k] = int(st[0])
        state[k, 1] = state[k, 1] / atr[k] if atr[k] > 0 else 0.0
        state[k, 3] = 1.0 - state[k, 3] / max_dd if max_dd > 0 else 1.0
    return pos, rew, state


@numba.njit(cache=True)
def _observe(market: np.ndarray, st: np.ndarray, close: float, atr: float, max_dd: float,
             mean: np.ndarray, inv: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             out: np.ndarray) -> None:
    """z-scored x: the bar's raw market row with the position slots of state st (the same slot
    transforms as decision/features.py, the same float32 arithmetic as FeatureStats.normalize)."""
    pos = st[0]
    upnl = (close - st[1]) * pos / atr if (pos != 0 and atr > 0) else 0.0
    bars = st[2] if pos != 0 else 0.0
    buffer = 1.0 - (st[4] - st[3]) / max_dd if max_dd > 0 else 1.0
    p0 = L.X_POSITION.start
    for i in range(L.FEATURE_DIM):
        v = market[i]
        if i == p0:
            v = np.float32(1.0 if pos > 0 else (-1.0 if pos < 0 else 0.0))
        elif i == p0 + 1:
            v = np.float32(min(max(upnl, -UPNL_CLIP), UPNL_CLIP))
        elif i == p0 + 2:
            v = np.float32(min(max(bars, 0.0) / 100.0, 1.0))
        elif i == p0 + 3:
            v = np.float32(min(max(buffer, 0.0), 1.0))
        z = (v - mean[i]) * inv[i]
        out[i] = min(max(z, lo[i]), hi[i])


def simulate(actions: np.ndarray, close: np.ndarray, atr14: np.ndarray, sigma: np.ndarray,
             cfg: EnvConfig = EnvConfig(), p0: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole action path from bar t0: actions (n,), close (n + 1,) C_t0..C_t0+n, atr14 and
    sigma (n,). Returns positions after each action (n,) int8, rewards r~ (n,), and the raw
    position state seen before each action (n, 4) (decision/features.PositionState order)."""
    a = np.asarray(actions, np.int64)
    n = len(a)
    if len(close) != n + 1 or len(atr14) < n or len(sigma) < n:
        raise ValueError(f"simulate: {n} actions need {n + 1} closes and {n} atr/sigma values, "
                         f"got {len(close)}, {len(atr14)}, {len(sigma)}")
    if n and (a.min() < 0 or a.max() > 2):
        raise ValueError(f"actions must be 0 (SELL), 1 (HOLD) or 2 (BUY), got {np.unique(a)}")
    return _simulate(a, np.asarray(close, np.float64), np.asarray(atr14, np.float64),
                     np.asarray(sigma, np.float64), cfg.fee, cfg.max_drawdown, p0)


def rewards_for_actions(ds: Any, start: int, actions: np.ndarray, cfg: EnvConfig = EnvConfig(),
                        sigma: np.ndarray | None = None) -> np.ndarray:
    """Rewards r~ of an action sequence taken at bars start, start + 1, ... of a dataset."""
    n = len(actions)
    if start < 0 or start + n >= len(ds):
        raise ValueError(f"bars {start}..{start + n} (plus the next close) exceed the dataset "
                         f"of {len(ds)} bars")
    if np.any(ds.segment[start:start + n + 1] != ds.segment[start]):
        raise ValueError(f"bars {start}..{start + n} cross a segment boundary")
    sig = sigma if sigma is not None else ewma_sigma(ds.close, ds.segment, cfg.sigma_span,
                                                      cfg.sigma_floor)
    sl = slice(start, start + n)
    return simulate(actions, ds.close[start:start + n + 1], ds.atr14[sl], sig[sl], cfg)[1]


def episode_runs(ds: Any, mask: np.ndarray | None = None, min_bars: int = 2) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive ready bars (and `mask`) inside one segment."""
    ok = ds.ready if mask is None else (ds.ready & mask)
    runs = []
    for s0, s1 in ds.segments():
        seg_ok = ok[s0:s1]
        if not seg_ok.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], seg_ok.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a >= min_bars:
                runs.append((s0 + int(a), s0 + int(b)))
    return runs


class TradingEnv(gym.Env):  # type: ignore[misc]
    """gymnasium env over a BarDataset; observation = normalised x (257,) float32.

    `regime`: (N,) regimes per bar, or None -> the crisis rule with `crisis_threshold` (neutral
    otherwise; the strategic ensemble is not in the loop while D-agents train). reset options:
    {"start": bar} starts there (evaluation), else a seeded random start in a random run."""

    metadata = {"render_modes": []}

    def __init__(self, ds: Any, stats: FeatureStats, cfg: EnvConfig = EnvConfig(), *,
                 regime: np.ndarray | None = None, crisis_threshold: float | None = None,
                 mask: np.ndarray | None = None, seed: int | None = None) -> None:
        self.ds = ds
        self.stats = stats
        self.cfg = cfg
        self.runs = episode_runs(ds, mask)
        if not self.runs:
            raise ValueError("TradingEnv: the dataset has no run of >= 2 ready bars")
        if regime is None:
            regime = (regime_rule(ds.volatility_30, crisis_threshold) if crisis_threshold
                      is not None else np.full(len(ds), L.NEUTRAL, np.int64))
        self.regime = np.asarray(regime, np.int64)
        self.sigma = ewma_sigma(ds.close, ds.segment, cfg.sigma_span, cfg.sigma_floor)
        self.observation_space = gym.spaces.Box(-Z_CLIP, Z_CLIP, (L.FEATURE_DIM,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self._lens = np.array([b - a - 1 for a, b in self.runs], np.float64)
        self._run_of = {}
        for i, (a, b) in enumerate(self.runs):
            self._run_of[a] = i
        self._st = np.zeros(5)
        self._pstate = np.zeros(4)
        self._market = np.zeros((0, L.FEATURE_DIM), np.float32)
        self._t = self._t0 = self._end = 0
        if seed is not None:
            self.reset(seed=seed)

    def _find_run(self, bar: int) -> tuple[int, int]:
        for a, b in self.runs:
            if a <= bar < b - 1:
                return a, b
        raise ValueError(f"bar {bar} is not inside a run of ready bars with a next close")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "start" in options:
            start = int(options["start"])
            _, stop = self._find_run(start)
        else:
            i = int(self.np_random.choice(len(self.runs), p=self._lens / self._lens.sum()))
            a, stop = self.runs[i]
            start = int(self.np_random.integers(a, stop - 1))
        self._t0 = self._t = start
        self._end = min(stop - 1, start + self.cfg.episode_bars)  # last step acts at _end - 1
        idx = np.arange(start, self._end)
        self._market = feature_matrix(self.ds, idx, regime=self.regime[idx])
        self._st[:] = 0.0
        self._st[1] = self.ds.close[start]
        return self._obs(), {"bar": start}

    def _obs(self) -> np.ndarray:
        t = self._t
        out = np.empty(L.FEATURE_DIM, np.float32)
        s = self.stats
        _observe(self._market[t - self._t0], self._st, self.ds.close[t], self.ds.atr14[t],
                 self.cfg.max_drawdown, s.mean, s.inv, s.lo, s.hi, out)
        return out

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = int(action)
        if a not in (0, 1, 2):
            raise ValueError(f"action {action!r} is not 0 (SELL), 1 (HOLD) or 2 (BUY)")
        t = self._t
        if t >= self._end:
            raise RuntimeError("TradingEnv.step after the episode ended: call reset() first")
        c = self.ds.close
        r = float(_step(self._st, a, c[t], c[t + 1], self.sigma[t], self.cfg.fee, self._pstate))
        self._t = t + 1
        truncated = self._t >= self._end
        info = {"bar": t, "position": int(self._st[0]), "sigma": float(self.sigma[t])}
        if truncated:  # the last observation: the bar after the last action
            return self._final_obs(), r, False, True, info
        return self._obs(), r, False, False, info

    def _final_obs(self) -> np.ndarray:
        t = self._t
        x = feature_matrix(self.ds, [t], regime=self.regime[[t]])[0]
        self._market = np.concatenate([self._market[: t - self._t0], x[None]])
        return self._obs()
