"""What every decision agent looks like to the ensemble (spec decision.md 4.0).

An agent maps the per-bar `AgentInput` to a `Vote`: probabilities over (SELL, HOLD, BUY) in the
canonical order, its confidence and a small `info` dict for the decision record. Agents run numpy /
Numba inference from safetensors weights (no torch at run time: start-up and the tick path stay
light); each agent's module also holds the torch module it is trained as, and a test checks the
two agree.

Agents are built from checkpoints by `load(directory, name)` functions registered in
`decision/registry.py`; a missing checkpoint disables the agent (or refuses to start when config
marks it required), a wrong layout refuses to start (exit 2).
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
import numpy as np


class Vote(msgspec.Struct, frozen=True, kw_only=True):
    probs: tuple[float, float, float]  # SELL, HOLD, BUY; sums to 1
    confidence: float                  # in [0, 1]; usually max(probs)
    info: dict[str, Any] = {}          # agent-specific details for the decision record


class AgentInput(msgspec.Struct, kw_only=True):
    """Everything an agent may read at one closed 5-minute bar (event time, never the wall clock).

    `x` is the raw (not yet z-scored) 257-value vector of decision/layout.py; each agent
    normalises it with the statistics stored in its own checkpoint. The matrices are the latest
    ready ones (`strategic` may be None before the first ready 30-minute matrix).
    """

    ts_ns: int                       # the bar's close time
    instrument_id: str
    x: np.ndarray                    # float32 (257,), raw
    tactical: np.ndarray             # float32 (60, 7)
    strategic: np.ndarray | None     # float32 (48, 13) or None
    regime: int                      # decision/layout.py REGIMES index
    target_sharpe: float
    position: int                    # signed lots held now


class Agent(Protocol):
    name: str

    def reset(self) -> None:
        """Session start: clear recurrent state / trajectory history."""

    def act(self, inp: AgentInput) -> Vote:
        """One decision, batch of one. Must return finite probabilities or raise."""

    def observe(self, inp: AgentInput, action: int, reward: float) -> None:
        """After the bar: the action the ensemble took (canonical index) and the env reward r~
        (spec 4.0) of the step that just closed; sequence agents keep their history with it."""
