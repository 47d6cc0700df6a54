"""Synergy detector: ordered MLMI / NW-RQK / FVG signal patterns (spec features.md section 4).

`evaluate(tactical, strategic)` runs once per closed 5-minute bar, after the tactical matrix and, at a
30-minute boundary, the strategic matrix (None otherwise). Signals are read from the matrices'
`context` only, and handled in the fixed order MLMI, NW-RQK, FVG:

| type | fires when | d | strength q | activation |
| --- | --- | --- | --- | --- |
| mlmi | strategic `mlmi_signal != 0` | mlmi_signal | `min(1, abs(mlmi_value))` | `q > 0` and `q >= mlmi_min` |
| nwrqk | strategic `nwrqk_change != 0` | nwrqk_change | `min(1, abs(s)/nwrqk_strength_scale_pct)` | `abs(s) >= nwrqk_min_slope_pct` |
| fvg | tactical mitigation of exactly one side | +1 bull, -1 bear | `min(1, g/fvg_strength_scale_pct)` | `g >= fvg_min_gap_pct` |

with `s = nwrqk_slope_pct` and `g = 100 size / C_t` (largest gap mitigated on that side, tactical close).
A signal's value is mlmi_value, nwrqk_y or the gap level; its time is its matrix's `ts_ns`. An MLMI
vote of exactly 0 (`mlmi_value = 0`: as many up as down neighbours, or an empty store) points nowhere,
so it is no signal whatever `mlmi_min` is.

Readiness (spec 2.4, 3.6, 5.6): no consumer decides on a matrix that is not `ready`. A strategic
matrix that is not ready gives no signals and is never used as the event's context (counted in
`unready_strategic`); a tactical one that is not ready gives no FVG signal (`unready_tactical`). A
pattern completed while the inputs are not ready (tactical and latest strategic matrix ready, the
strategic `volatility_30_valid`) is discarded (`discarded_unready`), so the placeholder
`volatility_30 = 1.0` of a young or broken window never reaches an event.

Sequence state machine, `slots(a, b) = (b - a) / bar_seconds` (5-minute slots by the clock, gaps
included); for each signal S: (1) expire the sequence if `slots(ts_start, S.ts) > window_bars`;
(2) reset on a direction conflict; (3) an empty sequence starts with S unless S is FVG (ignored);
(4) a type already in the sequence is ignored; (5) append; at 3 signals the order names the type
(TYPE_1 MLMI-NWRQK-FVG, TYPE_2 MLMI-FVG-NWRQK, TYPE_3 NWRQK-FVG-MLMI, TYPE_4 NWRQK-MLMI-FVG), emitted
if nothing was emitted yet or `slots(ts_last_emit, S.ts) >= cooldown_bars`, else discarded and
counted; the sequence resets either way.

The event: `confidence` = config (1.0), `synergy_strength` = mean of the three strengths,
`metadata = {bars_to_complete: slots(first, last) + 1, signal_strengths}`, `market_context` from the
tactical context (price, volume ratio) and the latest strategic matrix seen (volatility, nearest LVN).
A strategic matrix is read for signals once: passing the same one again adds no signals. A strategic
matrix closed between 5-minute bars (clock flush or gap) is given with `observe_strategic`; its
signals are handled at the next `evaluate`, first.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import msgspec

from himari.daemon.configbase import check_range
from himari.daemon.events import FeatureMatrix, SynergyDetected
from himari.daemon.ids import IdSource

MLMI, NWRQK, FVG = "mlmi", "nwrqk", "fvg"
PATTERNS: dict[tuple[str, str, str], str] = {
    (MLMI, NWRQK, FVG): "TYPE_1",
    (MLMI, FVG, NWRQK): "TYPE_2",
    (NWRQK, FVG, MLMI): "TYPE_3",
    (NWRQK, MLMI, FVG): "TYPE_4",
}


class SynergyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    window_bars: int = 10
    cooldown_bars: int = 5
    bar_seconds: int = 300
    mlmi_min: float = 0.0
    nwrqk_min_slope_pct: float = 0.0
    nwrqk_strength_scale_pct: float = 0.1
    fvg_min_gap_pct: float = 0.1
    fvg_strength_scale_pct: float = 1.0
    confidence: float = 1.0

    def __post_init__(self) -> None:
        check_range("synergy.window_bars", self.window_bars, 0, 100_000)
        check_range("synergy.cooldown_bars", self.cooldown_bars, 0, 100_000)
        check_range("synergy.bar_seconds", self.bar_seconds, 1, 86_400)
        check_range("synergy.mlmi_min", self.mlmi_min, 0.0, 1.0)
        check_range("synergy.nwrqk_min_slope_pct", self.nwrqk_min_slope_pct, 0.0, 1e6)
        check_range("synergy.nwrqk_strength_scale_pct", self.nwrqk_strength_scale_pct, 0.0, 1e6,
                    lo_open=True)
        check_range("synergy.fvg_min_gap_pct", self.fvg_min_gap_pct, 0.0, 1e6)
        check_range("synergy.fvg_strength_scale_pct", self.fvg_strength_scale_pct, 0.0, 1e6,
                    lo_open=True)
        check_range("synergy.confidence", self.confidence, 0.0, 1.0)


class Signal(NamedTuple):
    type: str
    direction: int
    value: float
    strength: float
    ts_ns: int

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "direction": self.direction, "value": self.value,
                "strength": self.strength, "ts_ns": self.ts_ns}


def _sign(x: float) -> int:
    return 1 if x > 0 else (-1 if x < 0 else 0)


def _inputs_ready(tactical: FeatureMatrix, strategic: FeatureMatrix) -> bool:
    """Both matrices an event points to are ready and its volatility is a real value."""
    return (tactical.ready and strategic.ready
            and strategic.context.get("volatility_30_valid", 0.0) > 0.0)


class SynergyDetector:
    """Counters: emitted, discarded_in_cooldown, discarded_unready, expired, direction_conflicts,
    ignored_fvg_start, ignored_duplicate, ignored_zero_mlmi, unready_tactical, unready_strategic, and
    `signals` per type."""

    def __init__(self, cfg: SynergyConfig, ids: IdSource) -> None:
        self.cfg = cfg
        self.ids = ids
        self._bar_ns = cfg.bar_seconds * 1_000_000_000
        self._seq: list[Signal] = []
        self._ts_last_emit: int | None = None
        self._strategic: FeatureMatrix | None = None  # the latest READY strategic matrix
        self._seen_strategic_id: str | None = None
        self._pending: list[Signal] = []  # strategic signals not yet evaluated
        self.emitted = 0
        self.discarded_in_cooldown = 0
        self.discarded_unready = 0
        self.ignored_zero_mlmi = 0
        self.unready_tactical = 0
        self.unready_strategic = 0
        self.expired = 0
        self.direction_conflicts = 0
        self.ignored_fvg_start = 0
        self.ignored_duplicate = 0
        self.signals: dict[str, int] = {MLMI: 0, NWRQK: 0, FVG: 0}

    @property
    def sequence(self) -> list[Signal]:
        return list(self._seq)

    def slots(self, a_ns: int, b_ns: int) -> float:
        return (b_ns - a_ns) / self._bar_ns

    def evaluate(self, tactical: FeatureMatrix,
                 strategic: FeatureMatrix | None) -> SynergyDetected | None:
        """One evaluation per closed 5-minute bar; the synergy it completes, if any."""
        events = self.evaluate_all(tactical, strategic)
        return events[0] if events else None

    def evaluate_all(self, tactical: FeatureMatrix,
                     strategic: FeatureMatrix | None) -> list[SynergyDetected]:
        """As `evaluate`, returning every synergy completed. More than one is possible only when
        signals of an earlier, flushed strategic matrix are pending (see `observe_strategic`)."""
        if strategic is not None:
            self.observe_strategic(strategic)
        signals, self._pending = self._pending, []
        if tactical.ready:
            fvg = self._fvg_signal(tactical)
            if fvg is not None:
                signals.append(fvg)
        else:
            self.unready_tactical += 1

        events: list[SynergyDetected] = []
        for s in signals:
            self.signals[s.type] += 1
            event = self._step(s, tactical)
            if event is not None:
                events.append(event)
        return events

    def observe_strategic(self, strategic: FeatureMatrix) -> None:
        """Take a strategic matrix's signals; they are handled at the next `evaluate`, before that
        call's own signals. For a 30-minute bar closed by the clock or by a gap (no 5-minute bar
        completes it), so that no strategic signal is lost and evaluation stays once per 5-minute bar.
        A matrix already seen (same event_id) adds nothing; one that is not ready adds nothing and
        leaves no context behind (a later event needs a ready strategic matrix again)."""
        if strategic.event_id == self._seen_strategic_id:
            return
        self._seen_strategic_id = strategic.event_id
        if not strategic.ready:
            self.unready_strategic += 1
            self._strategic = None
            return
        self._strategic = strategic
        self._pending.extend(self._strategic_signals(strategic))

    # ---- signal extraction

    def _strategic_signals(self, m: FeatureMatrix) -> list[Signal]:
        cfg, ctx, out = self.cfg, m.context, []
        d = _sign(ctx.get("mlmi_signal", 0.0))
        if d:
            value = float(ctx.get("mlmi_value", 0.0))
            q = min(1.0, abs(value))
            if value == 0.0:  # a zero vote has no direction: never a signal, even with mlmi_min 0
                self.ignored_zero_mlmi += 1
            elif math.isfinite(value) and q >= cfg.mlmi_min:
                out.append(Signal(MLMI, d, value, q, m.ts_ns))
        d = _sign(ctx.get("nwrqk_change", 0.0))
        if d:
            slope = float(ctx.get("nwrqk_slope_pct", 0.0))
            y = float(ctx.get("nwrqk_y", 0.0))
            if math.isfinite(slope) and math.isfinite(y) and abs(slope) >= cfg.nwrqk_min_slope_pct:
                q = min(1.0, abs(slope) / cfg.nwrqk_strength_scale_pct)
                out.append(Signal(NWRQK, d, y, q, m.ts_ns))
        return out

    def _fvg_signal(self, m: FeatureMatrix) -> Signal | None:
        ctx = m.context
        bull = ctx.get("fvg_bull_mitigated", 0.0) > 0
        bear = ctx.get("fvg_bear_mitigated", 0.0) > 0
        if bull == bear:  # none, or both sides on one bar: no signal
            return None
        side = "bull" if bull else "bear"
        size = float(ctx.get(f"fvg_{side}_mitigated_size", 0.0))
        level = float(ctx.get(f"fvg_{side}_mitigated_level", 0.0))
        close = float(ctx.get("close", 0.0))
        if not (close > 0.0 and math.isfinite(size) and math.isfinite(level)):
            return None
        g = 100.0 * size / close
        if not g >= self.cfg.fvg_min_gap_pct:
            return None
        q = min(1.0, g / self.cfg.fvg_strength_scale_pct)
        return Signal(FVG, 1 if bull else -1, level, q, m.ts_ns)

    # ---- state machine

    def _step(self, s: Signal, tactical: FeatureMatrix) -> SynergyDetected | None:
        cfg = self.cfg
        if self._seq and s.ts_ns - self._seq[0].ts_ns > cfg.window_bars * self._bar_ns:
            self._seq = []
            self.expired += 1
        if self._seq and s.direction != self._seq[0].direction:
            self._seq = []
            self.direction_conflicts += 1
        if not self._seq:
            if s.type == FVG:
                self.ignored_fvg_start += 1
            else:
                self._seq = [s]
            return None
        if any(x.type == s.type for x in self._seq):
            self.ignored_duplicate += 1
            return None
        self._seq.append(s)
        if len(self._seq) < 3:
            return None
        seq, self._seq = self._seq, []
        strat = self._strategic
        if strat is None or not _inputs_ready(tactical, strat):
            self.discarded_unready += 1
            return None
        if (self._ts_last_emit is not None
                and s.ts_ns - self._ts_last_emit < cfg.cooldown_bars * self._bar_ns):
            self.discarded_in_cooldown += 1
            return None
        self._ts_last_emit = s.ts_ns
        self.emitted += 1
        return self._event(seq, tactical, strat)

    def _event(self, seq: list[Signal], tactical: FeatureMatrix,
               strat: FeatureMatrix) -> SynergyDetected:
        order = (seq[0].type, seq[1].type, seq[2].type)
        bars = self.slots(seq[0].ts_ns, seq[-1].ts_ns) + 1.0
        sctx, tctx = strat.context, tactical.context
        lvn: dict[str, float] | None = None
        if sctx.get("lvn_present", 0.0) > 0:
            lvn = {"price": float(sctx["lvn_price"]), "strength": float(sctx["lvn_strength"]),
                   "distance_pct": float(sctx["lvn_distance_pct"])}
        return SynergyDetected(
            event_id=self.ids.next("SY"),
            ts_ns=tactical.ts_ns,
            instrument_id=tactical.instrument_id,
            synergy_type=PATTERNS[order],
            direction=seq[0].direction,
            confidence=self.cfg.confidence,
            synergy_strength=sum(x.strength for x in seq) / 3.0,
            signal_sequence=[x.as_dict() for x in seq],
            metadata={
                "bars_to_complete": int(bars) if bars.is_integer() else bars,
                "signal_strengths": {x.type: x.strength for x in seq},
            },
            market_context={  # no defaults: a missing value must fail loudly, not read as 1.0
                "current_price": float(tctx["close"]),
                "volatility_30": float(sctx["volatility_30"]),
                "volatility_30_pct": float(sctx["volatility_30_pct"]),
                "volume_ratio": float(tctx["volume_ratio"]),
                "nearest_lvn": lvn,
            },
            tactical_matrix_id=tactical.event_id,
            strategic_matrix_id=strat.event_id,
        )
