"""D7 Sharpe-weighted voting, D8 disagreement scaling and abstention, D9 targets (decision.md)."""

from __future__ import annotations

import numpy as np
import pytest

from himari.decision.layout import BUY, HOLD, SELL
from himari.decision.voting import (NS_PER_DAY, SharpeVoting, disagreement, scale_for,
                                    shadow_target, target_sharpe)

ONE_HOT = {SELL: (1.0, 0.0, 0.0), HOLD: (0.0, 1.0, 0.0), BUY: (0.0, 0.0, 1.0)}
BAR = 300 * 1_000_000_000
T0 = 19_724 * NS_PER_DAY  # 2024-01-02 00:00 UTC


def votes(*actions):
    return np.array([ONE_HOT[a] for a in actions])


@pytest.mark.parametrize("actions,d", [
    ((BUY, BUY, BUY, BUY, HOLD), 0.16),
    ((BUY, BUY, BUY, BUY, SELL), 0.64),
    ((BUY, BUY, BUY, SELL, SELL), 0.96),
    ((BUY,) * 5, 0.0),
])
def test_disagreement_spec_examples_five_equal_voters(actions, d):
    assert disagreement(votes(*actions), np.full(5, 0.2)) == pytest.approx(d)


def test_scale_breakpoints():
    assert scale_for(0.0) == 1.0
    assert scale_for(0.1999) == 1.0
    assert scale_for(0.2) == pytest.approx(1.0)
    assert scale_for(0.45) == pytest.approx(1 - 0.75 * 0.25 / 0.5)
    assert scale_for(0.7) == pytest.approx(0.25)
    assert scale_for(0.7001) == 0.25
    assert scale_for(1.0) == 0.25
    assert scale_for(0.64) == pytest.approx(1 - 0.75 * 0.44 / 0.5)


def test_combine_weighted_vote_and_scaled_confidence():
    v = SharpeVoting(["a", "b", "c", "d", "e"])
    out = v.combine(votes(BUY, BUY, BUY, BUY, HOLD), np.ones(5))
    assert out.action == BUY and out.base_confidence == pytest.approx(0.8)
    assert out.disagreement == pytest.approx(0.16) and out.scale == 1.0
    assert out.confidence == pytest.approx(0.8) and not out.abstained
    out = v.combine(votes(BUY, BUY, BUY, BUY, SELL), np.ones(5))
    assert out.disagreement == pytest.approx(0.64)
    assert out.base_confidence * out.scale == pytest.approx(0.8 * scale_for(0.64))  # 0.272
    assert out.abstained and out.action == HOLD and out.confidence == 0.5


def test_abstain_only_when_both_conditions_hold():
    v = SharpeVoting(["a", "b", "c", "d", "e"])
    # 3 BUY + 2 SELL: D 0.96, base 0.6, scaled 0.15 -> abstain
    out = v.combine(votes(BUY, BUY, BUY, SELL, SELL), np.ones(5))
    assert out.abstained and out.action == HOLD and out.confidence == 0.5
    # high D but confident enough after scaling is impossible with one-hots; use two voters:
    # D = 0.25 (< 0.5) with low confidence: no abstention
    v2 = SharpeVoting(["a", "b"])
    out = v2.combine(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), np.ones(2))
    assert out.disagreement == pytest.approx(0.25) and not out.abstained
    # D >= 0.5 but final confidence >= 0.4 -> no abstention: BUY at weight 0.85, SELL at 0.15
    v2.weights = np.array([0.85, 0.15])
    out = v2.combine(votes(BUY, SELL), np.ones(2))
    assert out.disagreement == pytest.approx(4 * 0.85 * 0.15)  # 0.51
    assert out.confidence == pytest.approx(0.85 * scale_for(0.51))  # 0.455
    assert not out.abstained and out.action == BUY


def test_renormalised_over_present_voters():
    v = SharpeVoting(["a", "b", "c"])
    v.weights = np.array([0.5, 0.3, 0.2])
    out = v.combine(votes(BUY, SELL, SELL), np.array([1.0, 0.0, 1.0]))
    assert out.weights == pytest.approx([0.5 / 0.7, 0.0, 0.2 / 0.7])
    assert out.probs == pytest.approx([0.2 / 0.7, 0.0, 0.5 / 0.7])
    assert out.base_confidence == pytest.approx(0.5 / 0.7)


