"""training/offline.py (behaviour trajectories, returns-to-go) and training/run.py (himari train)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from himari.decision import layout as L
from himari.decision.features import feature_matrix
from himari.training.dataset import random_dataset
from himari.training.env import EnvConfig, ewma_sigma, rewards_for_actions, simulate, transition
from himari.training.offline import (POLICIES, BehaviourConfig, OfflineData, actions_toward,
                                     build_offline)


def _offline(seed: int = 0, **kw: object) -> tuple[OfflineData, object]:
    ds = random_dataset(2400, 2, seed=seed)
    reg = np.full(len(ds), L.NEUTRAL)
    return build_offline(ds, reg, seed, behaviour=BehaviourConfig(episode_bars=200, **kw)), ds


def test_trajectories_cover_the_ready_runs_with_env_rewards() -> None:
    off, ds = _offline()
    m = len(off)
    assert m == (1200 - 10 - 1) * 2  # every ready bar but each run's last (no next close)
    assert off.observations.shape == (m, 257) and off.observations.dtype == np.float32
    assert np.isfinite(off.observations).all()
    assert set(np.unique(off.actions)) == {0, 1, 2}
    for e in range(len(off.episode_starts)):
        sl = off.episode(e)
        bars = off.bars[sl]
        assert np.all(np.diff(bars) == 1) and ds.segment[bars[0]] == ds.segment[bars[-1] + 1]
        r = rewards_for_actions(ds, int(bars[0]), off.actions[sl])
        assert off.rewards[sl] == pytest.approx(r.astype(np.float32))
        assert off.returns_to_go[sl][0] == pytest.approx(r.sum(), rel=1e-5, abs=1e-4)
        assert off.returns_to_go[sl][-1] == pytest.approx(r[-1], rel=1e-5, abs=1e-5)
        assert off.timeouts[sl][-1] == 1 and off.timeouts[sl][:-1].sum() == 0
        assert off.timesteps[sl].tolist() == list(range(len(bars)))
    assert off.terminals.sum() == 0
    # rtg is the undiscounted reverse cumulative sum within each episode
    sl = off.episode(3)
    assert off.returns_to_go[sl] == pytest.approx(np.cumsum(off.rewards[sl][::-1])[::-1], abs=1e-4)


def test_observations_carry_the_path_position_state() -> None:
    off, ds = _offline(seed=1)
    sl = off.episode(2)
    b0 = int(off.bars[sl][0])
    n = len(off.bars[sl])
    sigma = ewma_sigma(ds.close, ds.segment, 100, 5e-5)
    pos, _, state = simulate(off.actions[sl], ds.close[b0:b0 + n + 1], ds.atr14[b0:b0 + n],
                             sigma[b0:b0 + n])
    assert np.array_equal(pos, off.positions[sl])
    raw = feature_matrix(ds, off.bars[sl], regime=np.full(n, L.NEUTRAL), position=state)
    assert np.array_equal(off.stats.normalize(raw), off.observations[sl])
    # fitted with real position states: the sign slot has a real spread, not a floored 0 std
    assert off.stats.std[L.X_POSITION.start] > 0.3


def test_seeded_and_mixed() -> None:
    a, _ = _offline(seed=4)
    b, _ = _offline(seed=4)
    assert np.array_equal(a.actions, b.actions) and np.array_equal(a.observations, b.observations)
    c, _ = _offline(seed=5)
    assert not np.array_equal(a.actions, c.actions)
    big, _ = _offline(seed=0, mix=(1.0, 1.0, 1.0, 1.0))
    assert set(big.meta["policies"]) == set(POLICIES)
    flat, _ = _offline(seed=0, mix=(0.0, 0.0, 0.0, 1.0), epsilon=0.0)
    assert np.all(flat.actions == L.HOLD) and np.all(flat.rewards == 0)
    capped, _ = _offline(seed=0, max_steps=500)
    assert 500 <= len(capped) < 700 and np.all(capped.episode_lengths <= 200)


def test_actions_toward_use_the_section_0_transitions() -> None:
    desired = np.array([1, 1, -1, -1, -1, 0, 0, 1])
    acts = actions_toward(desired, 0)
    pos, reached = 0, []
    for a in acts:
        pos = transition(pos, int(a))
        reached.append(pos)
    # a reversal takes two bars: close, then open; a held position repeats its direction
    assert reached == [1, 1, 0, -1, -1, 0, 0, 1]
    assert acts.tolist() == [2, 2, 0, 0, 0, 2, 1, 2]


def test_to_mdp_builds_a_d3rlpy_dataset() -> None:
    pytest.importorskip("d3rlpy")
    off, _ = _offline(seed=2)
    mdp = off.to_mdp()
    assert mdp.size() == len(off.episode_starts)
    assert mdp.transition_count == len(off) - len(off.episode_starts) or \
        mdp.transition_count == len(off)


def test_bad_behaviour_config_is_refused() -> None:
    with pytest.raises(ValueError, match="mix"):
        BehaviourConfig(mix=(0.0, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="epsilon"):
        BehaviourConfig(epsilon=2.0)


# ---- training/run.py


def _fake_data() -> object:
    from himari.decision.regime import regimes
    from himari.training.run import TrainingData

    ds = random_dataset(1200, 2, seed=9)
    reg = regimes(ds.volatility_30, 2.0)
    off = build_offline(ds, reg, 0, behaviour=BehaviourConfig(episode_bars=100))
    return TrainingData(ds, None, off.stats, 2.0, reg, None, EnvConfig(), 2e-4, 0, True,
                        {"parts": []}, off)


def test_run_train_reports_trained_failed_and_skipped(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from himari.training.run import run_train

    good = types.ModuleType("himari.training.cql")
    seen = {}

    def train(data, out_dir, seed, quick):  # type: ignore[no-untyped-def]
        seen.update(seed=seed, quick=quick, env=data.make_env(seed=1))
        return {"loss": np.float32(0.5), "curve": np.arange(3)}

    good.train = train  # type: ignore[attr-defined]
    bad = types.ModuleType("himari.training.sac")

    def boom(*a):  # type: ignore[no-untyped-def]
        raise RuntimeError("diverged")

    bad.train = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "himari.training.cql", good)
    monkeypatch.setitem(sys.modules, "himari.training.sac", bad)
    lines: list[str] = []
    rc, report = run_train(tmp_path, ["cql", "sac", "nosuchagent"], 3, True, log=lines.append,
                           data=_fake_data())
    assert rc == 1  # one trainer failed
    agents = report["agents"]
    assert agents["cql"]["status"] == "trained" and agents["cql"]["metrics"]["loss"] == 0.5
    assert agents["sac"]["status"] == "failed" and "diverged" in agents["sac"]["error"]
    assert agents["nosuchagent"]["status"] == "skipped"
    assert seen["seed"] == 3 and seen["quick"] is True
    saved = json.loads((tmp_path / "train_report.json").read_text())
    assert saved["agents"]["cql"]["metrics"]["curve"] == [0, 1, 2]
    assert any("cql:" in ln and " s, metrics" in ln for ln in lines)


def test_cli_refuses_unknown_agents(capsys: pytest.CaptureFixture[str]) -> None:
    from himari.daemon.cli import main

    assert main(["train", "--agents", "cql,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_relabel_regimes_with_a_strategic_ensemble() -> None:
    from himari.training.run import relabel_regimes, strategic_probs

    data = _fake_data()
    calls = []

    def probs_fn(m, w, r, vol):  # type: ignore[no-untyped-def]
        calls.append(vol)
        return np.array([0.1, 0.1, 0.8]) if m[0] > 0 else np.array([0.5, 0.3, 0.2])

    p = strategic_probs(data.train, probs_fn)
    ds = data.train
    bars = ds.strategic_bars()
    assert len(calls) == int(ds.strategic_ready[bars].sum())
    # forward-filled within a segment, NaN before the first ready strategic matrix of each one
    assert np.isnan(p[0]).all() and np.isnan(p[600]).all() and not np.isnan(p[599]).any()
    assert np.array_equal(p[bars[20] + 1], p[bars[20]])
    info = relabel_regimes(data, probs_fn)
    reg = data.regime_train
    crisis = ds.volatility_30 >= data.crisis_threshold
    assert np.all(reg[crisis] == L.CRISIS)
    assert set(np.unique(reg[~crisis & ds.ready])) == {L.NEUTRAL, L.BULLISH}  # 0.5 is not > 0.65
    assert info["share"]["bullish"] > 0.2
    off = data.offline()
    assert np.array_equal(off.observations[:, L.X_REGIME].argmax(axis=1), reg[off.bars])


def test_prepare_quick_without_real_data_is_synthetic_only(tmp_path: Path) -> None:
    from himari.training.run import prepare

    data = prepare(seed=1, quick=True, data_dir=tmp_path / "none", cache_dir=tmp_path,
                   log=lambda m: None)
    assert data.meta["synthetic_only"] is True and data.meta["notes"]
    assert {p["part"] for p in data.meta["parts"]} == {"synthetic-calm-16d",
                                                       "synthetic-default-16d"}
    assert data.valid is not None and data.valid.ts_ns[0] > 0
    for p in data.meta["parts"]:  # valid is the last 20% of each part, after its train bars
        assert p["ts_from"] < p["valid_from"] < p["ts_to"]
    assert len(data.train.segments()) == 2 and data.train.ready.sum() > 1000
    assert data.crisis_threshold == pytest.approx(
        np.percentile(data.train.volatility_30[data.train.ready], 95))
    assert np.isfinite(data.offline().observations).all()
    env = data.make_env("valid", seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (257,) and data.offline_valid() is not None
    assert data.regime is data.regime_train and data.dataset is data.train


def test_env_fee_follows_the_venue_config(tmp_path: Path) -> None:
    from himari.daemon.config import load_config
    from himari.training.run import env_config_from

    assert env_config_from(None).fee == pytest.approx(2e-4)  # 1 bp fee + 1 bp slippage
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[venue]\nname = "sim"\n[venue.params]\ntaker_fee_bps = "3.5"\n')
    assert env_config_from(load_config(cfg_file)).fee == pytest.approx(4.5e-4)


def test_cli_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from himari.daemon.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[matrices]\nnope = 1\n")
    assert main(["train", "--config", str(bad), "--agents", "cql"]) == 2
    assert "nope" in capsys.readouterr().err
