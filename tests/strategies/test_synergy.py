"""Synergy detector: the scenario tests of spec features.md 4.5, signals (4.2) and the event (4.4)."""

from __future__ import annotations

import numpy as np
import pytest

from himari.daemon.configbase import ConfigError
from himari.daemon.events import FeatureMatrix, SynergyDetected
from himari.daemon.ids import IdSource
from himari.strategies.synergy import SynergyConfig, SynergyDetector

T0 = 1_700_000_000 * 10**9 // (1800 * 10**9) * (1800 * 10**9)  # a 30-minute boundary
SLOT = 300 * 10**9
CLOSE = 100.0


def ts(slot: int) -> int:
    return T0 + slot * SLOT


def tactical(slot: int, fvg: int = 0, size: float = 0.5, level: float = 99.5,
             both: bool = False, ready: bool = True) -> FeatureMatrix:
    ctx = {"close": CLOSE, "bar_index": float(slot), "volume_ratio": 1.3, "atr14": 0.4,
           "fvg_bull_mitigated": 0.0, "fvg_bear_mitigated": 0.0,
           "fvg_bull_mitigated_size": 0.0, "fvg_bull_mitigated_level": 0.0,
           "fvg_bear_mitigated_size": 0.0, "fvg_bear_mitigated_level": 0.0}
    for side, d in (("bull", 1), ("bear", -1)):
        if fvg == d or both:
            ctx[f"fvg_{side}_mitigated"] = 1.0
            ctx[f"fvg_{side}_mitigated_size"] = size
            ctx[f"fvg_{side}_mitigated_level"] = level
    return FeatureMatrix(event_id=f"TM-{slot}", ts_ns=ts(slot), instrument_id="TEST",
                         kind="tactical", bar_id=f"B-{slot}",
                         values=np.zeros((60, 7), np.float32), ready=ready, context=ctx)


