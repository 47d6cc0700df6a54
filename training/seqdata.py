"""What the sequence trainers (PPO-LSTM, CGDT) take from `himari train`'s TrainingData.

`OfflineArrays`: flat offline trajectories (z-scored observations, canonical actions, env rewards
r~, per-step terminal flags, episode boundaries) plus the feature statistics used to z-score,
which the checkpoints store so run time normalises the same way. `offline_arrays(data, seed)` and
`env_factory(data, seed)` adapt the data helper's TrainingData (training/run.py) to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

OBS_CLIP = 10.0
BARS_PER_YEAR = 365 * 288  # 5-minute bars, 24/7 (crypto); the Sharpe annualisation of G39


@dataclass
class OfflineArrays:
    obs: np.ndarray           # (N, 257) float32, z-scored and clipped to +-OBS_CLIP
    actions: np.ndarray       # (N,) int, canonical 0 SELL 1 HOLD 2 BUY
    rewards: np.ndarray       # (N,) float32, r~ of the step
    terminals: np.ndarray     # (N,) bool, the episode truly ended after this step
    episode_ends: np.ndarray  # (E,) int, exclusive end of each episode, ascending, last == N
    mean: np.ndarray          # (257,) statistics the observations were z-scored with
    std: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.obs)
        if self.obs.ndim != 2 or self.obs.shape[1] != 257:
            raise ValueError(f"obs has shape {self.obs.shape}, expected (N, 257)")
        for field in ("actions", "rewards", "terminals"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"{field} has {len(getattr(self, field))} rows, obs has {n}")
        if len(self.episode_ends) == 0 or int(self.episode_ends[-1]) != n:
            raise ValueError(f"episode_ends must end at N={n}, got {self.episode_ends[-1:]}")
        if not np.all(np.isfinite(self.obs)) or not np.all(np.isfinite(self.rewards)):
            raise ValueError("obs or rewards hold non-finite values")
        self.obs = np.ascontiguousarray(self.obs, dtype=np.float32)

    def transition_index(self) -> np.ndarray:
        """Steps with a successor in their episode, plus terminal last steps (bootstrap masked)."""
        last = np.zeros(len(self.obs), bool)
        last[np.asarray(self.episode_ends) - 1] = True
        return np.flatnonzero(~last | self.terminals).astype(np.int64)

    def session_returns_to_go(self, length: int) -> np.ndarray:
        """Undiscounted returns-to-go within sessions of at most `length` steps (spec D10)."""
        out = np.empty(len(self.rewards), np.float64)
        for start, end, _ in session_bounds(self.episode_ends, self.terminals, length):
            r = self.rewards[start:end].astype(np.float64)
            out[start:end] = np.cumsum(r[::-1])[::-1]
        return out


def session_bounds(episode_ends: np.ndarray, terminals: np.ndarray,
                   length: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, terminal) of each session: episodes cut into chunks of `length` steps."""
    start = 0
    for end in np.asarray(episode_ends, dtype=np.int64):
        for s in range(start, int(end), length):
            e = min(s + length, int(end))
            yield s, e, bool(e == end and terminals[e - 1])
        start = int(end)


def offline_arrays(data: Any, seed: int) -> tuple[OfflineArrays, dict[str, Any]]:
    """OfflineArrays from `himari train`'s TrainingData (training/run.py: `data.offline()` is the
    behaviour trajectories of training/offline.py, z-scored with `data.stats`), or an
    OfflineArrays given directly."""
    if isinstance(data, OfflineArrays):
        return data, {"source": "arrays"}
    od = data.offline()
    n = len(od.actions)
    ends = np.r_[np.asarray(od.episode_starts, np.int64)[1:], n]
    arr = OfflineArrays(obs=od.observations, actions=np.asarray(od.actions, np.int64),
                        rewards=np.asarray(od.rewards, np.float32),
                        terminals=np.asarray(od.terminals) > 0, episode_ends=ends,
                        mean=np.asarray(od.stats.mean, np.float32),
                        std=np.asarray(od.stats.std, np.float32))
    return arr, {**dict(getattr(data, "meta", {}) or {}), "offline_rows": n,
                 "offline_episodes": int(len(ends))}


def env_factory(data: Any, seed: int) -> tuple[Callable[[int], Any], np.ndarray, np.ndarray,
                                               dict[str, Any]]:
    """(make_env(rank), mean, std, data metadata) from TrainingData: `data.make_env("train",
    seed)` is training/env.py's TradingEnv over the training bars, observations z-scored with
    `data.stats` (clipped to +-10, as the run-time agent does)."""
    def make_env(rank: int) -> Any:
        return data.make_env("train", seed=seed + 1000 * rank)

    return (make_env, np.asarray(data.stats.mean, np.float32),
            np.asarray(data.stats.std, np.float32), dict(getattr(data, "meta", {}) or {}))


def valid_rollout(agent: Any, data: Any, episodes: int = 8, seed: int = 1) -> dict[str, Any]:
    """The run-time agent (built with obs_mean 0 / obs_std 1, since the env already z-scores)
    acting by argmax on `data.make_env("valid")`: mean env reward r~ per bar (flat = 0) and the
    share of each action. None when `data` has no validation split."""
    from himari.decision.agent import AgentInput

    try:
        env = data.make_env("valid", seed=seed)
    except (ValueError, AttributeError, TypeError):
        return {"valid": None}
    total, n, counts = 0.0, 0, np.zeros(3, np.int64)
    tactical = np.zeros((60, 7), np.float32)
    for _ in range(episodes):
        obs, _ = env.reset()
        agent.reset()
        position, done = 0, False
        while not done:
            inp = AgentInput(ts_ns=n, instrument_id="valid", x=obs, tactical=tactical,
                             strategic=None, regime=2, target_sharpe=2.0, position=position)
            probs = agent.act(inp).probs
            action = int(np.argmax(probs))
            counts[action] += 1
            obs, reward, term, trunc, info = env.step(action)
            agent.observe(inp, action, float(reward))
            position = int(info.get("position", position))
            total += float(reward)
            n += 1
            done = bool(term or trunc)
    return {"valid_steps": n, "valid_reward_per_bar": total / max(n, 1),
            "valid_action_share": (counts / max(n, 1)).round(4).tolist(),
            "valid_note": "argmax, target Sharpe 2.0 (neutral), 8 episodes of the valid env, "
                          "seed 1"}


def with_identity_stats(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(tensors)
    out["obs_mean"] = np.zeros_like(tensors["obs_mean"])
    out["obs_std"] = np.ones_like(tensors["obs_std"])
    return out
