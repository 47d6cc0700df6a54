"""Training the sequence agents: `train(data, out_dir, seed, quick)` of PPO-LSTM and CGDT end to
end on small data (the real env of training/env.py for PPO), reproducible from the seed; the
in-sample TD critic learns which action pays; sessions and returns-to-go of the DT data."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from himari.decision.agent import AgentInput
from himari.decision.checkpoint import checkpoint_paths, load_checkpoint
from himari.training.seqdata import OfflineArrays, session_bounds

torch = pytest.importorskip("torch")
pytest.importorskip("d3rlpy")
pytest.importorskip("sb3_contrib")


def _offline(n: int = 1200, seed: int = 0) -> SimpleNamespace:
    """An object shaped like training/offline.py's OfflineData: rewards pay BUY when x[1] > 0."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 257)).astype(np.float32)
    actions = rng.integers(0, 3, n)
    rewards = ((actions - 1) * np.sign(obs[:, 1]) + 0.1 * rng.standard_normal(n)).astype(np.float32)
    starts = np.array([0, 500, 900])
    timeouts = np.zeros(n, np.float32)
    timeouts[np.r_[starts[1:], n] - 1] = 1.0
    stats = SimpleNamespace(mean=np.zeros(257, np.float32), std=np.ones(257, np.float32))
    return SimpleNamespace(observations=obs, actions=actions, rewards=rewards,
                           terminals=np.zeros(n, np.float32), timeouts=timeouts,
                           episode_starts=starts, stats=stats)


class _Data:
    """The parts of training/run.py's TrainingData that the sequence trainers read."""

    def __init__(self) -> None:
        from himari.decision.features import feature_matrix, fit_stats
        from himari.training.dataset import random_dataset

        self.ds = random_dataset(800, 2, seed=0)
        self.stats = fit_stats(feature_matrix(self.ds, self.ds.ready))
        self.meta = {"source": "random_dataset(800, 2, seed=0)"}
        self._offline = _offline()

    def make_env(self, split: str = "train", seed: int | None = None, env=None):
        from himari.training.env import EnvConfig, TradingEnv

        return TradingEnv(self.ds, self.stats, EnvConfig(episode_bars=64), seed=seed)

    def offline(self):
        return self._offline


def _same_checkpoints(a: Path, b: Path, name: str, agent: str) -> dict:
    ta, ma = load_checkpoint(a, name, agent)
    tb, mb = load_checkpoint(b, name, agent)
    assert ta.keys() == tb.keys()
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    return ma


def _decides(agent) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        inp = AgentInput(ts_ns=i, instrument_id="A", x=rng.standard_normal(257).astype(np.float32),
                         tactical=np.zeros((60, 7), np.float32), strategic=None, regime=2,
                         target_sharpe=2.0, position=0)
        v = agent.act(inp)
        assert math.isclose(sum(v.probs), 1.0, abs_tol=1e-9)
        agent.observe(inp, 1, 0.0)


def test_ppo_lstm_trains_on_the_bar_env_reproducibly(tmp_path: Path) -> None:
    from himari.decision.nets.ppo_lstm import load
    from himari.training import ppo_lstm

    data = _Data()
    m1 = ppo_lstm.train(data, tmp_path / "a", seed=5, quick=True)
    ppo_lstm.train(data, tmp_path / "b", seed=5, quick=True)
    meta = _same_checkpoints(tmp_path / "a", tmp_path / "b", "ppo_lstm", "ppo_lstm")
    assert m1["timesteps"] >= ppo_lstm.QUICK_STEPS
    assert meta["seed"] == 5 and meta["lstm_hidden"] == ppo_lstm.LSTM_HIDDEN
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "a", "ppo_lstm", "ppo_lstm")[0][
        "obs_mean"], data.stats.mean)
    _decides(load(tmp_path / "a"))
    # another seed, other weights
    ppo_lstm.train(data, tmp_path / "c", seed=6, quick=True)
    wa = load_checkpoint(tmp_path / "a", "ppo_lstm", "ppo_lstm")[0]["pi.w2"]
    wc = load_checkpoint(tmp_path / "c", "ppo_lstm", "ppo_lstm")[0]["pi.w2"]
    assert not np.array_equal(wa, wc)


def test_cgdt_trains_on_offline_trajectories_reproducibly(tmp_path: Path) -> None:
    from himari.decision.nets.cgdt import load
    from himari.training import cgdt

    data = SimpleNamespace(offline=_offline, meta={"source": "fixture"})
    m1 = cgdt.train(data, tmp_path / "a", seed=3, quick=True)
    cgdt.train(data, tmp_path / "b", seed=3, quick=True)
    meta = _same_checkpoints(tmp_path / "a", tmp_path / "b", "cgdt", "cgdt")
    assert m1["transitions"] == 1200 and math.isfinite(m1["critic_td_loss"])
    assert meta["context"] == cgdt.CONTEXT and meta["n_layers"] == 1
    assert meta["data"]["offline_episodes"] == 3
    weights, _ = checkpoint_paths(tmp_path / "a", "cgdt")
    assert weights.stat().st_size < 1_000_000
    _decides(load(tmp_path / "a"))


def test_in_sample_td_critic_learns_which_action_pays() -> None:
    from himari.training.cgdt import train_critic
    from himari.training.seqdata import offline_arrays

    arr, _ = offline_arrays(SimpleNamespace(offline=lambda: _offline(3000, 1), meta={}), 0)
    q, metrics = train_critic(arr, seed=0, steps=1000)
    x = np.zeros((2, 257), np.float32)
    x[0, 1], x[1, 1] = 2.0, -2.0
    with torch.no_grad():
        qa = q.all_actions(torch.from_numpy(x)).mean(0).numpy()  # (2 states, 3 actions)
    assert qa[0, 2] - qa[0, 0] > 0.25  # x[1] > 0: BUY pays +1, SELL -1 (true gap 2)
    assert qa[1, 0] - qa[1, 2] > 0.25  # x[1] < 0: the reverse
    assert math.isfinite(metrics["critic_td_loss"])


def test_sessions_cut_episodes_and_returns_to_go_restart_per_session() -> None:
    ends = np.array([5, 12])
    terminals = np.zeros(12, bool)
    terminals[11] = True
    assert list(session_bounds(ends, terminals, 3)) == [
        (0, 3, False), (3, 5, False), (5, 8, False), (8, 11, False), (11, 12, True)]
    arr = OfflineArrays(obs=np.zeros((12, 257), np.float32), actions=np.ones(12, np.int64),
                        rewards=np.arange(12, dtype=np.float32), terminals=terminals,
                        episode_ends=ends, mean=np.zeros(257), std=np.ones(257))
    np.testing.assert_array_equal(arr.session_returns_to_go(3),
                                  [3, 3, 2, 7, 4, 18, 13, 7, 27, 19, 10, 11])
    # every step but the non-terminal episode ends has a successor
    np.testing.assert_array_equal(arr.transition_index(), [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11])
    with pytest.raises(ValueError, match="episode_ends"):
        OfflineArrays(obs=np.zeros((12, 257), np.float32), actions=np.ones(12),
                      rewards=np.zeros(12), terminals=terminals, episode_ends=np.array([5]),
                      mean=np.zeros(257), std=np.ones(257))
