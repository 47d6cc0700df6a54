"""The matrix stage: closed 5-minute bars in, tactical / strategic matrices and synergies out.

Hot-path handler on `Bar` (name "matrices", order 20); only bars with `spec == "5m"` of this stage's
instrument are used. Per bar, in the order spec features.md 1.5 and 4.1 require at a shared boundary:
0. a pending 30-minute bar that ended before this bar opened (its last 5-minute slot had no ticks)
   is closed first (`StrategicAssembler.flush(bar.ts_open)`), published, and its signals handed to
   the synergy detector for this bar's evaluation;
1. the tactical row (`TacticalAssembler.on_bar`), published;
2. the strategic row (`StrategicAssembler.on_bar`, which aggregates 30-minute bars from the 5-minute
   bars itself and returns None between 30-minute closes), published when not None;
3. the synergy detector on both (when configured), its event published when not None.
The bus dispatches depth first, so every consumer of step 1 has run before step 2 starts.

A bar that is not strictly later than the previous one is dropped and counted (`out_of_order`):
rows are point-in-time and never revised. `flush(now_ns)` is for a live clock timer at each 30-minute
boundary (plus the bar close delay), so a 30-minute row is not held back by a quiet last slot.

Warm-up from history (spec 2.4, 3.6: pre-warm on start). The runner, before trading starts, calls
`prewarm(bars)` with at least `bars_needed()` closed 5-minute bars of recent history, oldest first,
then checks `ready`. History goes through the same assemblers as live bars (every rolling state:
FVG trackers, EMAs, ATR, the 30-minute aggregation, MLMI's RSIs, MAs and neighbour store, NW-RQK,
the volume profile, MMD and volatility windows), publishes nothing and never reaches the synergy
detector: signals and synergies from history are not live decisions, so the detector starts empty.
A 30-minute bar still open at the end of the history is completed by the live bars.
The MLMI neighbour store fills with MA-cross events (a few per day): `stats()["mlmi_store"]` reports
its size against `k`; MLMI is local only once it holds `k` entries (spec 3.1), which takes more
history than matrix readiness, so feed as much history as is at hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from himari.daemon.bus import Bus
from himari.daemon.events import Bar, FeatureMatrix, SynergyDetected
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.matrices.strategic import StrategicAssembler, StrategicConfig
from himari.daemon.matrices.tactical import TacticalAssembler, TacticalConfig

BAR_SPEC = "5m"


class SynergyLike(Protocol):
    """The synergy detector (strategies/synergy.py), injected so daemon/ imports no strategy."""

    def evaluate_all(self, tactical: FeatureMatrix,
                     strategic: FeatureMatrix | None) -> list[SynergyDetected]: ...

    def observe_strategic(self, strategic: FeatureMatrix) -> None: ...


class StrategicLike(Protocol):
    ready_from: int  # bar index of the first ready matrix

    def on_bar(self, bar5m: Bar) -> FeatureMatrix | None: ...

    def flush(self, now_ns: int) -> FeatureMatrix | None: ...


BARS_PER_30M = 6


class MatrixStage:
    """Counters: bars, prewarm_bars, foreign_instrument, out_of_order, tactical_published,
    strategic_published, synergies. `strategic` may be injected (tests); by default a
    `StrategicAssembler` is built. `last_tactical` / `last_strategic` are the newest matrices built
    (history included), published or not."""

    def __init__(self, bus: Bus, ids: IdSource, instrument: Instrument,
                 tactical_cfg: TacticalConfig, strategic_cfg: StrategicConfig,
                 synergy: SynergyLike | None = None, *,
                 strategic: StrategicLike | None = None) -> None:
        self.bus = bus
        self.instrument = instrument
        self.tactical = TacticalAssembler(tactical_cfg, instrument, ids)
        self.strategic: StrategicLike = (
            strategic if strategic is not None else StrategicAssembler(strategic_cfg, instrument, ids))
        self.synergy = synergy
        self._last_ts: int | None = None
        self.last_tactical: FeatureMatrix | None = None
        self.last_strategic: FeatureMatrix | None = None
        self.bars = 0
        self.prewarm_bars = 0
        self.foreign_instrument = 0
        self.out_of_order = 0
        self.tactical_published = 0
        self.strategic_published = 0
        self.synergies = 0
        bus.subscribe(Bar, self.on_bar, name="matrices", order=20)

    def on_bar(self, bar: Bar) -> None:
        self._process(bar, publish=True)

    def warmup(self) -> None:
        """Compile (or load from numba's cache) the strategic kernels before the daemon is ready."""
        from himari.daemon.matrices import strategic

        strategic.warmup()

    def stats(self) -> dict[str, int]:
        out = {"bars_5m": self.bars, "prewarm_bars": self.prewarm_bars,
               "tactical_published": self.tactical_published,
               "strategic_published": self.strategic_published, "synergies": self.synergies,
               "out_of_order": self.out_of_order, "foreign_instrument": self.foreign_instrument,
               "ready": int(self.ready)}
        if isinstance(self.strategic, StrategicAssembler):
            out["mlmi_store"] = self.strategic.mlmi_store_entries
            out["mlmi_k"] = self.strategic.cfg.mlmi.k
        return out

    @property
    def ready(self) -> bool:
        """The newest tactical and strategic matrices are both ready (spec 2.4, 3.6): a consumer
        of the next bar's matrices decides on full windows. False before any strategic matrix."""
        t, s = self.last_tactical, self.last_strategic
        return t is not None and t.ready and s is not None and s.ready

    def bars_needed(self) -> int:
        """Closed 5-minute bars of history after which `prewarm` leaves the stage `ready`, in the
        worst case: enough for the tactical matrix, and 6 per 30-minute bar the strategic matrix
        needs plus 5 for a first 30-minute bar that history opens late (spec 1.3 drops it).
        Gaps only lower the need (a 30-minute bar takes at most 6 five-minute bars)."""
        tactical = self.tactical.ready_from + 1
        strategic = (self.strategic.ready_from + 1) * BARS_PER_30M + BARS_PER_30M - 1
        return max(tactical, strategic)

    def prewarm(self, bars: Iterable[Bar]) -> int:
        """Run history (closed 5-minute bars of this instrument, oldest first) through the
        assemblers without publishing and without the synergy detector; returns the bars used (other
        specs, instruments and out-of-order bars are skipped and counted as on the live path).
        Call it before the first live bar: rows are point-in-time, history cannot follow them."""
        if self.bars > self.prewarm_bars:
            raise RuntimeError(
                f"MatrixStage.prewarm after {self.bars - self.prewarm_bars} live bars: "
                "warm up from history before trading starts")
        used = 0
        for bar in bars:
            if self._process(bar, publish=False):
                used += 1
        self.prewarm_bars += used
        return used

    def _process(self, bar: Bar, *, publish: bool) -> bool:
        if bar.spec != BAR_SPEC:
            return False
        if bar.instrument_id != self.instrument.id:
            self.foreign_instrument += 1
            return False
        if self._last_ts is not None and bar.ts_ns <= self._last_ts:
            self.out_of_order += 1
            return False
        self._last_ts = bar.ts_ns
        self.bars += 1

        # A 30-minute bar whose last 5-minute slot had no ticks ended before this bar opened: close
        # it first, so it is published in time order and its signals are not lost.
        self._flush(bar.ts_open, publish)
        tactical = self.last_tactical = self.tactical.on_bar(bar)
        if publish:
            self.tactical_published += 1
            self.bus.publish(tactical)
        strategic = self.strategic.on_bar(bar)
        if strategic is not None:
            self.last_strategic = strategic
            if publish:
                self.strategic_published += 1
                self.bus.publish(strategic)
        if self.synergy is not None and publish:  # history is no decision: see the docstring
            for synergy in self.synergy.evaluate_all(tactical, strategic):
                self.synergies += 1
                self.bus.publish(synergy)
        return True

    def flush(self, now_ns: int) -> None:
        """Close a pending 30-minute bar whose end the clock has reached (live timer at each
        30-minute boundary plus the close delay); its synergy signals wait for the next 5-minute bar."""
        self._flush(now_ns, True)

    def _flush(self, now_ns: int, publish: bool) -> None:
        strategic = self.strategic.flush(now_ns)
        if strategic is None:
            return
        self.last_strategic = strategic
        if not publish:
            return
        self.strategic_published += 1
        self.bus.publish(strategic)
        if self.synergy is not None:
            self.synergy.observe_strategic(strategic)