def strategic(slot: int, mlmi: int = 0, nwrqk: int = 0, mlmi_value: float = 0.5,
              slope: float = 0.05, lvn: bool = True, ready: bool = True,
              vol_valid: bool = True) -> FeatureMatrix:
    ctx = {"close": CLOSE, "bar_index": float(slot // 6), "mlmi_value": mlmi_value * (mlmi or 1),
           "mlmi_signal": float(mlmi), "nwrqk_y": 99.9, "nwrqk_slope_pct": slope * (nwrqk or 1),
           "nwrqk_change": float(nwrqk), "volatility_30": 1.1 if vol_valid else 1.0,
           "volatility_30_pct": 0.25 if vol_valid else 0.0,
           "volatility_30_valid": 1.0 if vol_valid else 0.0,
           "lvn_present": 1.0 if lvn else 0.0, "lvn_price": 98.75, "lvn_strength": 0.6,
           "lvn_distance_pct": 1.25}
    return FeatureMatrix(event_id=f"SM-{slot}", ts_ns=ts(slot), instrument_id="TEST",
                         kind="strategic", bar_id=f"B30-{slot}",
                         values=np.zeros((48, 13), np.float32), ready=ready, context=ctx)


def drive(signals: dict[int, dict[str, int]], last: int | None = None,
          det: SynergyDetector | None = None) -> tuple[SynergyDetector, dict[int, SynergyDetected]]:
    """Evaluate every 5-minute slot 0..last; a strategic matrix at multiples of 6.
    `signals[slot]` maps "mlmi" / "nwrqk" / "fvg" to a direction."""
    det = det or SynergyDetector(SynergyConfig(), IdSource())
    last = max(signals) if last is None else last
    out = {}
    for s in range(last + 1):
        sig = signals.get(s, {})
        if ("mlmi" in sig or "nwrqk" in sig) and s % 6:
            raise AssertionError("MLMI / NW-RQK signals only at 30-minute closes")
        strat = strategic(s, sig.get("mlmi", 0), sig.get("nwrqk", 0)) if s % 6 == 0 else None
        ev = det.evaluate(tactical(s, sig.get("fvg", 0)), strat)
        if ev is not None:
            out[s] = ev
    return det, out


def seq_types(det: SynergyDetector) -> list[tuple[str, int]]:
    return [(s.type, s.direction) for s in det.sequence]


# ---- 4.5 scenarios


def test_scenario_1_type1():
    det, out = drive({0: {"mlmi": 1}, 6: {"nwrqk": 1}, 8: {"fvg": 1}})
    assert list(out) == [8]
    ev = out[8]
    assert ev.synergy_type == "TYPE_1" and ev.direction == 1 and ev.ts_ns == ts(8)
    assert ev.metadata["bars_to_complete"] == 9
    assert [s["type"] for s in ev.signal_sequence] == ["mlmi", "nwrqk", "fvg"]
    assert [s["ts_ns"] for s in ev.signal_sequence] == [ts(0), ts(6), ts(8)]
    assert det.emitted == 1 and det.sequence == []


def test_scenario_2_same_bar_mlmi_first():
    _, out = drive({0: {"mlmi": 1, "nwrqk": 1}, 4: {"fvg": 1}})
    assert list(out) == [4] and out[4].synergy_type == "TYPE_1"
    assert out[4].metadata["bars_to_complete"] == 5


def test_scenario_3_type3_short():
    _, out = drive({0: {"nwrqk": -1}, 3: {"fvg": -1}, 6: {"mlmi": -1}})
    assert list(out) == [6]
    assert out[6].synergy_type == "TYPE_3" and out[6].direction == -1


def test_scenario_3_type4():
    _, out = drive({0: {"nwrqk": 1}, 6: {"mlmi": 1}, 7: {"fvg": 1}})
    assert list(out) == [7] and out[7].synergy_type == "TYPE_4"


def test_type2():
    _, out = drive({0: {"mlmi": 1}, 3: {"fvg": 1}, 6: {"nwrqk": 1}})
    assert list(out) == [6] and out[6].synergy_type == "TYPE_2"


def test_scenario_4_window_edge_inclusive():
    _, out = drive({0: {"nwrqk": 1}, 6: {"mlmi": 1}, 10: {"fvg": 1}})
    assert list(out) == [10] and out[10].synergy_type == "TYPE_4"
    assert out[10].metadata["bars_to_complete"] == 11


def test_scenario_4_expired_and_fvg_cannot_start():
    det, out = drive({0: {"nwrqk": 1}, 6: {"mlmi": 1}, 11: {"fvg": 1}})
    assert out == {}
    assert det.expired == 1 and det.sequence == [] and det.ignored_fvg_start == 1


def test_scenario_4_expired_restarts_with_signal():
    det, out = drive({0: {"mlmi": 1}, 3: {"fvg": 1}, 12: {"nwrqk": 1}})
    assert out == {}
    assert det.expired == 1 and seq_types(det) == [("nwrqk", 1)]


def test_scenario_5_direction_conflict():
    det, out = drive({0: {"mlmi": 1}, 6: {"nwrqk": -1}})
    assert out == {}
    assert det.direction_conflicts == 1 and seq_types(det) == [("nwrqk", -1)]


def test_scenario_5_fvg_on_empty_sequence_ignored():
    det, out = drive({1: {"fvg": 1}})
    assert out == {} and det.sequence == [] and det.ignored_fvg_start == 1


def test_scenario_6_cooldown_discard():
    sig = {0: {"mlmi": 1}, 6: {"nwrqk": 1}, 8: {"fvg": 1},
           12: {"mlmi": 1, "nwrqk": 1, "fvg": 1}}
    det, out = drive(sig)
    assert list(out) == [8] and det.discarded_in_cooldown == 1 and det.emitted == 1
    assert det.sequence == []


def test_scenario_6_after_cooldown_emitted():
    sig = {0: {"mlmi": 1}, 6: {"nwrqk": 1}, 8: {"fvg": 1}, 12: {"mlmi": 1, "nwrqk": 1},
           13: {"fvg": 1}}
    det, out = drive(sig)
    assert list(out) == [8, 13] and det.discarded_in_cooldown == 0 and det.emitted == 2
    assert out[13].event_id == "SY-R-2"


def test_duplicate_type_keeps_first_occurrence():
    det, out = drive({0: {"mlmi": 1}, 6: {"mlmi": 1, "nwrqk": 1}, 7: {"fvg": 1}})
    assert det.ignored_duplicate == 1
    assert list(out) == [7] and out[7].synergy_type == "TYPE_1"
    assert [s["ts_ns"] for s in out[7].signal_sequence] == [ts(0), ts(6), ts(7)]
    assert out[7].metadata["bars_to_complete"] == 8


# ---- signals and the event


def test_event_payload():
    det = SynergyDetector(SynergyConfig(), IdSource())
    assert det.evaluate(tactical(0), strategic(0, mlmi=1, mlmi_value=0.4)) is None
    assert det.evaluate(tactical(1), None) is None
    assert det.evaluate(tactical(6), strategic(6, nwrqk=1, slope=0.05)) is None
    ev = det.evaluate(tactical(7, fvg=1, size=0.5, level=99.5), None)
    assert ev is not None and ev.event_id == "SY-R-1"
    assert ev.tactical_matrix_id == "TM-7" and ev.strategic_matrix_id == "SM-6"
    assert ev.confidence == 1.0 and ev.instrument_id == "TEST"
    # strengths: mlmi 0.4; nwrqk 0.05/0.1 = 0.5; fvg g = 100*0.5/100 = 0.5 % -> 0.5/1.0
    assert ev.metadata["signal_strengths"] == pytest.approx({"mlmi": 0.4, "nwrqk": 0.5, "fvg": 0.5})
    assert ev.synergy_strength == pytest.approx((0.4 + 0.5 + 0.5) / 3)
    assert ev.signal_sequence[0] == {"type": "mlmi", "direction": 1, "value": 0.4,
                                     "strength": 0.4, "ts_ns": ts(0)}
    assert ev.signal_sequence[1]["value"] == 99.9 and ev.signal_sequence[2]["value"] == 99.5
    assert ev.market_context == {
        "current_price": 100.0, "volatility_30": 1.1, "volatility_30_pct": 0.25,
        "volume_ratio": 1.3,
        "nearest_lvn": {"price": 98.75, "strength": 0.6, "distance_pct": 1.25}}


def test_market_context_without_lvn():
    det = SynergyDetector(SynergyConfig(), IdSource())
    det.evaluate(tactical(0), strategic(0, mlmi=1, nwrqk=1, lvn=False))
    ev = det.evaluate(tactical(1, fvg=1), None)
    assert ev is not None and ev.market_context["nearest_lvn"] is None


def test_strengths_capped_at_one():
    det = SynergyDetector(SynergyConfig(), IdSource())
    det.evaluate(tactical(0), strategic(0, mlmi=1, nwrqk=1, mlmi_value=1.0, slope=0.5))
    ev = det.evaluate(tactical(1, fvg=1, size=3.0), None)
    assert ev is not None and ev.synergy_strength == 1.0


def test_fvg_both_sides_or_small_gap_gives_no_signal():
    det = SynergyDetector(SynergyConfig(), IdSource())
    det.evaluate(tactical(0), strategic(0, mlmi=1, nwrqk=1))
    assert det.evaluate(tactical(1, both=True), None) is None
    assert det.evaluate(tactical(2, fvg=1, size=0.09), None) is None  # g = 0.09 % < 0.1 %
    assert det.signals["fvg"] == 0
    ev = det.evaluate(tactical(3, fvg=1, size=0.1), None)  # g = 0.1 %: activates
    assert ev is not None and ev.synergy_type == "TYPE_1"


def test_bearish_fvg_signal_direction_and_level():
    det = SynergyDetector(SynergyConfig(), IdSource())
    det.evaluate(tactical(0), strategic(0, mlmi=-1, nwrqk=-1))
    ev = det.evaluate(tactical(2, fvg=-1, level=100.5), None)
    assert ev is not None and ev.direction == -1
    assert ev.signal_sequence[2] == {"type": "fvg", "direction": -1, "value": 100.5,
                                     "strength": 0.5, "ts_ns": ts(2)}


def test_activation_thresholds():
    det = SynergyDetector(SynergyConfig(mlmi_min=0.5, nwrqk_min_slope_pct=0.06), IdSource())
    det.evaluate(tactical(0), strategic(0, mlmi=1, nwrqk=1, mlmi_value=0.4, slope=0.05))
    assert det.signals == {"mlmi": 0, "nwrqk": 0, "fvg": 0}
    det.evaluate(tactical(6), strategic(6, mlmi=1, nwrqk=1, mlmi_value=0.5, slope=0.06))
    assert det.signals == {"mlmi": 1, "nwrqk": 1, "fvg": 0}


def test_same_strategic_matrix_read_once():
    det = SynergyDetector(SynergyConfig(), IdSource())
    sm = strategic(0, mlmi=1)
    det.evaluate(tactical(0), sm)
    det.evaluate(tactical(1), sm)  # the same matrix again must not add an MLMI signal
    assert det.signals["mlmi"] == 1 and det.ignored_duplicate == 0


def test_config_validation():
    with pytest.raises(ConfigError) as e:
        SynergyConfig(bar_seconds=0)
    assert e.value.key == "synergy.bar_seconds"
    with pytest.raises(ConfigError):
        SynergyConfig(confidence=1.5)
    with pytest.raises(ConfigError):
        SynergyConfig(fvg_strength_scale_pct=0.0)


def test_flushed_strategic_signals_handled_first_and_all_events_returned():
    det = SynergyDetector(SynergyConfig(), IdSource())
    det.evaluate(tactical(0), strategic(0, nwrqk=1))
    det.evaluate(tactical(3, fvg=1), None)  # seq = [NW-RQK, FVG]
    # the 30-minute bar ending at slot 6 is closed by the clock (no 5-minute bar completed it)
    det.observe_strategic(strategic(6, mlmi=1, nwrqk=1))
    assert len(det.sequence) == 2 and det.signals["mlmi"] == 0  # held until the next evaluation
    events = det.evaluate_all(tactical(12, fvg=1), strategic(12, mlmi=1))
    # MLMI@6 completes TYPE_3; NW-RQK@6 starts anew; MLMI@12, FVG@12 complete TYPE_4 (6 >= 5 slots)
    assert [e.synergy_type for e in events] == ["TYPE_3", "TYPE_4"]
    assert events[0].signal_sequence[-1]["ts_ns"] == ts(6)
    assert [s["ts_ns"] for s in events[1].signal_sequence] == [ts(6), ts(12), ts(12)]
    assert events[1].strategic_matrix_id == "SM-12"
    assert det.emitted == 2


# ---- readiness (issue 12): no decision on a matrix that is not ready, no placeholder in an event


def test_unready_strategic_matrix_gives_no_signal_and_no_context():
    det = SynergyDetector(SynergyConfig(), IdSource())
    assert det.evaluate(tactical(0), strategic(0, mlmi=1, nwrqk=1, ready=False)) is None
    assert det.evaluate(tactical(1, fvg=1), None) is None
    assert det.signals == {"mlmi": 0, "nwrqk": 0, "fvg": 1} and det.sequence == []
    assert det.unready_strategic == 1 and det.ignored_fvg_start == 1
    # the same pattern on a ready matrix completes
    det.evaluate(tactical(6), strategic(6, mlmi=1, nwrqk=1))
    ev = det.evaluate(tactical(7, fvg=1), None)
    assert ev is not None and ev.strategic_matrix_id == "SM-6"


def test_unready_tactical_matrix_gives_no_fvg_signal():
    det = SynergyDetector(SynergyConfig(), IdSource())
    det.evaluate(tactical(0, ready=False), strategic(0, mlmi=1, nwrqk=1))
    assert det.evaluate(tactical(1, fvg=1, ready=False), None) is None
    assert det.signals["fvg"] == 0 and det.unready_tactical == 2
    assert seq_types(det) == [("mlmi", 1), ("nwrqk", 1)]
    ev = det.evaluate(tactical(2, fvg=1), None)  # once ready, the mitigation counts
    assert ev is not None and ev.synergy_type == "TYPE_1"


def test_pattern_completed_after_strategic_turned_unready_is_discarded():
    det = SynergyDetector(SynergyConfig(), IdSource())
    det.evaluate(tactical(0), strategic(0, mlmi=1, nwrqk=1))
    det.evaluate(tactical(6), strategic(6, ready=False))  # e.g. the assembler restarted
    assert det.evaluate(tactical(7, fvg=1), None) is None
    assert det.discarded_unready == 1 and det.emitted == 0 and det.sequence == []


def test_placeholder_volatility_never_reaches_an_event():
    """A ready strategic matrix whose volatility_30 is the 1.0 placeholder (v_rel not finite)."""
    det = SynergyDetector(SynergyConfig(), IdSource())
    det.evaluate(tactical(0), strategic(0, mlmi=1, nwrqk=1, vol_valid=False))
    assert det.evaluate(tactical(1, fvg=1), None) is None
    assert det.discarded_unready == 1 and det.emitted == 0
    # no cooldown was started by the discarded pattern
    det.evaluate(tactical(6), strategic(6, mlmi=1, nwrqk=1))
    ev = det.evaluate(tactical(7, fvg=1), None)
    assert ev is not None and ev.market_context["volatility_30"] == 1.1


def test_zero_mlmi_vote_is_no_signal():
    det = SynergyDetector(SynergyConfig(), IdSource())  # mlmi_min = 0 does not let q = 0 through
    det.evaluate(tactical(0), strategic(0, mlmi=1, nwrqk=1, mlmi_value=0.0))
    assert det.signals["mlmi"] == 0 and det.ignored_zero_mlmi == 1
    assert seq_types(det) == [("nwrqk", 1)]
    assert det.evaluate(tactical(1, fvg=1), None) is None  # NW-RQK, FVG: no third signal
    assert det.emitted == 0
    det2 = SynergyDetector(SynergyConfig(), IdSource())
    det2.evaluate(tactical(0), strategic(0, mlmi=-1, mlmi_value=-1e-9))  # any nonzero vote counts
    assert det2.signals["mlmi"] == 1 and seq_types(det2) == [("mlmi", -1)]
