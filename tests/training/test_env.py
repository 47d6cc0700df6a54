"""training/env.py: transitions of spec section 0, the reward r~ of 4.0, episodes, observations."""

from __future__ import annotations

import numpy as np
import pytest

from himari.decision import layout as L
from himari.decision.features import PositionState, feature_vector, fit_stats, feature_matrix
from himari.training.dataset import random_dataset
from himari.training.env import (EnvConfig, TradingEnv, episode_runs, ewma_sigma,
                                 rewards_for_actions, simulate, transition)

SELL, HOLD, BUY = 0, 1, 2


def test_transitions_never_reverse_in_one_step() -> None:
    assert [transition(0, a) for a in (SELL, HOLD, BUY)] == [-1, 0, 1]
    assert [transition(1, a) for a in (SELL, HOLD, BUY)] == [0, 1, 1]  # SELL on long closes
    assert [transition(-1, a) for a in (SELL, HOLD, BUY)] == [-1, -1, 0]  # BUY on short closes


def test_reward_formula_by_hand() -> None:
    close = np.array([100.0, 101.0, 99.0, 99.0, 100.0])
    atr = np.full(4, 2.0)
    sigma = np.array([0.01, 0.02, 0.01, 0.05])
    cfg = EnvConfig()  # fee 1 bp + slippage 1 bp
    pos, rew, state = simulate(np.array([BUY, SELL, SELL, HOLD]), close, atr, sigma, cfg)
    assert pos.tolist() == [1, 0, -1, -1]
    fee = 2e-4
    expect = [(1 * 0.01 - fee) / 0.01,                 # open long at 100, to 101
              (0.0 - fee) / 0.02,                      # SELL closes the long
              (-1 * 0.0 - fee) / 0.01,                 # open short at 99, flat bar
              (-1 * (100 - 99) / 99) / 0.05]           # hold the short into a rise
    assert rew == pytest.approx(expect, rel=1e-12)
    # state seen before each action: position, uPnL / ATR, bars in position, drawdown buffer
    assert state[:, 0].tolist() == [0, 1, 0, -1]
    assert state[1, 1] == pytest.approx((101 - 100) / 2.0) and state[1, 2] == 1
    assert state[3, 1] == pytest.approx(0.0) and state[3, 2] == 1
    equity = np.cumsum([0.01 - fee, -fee, -fee])
    dd = equity.max() - equity[-1]
    assert state[3, 3] == pytest.approx(1 - dd / 0.05)


def test_ewma_sigma_uses_only_past_returns_and_restarts_per_segment() -> None:
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 400)))
    seg = np.r_[np.zeros(200), np.ones(200)].astype(np.int32)
    s = ewma_sigma(close, seg, 100, 5e-5)
    changed = close.copy()
    changed[300:] *= 1.5  # a future jump does not change sigma before it
    assert np.array_equal(ewma_sigma(changed, seg, 100, 5e-5)[:300], s[:300])
    assert s[0] == 5e-5 and s[200] == 5e-5  # no return yet in a new segment
    r = np.diff(close[:200]) / close[:199]
    w = (1 - 2 / 101) ** np.arange(198, -1, -1)
    assert s[199] == pytest.approx(np.sqrt((w * r ** 2).sum() / w.sum()), rel=1e-10)
    assert s[150] == pytest.approx(1e-3, rel=0.3)


def _env(seed: int = 0, **kw: object) -> tuple[TradingEnv, object]:
    ds = random_dataset(1200, 2, seed=seed)
    stats = fit_stats(feature_matrix(ds, ds.ready))
    return TradingEnv(ds, stats, EnvConfig(episode_bars=100, **kw), seed=seed), ds


def test_env_steps_match_the_vectorised_rewards_and_observations() -> None:
    env, ds = _env()
    obs, info = env.reset(options={"start": 700})
    rng = np.random.default_rng(3)
    acts, rews, obs_list = [], [], [obs]
    done = False
    while not done:
        a = int(rng.integers(3))
        obs, r, term, trunc, info = env.step(a)
        acts.append(a)
        rews.append(r)
        obs_list.append(obs)
        done = term or trunc
    assert len(acts) == 100 and trunc and not term
    assert np.array_equal(rews, rewards_for_actions(ds, 700, np.array(acts)))
    # each observation is the normalised feature_vector of that bar with the path's position state
    sigma = ewma_sigma(ds.close, ds.segment, 100, 5e-5)
    _, _, state = simulate(np.array(acts), ds.close[700:801], ds.atr14[700:800], sigma[700:800])
    for k in (0, 1, 37, 99):
        x = feature_vector(ds.tactical[700 + k], ds.strategic[700 + k], L.NEUTRAL, None,
                           PositionState(*state[k]), int(ds.ts_ns[700 + k]))
        assert np.array_equal(obs_list[k], env.stats.normalize(x)), k
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)


def test_episodes_stay_inside_segments_and_ready_runs() -> None:
    env, ds = _env(seed=1)
    assert episode_runs(ds) == [(10, 600), (610, 1200)]
    for _ in range(30):
        _, info = env.reset()
        start, steps = info["bar"], 0
        done = False
        while not done:
            _, _, term, trunc, info = env.step(HOLD)
            steps += 1
            done = term or trunc
        end = info["bar"] + 1  # the bar whose close ended the last step
        assert ds.segment[start] == ds.segment[end] and ds.ready[start:end + 1].all()
        assert steps <= 100


def test_reset_is_reproducible_from_the_seed() -> None:
    a, _ = _env(seed=2)
    b, _ = _env(seed=2)
    starts_a = [a.reset(seed=s)[1]["bar"] for s in range(5)]
    starts_b = [b.reset(seed=s)[1]["bar"] for s in range(5)]
    assert starts_a == starts_b and len(set(starts_a)) > 1


def test_bad_action_and_config_are_refused() -> None:
    env, _ = _env()
    env.reset()
    with pytest.raises(ValueError, match="action 3"):
        env.step(3)
    with pytest.raises(ValueError, match="fee_bps"):
        EnvConfig(fee_bps=-1.0)
    with pytest.raises(ValueError, match="actions must be"):
        simulate(np.array([5]), np.ones(2), np.ones(1), np.ones(1))


def test_gymnasium_checker_accepts_the_env() -> None:
    from gymnasium.utils.env_checker import check_env

    env, _ = _env()
    check_env(env, skip_render_check=True)
