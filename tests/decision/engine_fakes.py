"""Fake agents and teams for the engine tests (no checkpoints, no networks)."""

from __future__ import annotations

import numpy as np

from himari.decision.agent import AgentInput, Vote


class FixedAgent:
    """Votes a fixed distribution; can be told to raise, return NaN or be slow."""

    def __init__(self, name: str, probs=(0.1, 0.2, 0.7), mode: str = "ok") -> None:
        self.name = name
        self.probs = tuple(probs)
        self.mode = mode
        self.calls = 0
        self.observed: list[tuple[int, float]] = []
        self.resets = 0
        self.inputs: list[AgentInput] = []

    def reset(self) -> None:
        self.resets += 1

    def act(self, inp: AgentInput) -> Vote:
        self.calls += 1
        self.inputs.append(inp)
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "nan":
            return Vote(probs=(float("nan"), 0.5, 0.5), confidence=0.5)
        if self.mode == "slow":
            import time
            t0 = time.perf_counter_ns()
            while time.perf_counter_ns() - t0 < 2_000_000:  # 2 ms busy: over a 0.5 ms budget
                pass
        return Vote(probs=self.probs, confidence=max(self.probs))

    def observe(self, inp: AgentInput, action: int, reward: float) -> None:
        self.observed.append((action, reward))


class FakeTacticalTeam:
    def __init__(self, fvg=(0.05, 0.05, 0.9), mom=(0.05, 0.05, 0.9), entry=(0.1, 0.8, 0.1)):
        self.out = (np.array(fvg), np.array(mom), np.array(entry))
        self.calls = 0

    def probs(self, tactical):
        self.calls += 1
        return self.out


class FakeStrategicTeam:
    weights = (0.4, 0.35, 0.25)

    def __init__(self, probs=((0.05, 0.15, 0.8),) * 3):
        self.p = np.array(probs, dtype=np.float64)
        self.calls = 0
        self.contexts: list[np.ndarray] = []

    def probs(self, mlmi_in, nwrqk_in, regime_in, volatility_30):
        self.calls += 1
        self.contexts.append(np.asarray(mlmi_in)[4:])  # the 6 shared-context values
        return self.p, np.asarray(self.weights)


def matrices(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((60, 7)).astype(np.float32),
            rng.standard_normal((48, 13)).astype(np.float32))
