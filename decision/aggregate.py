"""Team aggregation: the tactical score vote (spec decision.md 2.4), the strategic ensemble (3.3).

Both are pure functions of the team's per-agent probabilities (canonical order SELL, HOLD, BUY;
entry head WAIT, EXECUTE, AGGRESSIVE), so they are tested against the spec's numbers without any
network. The team modules (`decision/nets/tactical.py`, `strategic.py`) produce the probabilities;
this module turns them into the team's action, confidence and its reasoning record.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from himari.decision.layout import ACTIONS, BUY, ENTRY_ACTIONS, HOLD, SELL, WAIT

# Synergy-type weights (FVG, momentum, entry), spec 2.4; index 0 = no / unknown type.
TACTICAL_WEIGHTS: dict[int, tuple[float, float, float]] = {
    1: (0.5, 0.3, 0.2),     # TYPE_1 FVG-heavy
    2: (0.4, 0.4, 0.2),     # TYPE_2 balanced
    3: (0.3, 0.5, 0.2),     # TYPE_3 momentum-heavy
    4: (0.35, 0.35, 0.3),   # TYPE_4 entry timing
}
DEFAULT_TACTICAL_WEIGHTS = (0.33, 0.33, 0.34)
EXECUTION_THRESHOLD = 0.65
MISMATCH_PENALTY = 0.7

STRATEGIC_AGENTS = ("mlmi", "nwrqk", "regime")
STRATEGIC_INITIAL_WEIGHTS = (0.4, 0.35, 0.25)  # softmax(omega) at initialisation (G25)
PROCEED_THRESHOLD = 0.65
_LN3 = math.log(3.0)


class TacticalResult(msgspec.Struct, frozen=True, kw_only=True):
    action: int                  # canonical index; HOLD unless executed
    confidence: float            # the (penalised) score of the best action
    execute: bool
    best: int                    # argmax of S before the threshold
    scores: tuple[float, float, float]  # S over SELL, HOLD, BUY (before the penalty)
    entry_mode: str              # WAIT / EXECUTE / AGGRESSIVE
    penalised: bool
    size_multiplier: float       # min(score / 0.8, 1.5) (G15); risk owns sizing, never < 1 lot
    reason: str

    def vote_probs(self) -> tuple[float, float, float]:
        """The tactical vote for the ensemble: S normalised to sum 1 (spec section 1, step 4)."""
        total = sum(self.scores)
        if total <= 0.0:
            return (0.0, 1.0, 0.0)
        return (self.scores[0] / total, self.scores[1] / total, self.scores[2] / total)


def tactical_weights(synergy_type: int) -> tuple[float, float, float]:
    return TACTICAL_WEIGHTS.get(int(synergy_type), DEFAULT_TACTICAL_WEIGHTS)


def aggregate_tactical(fvg: np.ndarray, momentum: np.ndarray, entry: np.ndarray,
                       synergy_type: int, synergy_direction: int) -> TacticalResult:
    """Spec 2.4 steps 1-7. `synergy_direction` +1 / -1 (0: no penalty can apply)."""
    w_f, w_m, w_e = tactical_weights(synergy_type)
    a_f, c_f = _argmax_conf(fvg)
    a_m, c_m = _argmax_conf(momentum)
    a_e, c_e = _argmax_conf(entry)
    s = [0.0, 0.0, 0.0]
    s[a_f] += w_f * c_f
    s[a_m] += w_m * c_m
    # Entry gating (G11): timing never votes a direction of its own, it backs the leading one.
    if a_e == WAIT or s[SELL] == s[BUY]:
        s[HOLD] += w_e * c_e
    else:
        s[SELL if s[SELL] > s[BUY] else BUY] += w_e * c_e
    top = max(s)
    # Ties go to HOLD: HOLD when it shares the top, or when SELL and BUY share it.
    if s[HOLD] == top or s[SELL] == s[BUY] == top:
        best = HOLD
    else:
        best = SELL if s[SELL] == top else BUY
    score = s[best]
    penalised = False
    if best != HOLD and synergy_direction in (1, -1) and (best - 1) != synergy_direction:
        score *= MISMATCH_PENALTY
        penalised = True
    execute = best != HOLD and score >= EXECUTION_THRESHOLD
    if execute:
        reason = f"tactical {ACTIONS[best]} score {score:.3f}"
    else:
        reason = "insufficient consensus"
    return TacticalResult(action=best if execute else HOLD, confidence=score, execute=execute,
                          best=best, scores=(s[0], s[1], s[2]), entry_mode=ENTRY_ACTIONS[a_e],
                          penalised=penalised, size_multiplier=min(score / 0.8, 1.5),
                          reason=reason)


class StrategicResult(msgspec.Struct, frozen=True, kw_only=True):
    probs: tuple[float, float, float]   # P_ensemble, canonical order
    confidence: float                   # max P
    uncertainty: float                  # H(P) / ln 3
    should_proceed: bool
    direction: int                      # -1 / 0 / +1 (argmax - 1)
    agent_labels: tuple[str, ...]       # each agent's argmax action name
    agent_confidences: tuple[float, ...]
    dominant_signal: str                # "consensus" or the most confident agent's name
    uncertainty_source: str


def strategic_ensemble(agent_probs: np.ndarray, agent_confidences: np.ndarray | None = None,
                       weights: np.ndarray | tuple[float, ...] = STRATEGIC_INITIAL_WEIGHTS,
                       names: tuple[str, ...] = STRATEGIC_AGENTS) -> StrategicResult:
    """Spec 3.3: P = sum_i w_i P_i (w = softmax(omega), already normalised here);
    confidence = max P; uncertainty = -sum P ln(P + 1e-8) / ln 3; proceed iff confidence > 0.65
    and the argmax is not neutral (G26). `agent_confidences` default to each agent's max P."""
    # Plain Python over 3 x 3 values: a fraction of the cost of the numpy calls it replaces.
    p = np.asarray(agent_probs, dtype=np.float64).reshape(len(names), 3).tolist()
    w = [float(v) for v in np.asarray(weights, dtype=np.float64).ravel()]
    total = sum(w)
    w = [v / total for v in w]
    ens = [sum(wi * row[k] for wi, row in zip(w, p)) for k in range(3)]
    conf = max(ens)
    ent = -sum(v * math.log(v + 1e-8) for v in ens)
    best = ens.index(conf)
    confs = ([max(row) for row in p] if agent_confidences is None
             else [float(c) for c in np.asarray(agent_confidences, dtype=np.float64).ravel()])
    labels = tuple(ACTIONS[row.index(max(row))] for row in p)
    if len(set(labels)) == 1:
        dominant = "consensus"
    else:
        dominant = names[confs.index(max(confs))]
    lo, hi = min(confs), max(confs)
    if lo < 0.6:
        source = "low_individual_confidence"
    elif hi - lo > 0.3:
        source = "agent_disagreement"
    else:
        source = "stable_uncertainty"
    return StrategicResult(probs=(ens[0], ens[1], ens[2]), confidence=conf,
                           uncertainty=ent / _LN3,
                           should_proceed=conf > PROCEED_THRESHOLD and best != HOLD,
                           direction=best - 1, agent_labels=labels,
                           agent_confidences=tuple(confs),
                           dominant_signal=dominant, uncertainty_source=source)


def _argmax_conf(p: np.ndarray) -> tuple[int, float]:
    """argmax (first on ties, as numpy) and the max probability of a 3-way head."""
    a = int(np.argmax(p))
    return a, float(p[a])
