"""DecisionEngine: voters, go-ahead window, regime / target Sharpe, x, robustness (fake agents)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.decision.engine import DecisionEngine, EngineConfig
from himari.decision.features_rt import time_features
from himari.decision.layout import (BUY, HOLD, SELL, X_POSITION, X_REGIME, X_STRATEGIC, X_TACTICAL,
                                    X_TIME)
from himari.decision.voting import NS_PER_DAY, scale_for

from .engine_fakes import FakeStrategicTeam, FakeTacticalTeam, FixedAgent, matrices

BAR = 300 * 1_000_000_000
T0 = 19_724 * NS_PER_DAY + 9 * 3600 * 10**9  # 2024-01-02 09:00 UTC (a Tuesday)


def engine(agents, **kw):
    return DecisionEngine({a.name: a for a in agents}, **kw)


def test_weighted_vote_matches_d7_d8_by_hand():
    a, b, c = FixedAgent("a", (0.1, 0.2, 0.7)), FixedAgent("b", (0.2, 0.2, 0.6)), \
        FixedAgent("c", (0.6, 0.3, 0.1))
    e = engine([a, b, c])
    tac, strat = matrices()
    d = e.decide(T0, tac, strat, close=100.0)
    p = np.array([a.probs, b.probs, c.probs])
    w = np.full(3, 1 / 3)
    ens = w @ p
    s = p[:, 2] - p[:, 0]
    dis = float(w @ (s - w @ s) ** 2)
    assert d.action == BUY
    assert d.base_confidence == pytest.approx(ens.max())
    assert d.disagreement == pytest.approx(dis)
    assert d.confidence == pytest.approx(ens.max() * scale_for(dis))
    rows = d.agents()
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert rows[2]["vote"] == "SELL" and rows[2]["probs"] == pytest.approx(list(c.probs))
    assert all(r["status"] == "ok" and r["weight"] == pytest.approx(1 / 3) for r in rows)
    assert all(r["latency_us"] >= 0 for r in rows)
    det = d.details()
    assert det["agents"] == rows and det["scale"] == pytest.approx(scale_for(dis))
    assert det["regime"] == "neutral" and det["target_sharpe"] == 2.0


def test_feature_vector_slots():
    a = FixedAgent("a")
    e = engine([a])
    tac, strat = matrices(3)
    e.decide(T0, tac, strat, close=100.0, position=-2, unrealized_atr=0.5, bars_in_position=250,
             drawdown_buffer=0.8)
    x = a.inputs[-1].x
    assert x.shape == (257,) and x.dtype == np.float32
    assert x[0] == pytest.approx(2.0)  # neutral regime's target Sharpe (D9)
    assert np.array_equal(x[X_TACTICAL], tac[-20:].reshape(-1))
    assert np.array_equal(x[X_STRATEGIC], strat[-8:].reshape(-1))
    assert list(x[X_REGIME]) == [0, 0, 1, 0]
    assert x[X_POSITION] == pytest.approx([-1.0, 0.5, 1.0, 0.8])
    assert x[X_TIME] == pytest.approx(time_features(T0), abs=1e-6)
    sh, ch, sw, cw = time_features(T0)
    assert sh == pytest.approx(math.sin(2 * math.pi * 9 / 24))
    assert sw == pytest.approx(math.sin(2 * math.pi * 1 / 7))  # Tuesday = 1
    # no strategic matrix: its slots hold the neutral rows (0, lvn_distance 1) as in training
    e.decide(T0 + BAR, tac, None, close=100.0)
    from himari.decision.features import STRATEGIC_NEUTRAL
    assert np.array_equal(a.inputs[-1].x[X_STRATEGIC], np.tile(STRATEGIC_NEUTRAL, 8))


def test_regime_from_strategic_ensemble_sets_target_sharpe():
    a = FixedAgent("a")
    team = FakeStrategicTeam(((0.8, 0.15, 0.05),) * 3)  # confident bearish
    e = engine([a], strategic_team=team, voters=["a"])
    tac, strat = matrices()
    e.on_strategic(T0, strat, volatility_30=1.0)
    d = e.decide(T0, tac, strat, close=100.0)
    assert d.regime == 1 and d.target_sharpe == 1.0 and a.inputs[-1].x[0] == 1.0
    assert list(a.inputs[-1].x[X_REGIME]) == [0, 1, 0, 0]
    # strategic context (decision/features.py): conf 0, dir 0, ln(v_rel) = atanh(column 11 of
    # the newest row), hour sin/cos, weekday / 6
    ctx = team.contexts[-1]
    assert ctx[0] == 0.0 and ctx[1] == 0.0
    assert ctx[2] == pytest.approx(math.atanh(np.clip(strat[-1, 11], -0.999999, 0.999999)),
                                   rel=1e-5)
    assert ctx[5] == pytest.approx(1 / 6)
    crisis = engine([a], strategic_team=team, voters=["a"],
                    cfg=EngineConfig(crisis_volatility=1.5))
    crisis.on_strategic(T0, strat, volatility_30=1.6)
    d = crisis.decide(T0, tac, strat, close=100.0)
    assert d.regime == 0 and d.target_sharpe == 0.5


def test_unconfident_strategic_regime_is_neutral():
    team = FakeStrategicTeam(((0.3, 0.35, 0.35),) * 3)
    e = engine([FixedAgent("a")], strategic_team=team, voters=["a"])
    e.on_strategic(T0, matrices()[1])
    assert e.regime() == 2


def test_tactical_votes_only_for_six_bars_after_an_accepted_go_ahead():
    a = FixedAgent("a", (0.3, 0.4, 0.3))
    tac_team = FakeTacticalTeam()
    e = engine([a], tactical_team=tac_team, strategic_team=FakeStrategicTeam())
    tac, strat = matrices()
    assert e.names == ("a", "tactical", "strategic")
    d = e.decide(T0, tac, strat, close=100.0)
    assert [r["status"] for r in d.agents()] == ["ok", "skipped", "skipped"]
    assert e.on_synergy(T0, strat, 2, +1, 0.49) is None  # below 0.5: ignored
    assert tac_team.calls == 0
    res = e.on_synergy(T0, strat, 2, +1, 0.8)
    assert res is not None and res.should_proceed
    statuses = []
    for k in range(1, 9):
        d = e.decide(T0 + k * BAR, tac, strat, close=100.0)
        statuses.append(d.agents()[1]["status"])
        if k <= 6:
            assert d.tactical is not None and d.tactical.action == BUY
            assert d.details()["tactical"]["execute"] is True
    assert statuses == ["ok"] * 6 + ["skipped"] * 2
    assert tac_team.calls == 6
    assert e.counters["synergies_ignored"] == 1 and e.counters["go_aheads"] == 1


def test_no_tactical_vote_when_strategic_does_not_proceed():
    tac_team = FakeTacticalTeam()
    e = engine([FixedAgent("a")], tactical_team=tac_team,
               strategic_team=FakeStrategicTeam(((0.1, 0.8, 0.1),) * 3))
    tac, strat = matrices()
    e.on_synergy(T0, strat, 1, +1, 0.9)
    d = e.decide(T0 + BAR, tac, strat, close=100.0)
    rows = {r["name"]: r for r in d.agents()}
    assert rows["tactical"]["status"] == "skipped" and tac_team.calls == 0
    assert rows["strategic"]["status"] == "ok" and rows["strategic"]["vote"] == "HOLD"


@pytest.mark.parametrize("bad", [
    np.full((60, 7), np.nan, dtype=np.float32),
    np.zeros((30, 7), dtype=np.float32),
    np.zeros((60, 6), dtype=np.float32),
    None,
])
def test_bad_tactical_matrix_is_a_neutral_hold_with_reason(bad):
    a = FixedAgent("a")
    e = engine([a])
    d = e.decide(T0, bad, None, close=100.0)
    assert d.action == HOLD and d.confidence == 0.5 and d.reason.startswith("neutral: tactical")
    assert a.calls == 0 and e.counters["invalid_tactical"] == 1
    assert all(r["status"] == "skipped" for r in d.agents())


def test_bad_strategic_matrix_counts_as_absent():
    a = FixedAgent("a")
    e = engine([a])
    tac, _ = matrices()
    d = e.decide(T0, tac, np.zeros((30, 13), dtype=np.float32), close=100.0)
    assert d.action == BUY and a.inputs[-1].strategic is None
    assert e.counters["invalid_strategic"] == 1


def test_failing_agent_is_skipped_counted_benched_and_the_rest_decide():
    good, bad = FixedAgent("good", (0.7, 0.2, 0.1)), FixedAgent("bad", mode="raise")
    e = engine([good, bad])
    tac, strat = matrices()
    for k in range(5):
        d = e.decide(T0 + k * BAR, tac, strat, close=100.0)
        assert d.action == SELL and d.agents()[1]["status"] == "failed"
        assert d.agents()[1]["weight"] == 0.0 and d.agents()[0]["weight"] == 1.0
    d = e.decide(T0 + 5 * BAR, tac, strat, close=100.0)
    assert d.agents()[1]["status"] == "benched" and bad.calls == 5
    g = e.stats()["guards"]["bad"]
    assert g["failed"] == 5 and g["benched"] == 1 and "boom" in g["last_error"]
    # 10 minutes of event time later it is asked again
    e.decide(T0 + 4 * BAR + 600 * 10**9, tac, strat, close=100.0)
    assert bad.calls == 6


def test_nan_vote_is_a_failure_and_all_failing_is_neutral():
    e = engine([FixedAgent("x", mode="nan"), FixedAgent("y", mode="raise")])
    tac, strat = matrices()
    d = e.decide(T0, tac, strat, close=100.0)
    assert d.action == HOLD and d.confidence == 0.5 and "no voter" in d.reason
    assert [r["status"] for r in d.agents()] == ["failed", "failed"]


def test_time_budget_skips_a_slow_agent_only_when_on():
    tac, strat = matrices()
    on = engine([FixedAgent("fast"), FixedAgent("slow", (0.8, 0.1, 0.1), mode="slow")],
                cfg=EngineConfig(time_budget_us=500))
    d = on.decide(T0, tac, strat, close=100.0)
    assert d.agents()[1]["status"] == "timeout" and d.agents()[1]["latency_us"] >= 2000
    assert d.action == BUY and on.stats()["guards"]["slow"]["timeouts"] == 1
    off = engine([FixedAgent("fast"), FixedAgent("slow", (0.8, 0.1, 0.1), mode="slow")])
    d = off.decide(T0, tac, strat, close=100.0)
    assert d.agents()[1]["status"] == "ok"


def test_observe_gets_the_previous_input_action_and_reward():
    """r~ of spec 4.0 / training/env.py: the step's position and fee over sigma of its start bar
    (zero-mean EWMA std of the returns so far, floored at 5e-5: the floor before any return)."""
    a = FixedAgent("a")
    e = engine([a])  # fee 2e-4 (1 bp + 1 bp slippage)
    tac, strat = matrices()
    e.decide(T0, tac, strat, close=100.0, position=0)
    e.decide(T0 + BAR, tac, strat, close=101.0, position=1)  # went long at 100
    action, reward = a.observed[-1]
    assert action == BUY and reward == pytest.approx((0.01 - 2e-4) / 5e-5)
    e.decide(T0 + 2 * BAR, tac, strat, close=102.01, position=1)  # held: +1 %, no fee
    action, reward = a.observed[-1]
    assert action == BUY and reward == pytest.approx(0.01 / 0.01)  # sigma = |first return|
    assert len(a.observed) == 2


def test_reset_clears_go_ahead_and_resets_agents():
    a = FixedAgent("a")
    e = engine([a], tactical_team=FakeTacticalTeam(), strategic_team=FakeStrategicTeam())
    tac, strat = matrices()
    e.on_synergy(T0, strat, 2, 1, 0.9)
    e.reset()
    d = e.decide(T0 + BAR, tac, strat, close=100.0)
    assert d.tactical is None and a.resets == 2


finite = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=5, max_size=5), st.integers(0, 2**31),
       st.sampled_from([(60, 7), (30, 7), (60, 7)]),
       st.lists(st.tuples(st.floats(-1, 2), st.floats(-1, 2), st.floats(-1, 2)),
                min_size=1, max_size=4))
def test_any_input_gives_a_finite_decision(specials, seed, shape, agent_probs):
    rng = np.random.default_rng(seed)
    tac = (rng.standard_normal(shape) * 10 ** rng.integers(0, 30)).astype(np.float32)
    for v in specials:
        tac.flat[rng.integers(0, tac.size)] = v
    agents = [FixedAgent(f"a{i}", p) for i, p in enumerate(agent_probs)]
    e = engine(agents)
    d = e.decide(T0, tac, None, close=float(rng.uniform(1, 100)))
    assert d.action in (SELL, HOLD, BUY)
    assert math.isfinite(d.confidence) and 0.0 <= d.confidence <= 1.0
    assert math.isfinite(d.disagreement) and 0.25 <= d.scale <= 1.0
    for r in d.agents():
        assert r["status"] in ("ok", "failed", "skipped")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 3), st.integers(-3, 3),
       st.floats(-50, 50), st.integers(-5, 500), st.floats(-1, 2), st.booleans(),
       st.integers(1_500_000_000, 2_000_000_000))
def test_run_time_x_equals_features_feature_vector(seed, regime, pos, upnl, bars, dd, has_strat,
                                                   ts_s):
    """The engine's Numba fill is decision/features.py's feature_vector, bit for bit."""
    from himari.decision.features import PositionState, feature_vector
    from himari.decision.features_rt import fill_vector, new_vector
    from himari.decision.layout import TARGET_SHARPE

    tac, strat = matrices(seed)
    strat = strat if has_strat else None
    ts = ts_s * 10**9 + seed % 10**9
    sharpe = TARGET_SHARPE[regime]
    mine = fill_vector(new_vector(), ts, tac, strat, regime, sharpe, pos, upnl, bars, dd)
    sign = float(np.sign(pos))
    ref = feature_vector(tac, strat, regime, sharpe,
                         PositionState(sign, upnl if sign else 0.0, bars if sign else 0.0, dd), ts)
    assert np.array_equal(mine, ref)


def test_warm_up_calls_every_agent_once_per_array_kind_then_resets():
    a = FixedAgent("a")
    tac_team, strat_team = FakeTacticalTeam(), FakeStrategicTeam()
    e = engine([a], tactical_team=tac_team, strategic_team=strat_team)
    e.warm_up()
    # writable arrays, then read-only ones as the matrix stage publishes them (another Numba
    # type: without it the first live bar compiled kernels)
    assert a.calls == 2 and tac_team.calls == 2 and strat_team.calls == 2
    assert [i.tactical.flags.writeable for i in a.inputs] == [True, False]
    assert a.resets == 2  # at construction and after the warm-up
    assert e.counters["decisions"] == 0 and e.stats()["guards"]["a"]["calls"] == 0
