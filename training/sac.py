"""Train D6, discrete soft actor-critic, with d3rlpy's `DiscreteSAC` on the offline trajectories.

What d3rlpy 2.8.1 does, against spec D6 / G35:
- twin critics, Q(s, a_taken) against y = r + gamma (1 - d) sum_a pi(a|s') [min_j Qbar_j(s', a)
  - alpha log pi(a|s')] (G35's fix: min of the twin targets, per-sample action);
- policy loss = mean_s sum_a pi(a|s) [alpha log pi(a|s) - min_j Q_j(s, a)] with Q detached (G35);
- temperature loss = -alpha x (sum_a pi log pi + Hbar) = alpha x (H(pi) - Hbar), H detached, with
  the target entropy Hbar = 0.98 ln 3 hard-coded by d3rlpy: exactly G35's proposal; alpha starts
  at 1.0 and is learned (Adam, lr 3e-4);
- hard target sync every `TARGET_UPDATE` steps instead of tau = 0.005 soft updates.
It is SAC run offline (no conservatism): the critics can overrate actions the data rarely took,
which is why the metrics compare it with the behaviour policy on the same bars.
Sizes (scaled down from 257-256-256-3 for the <= ~15 us act budget and ~30k bars of data): actor
and each critic Linear 257->64, ReLU, Linear 64->64, ReLU, Linear 64->3. Only the actor is
shipped (the vote); the critics stay in training.

`train(data, out_dir, seed, quick)` writes checkpoint "sac" (agent "sac").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from himari.decision.features import Z_CLIP
from himari.decision.layout import FEATURE_DIM, N_ACTIONS
from himari.decision.nets.mlp import FEATURE_KEYS, pack_d3rlpy
from himari.training.d3rlpy_common import (
    OfflineArrays, make_transitions, run_updates, seed_everything, state_dict_numpy)

AGENT = "sac"
HIDDEN = (64, 64)
N_CRITICS = 2
LEARNING_RATE = 3e-4
BATCH_SIZE = 256
GAMMA = 0.99
INITIAL_TEMPERATURE = 1.0
TARGET_UPDATE = 500
STEPS, QUICK_STEPS = 10_000, 200
TARGET_ENTROPY = 0.98 * math.log(N_ACTIONS)  # d3rlpy's fixed value, recorded in the metadata


def build_algo(seed: int, batch_size: int = BATCH_SIZE) -> Any:
    """A fresh, seeded `DiscreteSAC` with our sizes (impl created, ready for `update`)."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory

    seed_everything(seed)
    config = d3rlpy.algos.DiscreteSACConfig(
        actor_encoder_factory=VectorEncoderFactory(hidden_units=list(HIDDEN)),
        critic_encoder_factory=VectorEncoderFactory(hidden_units=list(HIDDEN)),
        actor_learning_rate=LEARNING_RATE, critic_learning_rate=LEARNING_RATE,
        temp_learning_rate=LEARNING_RATE, batch_size=batch_size, gamma=GAMMA,
        n_critics=N_CRITICS, initial_temperature=INITIAL_TEMPERATURE,
        target_update_interval=TARGET_UPDATE)
    algo = config.create(device="cpu:0")
    algo.create_impl((FEATURE_DIM,), N_ACTIONS)
    return algo


def export_tensors(algo: Any, scale: np.ndarray, offset: np.ndarray) -> dict[str, np.ndarray]:
    """The actor and the input affine, ready for `save_checkpoint`."""
    tensors = pack_d3rlpy([state_dict_numpy(algo.impl.modules.policy)], layer_norm=False)
    tensors[FEATURE_KEYS[0]] = np.asarray(scale, dtype=np.float64)
    tensors[FEATURE_KEYS[1]] = np.asarray(offset, dtype=np.float64)
    return tensors


def temperature(algo: Any) -> float:
    from d3rlpy.models.torch.parameters import get_parameter

    return float(get_parameter(algo.impl.modules.log_temp).detach().exp().item())


def arch_meta(z_clip: float = Z_CLIP) -> dict[str, Any]:
    return {"n_members": 1, "in_dim": FEATURE_DIM, "hidden": list(HIDDEN),
            "out_dim": N_ACTIONS, "layer_norm": False, "z_clip": z_clip}


def fit(arrays: OfflineArrays, scale: np.ndarray, offset: np.ndarray, seed: int, steps: int,
        batch_size: int = BATCH_SIZE) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    """Train on `arrays`; (algo, checkpoint tensors, training info)."""
    trans = make_transitions(arrays)
    algo = build_algo(seed, batch_size)
    rng = np.random.default_rng(seed)
    final, history, seconds = run_updates(algo, trans, steps, batch_size, rng)
    final["temperature"] = temperature(algo)
    info = {"steps": steps, "batch_size": batch_size, "transitions": len(trans),
            "train_seconds": round(seconds, 2), "final_losses": final, "loss_history": history}
    return algo, export_tensors(algo, scale, offset), info


def hyperparameters() -> dict[str, Any]:
    return {"library": "d3rlpy 2.8.1 DiscreteSAC", "hidden": list(HIDDEN),
            "n_critics": N_CRITICS, "learning_rate": LEARNING_RATE, "batch_size": BATCH_SIZE,
            "gamma": GAMMA, "initial_temperature": INITIAL_TEMPERATURE,
            "target_entropy": TARGET_ENTROPY, "target_entropy_rule": "0.98 ln 3 (d3rlpy fixed)",
            "target_update": f"hard sync every {TARGET_UPDATE} steps", "z_clip": Z_CLIP}


def train(data: Any, out_dir: Path, seed: int, quick: bool) -> dict[str, Any]:
    """`himari train`'s entry point for SAC: fit, evaluate, write checkpoint "sac"."""
    from himari.training.cql import _finish
    from himari.training.offline_eval import evaluate_agent, prepare

    prep = prepare(data, seed, quick)
    steps = QUICK_STEPS if quick else STEPS
    _, tensors, info = fit(prep.arrays, prep.scale, prep.offset, seed, steps)
    return _finish(AGENT, tensors, info, prep, out_dir, seed, quick, evaluate_agent,
                   arch=arch_meta(), extra=hyperparameters())
