"""Tactical team at run time: FVG, momentum and entry actors on the 60x7 matrix (spec 2.1-2.3).

Each actor: input x learned per-feature weight (G9), Conv1d 7->c1 (k3, p1), ReLU, Conv1d c1->c2,
ReLU, AdaptiveAvgPool1d(P), flatten, Linear -> fc, ReLU, policy head fc -> h -> 3 logits (G10),
softmax. Sizes come from the checkpoint (scaled down from the seed's 32/64/16/256/128, see
training/tactical.py). Probabilities are in canonical order: FVG and momentum SELL/HOLD/BUY,
entry WAIT/EXECUTE/AGGRESSIVE. The aggregation of 2.4 lives in decision/aggregate.py.

Numba, float64, preallocated buffers; one kernel call runs all three actors. No torch here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from himari.decision.checkpoint import DEFAULT_DIR, CheckpointError, load_checkpoint
from himari.decision.layout import TACTICAL_COLS, TACTICAL_ROWS
from himari.decision.nets.numeric import (adaptive_avg_pool1d, conv1d_same, linear, relu,
                                          softmax)

AGENT_KIND = "tactical_team"
NAME = "tactical_team"
AGENTS = ("fvg", "momentum", "entry")
_PARTS = ("conv1", "conv2", "fc", "head1", "head2")


@njit(cache=True)
def _team_forward(m, fw, w1, b1, w2, b2, wf, bf, wh1, bh1, wh2, bh2,
                  xin, h1, h2, pooled, fcb, hb, logits, probs):  # pragma: no cover - numba
    """probs (3, 3) for the three actors; returns False for a non-finite matrix."""
    rows, cols = m.shape
    for t in range(rows):
        for c in range(cols):
            if not math.isfinite(m[t, c]):
                return False
    for a in range(3):
        for t in range(rows):
            for c in range(cols):
                xin[c, t] = m[t, c] * fw[a, c]
        conv1d_same(xin, w1[a], b1[a], h1)
        relu(h1.reshape(-1))
        conv1d_same(h1, w2[a], b2[a], h2)
        relu(h2.reshape(-1))
        adaptive_avg_pool1d(h2, pooled)
        linear(pooled.reshape(-1), wf[a], bf[a], fcb)
        relu(fcb)
        linear(fcb, wh1[a], bh1[a], hb)
        relu(hb)
        linear(hb, wh2[a], bh2[a], logits)
        softmax(logits, probs[a])
    return True


class TacticalTeam:
    """The three tactical actors, ready for batch-of-one inference."""

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        self.meta = dict(meta or {})
        try:
            stacked = {}
            for key in ["feature_weight"] + [f"{p}.{w}" for p in _PARTS for w in ("weight", "bias")]:
                arrays = [np.asarray(tensors[f"{a}.{key}"], dtype=np.float64) for a in AGENTS]
                if len({x.shape for x in arrays}) != 1:
                    raise ValueError(f"{key} differs in shape between the actors")
                stacked[key] = np.ascontiguousarray(np.stack(arrays))
        except KeyError as exc:
            raise CheckpointError(f"tactical team checkpoint lacks tensor {exc}") from None
        except ValueError as exc:
            raise CheckpointError(f"tactical team checkpoint is malformed: {exc}") from None
        s = stacked
        c1, c2 = s["conv1.weight"].shape[1], s["conv2.weight"].shape[1]
        fc, head = s["fc.weight"].shape[1], s["head1.weight"].shape[1]
        pool = s["fc.weight"].shape[2] // c2 if c2 else 0
        ok = (s["feature_weight"].shape == (3, TACTICAL_COLS)
              and s["conv1.weight"].shape == (3, c1, TACTICAL_COLS, 3)
              and s["conv2.weight"].shape == (3, c2, c1, 3)
              and pool > 0 and s["fc.weight"].shape == (3, fc, c2 * pool)
              and s["head1.weight"].shape == (3, head, fc)
              and s["head2.weight"].shape == (3, 3, head))
        if not ok:
            raise CheckpointError("tactical team checkpoint: layer shapes do not chain "
                                  f"({ {k: v.shape for k, v in s.items()} })")
        self.sizes = {"channels": [int(c1), int(c2)], "pool": int(pool), "fc": int(fc),
                      "head": int(head)}
        self._w = tuple(s[k] for k in ["feature_weight"] + [f"{p}.{w}" for p in _PARTS
                                                           for w in ("weight", "bias")])
        self._xin = np.zeros((TACTICAL_COLS, TACTICAL_ROWS))
        self._h1 = np.zeros((c1, TACTICAL_ROWS))
        self._h2 = np.zeros((c2, TACTICAL_ROWS))
        self._pooled = np.zeros((c2, pool))
        self._fc = np.zeros(fc)
        self._hb = np.zeros(head)
        self._logits = np.zeros(3)
        self._probs = np.zeros((3, 3))
        self.probs(np.zeros((TACTICAL_ROWS, TACTICAL_COLS), dtype=np.float32))  # compile now

    def probs(self, tactical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fvg, momentum, entry) probabilities, each (3,) float64, fresh arrays.

        Raises ValueError for a wrong shape or a non-finite value (the engine's guard counts it).
        """
        m = np.asarray(tactical)
        if m.shape != (TACTICAL_ROWS, TACTICAL_COLS):
            raise ValueError(f"tactical matrix has shape {m.shape}, expected "
                             f"({TACTICAL_ROWS}, {TACTICAL_COLS})")
        if m.dtype != np.float64 or not m.flags.c_contiguous:
            # one compiled signature only: another dtype or layout would compile anew mid-run
            m = np.ascontiguousarray(m, dtype=np.float64)
        if not _team_forward(m, *self._w, self._xin, self._h1, self._h2, self._pooled, self._fc,
                             self._hb, self._logits, self._probs):
            raise ValueError("tactical matrix holds NaN or inf")
        p = self._probs.copy()
        return p[0], p[1], p[2]


def load(directory: Path | None = None, name: str = NAME) -> TacticalTeam:
    """The shipped (or `directory`'s) tactical team; CheckpointError / CheckpointMissing."""
    tensors, meta = load_checkpoint(Path(directory) if directory else DEFAULT_DIR, name,
                                    AGENT_KIND)
    return TacticalTeam(tensors, meta)
