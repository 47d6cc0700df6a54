"""D6 discrete soft actor-critic at run time: the categorical actor in Numba (spec D6, G35).

Only the actor decides: probs = softmax(actor logits) in canonical order (SELL, HOLD, BUY),
action = argmax, confidence = max probs. The twin critics and the temperature are training-time
only (their final values are in the checkpoint metadata). The actor is the d3rlpy
`DiscreteSAC` `CategoricalPolicy` trained by `himari.training.sac` (Linear 257->H1, ReLU,
Linear H1->H2, ReLU, Linear H2->3), read from the safetensors checkpoint "sac".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from himari.decision.agent import AgentInput, Vote
from himari.decision.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint
from himari.decision.layout import ACTIONS
from himari.decision.nets.cql import arch_from_meta, input_error
from himari.decision.nets.mlp import MLPEnsemble, softmax3

AGENT_KIND = "sac"


class SACAgent:
    """Spec D6 agent: the categorical policy's distribution is the vote."""

    def __init__(self, name: str, net: MLPEnsemble, meta: dict[str, Any]) -> None:
        if net.arch.n_members != 1:
            raise CheckpointError(f"checkpoint {name!r} has {net.arch.n_members} actors, "
                                  "expected 1")
        self.name = name
        self.meta = meta
        self._net = net

    def reset(self) -> None:
        """Stateless: nothing to clear."""

    def act(self, inp: AgentInput) -> Vote:
        net = self._net
        bad = net.forward(inp.x)
        if bad >= 0:
            raise input_error(self.name, inp.x, bad)
        l0, l1, l2 = net.res.tolist()  # one actor: res is its logits
        probs = softmax3(l0, l1, l2)
        action = 0 if l0 >= l1 and l0 >= l2 else (1 if l1 >= l2 else 2)
        if not (math.isfinite(probs[0]) and math.isfinite(probs[1]) and math.isfinite(probs[2])):
            raise ValueError(f"{self.name}: non-finite probabilities from logits {l0, l1, l2}")
        entropy = -sum([p * math.log(p) for p in probs if p > 0.0])
        return Vote(probs=probs, confidence=probs[action],
                    info={"action": ACTIONS[action], "entropy": entropy})

    def observe(self, inp: AgentInput, action: int, reward: float) -> None:
        """Stateless: the actor does not learn online."""


def load(directory: Path, name: str = AGENT_KIND) -> SACAgent:
    """The SAC agent of checkpoint `directory/name` (CheckpointError / CheckpointMissing)."""
    tensors, meta = load_checkpoint(directory, name, AGENT_KIND)
    source = str(checkpoint_paths(directory, name)[0])
    net = MLPEnsemble(arch_from_meta(meta, source), tensors, source)
    return SACAgent(name, net, meta)
