"""What the d3rlpy trainers of CQL (D3) and discrete SAC (D6) share.

- `Transitions`: the offline trajectories (`training/offline.py`, observations already z-scored
  and clipped by `FeatureStats.normalize`, as the run-time kernel does) turned into
  (s, a, r, s', done) rows.
- `run_updates`: our own seeded mini-batch loop around `algo.update` (numpy Generator indices), so
  training is reproducible from the seed and d3rlpy never writes logs or pickles (its `fit` saves
  models with pickle-based `save`; we never call it).
- `state_dict_numpy`, `LayerNormEncoderFactory` (spec D3's Linear -> LayerNorm -> ReLU order,
  which d3rlpy's `VectorEncoderFactory` does not offer: it puts LayerNorm after the ReLU).
- `seed_everything`: python, numpy, torch; one torch thread (2 shared cores, and the same float
  summation order on every run).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from d3rlpy.dataset import TransitionMiniBatch
from d3rlpy.models.encoders import EncoderFactory
from d3rlpy.models.torch import Encoder
from torch import nn

from himari.decision.layout import FEATURE_DIM, N_ACTIONS


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(1)


@dataclasses.dataclass(frozen=True)
class OfflineArrays:
    """Offline trajectories, one row per closed 5-minute bar (`training/offline.OfflineData`).

    `obs` z-scored 257-value feature vectors (the behaviour policy's own position slots), `actions`
    canonical indices 0..2, `rewards` the env reward r~ of that step, `terminals` true end of an
    episode (no bootstrap), `timeouts` truncation (the row has no successor: dropped)."""

    obs: np.ndarray        # (N, 257) float32, normalised
    actions: np.ndarray    # (N,) int
    rewards: np.ndarray    # (N,) float
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray   # (N,) bool

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        if self.obs.ndim != 2 or self.obs.shape[1] != FEATURE_DIM:
            raise ValueError(f"offline obs has shape {self.obs.shape}, "
                             f"expected (N, {FEATURE_DIM})")
        for name in ("actions", "rewards", "terminals", "timeouts"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"offline {name} has shape {getattr(self, name).shape}, "
                                 f"expected ({n},)")
        if n and (self.actions.min() < 0 or self.actions.max() >= N_ACTIONS):
            raise ValueError(f"offline actions outside 0..{N_ACTIONS - 1}: "
                             f"[{self.actions.min()}, {self.actions.max()}]")
        if not (np.isfinite(self.obs).all() and np.isfinite(self.rewards).all()):
            raise ValueError("offline observations or rewards contain non-finite values")


@dataclasses.dataclass(frozen=True)
class Transitions:
    obs: np.ndarray       # (M, 257) float32, normalised
    actions: np.ndarray   # (M, 1) float32
    rewards: np.ndarray   # (M, 1) float32
    next_obs: np.ndarray  # (M, 257) float32
    terminals: np.ndarray  # (M, 1) float32

    def __len__(self) -> int:
        return self.obs.shape[0]


def make_transitions(data: OfflineArrays) -> Transitions:
    """(s, a, r, s', done) rows: s' is the next row of the same episode; a terminal row
    bootstraps nothing (s' = s, done 1); a timeout row has no s' and is dropped."""
    z = np.asarray(data.obs, dtype=np.float32)
    n = z.shape[0]
    ends = data.terminals.astype(bool) | data.timeouts.astype(bool)
    if n and not ends[-1]:
        raise ValueError("offline trajectories must end with a terminal or timeout row")
    keep = ~(data.timeouts.astype(bool) & ~data.terminals.astype(bool))
    nxt = np.minimum(np.arange(n) + 1, max(n - 1, 0))
    nxt = np.where(data.terminals.astype(bool), np.arange(n), nxt)
    idx = np.flatnonzero(keep)
    return Transitions(
        obs=np.ascontiguousarray(z[idx]),
        actions=data.actions[idx].astype(np.float32).reshape(-1, 1),
        rewards=data.rewards[idx].astype(np.float32).reshape(-1, 1),
        next_obs=np.ascontiguousarray(z[nxt[idx]]),
        terminals=data.terminals[idx].astype(np.float32).reshape(-1, 1))


def run_updates(algo: Any, trans: Transitions, steps: int, batch_size: int,
                rng: np.random.Generator, log_every: int = 500
                ) -> tuple[dict[str, float], list[dict[str, float]], float]:
    """`steps` seeded mini-batch updates; (mean losses over the last 10% of steps, a coarse
    history every `log_every` steps, seconds)."""
    if len(trans) < batch_size:
        raise ValueError(f"only {len(trans)} transitions, fewer than batch_size={batch_size}")
    ones = np.ones((batch_size, 1), dtype=np.float32)
    zeros = np.zeros((batch_size, 1), dtype=np.float32)
    tail_from = steps - max(1, steps // 10)
    tail: dict[str, list[float]] = {}
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step in range(steps):
        i = rng.integers(0, len(trans), size=batch_size)
        batch = TransitionMiniBatch(
            observations=trans.obs[i], actions=trans.actions[i], rewards=trans.rewards[i],
            next_observations=trans.next_obs[i], next_actions=zeros,
            terminals=trans.terminals[i], intervals=ones, transitions=[])
        losses = algo.update(batch)
        if step >= tail_from:
            for k, v in losses.items():
                tail.setdefault(k, []).append(float(v))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history.append({"step": step + 1, **{k: float(v) for k, v in losses.items()}})
    final = {k: float(np.mean(v)) for k, v in tail.items()}
    for k, v in final.items():
        if not np.isfinite(v):
            raise FloatingPointError(f"training diverged: final {k} = {v}")
    return final, history, time.perf_counter() - t0


def state_dict_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


class LayerNormEncoder(Encoder):
    """Linear -> LayerNorm -> ReLU -> Linear -> ReLU (spec D3's Q-network body)."""

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        h1, h2 = hidden
        self._layers = nn.Sequential(nn.Linear(in_dim, h1), nn.LayerNorm(h1), nn.ReLU(),
                                     nn.Linear(h1, h2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._layers(x)


@dataclasses.dataclass()
class LayerNormEncoderFactory(EncoderFactory):
    hidden_units: list[int] = dataclasses.field(default_factory=lambda: [64, 64])

    def create(self, observation_shape: Sequence[int]) -> LayerNormEncoder:
        return LayerNormEncoder(int(observation_shape[0]), self.hidden_units)

    @staticmethod
    def get_type() -> str:
        return "himari_layernorm_mlp"

