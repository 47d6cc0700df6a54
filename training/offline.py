"""Offline trajectories for CQL, discrete SAC and the decision transformer (spec D10, G40).

Every run of consecutive ready bars of the training data is cut into episodes of `episode_bars`
steps (full coverage, in order); each episode is driven by one behaviour policy drawn from a seeded
mix, with epsilon-random actions for coverage of all three actions:
- trend: EMA-cross-like, desired position sign(EMA_fast - EMA_slow) of the close (spans drawn per
  episode from {6, 12} / {24, 48, 96} bars);
- meanrev: fade the stretch z = (C / EMA_24 - 1) / (sigma sqrt 6): short above +1, long below -1,
  flat inside +-0.25, else keep;
- random: a random desired position kept with probability `persistence` per bar;
- flat: always flat.
A desired position becomes actions through the section-0 transitions (an opposite position is
closed first, then opened on the next bar); a held position is expressed by its direction (BUY
while long), so HOLD means "flat and staying flat" in this data. Rewards, positions and the position state in x come
from the env kernel (`training/env.py`), so offline rewards equal what the env would pay.

Episodes end with a timeout (the market does not terminate): `terminals` are all 0, `timeouts` 1 at
each episode's last step. Returns-to-go are undiscounted: RTG_t = sum_{k >= t} r~_k within the
episode (D10). Observations are z-scored with the stats given (or fitted here on these very rows,
position slots included: a flat-only fit would give the position slots std 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numba
import numpy as np

from himari.decision.features import FeatureStats, feature_matrix, fit_stats
from himari.training.env import EnvConfig, episode_runs, ewma_sigma, simulate, transition

POLICIES = ("trend", "meanrev", "random", "flat")


class BehaviourConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mix: tuple[float, float, float, float] = (0.35, 0.3, 0.25, 0.1)  # POLICIES order
    epsilon: float = 0.1
    persistence: float = 0.95
    episode_bars: int = 1024
    max_steps: int = 0  # 0 = every episode; else a seeded subset of whole episodes

    def __post_init__(self) -> None:
        if len(self.mix) != len(POLICIES) or min(self.mix) < 0 or sum(self.mix) <= 0:
            raise ValueError(f"behaviour.mix = {self.mix}: {len(POLICIES)} weights >= 0, not all 0")
        if not 0 <= self.epsilon <= 1 or not 0 <= self.persistence <= 1:
            raise ValueError(f"behaviour.epsilon = {self.epsilon}, persistence = "
                             f"{self.persistence}: both in [0, 1]")
        if self.episode_bars < 2 or self.max_steps < 0:
            raise ValueError(f"behaviour.episode_bars = {self.episode_bars} (>= 2), max_steps = "
                             f"{self.max_steps} (>= 0)")


@dataclass
class OfflineData:
    observations: np.ndarray    # (M, 257) float32, z-scored
    actions: np.ndarray         # (M,) int64, canonical 0 SELL / 1 HOLD / 2 BUY
    rewards: np.ndarray         # (M,) float32, env reward r~
    terminals: np.ndarray       # (M,) float32, all 0 (no terminal state in a market)
    timeouts: np.ndarray        # (M,) float32, 1 at each episode's last step
    returns_to_go: np.ndarray   # (M,) float32, undiscounted within the episode
    timesteps: np.ndarray       # (M,) int32, step index within the episode
    bars: np.ndarray            # (M,) int64, dataset bar index of the observation
    positions: np.ndarray       # (M,) int8, position after the action
    episode_starts: np.ndarray  # (E,) int64, first row of each episode
    episode_policy: np.ndarray  # (E,) int8, index into POLICIES
    stats: FeatureStats
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.r_[self.episode_starts, len(self)])

    def episode(self, e: int) -> slice:
        s = int(self.episode_starts[e])
        return slice(s, s + int(self.episode_lengths[e]))

    def next_observations(self) -> np.ndarray:
        """Row t+1's observation (the episode's last row repeats its own: a timeout, do not
        bootstrap through it without the timeouts flag). Allocates (M, 257)."""
        nxt = np.empty_like(self.observations)
        nxt[:-1] = self.observations[1:]
        nxt[-1] = self.observations[-1]
        last = np.flatnonzero(self.timeouts > 0)
        nxt[last] = self.observations[last]
        return nxt

    def to_mdp(self) -> Any:
        """A d3rlpy MDPDataset (discrete actions); imports d3rlpy only here."""
        from d3rlpy.constants import ActionSpace
        from d3rlpy.dataset import MDPDataset

        return MDPDataset(self.observations, self.actions.reshape(-1, 1).astype(np.int64),
                          self.rewards.reshape(-1, 1), self.terminals, self.timeouts,
                          action_space=ActionSpace.DISCRETE, action_size=3)


@numba.njit(cache=True)
def ema(x: np.ndarray, segment: np.ndarray, span: int) -> np.ndarray:
    out = np.empty(len(x))
    a = 2.0 / (span + 1.0)
    for i in range(len(x)):
        if i == 0 or segment[i] != segment[i - 1]:
            out[i] = x[i]
        else:
            out[i] = a * x[i] + (1.0 - a) * out[i - 1]
    return out


@numba.njit(cache=True)
def actions_toward(desired: np.ndarray, p0: int) -> np.ndarray:
    """Actions that move the position toward `desired` under the section-0 transitions. A held
    position is expressed by its own direction (BUY while long: "stay long", an idempotent
    action), so the action says what the policy wants whatever the position; HOLD only when it
    wants flat and is flat; flat from a position = the opposite action (it closes)."""
    n = len(desired)
    out = np.empty(n, np.int64)
    pos = p0
    for k in range(n):
        d = desired[k]
        if d == 0 and pos != 0:
            a = 0 if pos > 0 else 2
        else:
            a = d + 1
        out[k] = a
        pos = transition(pos, a)
    return out


def _desired(policy: int, k0: int, n: int, ds: Any, rng: np.random.Generator, sigma: np.ndarray,
             cfg: BehaviourConfig, cache: dict[Any, np.ndarray]) -> np.ndarray:
    sl = slice(k0, k0 + n)
    if policy == 0:  # trend
        fast, slow = int(rng.choice([6, 12])), int(rng.choice([24, 48, 96]))
        for s in (fast, slow):
            if s not in cache:
                cache[s] = ema(ds.close, ds.segment, s)
        return np.sign(cache[fast][sl] - cache[slow][sl]).astype(np.int64)
    if policy == 1:  # mean reversion
        if 24 not in cache:
            cache[24] = ema(ds.close, ds.segment, 24)
        z = (ds.close[sl] / cache[24][sl] - 1.0) / (sigma[sl] * np.sqrt(6.0))
        return _hysteresis(z)
    if policy == 2:  # random with persistence
        change = rng.random(n) >= cfg.persistence
        change[0] = True
        draws = rng.integers(-1, 2, n)
        idx = np.maximum.accumulate(np.where(change, np.arange(n), 0))
        return draws[idx]
    return np.zeros(n, np.int64)


@numba.njit(cache=True)
def _hysteresis(z: np.ndarray) -> np.ndarray:
    out = np.empty(len(z), np.int64)
    d = 0
    for k in range(len(z)):
        if z[k] > 1.0:
            d = -1
        elif z[k] < -1.0:
            d = 1
        elif abs(z[k]) < 0.25:
            d = 0
        out[k] = d
    return out


def build_offline(ds: Any, regime: np.ndarray, seed: int, *, stats: FeatureStats | None = None,
                  env: EnvConfig = EnvConfig(), behaviour: BehaviourConfig = BehaviourConfig()
                  ) -> OfflineData:
    """Behaviour-policy trajectories over every ready run of `ds` (module docstring)."""
    rng = np.random.default_rng(seed)
    sigma = ewma_sigma(ds.close, ds.segment, env.sigma_span, env.sigma_floor)
    episodes = []  # (first bar, steps)
    for a, b in episode_runs(ds):
        for s in range(a, b - 1, behaviour.episode_bars):
            episodes.append((s, min(behaviour.episode_bars, b - 1 - s)))
    if not episodes:
        raise ValueError("build_offline: no run of >= 2 ready bars in the dataset")
    if behaviour.max_steps and sum(n for _, n in episodes) > behaviour.max_steps:
        order = rng.permutation(len(episodes))
        keep, total = [], 0
        for e in order:
            if total >= behaviour.max_steps:
                break
            keep.append(int(e))
            total += episodes[e][1]
        episodes = [episodes[e] for e in sorted(keep)]
    m = sum(n for _, n in episodes)
    mix = np.asarray(behaviour.mix, np.float64)
    policy = rng.choice(len(POLICIES), size=len(episodes), p=mix / mix.sum()).astype(np.int8)
    actions = np.empty(m, np.int64)
    rewards = np.empty(m, np.float32)
    positions = np.empty(m, np.int8)
    states = np.empty((m, 4))
    bars = np.empty(m, np.int64)
    timesteps = np.empty(m, np.int32)
    rtg = np.empty(m, np.float32)
    starts = np.empty(len(episodes), np.int64)
    cache: dict[Any, np.ndarray] = {}
    row = 0
    for e, (s, n) in enumerate(episodes):
        desired = _desired(int(policy[e]), s, n, ds, rng, sigma, behaviour, cache)
        act = actions_toward(desired, 0)
        noise = rng.random(n) < behaviour.epsilon
        act[noise] = rng.integers(0, 3, int(noise.sum()))
        pos, rew, st = simulate(act, ds.close[s:s + n + 1], ds.atr14[s:s + n], sigma[s:s + n], env)
        sl = slice(row, row + n)
        actions[sl], rewards[sl], positions[sl], states[sl] = act, rew, pos, st
        bars[sl] = np.arange(s, s + n)
        timesteps[sl] = np.arange(n)
        rtg[sl] = np.cumsum(rew[::-1])[::-1]
        starts[e] = row
        row += n
    X = feature_matrix(ds, bars, regime=np.asarray(regime)[bars], position=states)
    if stats is None:
        stats = fit_stats(X)
    stats.normalize(X, out=X)
    timeouts = np.zeros(m, np.float32)
    timeouts[np.r_[starts[1:] - 1, m - 1]] = 1.0
    counts = np.bincount(policy, minlength=len(POLICIES))
    meta = {"seed": seed, "episodes": len(episodes), "steps": m,
            "policies": dict(zip(POLICIES, counts.tolist())),
            "behaviour": msgspec.to_builtins(behaviour), "env": msgspec.to_builtins(env),
            "mean_reward": float(rewards.mean()),
            "action_share": (np.bincount(actions, minlength=3) / m).round(4).tolist()}
    return OfflineData(X, actions, rewards, np.zeros(m, np.float32), timeouts, rtg, timesteps,
                       bars, positions, starts, policy, stats, meta)
