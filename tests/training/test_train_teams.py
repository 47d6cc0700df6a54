"""Strategic PPO and tactical MAPPO trainers: reproducible from the seed, learn an obvious toy
problem, write checkpoints the run-time teams load, and follow the spec's formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from himari.decision.nets import strategic as run_strategic
from himari.decision.nets import tactical as run_tactical
from himari.training import strategic as S
from himari.training import tactical as T
from himari.training.dataset import random_dataset

torch.set_num_threads(1)


def _toy_strategic(n: int = 2000, seed: int = 0) -> S.StrategicArrays:
    """The 30-minute return's sign is the sign of MLMI's first input; everything else is noise."""
    rng = np.random.default_rng(seed)
    m, w, r = rng.normal(0, 1, (n, 10)), rng.normal(0, 1, (n, 10)), rng.normal(0, 1, (n, 9))
    for x in (m, w, r):
        x[:, -6:] = 0.0
    fwd = 0.004 * np.sign(m[:, 0]) + rng.normal(0, 0.001, n)
    return S.StrategicArrays((m, w, r), rng.normal(0, 1, (n, 13)), np.ones(n), fwd,
                             np.zeros(n), np.zeros(n))


def test_strategic_learns_obvious_toy_problem():
    cfg = S.StrategicConfig(iterations=10, rollout=512, batch=128)
    _, _, _, met = S.train_arrays(_toy_strategic(), 0, cfg)
    before, after = met["before"]["mlmi_greedy_reward"], met["after"]["mlmi_greedy_reward"]
    # best possible ~ tanh((0.004 - 0.0004) / 0.0041) = 0.70; random init is far below
    assert after > before + 0.2
    assert after > 0.5
    assert met["after"]["ensemble_hit_rate"] > 0.8
    assert all(t > 0.05 for t in met["tau"])


def _files(d: Path, name: str) -> dict[str, np.ndarray]:
    return load_file(str(d / f"{name}.safetensors"))


def test_strategic_quick_training_is_reproducible_and_loadable(tmp_path: Path):
    ds = random_dataset(4000, 2, seed=3)
    m1 = S.train(ds, tmp_path / "a", seed=7, quick=True)
    S.train(ds, tmp_path / "b", seed=7, quick=True)
    S.train(ds, tmp_path / "c", seed=8, quick=True)
    a, b, c = (_files(tmp_path / k, "strategic_team") for k in "abc")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    team = run_strategic.load(tmp_path / "a")
    assert team.meta["seed"] == 7 and team.meta["data"]["decision_points"] > 0
    assert team.meta["metrics"]["decision_points"] == m1["decision_points"]
    assert set(team.meta["feature_stats"]) == {"mlmi", "nwrqk", "regime"}
    p, w = team.probs(np.zeros(10), np.zeros(10), np.zeros(9), 1.0)
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1.0) and w.sum() == pytest.approx(1.0)


def test_strategic_checkpoint_matches_torch_after_training(tmp_path: Path):
    ds = random_dataset(3000, 1, seed=4)
    S.train(ds, tmp_path, seed=1, quick=True)
    tensors = _files(tmp_path, "strategic_team")
    from himari.training.torch_nets import strategic_from_tensors

    net = strategic_from_tensors(tensors, [32, 32]).eval()
    team = run_strategic.load(tmp_path)
    arr = S.decision_arrays(ds)
    for j in range(0, len(arr), max(1, len(arr) // 10)):
        xs = [x[j] for x in arr.inputs]
        vol = float(arr.volatility_30[j])
        got, _ = team.probs(*xs, vol)
        zs = [torch.from_numpy(((np.asarray(x, np.float64) - tensors[f"{a}.norm_mean"])
                                / tensors[f"{a}.norm_std"]).astype(np.float32))[None]
              for x, a in zip(xs, ("mlmi", "nwrqk", "regime"))]
        with torch.no_grad():
            ref = np.stack([torch.softmax(z, -1)[0].numpy()
                            for z in net(zs, torch.tensor([vol]))])
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_reward_alignment_follows_spec_table():
    a = np.array([2, 1, 0, 2, 1, 0, 2, 1, 0])
    d = np.array([1, 1, 1, -1, -1, -1, 0, 0, 0])
    np.testing.assert_allclose(S.alignment(a, d), [1, 0.5, 0, 0, 0.5, 1, 0.5, 1, 0.5])
    cfg = S.StrategicConfig(fee=0.0)
    r = S.rewards(np.array([[2, 1, 0]]), np.array([0.01]), 0.01, np.array([0.8]),
                  np.array([1.0]), cfg)
    np.testing.assert_allclose(r[0], [np.tanh(1.0) + 0.2 * 0.8, 0.0 + 0.2 * 0.4,
                                      -np.tanh(1.0) + 0.0], atol=1e-12)


# --- tactical -------------------------------------------------------------------------------

def _toy_tactical(n: int = 3000):
    """Next bar's return follows the sign of the mean of column 5 (momentum) over the last 8
    rows of the tactical matrix."""
    ds = random_dataset(n, 1, seed=0)
    rng = np.random.default_rng(1)
    sig = np.asarray(ds.tactical[np.arange(len(ds))])[:, -8:, 5].mean(1)
    steps = 1 + 0.003 * np.sign(sig[:-1]) + rng.normal(0, 5e-4, n - 1)
    ds.close[:] = 100.0 * np.concatenate([[1.0], np.cumprod(steps)])
    return ds


def test_tactical_learns_obvious_toy_problem():
    cfg = T.TacticalConfig(channels=(8, 8), fc=32, head=16, iterations=10, days_per_iteration=3,
                           actor_lr=1e-3, batch=128)
    _, met = T.train_dataset(_toy_tactical(), 0, cfg)
    before, after = met["before"]["momentum_greedy_reward"], met["after"]["momentum_greedy_reward"]
    assert after > before + 0.3  # per step, in units of sigma; perfect is ~1
    assert met["after"]["entry_greedy_reward"] >= met["before"]["entry_greedy_reward"]


def test_tactical_quick_training_is_reproducible_and_loadable(tmp_path: Path):
    ds = random_dataset(2500, 1, seed=5)
    T.train(ds, tmp_path / "a", seed=3, quick=True)
    T.train(ds, tmp_path / "b", seed=3, quick=True)
    a, b = _files(tmp_path / "a", "tactical_team"), _files(tmp_path / "b", "tactical_team")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    team = run_tactical.load(tmp_path / "a")
    assert team.meta["seed"] == 3 and team.meta["sizes"] == team.sizes
    fvg, mom, entry = team.probs(np.asarray(ds.tactical[100]))
    assert all(p.sum() == pytest.approx(1.0) for p in (fvg, mom, entry))


def _p(a: int, c: float) -> np.ndarray:
    """A probability row with argmax a and max c."""
    p = np.full(3, (1 - c) / 2)
    p[a] = c
    return p[None]


@pytest.mark.parametrize("votes,typ,direction,action,score", [
    # TYPE_2 (0.4/0.4/0.2): FVG BUY 0.9, momentum BUY 0.8, entry EXECUTE 0.9 -> 0.36+0.32+0.18
    (((2, 0.9), (2, 0.8), (1, 0.9)), 2, 1, 2, 0.86),
    # same against a bearish synergy: x 0.7 = 0.602 < 0.65 -> HOLD
    (((2, 0.9), (2, 0.8), (1, 0.9)), 2, -1, 1, 0.602),
    # entry WAIT adds to HOLD: S = [0, 0.18, 0.68] -> BUY at 0.68
    (((2, 0.9), (2, 0.8), (0, 0.9)), 2, 0, 2, 0.68),
    # split direction votes: TYPE_1 FVG SELL 0.9 (0.45) vs momentum BUY 0.6 (0.18) -> SELL side
    # gets entry 0.2 x 0.7: 0.59 < 0.65 -> HOLD
    (((0, 0.9), (2, 0.6), (2, 0.7)), 1, 0, 1, 0.59),
    # no synergy (0.33/0.33/0.34): both SELL at 1.0 and AGGRESSIVE 1.0 -> 1.0
    (((0, 1.0), (0, 1.0), (2, 1.0)), 0, 0, 0, 1.0),
])
def test_training_aggregation_follows_spec_2_4(votes, typ, direction, action, score):
    (af, cf), (am, cm), (ae, ce) = votes
    act, sc, _ = T.aggregate(_p(af, cf), _p(am, cm), _p(ae, ce), np.array([typ]),
                             np.array([direction]))
    assert act[0] == action
    assert sc[0] == pytest.approx(score)


def test_gae_matches_the_recursion():
    rng = np.random.default_rng(0)
    r, v, v_last = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=3)
    adv = T._gae(r, v, v_last, 0.99, 0.95)
    nxt = np.concatenate([v[1:], v_last[None]])
    delta = r + 0.99 * nxt - v
    ref = np.array([sum((0.99 * 0.95) ** (k - t) * delta[k] for k in range(t, 5))
                    for t in range(5)])
    np.testing.assert_allclose(adv, ref, atol=1e-12)


def test_trading_days_split_at_utc_midnight():
    ds = random_dataset(1000, 1, seed=0)
    days = T.trading_days(ds, [(0, len(ds))], min_bars=1)
    for s, e in days:
        assert len(set((ds.ts_ns[s:e] // T.DAY_NS).tolist())) == 1
    assert days[0][0] == 0 and days[-1][1] == len(ds)
    assert all(a[1] == b[0] for a, b in zip(days, days[1:]))


def test_himari_train_runs_both_teams_and_relabels_regimes(tmp_path: Path):
    """Through the `himari train` orchestration (training/run.py) with a real TrainingData: both
    trainers run, write loadable checkpoints with validation metrics, and the strategic team
    just trained is what the regime relabelling loads."""
    from himari.decision.regime import regimes
    from himari.training.env import EnvConfig
    from himari.training.offline import BehaviourConfig, build_offline
    from himari.training.run import TrainingData, run_train

    ds = random_dataset(2400, 2, seed=9)
    valid = random_dataset(1200, 1, seed=10)
    reg = regimes(ds.volatility_30, 2.0)
    off = build_offline(ds, reg, 0, behaviour=BehaviourConfig(episode_bars=100))
    data = TrainingData(ds, valid, off.stats, 2.0, reg, regimes(valid.volatility_30, 2.0),
                        EnvConfig(), 2e-4, 0, True, {"parts": ["toy"]}, off)
    lines: list[str] = []
    rc, report = run_train(tmp_path, ["strategic", "tactical"], 5, True, log=lines.append,
                           data=data)
    assert rc == 0, lines
    for name, kind in (("strategic", "strategic_team"), ("tactical", "tactical_team")):
        entry = report["agents"][name]
        assert entry["status"] == "trained"
        assert entry["metrics"]["valid"] is not None
        meta = (run_strategic if name == "strategic" else run_tactical).load(tmp_path).meta
        assert meta["agent"] == kind and meta["seed"] == 5
        assert meta["data"]["split"] == {"parts": ["toy"]}
