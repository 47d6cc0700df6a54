"""CQL (D3) and discrete SAC (D6) at run time: numpy/Numba forward vs the torch modules, the act
rules of the spec, input robustness, checkpoint checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from himari.decision.agent import AgentInput
from himari.decision.checkpoint import DEFAULT_DIR, CheckpointError, save_checkpoint
from himari.decision.layout import FEATURE_DIM
from himari.decision.nets import cql, sac
from himari.decision.nets.mlp import affine_from_stats, normalise

H1, H2 = 8, 6


def _inp(x: np.ndarray) -> AgentInput:
    return AgentInput(ts_ns=0, instrument_id="T", x=x.astype(np.float32),
                      tactical=np.zeros((60, 7), np.float32), strategic=None, regime=2,
                      target_sharpe=2.0, position=0)


def _hand_tensors(n_members: int, b3: np.ndarray) -> dict[str, np.ndarray]:
    """Networks whose output is b3 + [0, 0, relu(relu(z0))] (an exact, hand-checkable map)."""
    w1 = np.zeros((n_members, H1, FEATURE_DIM), np.float32)
    w1[:, 0, 0] = 1.0
    w2 = np.zeros((n_members, H2, H1), np.float32)
    w2[:, 0, 0] = 1.0
    w3 = np.zeros((n_members, 3, H2), np.float32)
    w3[:, 2, 0] = 1.0
    return {"w1": w1, "b1": np.zeros((n_members, H1), np.float32),
            "ln_g": np.ones((n_members, H1), np.float32),
            "ln_b": np.zeros((n_members, H1), np.float32), "w2": w2,
            "b2": np.zeros((n_members, H2), np.float32), "w3": w3,
            "b3": np.asarray(b3, np.float32).reshape(n_members, 3),
            "feat_scale": np.ones(FEATURE_DIM), "feat_offset": np.zeros(FEATURE_DIM)}


def _arch(n_members: int, layer_norm: bool = False, z_clip: float = 10.0) -> dict:
    return {"n_members": n_members, "in_dim": FEATURE_DIM, "hidden": [H1, H2], "out_dim": 3,
            "layer_norm": layer_norm, "z_clip": z_clip}


def _save(tmp: Path, agent: str, tensors: dict, arch: dict) -> None:
    save_checkpoint(tmp, agent, tensors, {"agent": agent, "seed": 0, "data": {}, "metrics": {},
                                          "arch": arch})


def test_cql_takes_min_over_critics_and_softmax_of_q(tmp_path: Path) -> None:
    # critic 0 says Q = [1, 2, 3], critic 1 says [3, 0, 2]: the min is [1, 0, 2] -> BUY
    _save(tmp_path, "cql", _hand_tensors(2, np.array([[1, 2, 3], [3, 0, 2]])), _arch(2))
    vote = cql.load(tmp_path, "cql").act(_inp(np.zeros(FEATURE_DIM)))
    e = np.exp([1.0, 0.0, 2.0])
    assert vote.probs == pytest.approx(tuple(e / e.sum()), abs=1e-12)
    assert vote.confidence == pytest.approx(e[2] / e.sum(), abs=1e-12)
    assert vote.info["action"] == "BUY"
    assert vote.info["q"] == pytest.approx([1.0, 0.0, 2.0])


def test_normalisation_and_clip_are_applied_before_the_network(tmp_path: Path) -> None:
    t = _hand_tensors(1, np.zeros(3))
    t["feat_scale"][0], t["feat_offset"][0] = 2.0, -1.0
    _save(tmp_path, "sac", t, _arch(1, z_clip=4.0))
    agent = sac.load(tmp_path, "sac")
    x = np.zeros(FEATURE_DIM)
    x[0] = 2.0  # z0 = 2 * 2 - 1 = 3 -> logits [0, 0, 3]
    e = np.exp([0.0, 0.0, 3.0])
    assert agent.act(_inp(x)).probs == pytest.approx(tuple(e / e.sum()), abs=1e-9)
    x[0] = 1e6  # clipped at z = 4
    e = np.exp([0.0, 0.0, 4.0])
    assert agent.act(_inp(x)).probs == pytest.approx(tuple(e / e.sum()), abs=1e-9)
    x[0] = -1e6  # z = -4 -> ReLU -> logits all 0
    assert agent.act(_inp(x)).probs == pytest.approx((1 / 3, 1 / 3, 1 / 3), abs=1e-12)


def test_affine_from_stats_is_the_z_score() -> None:
    mean, std = np.arange(5.0), np.array([1.0, 2.0, 4.0, 1.0, 0.5])
    scale, offset = affine_from_stats(mean, std)
    x = np.array([3.0, -1.0, 10.0, 0.5, -0.25])
    np.testing.assert_allclose(normalise(x, scale, offset, 100.0), (x - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(normalise(x, scale, offset, 2.0),
                               np.clip((x - mean) / std, -2, 2), rtol=1e-6)


def test_load_refuses_misshaped_or_foreign_checkpoints(tmp_path: Path) -> None:
    t = _hand_tensors(2, np.zeros((2, 3)))
    t["w2"] = t["w2"][:, :, :-1]
    _save(tmp_path, "cql", t, _arch(2))
    with pytest.raises(CheckpointError, match="'w2'"):
        cql.load(tmp_path, "cql")
    _save(tmp_path, "sac", _hand_tensors(1, np.zeros(3)), _arch(1))
    with pytest.raises(CheckpointError, match="agent 'sac', not 'cql'"):
        cql.load(tmp_path, "sac")
    bad = _hand_tensors(1, np.zeros(3))
    bad["b3"][0, 1] = np.nan
    _save(tmp_path, "sac", bad, _arch(1))
    with pytest.raises(CheckpointError, match="not finite"):
        sac.load(tmp_path, "sac")
    _save(tmp_path, "sac", _hand_tensors(1, np.zeros(3)), {"n_members": 1})
    with pytest.raises(CheckpointError, match="malformed 'arch'"):
        sac.load(tmp_path, "sac")


def test_act_rejects_non_finite_and_wrong_shape(tmp_path: Path) -> None:
    _save(tmp_path, "cql", _hand_tensors(2, np.zeros((2, 3))), _arch(2))
    agent = cql.load(tmp_path, "cql")
    x = np.zeros(FEATURE_DIM)
    x[17] = np.inf
    with pytest.raises(ValueError, match="index 17"):
        agent.act(_inp(x))
    x[17], x[200] = 0.0, np.nan  # the kernel is compiled without no-NaN assumptions
    with pytest.raises(ValueError, match="index 200"):
        agent.act(_inp(x))
    with pytest.raises(ValueError, match=r"shape \(256,\)"):
        agent.act(_inp(np.zeros(256)))


# -- against the torch modules d3rlpy trains (the train extra; skipped without it) --------------


def _trained(module, seed: int):
    """A d3rlpy algo after a few updates on random data (LayerNorm/bias no longer trivial)."""
    from himari.training.d3rlpy_common import OfflineArrays, make_transitions, run_updates

    rng = np.random.default_rng(seed)
    n = 600
    x = rng.standard_normal((n, FEATURE_DIM)).astype(np.float32) * 3 + 1
    term = np.zeros(n, bool)
    term[-1] = True
    scale, offset = 1 / (1 + rng.random(FEATURE_DIM)), rng.standard_normal(FEATURE_DIM)
    arrays = OfflineArrays(obs=normalise(x, scale, offset, 10.0), actions=rng.integers(0, 3, n),
                           rewards=rng.standard_normal(n),
                           terminals=term, timeouts=np.zeros(n, bool))
    algo = module.build_algo(seed, batch_size=32)
    run_updates(algo, make_transitions(arrays), 30, 32, rng)
    return algo, scale, offset


def test_cql_numpy_forward_equals_torch_critics(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("d3rlpy")
    from himari.training import cql as train_cql

    algo, scale, offset = _trained(train_cql, 3)
    _save(tmp_path, "cql", train_cql.export_tensors(algo, scale, offset), train_cql.arch_meta())
    agent = cql.load(tmp_path, "cql")
    rng = np.random.default_rng(11)
    for _ in range(40):
        x = (rng.standard_normal(FEATURE_DIM) * 5).astype(np.float32)
        z = torch.from_numpy(normalise(x, scale, offset, 10.0)[None, :])
        with torch.no_grad():
            ref = np.stack([q(z).q_value.numpy()[0] for q in algo.impl.modules.q_funcs])
        np.testing.assert_allclose(agent.q_values(x), ref, rtol=1e-5, atol=1e-5)
        vote = agent.act(_inp(x))
        qmin = ref.min(axis=0)
        e = np.exp(qmin - qmin.max())
        np.testing.assert_allclose(vote.probs, e / e.sum(), atol=1e-5)
        assert vote.confidence == pytest.approx(max(vote.probs))


def test_sac_numpy_forward_equals_torch_actor(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("d3rlpy")
    from himari.training import sac as train_sac

    algo, scale, offset = _trained(train_sac, 4)
    _save(tmp_path, "sac", train_sac.export_tensors(algo, scale, offset), train_sac.arch_meta())
    agent = sac.load(tmp_path, "sac")
    rng = np.random.default_rng(12)
    for _ in range(40):
        x = (rng.standard_normal(FEATURE_DIM) * 5).astype(np.float32)
        z = torch.from_numpy(normalise(x, scale, offset, 10.0)[None, :])
        with torch.no_grad():
            ref = algo.impl.modules.policy(z).probs.numpy()[0]
        vote = agent.act(_inp(x))
        np.testing.assert_allclose(vote.probs, ref, atol=1e-5)
        assert sum(vote.probs) == pytest.approx(1.0, abs=1e-12)
        assert vote.info["entropy"] == pytest.approx(-(ref * np.log(ref)).sum(), abs=1e-4)


@pytest.mark.parametrize("kind", ["cql", "sac"])
def test_shipped_checkpoint_gives_finite_normalised_votes(kind: str) -> None:
    module = {"cql": cql, "sac": sac}[kind]
    if not (DEFAULT_DIR / f"{kind}.safetensors").exists():
        pytest.skip(f"no shipped {kind} checkpoint in {DEFAULT_DIR}")
    agent = module.load(DEFAULT_DIR, kind)
    rng = np.random.default_rng(5)
    for scale in (0.0, 1.0, 1e3, 1e30):
        vote = agent.act(_inp(rng.standard_normal(FEATURE_DIM) * scale))
        assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in vote.probs)
        assert sum(vote.probs) == pytest.approx(1.0, abs=1e-9)
        assert vote.confidence == pytest.approx(max(vote.probs), abs=1e-12)
