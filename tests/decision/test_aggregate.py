"""Tactical aggregation (spec decision.md 2.4) and the strategic ensemble (3.3) against the spec."""

from __future__ import annotations

import math

import numpy as np
import pytest

from himari.decision.aggregate import (DEFAULT_TACTICAL_WEIGHTS, TACTICAL_WEIGHTS,
                                       aggregate_tactical, strategic_ensemble, tactical_weights)
from himari.decision.layout import BUY, HOLD, SELL

S, H, B = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
WAIT, EXEC, AGGR = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def agg(f, m, e, t=2, d=1):
    return aggregate_tactical(np.array(f), np.array(m), np.array(e), t, d)


def test_synergy_type_weights_are_the_spec_table():
    assert tactical_weights(1) == (0.5, 0.3, 0.2)
    assert tactical_weights(2) == (0.4, 0.4, 0.2)
    assert tactical_weights(3) == (0.3, 0.5, 0.2)
    assert tactical_weights(4) == (0.35, 0.35, 0.3)
    assert tactical_weights(0) == tactical_weights(9) == DEFAULT_TACTICAL_WEIGHTS
    assert DEFAULT_TACTICAL_WEIGHTS == (0.33, 0.33, 0.34)
    for w in (*TACTICAL_WEIGHTS.values(), DEFAULT_TACTICAL_WEIGHTS):
        assert sum(w) == pytest.approx(1.0)


def test_unanimous_buy_executes_with_full_score_per_type():
    for t, (wf, wm, we) in TACTICAL_WEIGHTS.items():
        r = agg(B, B, EXEC, t, +1)
        assert r.action == BUY and r.execute
        assert r.confidence == pytest.approx(wf + wm + we)  # entry backs the leading side
        assert r.scores == pytest.approx((0.0, 0.0, 1.0))


def test_scores_use_confidences_and_entry_wait_goes_to_hold():
    # TYPE_1: FVG BUY at 0.8, momentum BUY at 0.6, entry WAIT at 0.9
    r = agg((0.1, 0.1, 0.8), (0.2, 0.2, 0.6), (0.9, 0.05, 0.05), 1, +1)
    assert r.scores == pytest.approx((0.0, 0.2 * 0.9, 0.5 * 0.8 + 0.3 * 0.6))
    assert r.best == BUY and r.confidence == pytest.approx(0.58)
    assert not r.execute and r.action == HOLD and r.reason == "insufficient consensus"
    assert r.entry_mode == "WAIT"


def test_threshold_065_inclusive():
    # TYPE_2, FVG BUY 1.0 (0.4), momentum BUY 0.625 (0.25), entry WAIT: score 0.65 exactly
    r = agg(B, (0.0, 0.375, 0.625), WAIT, 2, +1)
    assert r.confidence == pytest.approx(0.65) and r.execute and r.action == BUY
    r = agg(B, (0.0, 0.38, 0.62), WAIT, 2, +1)
    assert r.confidence == pytest.approx(0.648) and not r.execute


def test_direction_mismatch_penalty_07():
    r = agg(S, S, EXEC, 2, +1)  # full SELL consensus against a bullish synergy
    assert r.best == SELL and r.penalised
    assert r.confidence == pytest.approx(0.7)
    assert r.execute and r.action == SELL
    r = agg(S, (0.1, 0.0, 0.9), AGGR, 3, +1)  # S: SELL 0.3, BUY 0.45 + 0.2 (aggressive) -> BUY
    assert r.best == BUY and not r.penalised and r.entry_mode == "AGGRESSIVE"
    r = agg(B, B, (0.0, 0.8, 0.2), 2, -1)
    assert r.confidence == pytest.approx(0.7 * (0.8 + 0.2 * 0.8))


def test_entry_backs_the_larger_direction_and_ties_go_to_hold():
    r = agg(B, S, EXEC, 1, +1)  # BUY 0.5 vs SELL 0.3: entry's 0.2 to BUY
    assert r.scores == pytest.approx((0.3, 0.0, 0.7)) and r.action == BUY
    r = agg(B, S, EXEC, 2, +1)  # BUY 0.4 = SELL 0.4: entry to HOLD; S/B tie at the top -> HOLD
    assert r.scores == pytest.approx((0.4, 0.2, 0.4))
    assert r.best == HOLD and r.action == HOLD and not r.execute
    r = agg(H, H, EXEC, 2, +1)  # both directions 0 -> entry to HOLD
    assert r.scores == pytest.approx((0.0, 1.0, 0.0)) and r.action == HOLD


def test_accepted_trade_size_multiplier_never_below_one_lot_rule_input():
    r = agg(B, B, EXEC, 2, +1)
    assert r.size_multiplier == pytest.approx(min(1.0 / 0.8, 1.5))
    assert agg(B, (0.0, 0.375, 0.625), WAIT, 2, +1).size_multiplier == pytest.approx(0.65 / 0.8)


def test_tactical_vote_vector_sums_to_one():
    r = agg((0.1, 0.1, 0.8), (0.2, 0.2, 0.6), (0.9, 0.05, 0.05), 1, +1)
    v = r.vote_probs()
    assert sum(v) == pytest.approx(1.0)
    assert v[BUY] == pytest.approx(0.58 / (0.58 + 0.18))


def test_strategic_confidence_uncertainty_and_proceed():
    p = np.array([[0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])
    r = strategic_ensemble(p)
    ens = np.array([0.4, 0.35, 0.25]) @ p
    assert r.probs == pytest.approx(tuple(ens))
    assert r.confidence == pytest.approx(ens.max())
    h = -(ens * np.log(ens + 1e-8)).sum()
    assert r.uncertainty == pytest.approx(h / math.log(3))
    assert r.confidence == pytest.approx(0.69) and r.should_proceed and r.direction == 1
    assert r.dominant_signal == "consensus"
    # uniform -> uncertainty 1, no proceed
    u = strategic_ensemble(np.full((3, 3), 1 / 3))
    assert u.uncertainty == pytest.approx(1.0, abs=1e-6) and not u.should_proceed


def test_strategic_confident_neutral_does_not_proceed_and_threshold_is_strict():
    r = strategic_ensemble(np.array([[0.05, 0.9, 0.05]] * 3))
    assert r.confidence == pytest.approx(0.9) and not r.should_proceed and r.direction == 0
    r = strategic_ensemble(np.array([[0.2, 0.15, 0.65]] * 3))
    assert r.confidence == pytest.approx(0.65) and not r.should_proceed  # > 0.65 only


def test_strategic_dominant_signal_and_uncertainty_source():
    p = np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.3, 0.4, 0.3]])
    r = strategic_ensemble(p)
    assert r.agent_labels == ("BUY", "SELL", "HOLD")
    assert r.dominant_signal == "mlmi"  # most confident
    assert r.uncertainty_source == "low_individual_confidence"  # min conf 0.4 < 0.6
    r = strategic_ensemble(np.array([[0.0, 0.05, 0.95], [0.3, 0.07, 0.63], [0.0, 0.1, 0.9]]))
    assert r.uncertainty_source == "agent_disagreement"  # 0.95 - 0.63 > 0.3
    r = strategic_ensemble(np.array([[0.1, 0.1, 0.8], [0.15, 0.15, 0.7], [0.1, 0.2, 0.7]]))
    assert r.uncertainty_source == "stable_uncertainty"


def test_strategic_weights_are_normalised_softmax_weights():
    p = np.array([B, S, H])
    r = strategic_ensemble(p, weights=(2.0, 1.0, 1.0))
    assert r.probs == pytest.approx((0.25, 0.25, 0.5))
