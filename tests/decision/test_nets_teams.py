"""Strategic and tactical team inference (numpy/Numba) against their torch modules and the spec."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from himari.decision.checkpoint import CheckpointError, CheckpointMissing, save_checkpoint
from himari.decision.nets import numeric, strategic, tactical
from himari.training.torch_nets import (FEATURE_WEIGHT_INIT, StrategicTeamNet, TacticalTeamNet,
                                        strategic_tensors, tactical_tensors)

TOL = 1e-5


def _strategic(seed: int, hidden=(32, 32)):
    torch.manual_seed(seed)
    net = StrategicTeamNet(hidden).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():  # move away from the init so every parameter matters
        for p in net.parameters():
            p.add_(torch.from_numpy(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    means = [rng.normal(0, 1, n).astype(np.float32) for n in (10, 10, 9)]
    stds = [rng.uniform(0.5, 2.0, n).astype(np.float32) for n in (10, 10, 9)]
    return net, means, stds


def _torch_strategic(net, means, stds, xs, vol):
    with torch.no_grad():
        zs = [torch.from_numpy(((x - m) / s).astype(np.float32))[None]
              for x, m, s in zip(xs, means, stds)]
        logits = net(zs, torch.tensor([vol], dtype=torch.float32))
        return np.stack([torch.softmax(z, -1)[0].numpy() for z in logits])


def test_strategic_numba_matches_torch():
    rng = np.random.default_rng(1)
    for seed in range(3):
        net, means, stds = _strategic(seed, hidden=(32, 16) if seed == 2 else (32, 32))
        team = strategic.StrategicTeam(strategic_tensors(net, means, stds))
        for _ in range(20):
            xs = [rng.normal(0, 2, n) for n in (10, 10, 9)]
            vol = float(rng.uniform(0.2, 3.0))
            p, w = team.probs(*xs, vol)
            ref = _torch_strategic(net, means, stds, xs, vol)
            assert p.shape == (3, 3) and p.dtype == np.float64
            np.testing.assert_allclose(p, ref, atol=TOL)
            np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
            np.testing.assert_allclose(w, torch.softmax(net.omega, 0).detach().numpy(), atol=TOL)


def test_temperature_starts_at_one_and_stays_positive():
    net = StrategicTeamNet()
    for pol in net.policies:
        assert float(pol.tau().detach()) == pytest.approx(1.0, abs=1e-6)
        with torch.no_grad():
            pol.rho.fill_(-1e4)  # softplus -> 0: tau floors at 0.05, never 0 or negative
        assert float(pol.tau().detach()) == pytest.approx(0.05, abs=1e-9)
        with torch.no_grad():
            pol.rho.fill_(-50.0)
        assert float(pol.tau().detach()) > 0.05
    team = strategic.StrategicTeam(strategic_tensors(net, [np.zeros(10)] * 2 + [np.zeros(9)],
                                                     [np.ones(10)] * 2 + [np.ones(9)]))
    assert np.all(team.tau >= 0.05) and np.all(np.isfinite(team.tau))
    p, _ = team.probs(np.ones(10), np.ones(10), np.ones(9), 1.0)
    assert np.all(np.isfinite(p))


def test_lower_temperature_sharpens():
    net, means, stds = _strategic(4)
    x = [np.full(10, 0.7), np.full(10, -0.3), np.full(9, 0.2)]
    p1, _ = strategic.StrategicTeam(strategic_tensors(net, means, stds)).probs(*x, 1.0)
    with torch.no_grad():
        for pol in net.policies:
            pol.rho.sub_(2.0)
    p2, _ = strategic.StrategicTeam(strategic_tensors(net, means, stds)).probs(*x, 1.0)
    assert np.all(p2.max(axis=1) > p1.max(axis=1))


def test_regime_logits_scaled_by_clamped_inverse_volatility():
    net, means, stds = _strategic(5)
    team = strategic.StrategicTeam(strategic_tensors(net, means, stds))
    xs = [np.zeros(10), np.zeros(10), np.linspace(-1, 1, 9)]
    with torch.no_grad():
        z = (torch.from_numpy(((xs[2] - means[2]) / stds[2]).astype(np.float32))[None])
        pol = net.policies[2]
        raw = (pol.head(pol.body(z)) / pol.tau())[0].numpy().astype(np.float64)

    def expect(factor):
        e = np.exp(raw * factor - (raw * factor).max())
        return e / e.sum()

    for vol, factor in [(1.0, 1.0), (0.8, 1.25), (0.25, 2.0), (0.01, 2.0), (4.0, 0.5),
                        (100.0, 0.5), (0.0, 2.0), (-1.0, 2.0)]:
        p, _ = team.probs(*xs, vol)
        np.testing.assert_allclose(p[2], expect(factor), atol=TOL)
    # the other agents ignore the volatility
    p_lo, _ = team.probs(*xs, 0.1)
    p_hi, _ = team.probs(*xs, 10.0)
    np.testing.assert_array_equal(p_lo[:2], p_hi[:2])


def test_initial_ensemble_weights_and_weighted_average():
    net, means, stds = _strategic(6)
    with torch.no_grad():
        net.omega.copy_(torch.log(torch.tensor([0.4, 0.35, 0.25])))
    team = strategic.StrategicTeam(strategic_tensors(net, means, stds))
    p, w = team.probs(np.ones(10), -np.ones(10), np.zeros(9), 1.0)
    np.testing.assert_allclose(w, [0.4, 0.35, 0.25], atol=1e-7)
    ens = team.ensemble(p)
    np.testing.assert_allclose(ens, 0.4 * p[0] + 0.35 * p[1] + 0.25 * p[2], atol=1e-12)
    assert ens.sum() == pytest.approx(1.0)
    # a fresh module starts from the configured weights (G25)
    np.testing.assert_allclose(StrategicTeamNet().weights().detach().numpy(), [0.4, 0.35, 0.25],
                               atol=1e-7)


def test_strategic_refuses_bad_inputs():
    net, means, stds = _strategic(7)
    team = strategic.StrategicTeam(strategic_tensors(net, means, stds))
    bad = np.zeros(10)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="mlmi input"):
        team.probs(bad, np.zeros(10), np.zeros(9), 1.0)
    with pytest.raises(ValueError, match="regime input"):
        team.probs(np.zeros(10), np.zeros(10), np.zeros(10), 1.0)
    with pytest.raises(ValueError, match="nwrqk input"):
        team.probs(np.zeros(10), np.full(10, np.inf), np.zeros(9), 1.0)
    with pytest.raises(ValueError, match="volatility_30"):
        team.probs(np.zeros(10), np.zeros(10), np.zeros(9), float("nan"))
    # extreme but finite values give a defined distribution
    p, _ = team.probs(np.full(10, 1e30), np.full(10, -1e30), np.full(9, 1e30), 1e-30)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0)
    # float32 and non-contiguous inputs are accepted
    p32, _ = team.probs(np.zeros(20, np.float32)[::2], np.zeros(10), np.zeros(9), 1.0)
    p64, _ = team.probs(np.zeros(10), np.zeros(10), np.zeros(9), 1.0)
    np.testing.assert_array_equal(p32, p64)
    assert len(strategic._team_forward.signatures) == 1  # no recompilation for other dtypes


def _tactical(seed: int, **sizes):
    torch.manual_seed(seed)
    net = TacticalTeamNet(**sizes).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.from_numpy(rng.normal(0, 0.1, p.shape).astype(np.float32)))
    return net


@pytest.mark.parametrize("sizes", [{}, {"channels": (8, 12), "pool": 16, "fc": 32, "head": 16},
                                   {"channels": (32, 64), "pool": 16, "fc": 256, "head": 128}])
def test_tactical_numba_matches_torch(sizes):
    net = _tactical(11, **sizes)
    team = tactical.TacticalTeam(tactical_tensors(net))
    rng = np.random.default_rng(2)
    for _ in range(10):
        m = rng.normal(0, 1, (60, 7)).astype(np.float32)
        fvg, mom, entry = team.probs(m)
        with torch.no_grad():
            ref = [torch.softmax(z, -1)[0].numpy() for z in net(torch.from_numpy(m)[None])]
        for got, want in zip((fvg, mom, entry), ref):
            assert got.shape == (3,)
            np.testing.assert_allclose(got, want, atol=TOL)
            assert got.sum() == pytest.approx(1.0)


def test_tactical_feature_weights_start_from_g9():
    net = TacticalTeamNet()
    for actor, name in zip(net.actors, ("fvg", "momentum", "entry")):
        np.testing.assert_allclose(actor.feature_weight.detach().numpy(),
                                   FEATURE_WEIGHT_INIT[name], atol=1e-7)
    assert FEATURE_WEIGHT_INIT["fvg"] == (0.4, 0.4, 0.1, 0.1, 0.1, 0.05, 0.05)
    assert FEATURE_WEIGHT_INIT["momentum"] == (0.05, 0.05, 0.1, 0.1, 0.1, 0.3, 0.5)


def test_tactical_refuses_bad_matrices():
    team = tactical.TacticalTeam(tactical_tensors(_tactical(3)))
    with pytest.raises(ValueError, match=r"shape \(30, 7\)"):
        team.probs(np.zeros((30, 7), np.float32))
    m = np.zeros((60, 7), np.float32)
    m[59, 6] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        team.probs(m)
    out = team.probs(np.full((60, 7), 1e30, np.float32))
    assert all(np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0) for p in out)


def test_kernels_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 60))
    out = np.zeros((5, 16))
    numeric.adaptive_avg_pool1d(x, out)
    ref = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(x)[None], 16)[0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-12)
    z = np.array([1000.0, 999.0, -1000.0])
    p = np.zeros(3)
    numeric.softmax(z, p)
    np.testing.assert_allclose(p, [1 / (1 + math.exp(-1)), 1 / (1 + math.e), 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="layer 1"):
        numeric.pack_mlp_ln([(np.zeros((4, 3)), np.zeros(4), np.ones(4), np.zeros(4)),
                             (np.zeros((3, 5)), np.zeros(3))])


def test_checkpoints_round_trip_and_refuse_other_layouts(tmp_path: Path):
    net, means, stds = _strategic(8)
    save_checkpoint(tmp_path, "strategic_team", strategic_tensors(net, means, stds),
                    {"agent": "strategic_team", "seed": 8})
    save_checkpoint(tmp_path, "tactical_team", tactical_tensors(_tactical(8)),
                    {"agent": "tactical_team", "seed": 8})
    s = strategic.load(tmp_path)
    t = tactical.load(tmp_path)
    assert s.meta["seed"] == 8 and s.hidden == [32, 32]
    assert t.sizes == {"channels": [16, 16], "pool": 8, "fc": 64, "head": 32}
    meta_path = tmp_path / "strategic_team.json"
    meta = json.loads(meta_path.read_text())
    meta["layout_version"] = "himari-decision-v0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="layout_version='himari-decision-v0'"):
        strategic.load(tmp_path)
    with pytest.raises(CheckpointError, match="for agent 'tactical_team'"):
        strategic.load(tmp_path, name="tactical_team")
    with pytest.raises(CheckpointMissing):
        tactical.load(tmp_path / "nowhere")
    tensors = tactical_tensors(_tactical(8))
    del tensors["entry.head2.bias"]
    with pytest.raises(CheckpointError, match="entry.head2.bias"):
        tactical.TacticalTeam(tensors)


def test_tactical_accepts_views_and_dtypes_alike():
    team = tactical.TacticalTeam(tactical_tensors(_tactical(9)))
    rng = np.random.default_rng(4)
    big = rng.normal(size=(60, 14))
    view = big[:, ::2]  # non-contiguous float64
    ref = team.probs(np.ascontiguousarray(view))
    for m in (view, view.astype(np.float32), np.asfortranarray(view)):
        for got, want in zip(team.probs(m), ref):
            np.testing.assert_allclose(got, want, atol=1e-6)
    assert len(tactical._team_forward.signatures) == 1