def test_shadow_positions_follow_section_0():
    assert shadow_target(0, BUY) == 1 and shadow_target(1, BUY) == 1
    assert shadow_target(-1, BUY) == 0  # the opposite action closes, no reversal
    assert shadow_target(0, SELL) == -1 and shadow_target(1, SELL) == 0
    assert shadow_target(-1, HOLD) == -1 and shadow_target(1, HOLD) == 1


def _run_days(v: SharpeVoting, days: int, rng: np.random.Generator, acts) -> None:
    """`days` days of 288 bars with a noisy up-trend; each voter votes `acts[i]` every bar."""
    close = 100.0
    ts = T0
    present = np.ones(len(v.names))
    for _ in range(days):
        for _ in range(288):
            ts += BAR
            close *= 1.0 + 0.0005 + 0.001 * rng.standard_normal()
            v.on_bar(ts, close)
            v.record_votes(np.asarray(acts), present)


def test_equal_weights_before_ten_days_then_sharpe_weighted():
    rng = np.random.default_rng(1)
    v = SharpeVoting(["long", "short", "flat"], fee=1e-4)
    _run_days(v, 9, rng, [BUY, SELL, HOLD])
    assert v.days == 8 or v.days == 9
    assert v.weights == pytest.approx([1 / 3] * 3)  # fewer than 10 days: equal targets
    _run_days(v, 6, rng, [BUY, SELL, HOLD])
    assert v.days >= 10
    assert v.sharpe[0] > 0 > v.sharpe[1]  # up-trend pays the long voter
    assert v.sharpe[2] == 0.0  # always flat: no returns
    # negative / zero Sharpes are floored: only the long voter gains weight
    assert v.weights[0] > 1 / 3 > v.weights[1]
    assert v.weights[1] == pytest.approx(v.weights[2])
    assert v.weights.sum() == pytest.approx(1.0)


def test_smoothing_09_one_update_per_utc_day():
    v = SharpeVoting(["a", "b"])
    v.days = 10
    v._daily[:10, 0] = np.linspace(1.0, 2.0, 10)   # positive Sharpe
    v._daily[:10, 1] = -np.linspace(1.0, 2.0, 10)  # negative -> floored at 0
    v.update_weights()
    assert v.weights == pytest.approx([0.9 * 0.5 + 0.1 * 1.0, 0.9 * 0.5 + 0.1 * 0.0])
    mean, std = np.mean(np.linspace(1, 2, 10)), np.std(np.linspace(1, 2, 10), ddof=1)
    assert v.sharpe[0] == pytest.approx(mean / std)
    # the daily update happens at the first bar whose event time is in a new UTC day
    w = SharpeVoting(["a"])
    w.on_bar(T0 + 23 * 3600 * 10**9, 100.0)
    w.on_bar(T0 + 86_000 * 10**9, 100.0)
    assert w.updates == 0
    w.on_bar(T0 + NS_PER_DAY, 101.0)  # 00:00 next day: first bar of the new day
    assert w.updates == 1 and w.days == 1
    w.on_bar(T0 + NS_PER_DAY + BAR, 101.0)
    assert w.updates == 1


def test_shadow_reward_is_spec_r_tilde():
    v = SharpeVoting(["a"], fee=1e-3)
    ts = T0 + BAR
    v.on_bar(ts, 100.0)
    v.on_bar(ts + BAR, 101.0)           # first return sets sigma = |0.01|
    v.record_votes(np.array([BUY]), np.ones(1))  # shadow goes long at 101
    sigma = v._sigma()
    assert sigma == pytest.approx(0.01)
    before = v._day_sum[0]
    v.on_bar(ts + 2 * BAR, 102.01)        # +1 %: long earns (0.01 - fee * 1) / sigma
    assert v._day_sum[0] - before == pytest.approx((0.01 - 1e-3) / sigma)


def test_all_present_weights_zero_falls_back_to_equal_and_no_voter_is_neutral():
    v = SharpeVoting(["a", "b"])
    v.weights = np.array([0.0, 1.0])
    out = v.combine(votes(BUY, SELL), np.array([1.0, 0.0]))
    assert out.action == BUY and out.weights == pytest.approx([1.0, 0.0])
    out = v.combine(votes(BUY, SELL), np.zeros(2))
    assert out.action == HOLD and out.confidence == 0.0


def test_target_sharpe_d9_table_and_override():
    assert [target_sharpe(r) for r in range(4)] == [0.5, 1.0, 2.0, 2.5]
    assert target_sharpe(None) == 2.0 and target_sharpe(7) == 2.0
    assert target_sharpe(0, override=3.0) == 3.0
