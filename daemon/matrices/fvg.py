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

import msgspec

from himari.daemon.configbase import check_range


class FvgConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    lookback: int = 20
    body_multiplier: float = 1.5
    max_age: int = 50
    max_gaps_per_side: int = 50
    level_clip_pct: float = 2.0
    age_decay: float = 10.0

    def __post_init__(self) -> None:
        check_range("fvg.lookback", self.lookback, 1, 10_000)
        check_range("fvg.body_multiplier", self.body_multiplier, 0.0, 1e6, lo_open=True)
        check_range("fvg.max_age", self.max_age, 1, 1_000_000)
        check_range("fvg.max_gaps_per_side", self.max_gaps_per_side, 1, 100_000)
        check_range("fvg.level_clip_pct", self.level_clip_pct, 0.0, 1e6, lo_open=True)
        check_range("fvg.age_decay", self.age_decay, 0.0, 1e9, lo_open=True)


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


class _Gap(NamedTuple):
    b: float
    u: float
    i: int


class FvgTracker:
    """Keeps the active gaps of one bar series. Counters: created, mitigated, invalidated, expired,
    dropped (evicted by the per-side cap)."""

    def __init__(self, cfg: FvgConfig | None = None) -> None:
        self.cfg = cfg or FvgConfig()
        self._t = -1
        # The last three bars' (h, l) and the last `lookback` bodies, excluding the current bar.
        self._hl: deque[tuple[float, float]] = deque(maxlen=3)
        self._bodies: deque[float] = deque(maxlen=self.cfg.lookback)
        self._bull: deque[_Gap] = deque()  # ascending creation index
        self._bear: deque[_Gap] = deque()
        self.created = 0
        self.mitigated = 0
        self.invalidated = 0
        self.expired = 0
        self.dropped = 0

    @property
    def t(self) -> int:
        return self._t

    def active(self) -> tuple[list[tuple[float, float, int]], list[tuple[float, float, int]]]:
        """(bullish, bearish) active gaps as (b, u, i), oldest first."""
        return [tuple(g) for g in self._bull], [tuple(g) for g in self._bear]  # type: ignore[misc]

    def update(self, o: float, h: float, l: float, c: float) -> FvgOutput:
        cfg = self.cfg
        self._t += 1
        t = self._t

        # 1. mitigation / invalidation of gaps created before t (all gaps in the lists are).
        bull_size = bull_level = bear_size = bear_level = 0.0
        bull_mit = bear_mit = False
        keep: deque[_Gap] = deque()
        for g in self._bull:
            if c < g.b:
                self.invalidated += 1
            elif l <= g.u:
                self.mitigated += 1
                size = g.u - g.b
                if not bull_mit or size >= bull_size:  # ascending i: ">=" keeps the newest on ties
                    bull_size, bull_level = size, g.u
                bull_mit = True
            else:
                keep.append(g)
        self._bull = keep
        keep = deque()
        for g in self._bear:
            if c > g.u:
                self.invalidated += 1
            elif h >= g.b:
                self.mitigated += 1
                size = g.u - g.b
                if not bear_mit or size >= bear_size:
                    bear_size, bear_level = size, g.b
                bear_mit = True
            else:
                keep.append(g)
        self._bear = keep

        # 2. expiry (lists are in creation order, so the old ones sit at the left).
        for side in (self._bull, self._bear):
            while side and t - side[0].i >= cfg.max_age:
                side.popleft()
                self.expired += 1

        # 3. detection of a new gap at t.
        new_gap = 0
        body = abs(c - o)
        if len(self._hl) >= 2 and self._bodies:
            h2, l2 = self._hl[-2]  # bar t-2
            b_prev = self._bodies[-1]  # bar t-1
            bavg = math.fsum(self._bodies) / len(self._bodies)
            if b_prev > cfg.body_multiplier * bavg:
                if l > h2:
                    new_gap = 1
                    self._add(self._bull, _Gap(h2, l, t))
                elif h < l2:
                    new_gap = -1
                    self._add(self._bear, _Gap(h, l2, t))
        self._hl.append((h, l))
        self._bodies.append(body)

        # 4. nearest gap: smallest distance, then newest, then bullish.
        best_key: tuple[float, int, int] | None = None
        best_level = math.nan
        best_i = -1
        best_side = 0
        for side, gaps in ((1, self._bull), (-1, self._bear)):
            for g in gaps:
                level = g.u if side == 1 else g.b
                key = (abs(level - c), -g.i, -side)
                if best_key is None or key < best_key:
                    best_key, best_level, best_i, best_side = key, level, g.i, side

        return FvgOutput(
            t=t,
            bull_active=bool(self._bull),
            bear_active=bool(self._bear),
            nearest_level=best_level,
            nearest_age=(t - best_i) if best_side else -1,
            nearest_side=best_side,
            mitigated=bull_mit or bear_mit,
            bull_mitigated=bull_mit,
            bear_mitigated=bear_mit,
            bull_mitigated_size=bull_size,
            bull_mitigated_level=bull_level,
            bear_mitigated_size=bear_size,
            bear_mitigated_level=bear_level,
            new_gap=new_gap,
            n_bull=len(self._bull),
            n_bear=len(self._bear),
        )

    def _add(self, gaps: deque[_Gap], gap: _Gap) -> None:
        self.created += 1
        gaps.append(gap)
        if len(gaps) > self.cfg.max_gaps_per_side:
            gaps.popleft()
            self.dropped += 1
