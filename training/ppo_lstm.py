"""Train D5, PPO with an LSTM (spec decision.md D5, G36), with sb3-contrib's RecurrentPPO.

"MlpLstmPolicy" on the bar environment of `training/env.py` (one step = one closed 5-minute bar,
observation = the z-scored 257-value vector, action 0 SELL / 1 HOLD / 2 BUY). Hyperparameters per
G36: gamma 0.99, GAE lambda 0.95, clip 0.2, entropy 0.01, value coefficient 0.5, gradient-norm clip
0.5, Adam 3e-4, 4 epochs per rollout. Sizes scaled down from the seed's LSTM 512: LSTM hidden 32
and one Tanh layer of 32 in each head (separate actor and critic LSTMs, sb3's default), ~38k
actor parameters. Why: the run-time step (4 x 32 x (257 + 32) multiply-adds) stays a few
microseconds, a rollout/update cycle runs in well under a second on one core, and a larger LSTM
only memorises the ~30k bars of training data.

Only the actor path is exported (`lstm_actor`, `mlp_extractor.policy_net`, `action_net`) as
numpy into safetensors with `save_checkpoint` (agent "ppo_lstm"), with the observation
statistics; run time is decision/nets/ppo_lstm.py. sb3's own save (pickle) is never used.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from himari.decision.checkpoint import save_checkpoint
from himari.training.seqdata import OBS_CLIP, env_factory, valid_rollout, with_identity_stats

AGENT = "ppo_lstm"
LSTM_HIDDEN = 32
HEAD_HIDDEN = 32
N_ENVS = 4
N_STEPS = 128             # per env per rollout: 512 transitions per update
BATCH = 128
QUICK_STEPS = 512
FULL_STEPS = 30_000


def make_model(venv: Any, seed: int) -> Any:
    from sb3_contrib import RecurrentPPO

    return RecurrentPPO(
        "MlpLstmPolicy", venv, learning_rate=3e-4, n_steps=N_STEPS, batch_size=BATCH, n_epochs=4,
        gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5,
        max_grad_norm=0.5, seed=seed, device="cpu", verbose=0,
        policy_kwargs=dict(lstm_hidden_size=LSTM_HIDDEN, n_lstm_layers=1, shared_lstm=False,
                           enable_critic_lstm=True,
                           net_arch=dict(pi=[HEAD_HIDDEN], vf=[HEAD_HIDDEN])))


def export_tensors(policy: Any) -> dict[str, np.ndarray]:
    """The actor path of a RecurrentActorCriticPolicy as run-time tensors."""
    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32)

    lstm = policy.lstm_actor
    if lstm.num_layers != 1:
        raise ValueError(f"run time supports a 1-layer LSTM, policy has {lstm.num_layers}")
    linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    if len(linears) != 1:
        raise ValueError(f"run time supports one hidden actor layer, policy has {len(linears)}")
    return {
        "lstm.w_ih": arr(lstm.weight_ih_l0), "lstm.w_hh": arr(lstm.weight_hh_l0),
        "lstm.b": arr(lstm.bias_ih_l0 + lstm.bias_hh_l0),
        "pi.w1": arr(linears[0].weight), "pi.b1": arr(linears[0].bias),
        "pi.w2": arr(policy.action_net.weight), "pi.b2": arr(policy.action_net.bias),
    }


def train_envs(make_env: Callable[[int], Any], mean: np.ndarray, std: np.ndarray, out_dir: Path,
               seed: int, quick: bool, name: str = AGENT,
               data_meta: dict[str, Any] | None = None,
               total_steps: int | None = None, data: Any = None) -> dict[str, Any]:
    """Train on N_ENVS copies of `make_env(rank)` (envs emitting observations z-scored with
    mean/std and clipped to +-OBS_CLIP), write checkpoint `<out_dir>/<name>`, return metrics."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    venv = DummyVecEnv([lambda r=r: Monitor(make_env(r)) for r in range(N_ENVS)])
    venv.seed(seed)
    model = make_model(venv, seed)
    steps = total_steps or (QUICK_STEPS if quick else FULL_STEPS)
    model.learn(total_timesteps=steps)
    episodes = list(model.ep_info_buffer)
    ep_rew = float(np.mean([e["r"] for e in episodes])) if episodes else float("nan")
    ep_len = float(np.mean([e["l"] for e in episodes])) if episodes else float("nan")
    tensors = export_tensors(model.policy)
    tensors["obs_mean"] = np.asarray(mean, np.float32)
    tensors["obs_std"] = np.asarray(std, np.float32)
    metrics = {"timesteps": int(model.num_timesteps),
               "train_seconds": round(time.perf_counter() - t0, 2),
               "episodes_seen": len(episodes),
               # average env reward r~ per bar of the last episodes (flat policy: 0)
               "reward_per_bar_last_episodes": (ep_rew / ep_len if episodes else None)}
    meta = {"agent": AGENT, "seed": seed, "quick": quick, "data": data_meta or {},
            "metrics": metrics, "lstm_hidden": LSTM_HIDDEN, "head_hidden": HEAD_HIDDEN,
            "obs_clip": OBS_CLIP, "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2,
            "ent_coef": 0.01, "max_grad_norm": 0.5, "learning_rate": 3e-4, "n_epochs": 4}
    if data is not None:
        from himari.decision.nets.ppo_lstm import PPOLSTMAgent

        metrics.update(valid_rollout(PPOLSTMAgent(with_identity_stats(tensors), meta), data))
    save_checkpoint(Path(out_dir), name, tensors, meta)
    venv.close()
    return metrics


def train(data: Any, out_dir: Path, seed: int, quick: bool) -> dict[str, Any]:
    """`himari train` entry point: the bar env over `data`, checkpoint "ppo_lstm"."""
    make_env, mean, std, data_meta = env_factory(data, seed)
    return train_envs(make_env, mean, std, out_dir, seed, quick, data_meta=data_meta, data=data)
