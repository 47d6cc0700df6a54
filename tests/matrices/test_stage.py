"""Matrix stage: bus wiring and the order tactical -> strategic -> synergy (spec features.md 1.5, 4.1)."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from himari.daemon.bus import Bus
from himari.daemon.events import Bar, FeatureMatrix, SynergyDetected
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.matrices.stage import MatrixStage
from himari.daemon.matrices.strategic import StrategicConfig
from himari.daemon.matrices.tactical import TacticalConfig
from himari.strategies.synergy import SynergyConfig, SynergyDetector

INST = Instrument(id="TEST", tick_size=Decimal("0.1"))
STEP = 300 * 10**9
HALF_HOUR = 1800 * 10**9
BASE = 1_700_000_000 * 10**9 // HALF_HOUR * HALF_HOUR  # bar 0 closes on a 30-minute boundary


def bar(t: int, o: float, h: float, l: float, c: float, *, spec: str = "5m",
        inst: str = "TEST", v: int = 100) -> Bar:
    tk = lambda x: int(round(x * 10))  # noqa: E731
    close = BASE + t * STEP
    return Bar(event_id=f"B-{t}", ts_ns=close, instrument_id=inst, spec=spec,
               ts_open=close - STEP, ts_close=close, open=tk(o), high=tk(h), low=tk(l),
               close=tk(c), volume=v, n_ticks=1)


class FakeStrategic:
    """Returns a strategic matrix on 30-minute closes; logs its calls into the shared log."""

    def __init__(self, log: list[str], ids: IdSource, signals: dict[int, dict[str, float]]) -> None:
        self.log, self.ids, self.signals = log, ids, signals

    def on_bar(self, bar5m: Bar) -> FeatureMatrix | None:
        self.log.append(f"strategic.on_bar {bar5m.event_id}")
        if bar5m.ts_close % HALF_HOUR:
            return None
        t = (bar5m.ts_close - BASE) // STEP
        ctx = {"close": bar5m.close * 0.1, "mlmi_signal": 0.0, "mlmi_value": 0.0,
               "nwrqk_change": 0.0, "nwrqk_slope_pct": 0.0, "nwrqk_y": 0.0,
               "volatility_30": 1.0, "volatility_30_pct": 0.2, "lvn_present": 0.0}
        ctx.update(self.signals.get(t, {}))
        return FeatureMatrix(event_id=self.ids.next("SM"), ts_ns=bar5m.ts_ns, instrument_id="TEST",
                             kind="strategic", bar_id=bar5m.event_id,
                             values=np.zeros((48, 13), np.float32), ready=False, context=ctx)

    def flush(self, now_ns: int) -> FeatureMatrix | None:
        return None


def recorder(bus: Bus, log: list[str]) -> None:
    bus.subscribe(FeatureMatrix, lambda e: log.append(f"{e.kind} {e.bar_id}"), name="rec", order=50)
    bus.subscribe(SynergyDetected, lambda e: log.append(f"synergy {e.synergy_type} {e.event_id}"),
                  name="rec_sy", order=50)


FVG_BARS = [(100, 101, 99, 100.5), (100.5, 104, 100.4, 103.8), (103.8, 105, 101.5, 104.5),
            (104.5, 104.8, 101.3, 102.0)]


def make_stage(signals=None, synergy: bool = True):
    bus, ids, log = Bus(), IdSource(), []
    recorder(bus, log)
    fake = FakeStrategic(log, ids, signals or {})
    stage = MatrixStage(bus, ids, INST, TacticalConfig(), None,  # type: ignore[arg-type]
                        SynergyDetector(SynergyConfig(), ids) if synergy else None,
                        strategic=fake)
    return bus, stage, log


def test_order_tactical_strategic_synergy():
    # MLMI and NW-RQK at bar 0 (a 30-minute close), FVG mitigation at bar 3: TYPE_1 at bar 3.
    bus, stage, log = make_stage({0: {"mlmi_signal": 1.0, "mlmi_value": 0.5, "nwrqk_change": 1.0,
                                      "nwrqk_slope_pct": 0.05, "nwrqk_y": 100.4}})
    for t, x in enumerate(FVG_BARS):
        bus.publish(bar(t, *x))
    assert log == [
        "tactical B-0", "strategic.on_bar B-0", "strategic B-0",
        "tactical B-1", "strategic.on_bar B-1",
        "tactical B-2", "strategic.on_bar B-2",
        "tactical B-3", "strategic.on_bar B-3", "synergy TYPE_1 SY-R-1",
    ]
    assert stage.synergy is not None and stage.synergy.emitted == 1
    assert (stage.tactical_published, stage.strategic_published, stage.synergies) == (4, 1, 1)
    assert bus.handler_errors == {}


def test_synergy_event_ids_point_to_matrices():
    bus, _, _ = make_stage({0: {"mlmi_signal": 1.0, "mlmi_value": 0.5, "nwrqk_change": 1.0,
                                "nwrqk_slope_pct": 0.05}})
    seen: list = []
    bus.subscribe(FeatureMatrix, seen.append, name="m", order=60)
    bus.subscribe(SynergyDetected, seen.append, name="s", order=60)
    for t, x in enumerate(FVG_BARS):
        bus.publish(bar(t, *x))
    ev = seen[-1]
    assert isinstance(ev, SynergyDetected)
    tac = [e for e in seen if isinstance(e, FeatureMatrix) and e.kind == "tactical"]
    strat = [e for e in seen if isinstance(e, FeatureMatrix) and e.kind == "strategic"]
    assert ev.tactical_matrix_id == tac[-1].event_id and ev.strategic_matrix_id == strat[-1].event_id
    assert ev.ts_ns == tac[-1].ts_ns


def test_ignores_other_specs_instruments_and_stale_bars():
    bus, stage, log = make_stage()
    bus.publish(bar(0, *FVG_BARS[0], spec="30m"))
    bus.publish(bar(0, *FVG_BARS[0], spec="1m"))
    assert log == []
    bus.publish(bar(0, *FVG_BARS[0], inst="OTHER"))
    assert log == [] and stage.foreign_instrument == 1
    bus.publish(bar(1, *FVG_BARS[0]))
    bus.publish(bar(1, *FVG_BARS[1]))  # same close time again: dropped
    bus.publish(bar(0, *FVG_BARS[1]))  # older: dropped
    assert stage.out_of_order == 2 and stage.tactical.t == 0 and stage.bars == 1


def test_without_synergy_config():
    bus, stage, log = make_stage({0: {"mlmi_signal": 1.0, "nwrqk_change": 1.0}}, synergy=False)
    for t, x in enumerate(FVG_BARS):
        bus.publish(bar(t, *x))
    assert stage.synergy is None and not any(x.startswith("synergy") for x in log)


def test_prewarm_does_not_publish():
    bus, stage, log = make_stage()
    used = stage.prewarm([bar(t, *x) for t, x in enumerate(FVG_BARS)] + [bar(9, *FVG_BARS[0], spec="1m")])
    assert used == 4 and stage.tactical.t == 3
    assert [x for x in log if not x.startswith("strategic.on_bar")] == []
    bus.publish(bar(4, *FVG_BARS[0]))
    assert log[-2:] == ["tactical B-4", "strategic.on_bar B-4"]


def test_with_real_strategic_assembler():
    bus, ids = Bus(), IdSource()
    seen: list[tuple[str, int]] = []
    bus.subscribe(FeatureMatrix, lambda e: seen.append((e.kind, e.ts_ns)), name="rec", order=50)
    bus.subscribe(SynergyDetected, lambda e: seen.append(("synergy", e.ts_ns)), name="rs", order=50)
    stage = MatrixStage(bus, ids, INST, TacticalConfig(), StrategicConfig(),
                        SynergyDetector(SynergyConfig(), ids))
    rng = np.random.default_rng(5)
    c = 1000.0
    for t in range(1, 13 * 6 + 1):  # 78 five-minute bars from a 30-minute boundary: 13 closes
        o = c
        c = round(o + float(rng.normal(0, 1.0)), 1)
        bus.publish(bar(t, o, max(o, c) + 0.5, min(o, c) - 0.5, c))
    assert bus.handler_errors == {}
    assert stage.tactical_published == 78
    strat = [i for i, (kind, _) in enumerate(seen) if kind == "strategic"]
    assert 12 <= len(strat) <= 13  # the first 30-minute bar may be dropped as a session start
    for i in strat:  # on a 30-minute close, right after the tactical row of the same 5-minute bar
        assert seen[i][1] % HALF_HOUR == 0
        assert seen[i - 1] == ("tactical", seen[i][1])
    for i, (kind, ts_ns) in enumerate(seen):  # a synergy comes last for its bar
        if kind == "synergy":
            assert seen[i - 1][1] == ts_ns and seen[i - 1][0] in ("tactical", "strategic")


def test_gap_closes_strategic_before_next_tactical():
    """A 30-minute interval whose last 5-minute slot is empty closes before the next bar's tactical
    row (in time order), and its MLMI / NW-RQK signals still reach the detector."""
    bus, ids = Bus(), IdSource()
    seen: list[tuple[str, int]] = []
    bus.subscribe(FeatureMatrix, lambda e: seen.append((e.kind, e.ts_ns)), name="rec", order=50)
    stage = MatrixStage(bus, ids, INST, TacticalConfig(), StrategicConfig(),
                        SynergyDetector(SynergyConfig(), ids))
    for t in (1, 2, 3, 4, 5, 8):  # slot 6 (the end of the first interval) and 7 have no bar
        bus.publish(bar(t, 100, 101, 99, 100.5))
    assert bus.handler_errors == {}
    ts = [x[1] for x in seen]
    assert ts == sorted(ts)
    assert seen[-2:] == [("strategic", BASE + 6 * STEP), ("tactical", BASE + 8 * STEP)]
    assert stage.strategic_published == 1


def test_flushed_strategic_signals_are_evaluated_first():
    det_bus, ids, log = Bus(), IdSource(), []

    class Flushing(FakeStrategic):
        def flush(self, now_ns: int) -> FeatureMatrix | None:
            if now_ns == BASE + 6 * STEP:  # bar 7 opens: interval 0 (ending at slot 6) closes
                return FeatureMatrix(event_id="SM-flushed", ts_ns=BASE + 6 * STEP,
                                     instrument_id="TEST", kind="strategic", bar_id="B30-x",
                                     values=np.zeros((48, 13), np.float32), ready=False,
                                     context={"close": 100.0, "mlmi_signal": 1.0, "mlmi_value": 0.5,
                                              "nwrqk_change": 1.0, "nwrqk_slope_pct": 0.05,
                                              "nwrqk_y": 100.0})
            return None

        def on_bar(self, bar5m: Bar) -> FeatureMatrix | None:
            return None

    recorder(det_bus, log)
    stage = MatrixStage(det_bus, ids, INST, TacticalConfig(), None,  # type: ignore[arg-type]
                        SynergyDetector(SynergyConfig(), ids), strategic=Flushing(log, ids, {}))
    # the FVG vector on slots 4, 5, 7, 8 (slot 6 quiet): gap at 7, mitigation at 8
    for t, x in zip((4, 5, 7, 8), FVG_BARS):
        det_bus.publish(bar(t, *x))
    assert "strategic B30-x" in log
    assert log.index("tactical B-5") < log.index("strategic B30-x") < log.index("tactical B-7")
    assert log[-1] == "synergy TYPE_1 SY-R-1"
    assert stage.synergy is not None and stage.synergy.emitted == 1


DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "btc-perp-20211231-20220201_1m.csv"


def load_5m_bars(limit: int) -> list[Bar]:
    """BTC perpetual 1-minute bars (stamped by open time) aggregated to 5-minute bars, prices in
    whole-dollar ticks; the first (possibly partial) 5-minute bar is dropped (spec 1.3)."""
    agg: dict[int, list[int]] = {}
    with DATA.open() as f:
        for r in csv.DictReader(f):
            ts = int(datetime.fromisoformat(r["timestamp"]).replace(tzinfo=timezone.utc).timestamp())
            k = ts * 10**9 // STEP
            o, h, l, c = (int(float(r[x])) for x in ("open", "high", "low", "close"))
            v = int(round(float(r["volume"])))
            b = agg.get(k)
            if b is None:
                if len(agg) > limit:
                    break
                agg[k] = [o, h, l, c, v, 1]
            else:
                b[1], b[2], b[3], b[4], b[5] = max(b[1], h), min(b[2], l), c, b[4] + v, b[5] + 1
    keys = sorted(agg)[1:limit + 1]
    return [Bar(event_id=f"B{k}", ts_ns=(k + 1) * STEP, instrument_id="BTC", spec="5m",
                ts_open=k * STEP, ts_close=(k + 1) * STEP, open=agg[k][0], high=agg[k][1],
                low=agg[k][2], close=agg[k][3], volume=agg[k][4], n_ticks=agg[k][5]) for k in keys]


@pytest.mark.skipif(not DATA.exists(), reason="real data ../shared/data not present")
def test_real_btc_pipeline_invariants():
    bars = load_5m_bars(2500)
    bus, ids = Bus(), IdSource()
    events: list = []
    bus.subscribe(FeatureMatrix, events.append, name="rec", order=50)
    bus.subscribe(SynergyDetected, events.append, name="rs", order=50)
    inst = Instrument(id="BTC", tick_size=Decimal(1))
    stage = MatrixStage(bus, ids, inst, TacticalConfig(), StrategicConfig(),
                        SynergyDetector(SynergyConfig(), ids))
    for b in bars:
        bus.publish(b)
    assert bus.handler_errors == {}
    ts = [e.ts_ns for e in events]
    assert ts == sorted(ts)  # published in time order
    tac = [e for e in events if isinstance(e, FeatureMatrix) and e.kind == "tactical"]
    assert len(tac) == len(bars)
    assert [m.ready for m in tac].index(True) == 78
    assert int(stage.tactical.nonfinite_counts.sum()) == 0
    for m in tac[::50]:
        assert m.values.shape == (60, 7) and np.isfinite(m.values).all()
    by_id = {e.event_id: e for e in events if isinstance(e, FeatureMatrix)}
    syn = [e for e in events if isinstance(e, SynergyDetected)]
    assert syn, "a month of BTC should give some synergies in 2500 bars"
    last_strategic: FeatureMatrix | None = None
    last_emit: int | None = None
    for e in events:
        if isinstance(e, FeatureMatrix) and e.kind == "strategic":
            last_strategic = e
        if not isinstance(e, SynergyDetected):
            continue
        assert by_id[e.tactical_matrix_id].ts_ns == e.ts_ns
        assert last_strategic is not None and e.strategic_matrix_id == last_strategic.event_id
        seq = e.signal_sequence
        assert {s["type"] for s in seq} == {"mlmi", "nwrqk", "fvg"} and seq[0]["type"] != "fvg"
        assert all(s["direction"] == e.direction for s in seq)
        assert seq[-1]["ts_ns"] - seq[0]["ts_ns"] <= 10 * STEP
        assert last_emit is None or e.ts_ns - last_emit >= 5 * STEP
        assert 0.0 <= e.synergy_strength <= 1.0
        last_emit = e.ts_ns
