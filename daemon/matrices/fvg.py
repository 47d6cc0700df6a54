"""Fair value gap (FVG) tracker, one `update` per closed bar (spec features.md 2.1-2.2).

Detection at bar i (newest) from bars i-2, i-1, i with bodies `B_j = |C_j - O_j|`:
- `Bavg_i = mean(B_j for j = max(0, i - lookback) .. i - 1)` (the middle bar is in its own average);
- bullish gap when `L_i > H_{i-2}` and `B_{i-1} > body_multiplier * Bavg_i`, zone `[H_{i-2}, L_i]`;
- bearish gap when `H_i < L_{i-2}` and `B_{i-1} > body_multiplier * Bavg_i`, zone `[H_i, L_{i-2}]`.
Comparisons are strict; there is no minimum gap size.

State per bar close t, in this order:
1. every gap with `i < t`: bullish `[b, u]`: `C_t < b` invalidates (removed, no signal), else `L_t <= u`
   mitigates (removed and recorded); bearish: `C_t > u` invalidates, else `H_t >= b` mitigates;
2. gaps with `t - i >= max_age` expire (removed, no signal);
3. a new gap at t is added with `i = t` (first tested at t+1); at most `max_gaps_per_side` per side,
   the oldest dropped;
4. outputs: active flag per side; a gap's level is `u` (bullish) or `b` (bearish), the edge a retrace
   meets first; nearest gap `argmin |level - C_t|` (tie: newest, then bullish) gives `nearest_level`
   and `nearest_age = t - i`; `mitigated` = any gap mitigated in step 1; per side the size `u - b` and
   level of the largest gap mitigated at this bar (tie on size: the newest gap).

Prices are float64 price units. The normalized matrix columns (level distance, age decay) are computed
by the assemblers from `nearest_level` / `nearest_age` with `level_clip_pct` and `age_decay`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple


from himari.daemon.matrices.config import FvgConfig


class FvgOutput(NamedTuple):
    """The tracker's state after bar `t`'s close."""

    t: int
    bull_active: bool
    bear_active: bool
    nearest_level: float  # nan if no active gap
    nearest_age: int  # -1 if no active gap
    nearest_side: int  # +1 bullish, -1 bearish, 0 none
    mitigated: bool  # any gap mitigated at this bar
    bull_mitigated: bool
    bear_mitigated: bool
    bull_mitigated_size: float  # largest bullish gap mitigated at this bar, 0 if none
    bull_mitigated_level: float
    bear_mitigated_size: float
    bear_mitigated_level: float
    new_gap: int  # +1 / -1 if a gap was created at this bar, else 0
    n_bull: int
    n_bear: int


# Hot path (once per 5-minute bar): gaps are plain (b, u, i) tuples in lists, the last two bars' high
# and low are plain attributes, and the output tuple is built positionally (tuple.__new__ skips the
# keyword-parsing NamedTuple constructor); the body average is only summed when the price condition
# of a gap holds. Values are the same as a literal reading of the steps above (tests check).
_new_tuple = tuple.__new__
Gap = tuple[float, float, int]  # (b, u, i)


class FvgTracker:
    """Keeps the active gaps of one bar series. Counters: created, mitigated, invalidated, expired,
    dropped (evicted by the per-side cap)."""

    def __init__(self, cfg: FvgConfig | None = None) -> None:
        self.cfg = cfg = cfg or FvgConfig()
        self._mult = cfg.body_multiplier
        self._max_age = cfg.max_age
        self._cap = cfg.max_gaps_per_side
        self._t = -1
        # (h, l) of bars t-1 and t-2 as seen at the start of update(t); the last `lookback` bodies,
        # excluding the current bar.
        self._h1 = self._l1 = self._h2 = self._l2 = math.nan
        self._bodies: deque[float] = deque(maxlen=cfg.lookback)
        self._bull: list[Gap] = []  # ascending creation index
        self._bear: list[Gap] = []
        self.created = 0
        self.mitigated = 0
        self.invalidated = 0
        self.expired = 0
        self.dropped = 0

    @property
    def t(self) -> int:
        return self._t

    def active(self) -> tuple[list[Gap], list[Gap]]:
        """(bullish, bearish) active gaps as (b, u, i), oldest first."""
        return list(self._bull), list(self._bear)

    def update(self, o: float, h: float, l: float, c: float) -> FvgOutput:
        t = self._t = self._t + 1
        bull, bear = self._bull, self._bear

        # 1. mitigation / invalidation of gaps created before t (all gaps in the lists are).
        bull_size = bull_level = bear_size = bear_level = 0.0
        bull_mit = bear_mit = False
        if bull:
            keep = []
            for g in bull:
                b, u, _ = g
                if c < b:
                    self.invalidated += 1
                elif l <= u:
                    self.mitigated += 1
                    size = u - b
                    if not bull_mit or size >= bull_size:  # ascending i: ">=" keeps the newest on ties
                        bull_size, bull_level = size, u
                    bull_mit = True
                else:
                    keep.append(g)
            if len(keep) != len(bull):
                self._bull = bull = keep
        if bear:
            keep = []
            for g in bear:
                b, u, _ = g
                if c > u:
                    self.invalidated += 1
                elif h >= b:
                    self.mitigated += 1
                    size = u - b
                    if not bear_mit or size >= bear_size:
                        bear_size, bear_level = size, b
                    bear_mit = True
                else:
                    keep.append(g)
            if len(keep) != len(bear):
                self._bear = bear = keep

        # 2. expiry (lists are in creation order, so the old ones sit at the left).
        max_age = self._max_age
        while bull and t - bull[0][2] >= max_age:
            del bull[0]
            self.expired += 1
        while bear and t - bear[0][2] >= max_age:
            del bear[0]
            self.expired += 1

        # 3. detection of a new gap at t (bars t-2, t-1 exist from t = 2 on).
        new_gap = 0
        h2, l2 = self._h2, self._l2
        if t >= 2 and (l > h2 or h < l2):
            bodies = self._bodies
            if bodies[-1] > self._mult * (math.fsum(bodies) / len(bodies)):
                if l > h2:
                    new_gap = 1
                    self._add(bull, (h2, l, t))
                else:
                    new_gap = -1
                    self._add(bear, (h, l2, t))
        self._h2, self._l2 = self._h1, self._l1
        self._h1, self._l1 = h, l
        self._bodies.append(abs(c - o))

        # 4. nearest gap: smallest distance, then newest (ascending i: a later gap wins a tie), then
        # bullish (the bull list is scanned first and a bear gap never shares its i).
        best_level = math.nan
        best_i = -1
        best_side = 0
        best_d = 0.0
        for _, u, i in bull:
            d = abs(u - c)
            if best_side == 0 or d < best_d or (d == best_d and i > best_i):
                best_d, best_level, best_i, best_side = d, u, i, 1
        for b, _, i in bear:
            d = abs(b - c)
            if best_side == 0 or d < best_d or (d == best_d and i > best_i):
                best_d, best_level, best_i, best_side = d, b, i, -1

        return _new_tuple(FvgOutput, (  # field order of FvgOutput
            t, bool(bull), bool(bear), best_level, (t - best_i) if best_side else -1, best_side,
            bull_mit or bear_mit, bull_mit, bear_mit, bull_size, bull_level, bear_size, bear_level,
            new_gap, len(bull), len(bear)))

    def _add(self, gaps: list[Gap], gap: Gap) -> None:
        self.created += 1
        gaps.append(gap)
        if len(gaps) > self._cap:
            del gaps[0]
            self.dropped += 1
