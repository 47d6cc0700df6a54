"""The offline agents' (CQL, SAC) view of `himari train`'s data, and their in-sample evaluation.

`prepare(data, seed)` turns the `TrainingData` that `training/run.py` hands every trainer into
what the d3rlpy trainers need: the offline trajectories of `training/offline.py` (z-scored
observations, behaviour actions, env rewards r~, timeouts), the feature statistics they were
z-scored with (saved with the checkpoint, so run-time inference normalises the same way), and
the environment to evaluate in.

`evaluate_agent(agent, prep)` rolls the SAVED agent (the numpy/Numba inference that will trade,
not the torch module) greedily through the training environment (`training/env.TradingEnv`:
same bars, position state from its own actions, same costs) over a seeded subset of the
behaviour episodes, and reports its mean reward per step next to the behaviour policies' mean
reward on exactly those episodes. In-sample, so an upper bound; `himari evaluate` is the honest
out-of-sample figure.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from himari.decision.agent import AgentInput
from himari.decision.layout import FEATURE_DIM, N_ACTIONS, TACTICAL_COLS, TACTICAL_ROWS
from himari.decision.nets.mlp import affine_from_stats
from himari.training.d3rlpy_common import OfflineArrays

EVAL_STEPS, QUICK_EVAL_STEPS = 40_000, 2_000


@dataclasses.dataclass(frozen=True)
class Prepared:
    arrays: OfflineArrays
    mean: np.ndarray       # FeatureStats.mean (257,)
    std: np.ndarray        # FeatureStats.std (257,), floored, 1 on unscaled slots
    scale: np.ndarray      # 1 / std
    offset: np.ndarray     # -mean / std
    offline: Any           # training/offline.OfflineData (episodes, bars, behaviour meta)
    env: Any               # training/env.TradingEnv over the same bars, or None
    data_meta: dict[str, Any]
    eval_steps: int
    valid: tuple[Any, Any] | None = None  # (OfflineData, TradingEnv) on the validation bars


def _get(data: Any, *names: str) -> Any:
    for name in names:
        value = getattr(data, name, None)
        if value is not None:
            return value
    return None


def prepare(data: Any, seed: int, quick: bool = False) -> Prepared:
    """Offline trajectories + statistics + evaluation env from `TrainingData` (or an OfflineData
    given directly, which is then trained on without an evaluation env)."""
    offline = _get(data, "offline")
    if callable(offline):
        offline = offline()
    if offline is None and hasattr(data, "observations"):
        offline = data
    env = None
    ds = _get(data, "dataset", "train", "ds")
    if offline is None:
        from himari.training.offline import build_offline

        if ds is None:
            raise ValueError("training data has neither offline trajectories nor a dataset")
        offline = build_offline(ds, _get(data, "regime"), seed, stats=_get(data, "stats"),
                                **({"env": data.env} if _get(data, "env") is not None else {}))
    stats = offline.stats
    valid = None
    if hasattr(data, "make_env"):  # training/run.TrainingData
        env = data.make_env("train")
        off_valid = data.offline_valid() if hasattr(data, "offline_valid") else None
        if off_valid is not None and len(off_valid):
            valid = (off_valid, data.make_env("valid"))
    elif ds is not None:
        from himari.training.env import TradingEnv

        kwargs = {"cfg": data.env} if _get(data, "env") is not None else {}
        env = TradingEnv(ds, stats, regime=_get(data, "regime"), **kwargs)
    arrays = OfflineArrays(obs=offline.observations, actions=np.asarray(offline.actions),
                           rewards=np.asarray(offline.rewards),
                           terminals=np.asarray(offline.terminals) > 0,
                           timeouts=np.asarray(offline.timeouts) > 0)
    mean = np.asarray(stats.mean, np.float64)
    std = np.asarray(stats.std, np.float64)
    scale, offset = affine_from_stats(mean, std)
    meta = {"offline": getattr(offline, "meta", {}), "rows": len(arrays.actions)}
    extra = _get(data, "meta", "describe")
    if isinstance(extra, dict):
        meta["training_data"] = extra
    return Prepared(arrays, mean, std, scale, offset, offline, env, meta,
                    QUICK_EVAL_STEPS if quick else EVAL_STEPS, valid)


def evaluate_agent(agent: Any, prep: Prepared, seed: int = 0) -> dict[str, Any]:
    """Greedy roll-out of `agent` vs the behaviour policies on the same episodes: on the
    training bars (in-sample) and, when there are any, the validation bars (`valid_` keys)."""
    if prep.env is None or prep.offline is None or not hasattr(prep.offline, "episode_starts"):
        return {"evaluation": "skipped: no dataset to roll out in"}
    out = rollout(agent, prep.offline, prep.env, prep, seed)
    if prep.valid is not None:
        out.update({f"valid_{k}": v for k, v in
                    rollout(agent, prep.valid[0], prep.valid[1], prep, seed).items()})
    return out


def rollout(agent: Any, off: Any, env: Any, prep: Prepared, seed: int) -> dict[str, Any]:
    """Mean reward per step of the agent and of the behaviour data on a seeded subset of the
    episodes of `off` (at most `prep.eval_steps` steps)."""
    lengths = off.episode_lengths
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    chosen, total = [], 0
    for e in order:
        if total >= prep.eval_steps:
            break
        chosen.append(int(e))
        total += int(lengths[e])
    inp = AgentInput(ts_ns=0, instrument_id="train", x=np.zeros(FEATURE_DIM, np.float32),
                     tactical=np.zeros((TACTICAL_ROWS, TACTICAL_COLS), np.float32),
                     strategic=None, regime=2, target_sharpe=2.0, position=0)
    agent_rewards: list[float] = []
    behaviour_rewards: list[float] = []
    counts = np.zeros(N_ACTIONS, np.int64)
    changes = 0
    for e in sorted(chosen):
        sl = off.episode(e)
        obs, _ = env.reset(options={"start": int(off.bars[sl.start])})
        pos = 0
        steps = 0
        for _ in range(int(lengths[e])):
            # the env hands z-scores; the agent takes raw x and z-scores it itself (same stats)
            inp.x = (obs.astype(np.float64) * prep.std + prep.mean).astype(np.float32)
            vote = agent.act(inp)
            a = int(np.argmax(vote.probs))
            counts[a] += 1
            obs, r, _, truncated, info = env.step(a)
            agent_rewards.append(r)
            changes += int(info["position"] != pos)
            pos = info["position"]
            steps += 1
            if truncated:
                break
        behaviour_rewards.extend(np.asarray(off.rewards[sl][:steps], np.float64).tolist())
    n = len(agent_rewards)
    ar, br = np.asarray(agent_rewards), np.asarray(behaviour_rewards)
    return {"eval_episodes": len(chosen), "eval_steps": n,
            "policy_mean_reward": float(ar.mean()) if n else 0.0,
            "behaviour_mean_reward": float(br.mean()) if n else 0.0,
            "policy_minus_behaviour": float(ar.mean() - br.mean()) if n else 0.0,
            "policy_action_share": (counts / max(1, counts.sum())).round(4).tolist(),
            "policy_position_changes_per_100": round(100.0 * changes / max(1, n), 3)}
