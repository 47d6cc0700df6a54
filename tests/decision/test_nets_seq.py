"""Sequence agents at run time: PPO-LSTM (D5) and the critic-guided decision transformer (D2).

The numpy/Numba forward passes are checked against the torch modules they were trained as
(sb3-contrib's recurrent policy, d3rlpy's discrete decision transformer, the Q ensemble), step by
step over random sequences; the G34 masking rule and the G39 return conditioning exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from himari.decision.agent import AgentInput
from himari.decision.checkpoint import (DEFAULT_DIR, CheckpointError, checkpoint_paths,
                                        save_checkpoint)
from himari.decision.layout import BUY, HOLD, SELL
from himari.decision.nets import cgdt as ncgdt
from himari.decision.nets import ppo_lstm as nppo

torch = pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")

TOL = 1e-5


def _inp(x: np.ndarray, inst: str = "A", ts: int = 0, sharpe: float = 2.0) -> AgentInput:
    return AgentInput(ts_ns=ts, instrument_id=inst, x=np.asarray(x, np.float32),
                      tactical=np.zeros((60, 7), np.float32), strategic=None, regime=2,
                      target_sharpe=sharpe, position=0)


class _ToyEnv(gym.Env):
    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10, 10, (257,), np.float32)
        self.action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        return np.zeros(257, np.float32), {}

    def step(self, a):
        return np.zeros(257, np.float32), 0.0, False, False, {}


# -- PPO-LSTM -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sb3_policy():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from himari.training.ppo_lstm import make_model

    torch.manual_seed(0)
    model = make_model(DummyVecEnv([_ToyEnv]), seed=0)
    with torch.no_grad():  # move off the orthogonal init so every weight matters
        for p in model.policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.policy


@pytest.fixture(scope="module")
def ppo_agent(sb3_policy):
    from himari.training.ppo_lstm import export_tensors

    t = export_tensors(sb3_policy)
    t["obs_mean"] = np.linspace(-1, 1, 257).astype(np.float32)
    t["obs_std"] = np.linspace(0.5, 2, 257).astype(np.float32)
    return nppo.PPOLSTMAgent(t, {"obs_clip": 10.0}), t


def _sb3_probs(policy, xs: np.ndarray, mean, std, starts) -> np.ndarray:
    hid = policy.lstm_actor.hidden_size
    states = (torch.zeros(1, 1, hid), torch.zeros(1, 1, hid))
    out = []
    for x, start in zip(xs, starts):
        obs = torch.from_numpy(np.clip((x - mean) / std, -10, 10).astype(np.float32))[None]
        with torch.no_grad():
            dist, states = policy.get_distribution(obs, states, torch.tensor([float(start)]))
        out.append(dist.distribution.probs[0].numpy())
    return np.array(out)


def test_ppo_lstm_numpy_step_equals_sb3_policy_over_a_sequence_with_a_session_reset(
        sb3_policy, ppo_agent):
    agent, t = ppo_agent
    rng = np.random.default_rng(1)
    xs = (3 * rng.standard_normal((40, 257))).astype(np.float32)
    xs[5, 7] = 1e6  # clipped to +-10 after z-scoring, as in training
    starts = np.zeros(40)
    starts[0] = starts[25] = 1  # sb3 zeroes the LSTM state at an episode start
    ref = _sb3_probs(sb3_policy, xs, t["obs_mean"], t["obs_std"], starts)
    agent.reset()
    got = []
    for i, x in enumerate(xs):
        if i == 25:
            agent.reset()
        v = agent.act(_inp(x))
        assert math.isclose(sum(v.probs), 1.0, abs_tol=1e-9)
        assert v.confidence == max(v.probs)
        got.append(v.probs)
    np.testing.assert_allclose(np.array(got), ref, atol=TOL)


def test_ppo_lstm_keeps_one_state_per_instrument(ppo_agent):
    agent, _ = ppo_agent
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 10, 257)).astype(np.float32)
    agent.reset()
    alone = [agent.act(_inp(x, "A")).probs for x in a]
    agent.reset()
    mixed = []
    for xa, xb in zip(a, b):
        mixed.append(agent.act(_inp(xa, "A")).probs)
        agent.act(_inp(xb, "B"))
    np.testing.assert_allclose(mixed, alone, atol=1e-12)


def test_ppo_lstm_bad_input_raises_and_leaves_the_state_alone(ppo_agent):
    agent, _ = ppo_agent
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((3, 257)).astype(np.float32)
    agent.reset()
    agent.act(_inp(xs[0]))
    h_before = agent.state("A")[0].copy()
    bad = xs[1].copy()
    bad[100] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        agent.act(_inp(bad))
    with pytest.raises(ValueError, match="shape"):
        agent.act(_inp(np.zeros(256, np.float32)))
    np.testing.assert_array_equal(agent.state("A")[0], h_before)


# -- CGDT ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dt_parts():
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory

    from himari.training import cgdt as tcgdt

    d3rlpy.seed(0)
    cfg = d3rlpy.algos.DiscreteDecisionTransformerConfig(
        context_size=tcgdt.CONTEXT, max_timestep=tcgdt.SESSION_STEPS, num_heads=tcgdt.N_HEADS,
        num_layers=1, encoder_factory=VectorEncoderFactory(hidden_units=[tcgdt.EMBED],
                                                           exclude_last_activation=True),
        position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE)
    algo = cfg.create(device="cpu:0")
    algo.create_impl((257,), 3)
    transformer = algo.impl.modules.transformer
    critic = tcgdt.QEnsemble()
    torch.manual_seed(1)
    with torch.no_grad():  # LayerNorm gains/biases and zero-initialised biases must matter too
        for p in list(transformer.parameters()) + list(critic.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    transformer.eval()
    tensors = tcgdt.export_tensors(transformer, critic)
    tensors["obs_mean"] = np.full(257, 0.25, np.float32)
    tensors["obs_std"] = np.full(257, 1.5, np.float32)
    meta = {"context": tcgdt.CONTEXT, "n_heads": tcgdt.N_HEADS, "n_layers": 1,
            "max_timestep": tcgdt.SESSION_STEPS, "session_steps": 24,
            "bars_per_year": 105120.0, "rtg_scale": 0.5, "obs_clip": 10.0}
    return transformer, critic, tensors, meta


def test_cgdt_numpy_equals_d3rlpy_transformer_and_critic_over_a_trajectory(dt_parts):
    """Window sliding past the context (16) and a session rollover (24 steps) included."""
    transformer, critic, tensors, meta = dt_parts
    agent = ncgdt.CGDTAgent(tensors, meta)
    ctx, session, scale = meta["context"], meta["session_steps"], meta["rtg_scale"]
    rng = np.random.default_rng(4)
    n = 40
    xs = rng.standard_normal((n, 257)).astype(np.float32)
    acts = rng.integers(0, 3, n)
    rews = rng.standard_normal(n)
    sharpe = 1.0
    rtg0 = sharpe * session / math.sqrt(meta["bars_per_year"])
    for t in range(n):
        v = agent.act(_inp(xs[t], sharpe=sharpe))
        s0 = (t // session) * session  # session start
        lo = max(s0, t - ctx + 1)
        rtg = rtg0 - np.concatenate([[0.0], np.cumsum(rews[s0:t])])[lo - s0:]
        obs = (xs[lo:t + 1] - 0.25) / 1.5
        with torch.no_grad():
            probs, _ = transformer(
                torch.from_numpy(obs)[None], torch.from_numpy(acts[lo:t + 1].copy())[None, :, None],
                torch.from_numpy((rtg * scale).astype(np.float32))[None, :, None],
                torch.arange(lo - s0 + 1, t - s0 + 2)[None], torch.zeros(1, t + 1 - lo))
            q = critic.all_actions(torch.from_numpy(obs[-1:]))[:, 0, :].numpy()
        np.testing.assert_allclose(agent.raw_probs(), probs[0, -1].numpy(), atol=TOL)
        q_mean, q_std = agent.q_stats()
        np.testing.assert_allclose(q_mean, q.mean(0), atol=TOL)
        np.testing.assert_allclose(q_std, q.std(0, ddof=1), atol=TOL)
        expect, _ = ncgdt.lcb_mask(agent.raw_probs(), q_mean, q_std)
        assert v.probs == expect
        agent.observe(_inp(xs[t]), int(acts[t]), float(rews[t]))


@pytest.mark.parametrize("probs, mean, std, expect, adm", [
    # every LCB >= HOLD's: unchanged
    ((0.2, 0.3, 0.5), (1.0, 0.0, 2.0), (0.5, 0.5, 0.5), (0.2, 0.3, 0.5), (True, True, True)),
    # BUY's LCB 0.5 - 1.0 = -0.5 < HOLD's 0.0 - 0.25: BUY removed, renormalised
    ((0.2, 0.3, 0.5), (1.0, 0.0, 0.5), (0.5, 0.25, 1.0), (0.4, 0.6, 0.0), (True, True, False)),
    # a higher mean with a wide spread is still removed (the std matters, not the rank)
    ((0.6, 0.3, 0.1), (3.0, 1.0, 1.0), (2.5, 0.0, 0.0), (0.0, 0.75, 0.25), (False, True, True)),
    # equal LCBs are admissible
    ((0.1, 0.1, 0.8), (1.0, 1.0, 2.0), (0.0, 0.0, 1.0), (0.1, 0.1, 0.8), (True, True, True)),
    # HOLD stays admissible with the lowest LCB; both others above it
    ((0.5, 0.0, 0.5), (5.0, -5.0, 5.0), (0.0, 0.0, 0.0), (0.5, 0.0, 0.5), (True, True, True)),
    # everything but HOLD masked and HOLD has no mass: HOLD
    ((0.5, 0.0, 0.5), (-5.0, 5.0, -5.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (False, True, False)),
])
def test_lcb_mask_rule(probs, mean, std, expect, adm):
    got, got_adm = ncgdt.lcb_mask(probs, mean, std)
    assert got_adm == adm
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-15)
    assert math.isclose(sum(got), 1.0, abs_tol=1e-12)


def test_lcb_mask_uses_one_standard_deviation():
    # BUY LCB = 1.0 - k x 1.0; HOLD LCB = 0.5: admissible for k = 0.5, not for k = 1.0 (the spec)
    assert ncgdt.lcb_mask((0.3, 0.3, 0.4), (0.0, 0.5, 1.0), (9.0, 0.0, 1.0))[1][BUY] is False
    assert ncgdt.lcb_mask((0.3, 0.3, 0.4), (0.0, 0.5, 1.0), (9.0, 0.0, 1.0), k=0.5)[1][BUY]
    assert ncgdt.LCB_K == 1.0


def test_cgdt_return_to_go_starts_from_the_target_sharpe_and_subtracts_rewards(dt_parts):
    _, _, tensors, meta = dt_parts
    agent = ncgdt.CGDTAgent(tensors, meta)
    x = np.zeros(257, np.float32)
    rtg0 = 2.5 * 24 / math.sqrt(105120.0)
    assert agent.act(_inp(x, sharpe=2.5)).info["rtg"] == pytest.approx(rtg0, abs=1e-12)
    agent.observe(_inp(x), BUY, 0.7)
    assert agent.act(_inp(x, sharpe=2.5)).info["rtg"] == pytest.approx(rtg0 - 0.7, abs=1e-12)
    agent.observe(_inp(x), SELL, -0.2)
    assert agent.act(_inp(x, sharpe=0.5)).info["rtg"] == pytest.approx(rtg0 - 0.5, abs=1e-12)
    agent.reset()  # a new session starts from the (new) target again
    assert agent.act(_inp(x, sharpe=0.5)).info["rtg"] == pytest.approx(0.5 * 24 / math.sqrt(
        105120.0), abs=1e-12)


def test_cgdt_hold_on_an_open_position_is_recorded_as_its_direction(dt_parts):
    _, _, tensors, meta = dt_parts
    x = np.random.default_rng(8).standard_normal((2, 257)).astype(np.float32)
    out = {}
    for key, position, action in (("hold_long", 3, HOLD), ("buy", 0, BUY), ("hold_flat", 0, HOLD)):
        agent = ncgdt.CGDTAgent(tensors, meta)
        agent.act(_inp(x[0]))
        inp = _inp(x[0])
        inp.position = position
        agent.observe(inp, action, 0.1)
        agent.act(_inp(x[1]))
        out[key] = agent.raw_probs()
    np.testing.assert_array_equal(out["hold_long"], out["buy"])
    assert np.abs(out["hold_flat"] - out["buy"]).max() > 1e-6


def test_cgdt_target_sharpe_changes_the_transformer_output(dt_parts):
    _, _, tensors, meta = dt_parts
    x = np.random.default_rng(5).standard_normal(257).astype(np.float32)
    outs = []
    for sharpe in (0.5, 2.5):
        agent = ncgdt.CGDTAgent(tensors, meta)
        agent.act(_inp(x, sharpe=sharpe))
        outs.append(agent.raw_probs())
    assert np.abs(outs[0] - outs[1]).max() > 1e-6


def test_cgdt_bad_input_raises_and_leaves_the_session_alone(dt_parts):
    _, _, tensors, meta = dt_parts
    agent = ncgdt.CGDTAgent(tensors, meta)
    rng = np.random.default_rng(6)
    xs = rng.standard_normal((3, 257)).astype(np.float32)
    ref = ncgdt.CGDTAgent(tensors, meta)
    for a in (agent, ref):
        a.act(_inp(xs[0]))
        a.observe(_inp(xs[0]), HOLD, 0.1)
    bad = xs[1].copy()
    bad[3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        agent.act(_inp(bad))
    with pytest.raises(ValueError, match="target_sharpe"):
        agent.act(_inp(xs[1], sharpe=float("nan")))
    assert agent.act(_inp(xs[2])).probs == ref.act(_inp(xs[2])).probs


def test_checkpoints_round_trip_and_refuse_bad_files(tmp_path: Path, dt_parts, ppo_agent):
    _, _, tensors, meta = dt_parts
    save_checkpoint(tmp_path, "cgdt", tensors, {"agent": "cgdt", "seed": 0, **meta})
    agent = ncgdt.load(tmp_path, "cgdt")
    ref = ncgdt.CGDTAgent(tensors, meta)
    x = np.ones(257, np.float32)
    assert agent.act(_inp(x)).probs == ref.act(_inp(x)).probs

    _, ppo_tensors = ppo_agent
    save_checkpoint(tmp_path, "ppo_lstm", ppo_tensors, {"agent": "ppo_lstm", "seed": 0})
    nppo.load(tmp_path, "ppo_lstm").act(_inp(x))
    with pytest.raises(CheckpointError, match="agent 'ppo_lstm', not 'cgdt'"):
        ncgdt.load(tmp_path, "ppo_lstm")

    broken = dict(tensors)
    del broken["attn.wk"]
    save_checkpoint(tmp_path, "b1", broken, {"agent": "cgdt", **meta})
    with pytest.raises(CheckpointError, match="attn.wk"):
        ncgdt.load(tmp_path, "b1")
    save_checkpoint(tmp_path, "b2", tensors, {"agent": "cgdt", **meta, "n_layers": 2})
    with pytest.raises(CheckpointError, match="n_layers"):
        ncgdt.load(tmp_path, "b2")
    bad_shape = dict(ppo_tensors, **{"pi.b2": np.zeros(4, np.float32)})
    save_checkpoint(tmp_path, "b3", bad_shape, {"agent": "ppo_lstm"})
    with pytest.raises(CheckpointError, match="pi.b2"):
        nppo.load(tmp_path, "b3")
    _, meta_path = checkpoint_paths(tmp_path, "cgdt")
    meta_path.write_text(meta_path.read_text().replace("himari-decision-v1", "old-layout"))
    with pytest.raises(CheckpointError, match="layout_version"):
        ncgdt.load(tmp_path, "cgdt")


@pytest.mark.parametrize("load, name", [(nppo.load, "ppo_lstm"), (ncgdt.load, "cgdt")])
def test_shipped_checkpoint_loads_and_decides(load, name):
    weights, meta = checkpoint_paths(DEFAULT_DIR, name)
    if not weights.exists():
        pytest.skip(f"no shipped checkpoint {weights}")
    assert weights.stat().st_size < 1_000_000
    agent = load(DEFAULT_DIR, name)
    rng = np.random.default_rng(7)
    for i in range(5):
        v = agent.act(_inp(rng.standard_normal(257).astype(np.float32), ts=i))
        assert all(math.isfinite(p) and p >= 0 for p in v.probs)
        assert math.isclose(sum(v.probs), 1.0, abs_tol=1e-9)
        agent.observe(_inp(np.zeros(257, np.float32)), HOLD, 0.0)
