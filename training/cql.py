"""Train D3, conservative Q-learning, with d3rlpy's `DiscreteCQL` on the offline trajectories.

What d3rlpy 2.8.1 does, against spec D3 / G33 (said here because the two differ):
- loss = DoubleDQN TD loss (target = min over the target critics of Qbar(s', argmax_a Q(s', a)))
  + alpha x (logsumexp_a Q(s, a) - Q(s, a_data)), the regulariser on the ensemble-mean Q;
- alpha is FIXED (no Lagrange auto-tuning in the discrete variant, so G33's decaying-alpha bug
  cannot happen either); we use alpha = 1.0 (spec's initial value) instead of min_q_weight 5.0
  with a 1.0 gap: a weight of 5 on noisy 5-minute rewards made the critics copy the behaviour mix;
- hard target sync every `TARGET_UPDATE` steps instead of tau = 0.005 soft updates (similar
  horizon: 1 / 0.005 = 200 steps); Adam lr 3e-4 with gradient-norm clip 1.0 as the spec says.
Sizes (scaled down from 257-256-256-3, why: the agent must act in <= ~15 us and ~30k bars of
data would be memorised by 2 x 133k parameters): two critics of Linear 257->64, LayerNorm, ReLU,
Linear 64->64, ReLU, Linear 64->3 (about 21k parameters each, 170 kB as float32).

`train(data, out_dir, seed, quick)` writes checkpoint "cql" (agent "cql"): both critics'
weights stacked (decision/nets/mlp.py layout) plus the feature statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from himari.decision.checkpoint import save_checkpoint
from himari.decision.features import Z_CLIP
from himari.decision.layout import FEATURE_DIM, N_ACTIONS
from himari.decision.nets.mlp import FEATURE_KEYS, pack_d3rlpy
from himari.training.d3rlpy_common import (
    LayerNormEncoderFactory, OfflineArrays, make_transitions, run_updates,
    seed_everything, state_dict_numpy)

AGENT = "cql"
HIDDEN = (64, 64)
N_CRITICS = 2
ALPHA = 1.0
LEARNING_RATE = 3e-4
GRAD_CLIP = 1.0
BATCH_SIZE = 256
GAMMA = 0.99
TARGET_UPDATE = 500
STEPS, QUICK_STEPS = 10_000, 200


def build_algo(seed: int, batch_size: int = BATCH_SIZE) -> Any:
    """A fresh, seeded `DiscreteCQL` with our sizes (impl created, ready for `update`)."""
    import d3rlpy
    from d3rlpy.optimizers import AdamFactory

    seed_everything(seed)
    config = d3rlpy.algos.DiscreteCQLConfig(
        encoder_factory=LayerNormEncoderFactory(hidden_units=list(HIDDEN)),
        optim_factory=AdamFactory(clip_grad_norm=GRAD_CLIP),
        learning_rate=LEARNING_RATE, batch_size=batch_size, gamma=GAMMA, n_critics=N_CRITICS,
        target_update_interval=TARGET_UPDATE, alpha=ALPHA)
    algo = config.create(device="cpu:0")
    algo.create_impl((FEATURE_DIM,), N_ACTIONS)
    return algo


def export_tensors(algo: Any, scale: np.ndarray, offset: np.ndarray) -> dict[str, np.ndarray]:
    """Critics (stacked) and the input affine, ready for `save_checkpoint`."""
    sds = [state_dict_numpy(q) for q in algo.impl.modules.q_funcs]
    tensors = pack_d3rlpy(sds, layer_norm=True)
    tensors[FEATURE_KEYS[0]] = np.asarray(scale, dtype=np.float64)
    tensors[FEATURE_KEYS[1]] = np.asarray(offset, dtype=np.float64)
    return tensors


def arch_meta(z_clip: float = Z_CLIP) -> dict[str, Any]:
    return {"n_members": N_CRITICS, "in_dim": FEATURE_DIM, "hidden": list(HIDDEN),
            "out_dim": N_ACTIONS, "layer_norm": True, "z_clip": z_clip}


def fit(arrays: OfflineArrays, scale: np.ndarray, offset: np.ndarray, seed: int, steps: int,
        batch_size: int = BATCH_SIZE) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    """Train on `arrays`; (algo, checkpoint tensors, training info)."""
    trans = make_transitions(arrays)
    algo = build_algo(seed, batch_size)
    rng = np.random.default_rng(seed)
    final, history, seconds = run_updates(algo, trans, steps, batch_size, rng)
    info = {"steps": steps, "batch_size": batch_size, "transitions": len(trans),
            "train_seconds": round(seconds, 2), "final_losses": final, "loss_history": history}
    return algo, export_tensors(algo, scale, offset), info


def hyperparameters() -> dict[str, Any]:
    return {"library": "d3rlpy 2.8.1 DiscreteCQL", "hidden": list(HIDDEN),
            "n_critics": N_CRITICS, "layer_norm": "after the first Linear, before ReLU",
            "alpha": ALPHA, "alpha_tuning": "fixed (d3rlpy discrete CQL has no Lagrange)",
            "learning_rate": LEARNING_RATE, "grad_clip_norm": GRAD_CLIP,
            "batch_size": BATCH_SIZE, "gamma": GAMMA,
            "target_update": f"hard sync every {TARGET_UPDATE} steps", "z_clip": Z_CLIP}


def train(data: Any, out_dir: Path, seed: int, quick: bool) -> dict[str, Any]:
    """`himari train`'s entry point for CQL: fit, evaluate, write checkpoint "cql"."""
    from himari.training.offline_eval import prepare, evaluate_agent

    prep = prepare(data, seed, quick)
    steps = QUICK_STEPS if quick else STEPS
    _, tensors, info = fit(prep.arrays, prep.scale, prep.offset, seed, steps)
    return _finish(AGENT, tensors, info, prep, out_dir, seed, quick, evaluate_agent)


def _finish(agent: str, tensors: dict[str, np.ndarray], info: dict[str, Any], prep: Any,
            out_dir: Path, seed: int, quick: bool, evaluate_agent: Any,
            arch: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """Save the checkpoint, evaluate the saved agent against the behaviour policy, rewrite the
    metadata with the metrics; shared by CQL and SAC."""
    import importlib

    # the FeatureStats themselves too (decision/features.FeatureStats.from_tensors reads them)
    tensors = {**tensors, "x_mean": prep.mean.astype(np.float32),
               "x_std": prep.std.astype(np.float32)}
    meta: dict[str, Any] = {
        "agent": agent, "seed": seed, "quick": quick, "data": prep.data_meta,
        "arch": arch or arch_meta(), "hyperparameters": extra or hyperparameters(),
        "training": {k: v for k, v in info.items() if k != "final_losses"}}
    save_checkpoint(out_dir, agent, tensors, {**meta, "metrics": {}})
    module = importlib.import_module(f"himari.decision.nets.{agent}")
    evaluation = evaluate_agent(module.load(out_dir, agent), prep)
    metrics = {**{f"final_{k}": v for k, v in info["final_losses"].items()}, **evaluation,
               "train_seconds": info["train_seconds"]}
    save_checkpoint(out_dir, agent, tensors, {**meta, "metrics": metrics})
    return metrics
