"""Training CQL (D3) and discrete SAC (D6) with d3rlpy: transitions, learning a plain signal,
reproducibility from the seed, the checkpoint's statistics and metrics."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("d3rlpy")

from himari.decision.checkpoint import load_checkpoint  # noqa: E402
from himari.decision.features import FeatureStats, feature_matrix  # noqa: E402
from himari.decision.layout import FEATURE_DIM  # noqa: E402
from himari.decision.nets import cql as run_cql  # noqa: E402
from himari.decision.nets import sac as run_sac  # noqa: E402
from himari.training import cql, sac  # noqa: E402
from himari.training.d3rlpy_common import OfflineArrays, make_transitions  # noqa: E402

TRAINERS = {"cql": (cql, run_cql), "sac": (sac, run_sac)}


def test_transitions_follow_episodes_and_drop_timeouts() -> None:
    obs = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, FEATURE_DIM), np.float32)
    arrays = OfflineArrays(obs=obs, actions=np.array([0, 1, 2, 0, 1, 2]),
                           rewards=np.arange(6.0), terminals=np.array([0, 0, 0, 1, 0, 0], bool),
                           timeouts=np.array([0, 0, 1, 0, 0, 1], bool))
    t = make_transitions(arrays)
    # rows 2 and 5 end by timeout (no successor): dropped; row 3 is terminal: s' = s, done
    assert t.obs[:, 0].tolist() == [0, 1, 3, 4]
    assert t.next_obs[:, 0].tolist() == [1, 2, 3, 5]
    assert t.terminals[:, 0].tolist() == [0, 0, 1, 0]
    assert t.actions[:, 0].tolist() == [0, 1, 0, 1]
    assert t.rewards[:, 0].tolist() == [0, 1, 3, 4]


def _bandit(seed: int, n: int = 3000) -> OfflineArrays:
    """One-step episodes: BUY pays sign(obs[0]), SELL pays -sign(obs[0]), HOLD 0; random
    actions; 8 more slots of noise (more would let 3000 rows be memorised, and CQL's penalty
    then learns which random action each row took instead of the signal)."""
    rng = np.random.default_rng(seed)
    obs = np.zeros((n, FEATURE_DIM), np.float32)
    obs[:, :9] = rng.standard_normal((n, 9))
    actions = rng.integers(0, 3, n)
    s = np.sign(obs[:, 0])
    rewards = np.where(actions == 2, s, np.where(actions == 0, -s, 0.0))
    return OfflineArrays(obs=obs, actions=actions, rewards=rewards,
                         terminals=np.ones(n, bool), timeouts=np.zeros(n, bool))


@pytest.mark.parametrize("kind", ["cql", "sac"])
def test_trainer_learns_a_plain_signal_and_the_exported_agent_acts_on_it(
        kind: str, tmp_path: Path) -> None:
    trainer, runtime = TRAINERS[kind]
    arrays = _bandit(1)
    ident = np.ones(FEATURE_DIM), np.zeros(FEATURE_DIM)
    _, tensors, info = trainer.fit(arrays, *ident, seed=0, steps=600, batch_size=64)
    from himari.decision.checkpoint import save_checkpoint

    save_checkpoint(tmp_path, kind, tensors, {"agent": kind, "arch": trainer.arch_meta()})
    agent = runtime.load(tmp_path, kind)
    test = _bandit(2, 400).obs
    from himari.decision.agent import AgentInput

    right = 0
    for x in test:
        inp = AgentInput(ts_ns=0, instrument_id="T", x=x, tactical=np.zeros((60, 7), np.float32),
                         strategic=None, regime=2, target_sharpe=2.0, position=0)
        vote = agent.act(inp)
        right += int(np.argmax(vote.probs) == (2 if x[0] > 0 else 0))
    assert right / len(test) > 0.9, info["final_losses"]


def _training_data(seed: int = 0) -> types.SimpleNamespace:
    pytest.importorskip("himari.training.offline")
    from himari.training.dataset import random_dataset

    ds = random_dataset(2500, 2, seed)
    return types.SimpleNamespace(dataset=ds, regime=np.full(len(ds), 2, np.int64))


@pytest.mark.parametrize("kind", ["cql", "sac"])
def test_quick_training_is_reproducible_from_the_seed(kind: str, tmp_path: Path) -> None:
    trainer, _ = TRAINERS[kind]
    data = _training_data()
    m1 = trainer.train(data, tmp_path / "a", seed=7, quick=True)
    m2 = trainer.train(data, tmp_path / "b", seed=7, quick=True)
    m3 = trainer.train(data, tmp_path / "c", seed=8, quick=True)
    t1, meta1 = load_checkpoint(tmp_path / "a", kind, kind)
    t2, meta2 = load_checkpoint(tmp_path / "b", kind, kind)
    t3, _ = load_checkpoint(tmp_path / "c", kind, kind)
    assert t1.keys() == t2.keys()
    for k in t1:
        assert np.array_equal(t1[k], t2[k]), k
    assert not np.array_equal(t1["w1"], t3["w1"])  # the seed matters
    drop = ("train_seconds",)
    assert {k: v for k, v in m1.items() if k not in drop} == \
        {k: v for k, v in m2.items() if k not in drop}
    assert meta1["metrics"] == m1 and meta1["seed"] == 7 and meta1["quick"] is True
    for key in ("policy_mean_reward", "behaviour_mean_reward", "eval_steps"):
        assert np.isfinite(m1[key]), key
    assert m1["eval_steps"] > 0
    assert any(k.startswith("final_") and "loss" in k for k in m1)
    del m3


def test_checkpoint_normalises_exactly_like_the_training_observations(tmp_path: Path) -> None:
    data = _training_data(3)
    cql.train(data, tmp_path, seed=1, quick=True)
    tensors, _ = load_checkpoint(tmp_path, "cql", "cql")
    stats = FeatureStats.from_tensors(tensors)
    agent = run_cql.load(tmp_path, "cql")
    x = feature_matrix(data.dataset, np.arange(100, 400))
    x[0, 5] = 1e9  # extreme values are clipped the same way
    x[1, 200] = -1e9
    np.testing.assert_allclose(agent._net.normalise(x), stats.normalize(x), rtol=1e-5, atol=1e-5)
