"""D3 conservative Q-learning at run time: two Q critics in Numba, min over critics (spec D3).

Act (spec D3, 000: L1030-1048): Q(s, .) = min_j Q_j(s, .) over the two critics; probs =
softmax(Q / 1.0) in canonical order (SELL, HOLD, BUY); action = argmax Q; confidence =
probs[action]. The critics are the d3rlpy `DiscreteCQL` Q functions trained by
`himari.training.cql` (Linear 257->H1, LayerNorm, ReLU, Linear H1->H2, ReLU, Linear H2->3), read
from the safetensors checkpoint "cql" with the feature statistics they were trained on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from himari.decision.agent import AgentInput, Vote
from himari.decision.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint
from himari.decision.layout import ACTIONS, FEATURE_DIM, N_ACTIONS
from himari.decision.nets.mlp import MLPArch, MLPEnsemble, softmax3

AGENT_KIND = "cql"
TEMPERATURE = 1.0  # softmax(Q / 1.0), spec D3


def arch_from_meta(meta: dict[str, Any], source: str) -> MLPArch:
    """The network description in a checkpoint's metadata, with a clear error when malformed."""
    raw = meta.get("arch")
    if not isinstance(raw, dict):
        raise CheckpointError(f"checkpoint {source} metadata lacks an 'arch' object")
    try:
        arch = MLPArch(n_members=int(raw["n_members"]), in_dim=int(raw["in_dim"]),
                       hidden=(int(raw["hidden"][0]), int(raw["hidden"][1])),
                       out_dim=int(raw["out_dim"]), layer_norm=bool(raw["layer_norm"]),
                       z_clip=float(raw["z_clip"]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {source} has a malformed 'arch' {raw!r}: "
                              f"{exc}") from None
    if arch.in_dim != FEATURE_DIM or arch.out_dim != N_ACTIONS:
        raise CheckpointError(f"checkpoint {source} has arch in_dim={arch.in_dim}, "
                              f"out_dim={arch.out_dim}; expected {FEATURE_DIM} and {N_ACTIONS}")
    return arch


def input_error(name: str, x: np.ndarray, bad: int) -> ValueError:
    """A non-finite feature vector is an error for this decision (the ensemble skips the agent)."""
    return ValueError(f"{name}: feature vector x is not finite (first at index {bad}: {x[bad]})")


class CQLAgent:
    """Spec D3 agent: min over the twin critics, softmax(Q) as the vote."""

    def __init__(self, name: str, net: MLPEnsemble, meta: dict[str, Any]) -> None:
        if net.arch.n_members < 1:
            raise CheckpointError(f"checkpoint {name!r} has no critics")
        self.name = name
        self.meta = meta
        self._net = net

    def reset(self) -> None:
        """Stateless: nothing to clear."""

    def q_values(self, x: np.ndarray) -> np.ndarray:
        """Per-critic Q (n_critics, 3) for a raw vector."""
        bad = self._net.forward(x)
        if bad >= 0:
            raise input_error(self.name, x, bad)
        return self._net.out.copy()

    def act(self, inp: AgentInput) -> Vote:
        net = self._net
        bad = net.forward(inp.x)
        if bad >= 0:
            raise input_error(self.name, inp.x, bad)
        q0, q1, q2 = net.res.tolist()  # min over the critics
        probs = softmax3(q0 / TEMPERATURE, q1 / TEMPERATURE, q2 / TEMPERATURE)
        # argmax over Q (ties -> lowest index, as numpy argmax); probs are monotone in Q
        action = 0 if q0 >= q1 and q0 >= q2 else (1 if q1 >= q2 else 2)
        if not (math.isfinite(probs[0]) and math.isfinite(probs[1]) and math.isfinite(probs[2])):
            raise ValueError(f"{self.name}: non-finite probabilities from Q {q0, q1, q2}")
        return Vote(probs=probs, confidence=probs[action],
                    info={"action": ACTIONS[action], "q": [q0, q1, q2]})

    def observe(self, inp: AgentInput, action: int, reward: float) -> None:
        """Stateless: the critics do not learn online."""


def load(directory: Path, name: str = AGENT_KIND) -> CQLAgent:
    """The CQL agent of checkpoint `directory/name` (CheckpointError / CheckpointMissing)."""
    tensors, meta = load_checkpoint(directory, name, AGENT_KIND)
    source = str(checkpoint_paths(directory, name)[0])
    net = MLPEnsemble(arch_from_meta(meta, source), tensors, source)
    return CQLAgent(name, net, meta)
