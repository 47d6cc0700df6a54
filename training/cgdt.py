"""Train D2, the critic-guided decision transformer (spec decision.md D2, D10, G34, G39).

- Transformer: d3rlpy 2.8.1 `DiscreteDecisionTransformerConfig` on offline trajectories cut into
  sessions of `SESSION_STEPS` bars (returns-to-go undiscounted per session, as d3rlpy's slicer
  computes them). Scaled down from the seed's 128 x 3 layers x context 100 to embedding 32, ONE
  layer, 2 heads, context 16: one layer makes the run-time forward incremental and exact (see
  decision/nets/cgdt.py), so a decision costs a few microseconds; ~20k parameters is also what
  ~30k bars of one instrument's data can support without memorising it.
- Q-critic ensemble (d3rlpy has none): 3 members Linear(257 + 3 -> 32), GELU, Linear(32 -> 1),
  trained in plain torch by in-sample TD (SARSA-style: y = r + gamma (1 - d) Qbar_m(s', a'_data),
  each member against its own Polyak target, gamma 0.99, tau 0.005), Adam 1e-3 (3e-4 learnt
  too slowly for the minutes budget). Members differ by
  initialisation and by a per-member bootstrap weighting of the batch, so their spread is an
  uncertainty signal for the LCB mask.
- Export: every weight as numpy into safetensors with `save_checkpoint` (agent "cgdt"); d3rlpy's
  own save (pickle) is never called.

`train(data, out_dir, seed, quick)` is the `himari train` entry point; `train_arrays(...)` does the
work on plain arrays (observations already z-scored with the stored statistics).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from himari.decision.checkpoint import save_checkpoint
from himari.decision.layout import FEATURE_DIM, N_ACTIONS
from himari.training.seqdata import (BARS_PER_YEAR, OBS_CLIP, OfflineArrays, offline_arrays,
                                     session_bounds, valid_rollout, with_identity_stats)

AGENT = "cgdt"
SESSION_STEPS = 288          # one day of 5-minute bars: a DT episode and a run-time session
CONTEXT = 16
EMBED = 32
N_HEADS = 2
CRITIC_HIDDEN = 32
CRITIC_MEMBERS = 3
GAMMA = 0.99
TAU = 0.005
CRITIC_LR = 1e-3


class QEnsemble(nn.Module):
    """M members Q_m(s, a) = w2_m . GELU(W1_m [s, onehot(a)] + b1_m) + b2_m, i.e. each member is
    Linear(D + 3 -> H), GELU, Linear(H -> 1); the members' weights are stacked so one batched
    matmul runs them all (the run-time layout of seqkernels.q_ensemble)."""

    def __init__(self, obs_dim: int = FEATURE_DIM, hidden: int = CRITIC_HIDDEN,
                 members: int = CRITIC_MEMBERS) -> None:
        super().__init__()
        d = obs_dim + N_ACTIONS
        # nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), per member
        self.w1 = nn.Parameter(torch.empty(members, hidden, d).uniform_(-d ** -0.5, d ** -0.5))
        self.b1 = nn.Parameter(torch.empty(members, hidden).uniform_(-d ** -0.5, d ** -0.5))
        self.w2 = nn.Parameter(torch.empty(members, hidden).uniform_(-hidden ** -0.5,
                                                                     hidden ** -0.5))
        self.b2 = nn.Parameter(torch.empty(members).uniform_(-hidden ** -0.5, hidden ** -0.5))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(members, batch) Q values of integer `actions`."""
        onehot = nn.functional.one_hot(actions.long(), N_ACTIONS).to(obs.dtype)
        inp = torch.cat([obs, onehot], dim=-1)
        h = nn.functional.gelu(torch.einsum("bd,mhd->mbh", inp, self.w1) + self.b1[:, None, :])
        return (h * self.w2[:, None, :]).sum(-1) + self.b2[:, None]

    def all_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """(members, batch, 3) Q values of every action."""
        return torch.stack([self(obs, torch.full((obs.shape[0],), a, dtype=torch.long))
                            for a in range(N_ACTIONS)], dim=-1)


def train_critic(arr: OfflineArrays, seed: int, steps: int, batch: int = 256,
                 hidden: int = CRITIC_HIDDEN) -> tuple[QEnsemble, dict[str, float]]:
    """In-sample TD on the transitions that have a successor inside their episode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    idx = arr.transition_index()
    obs = torch.from_numpy(arr.obs)
    act = torch.from_numpy(arr.actions.astype(np.int64))
    rew = torch.from_numpy(arr.rewards.astype(np.float32))
    term = torch.from_numpy(arr.terminals.astype(np.float32))
    q = QEnsemble(hidden=hidden)
    target = QEnsemble(hidden=hidden)
    target.load_state_dict(q.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=CRITIC_LR)
    losses: list[float] = []
    for _ in range(steps):
        b = torch.from_numpy(idx[rng.integers(0, len(idx), batch)])
        nxt = (b + 1).clamp(max=len(obs) - 1)  # a terminal's successor is masked anyway
        with torch.no_grad():
            y = rew[b] + GAMMA * (1.0 - term[b]) * target(obs[nxt], act[nxt])  # (M, B)
        pred = q(obs[b], act[b])
        # Poisson(1) bootstrap weights per member: members see different data, so they disagree
        # where the data is thin
        w = torch.from_numpy(rng.poisson(1.0, size=pred.shape).astype(np.float32))
        loss = (w * (pred - y) ** 2).sum() / w.sum().clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(q.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(target.parameters()), list(q.parameters()), TAU)
        losses.append(float(loss.detach()))
    tail = losses[-max(1, len(losses) // 10):]
    return q, {"critic_td_loss": float(np.mean(tail)), "critic_steps": steps}


def train_transformer(arr: OfflineArrays, seed: int, steps: int, rtg_scale: float) -> Any:
    """d3rlpy's discrete DT on sessions of SESSION_STEPS bars; returns the fitted algo."""
    import d3rlpy
    from d3rlpy.dataset import MDPDataset
    from d3rlpy.logging import NoopAdapter, NoopAdapterFactory
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.optimizers import AdamFactory

    d3rlpy.seed(seed)
    terminals = np.zeros(len(arr.obs), np.float32)
    timeouts = np.zeros(len(arr.obs), np.float32)
    for start, end, terminal in session_bounds(arr.episode_ends, arr.terminals, SESSION_STEPS):
        (terminals if terminal else timeouts)[end - 1] = 1.0
    dataset = MDPDataset(observations=arr.obs, actions=arr.actions.astype(np.int64),
                         rewards=(arr.rewards * rtg_scale).astype(np.float32),
                         terminals=terminals, timeouts=timeouts,
                         action_space=d3rlpy.constants.ActionSpace.DISCRETE,
                         action_size=N_ACTIONS)
    config = d3rlpy.algos.DiscreteDecisionTransformerConfig(
        batch_size=64, learning_rate=3e-4, context_size=CONTEXT, max_timestep=SESSION_STEPS,
        encoder_factory=VectorEncoderFactory(hidden_units=[EMBED], exclude_last_activation=True),
        optim_factory=AdamFactory(weight_decay=1e-4), num_heads=N_HEADS, num_layers=1,
        attn_dropout=0.1, resid_dropout=0.1, embed_dropout=0.1,
        position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE,
        warmup_tokens=64 * CONTEXT * 20, final_tokens=64 * CONTEXT * max(steps, 1))
    algo = config.create(device="cpu:0")
    metrics: dict[str, float] = {}

    class _Keep(NoopAdapter):  # writes nothing to disk (no pickled model); keeps the epoch means
        def write_metric(self, epoch: int, step: int, name: str, value: float) -> None:
            metrics[name] = float(value)

    class _KeepFactory(NoopAdapterFactory):
        def create(self, algo: Any, experiment_name: str, n_steps_per_epoch: int) -> NoopAdapter:
            return _Keep()

    # 10 logging epochs (no effect on training: the schedule counts tokens), so the kept loss is
    # the mean of the last tenth of the steps
    per_epoch = max(1, steps // 10)
    algo.fit(dataset, n_steps=per_epoch * (steps // per_epoch), n_steps_per_epoch=per_epoch,
             show_progress=False,
             logger_adapter=_KeepFactory(), experiment_name="cgdt", with_timestamp=False,
             save_interval=10**9)
    algo.final_loss = metrics.get("loss", float("nan"))
    return algo


def export_tensors(transformer: nn.Module, critic: QEnsemble) -> dict[str, np.ndarray]:
    """d3rlpy DiscreteDecisionTransformer + QEnsemble state dicts -> the run-time tensor names."""
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in
          transformer.state_dict().items()}
    blk = "_gpt2._transformer.0."
    t = {
        "enc.w": sd["_encoder._layers.0.weight"], "enc.b": sd["_encoder._layers.0.bias"],
        "rtg.w": sd["_rtg_embed.weight"], "rtg.b": sd["_rtg_embed.bias"],
        "act_emb": sd["_action_embed.weight"],
        "pos_emb": sd["_position_encoding._embed.weight"],
        "ln1.g": sd[blk + "_layer_norm1.weight"], "ln1.b": sd[blk + "_layer_norm1.bias"],
        "ln2.g": sd[blk + "_layer_norm2.weight"], "ln2.b": sd[blk + "_layer_norm2.bias"],
        "mlp.w1": sd[blk + "_mlp._l1.weight"], "mlp.b1": sd[blk + "_mlp._l1.bias"],
        "mlp.w2": sd[blk + "_mlp._l2.weight"], "mlp.b2": sd[blk + "_mlp._l2.bias"],
        "lnf.g": sd["_gpt2._layer_norm.weight"], "lnf.b": sd["_gpt2._layer_norm.bias"],
        "out.w": sd["_output.weight"],
    }
    for src, dst in (("_q", "q"), ("_k", "k"), ("_v", "v"), ("_proj", "p")):
        t[f"attn.w{dst}"] = sd[f"{blk}_attention.{src}.weight"]
        t[f"attn.b{dst}"] = sd[f"{blk}_attention.{src}.bias"]
    for k in ("w1", "b1", "w2", "b2"):
        t[f"critic.{k}"] = getattr(critic, k).detach().cpu().numpy().astype(np.float32)
    return t


def train_arrays(arr: OfflineArrays, out_dir: Path, seed: int, quick: bool,
                 name: str = AGENT, data_meta: dict[str, Any] | None = None,
                 data: Any = None) -> dict[str, Any]:
    """Train transformer and critic on `arr`, write checkpoint `<out_dir>/<name>`, return metrics
    (with a rollout on `data`'s validation env when given)."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    dt_steps, critic_steps = (40, 40) if quick else (3000, 3000)
    rtg = arr.session_returns_to_go(SESSION_STEPS)
    rtg_scale = float(1.0 / max(float(np.std(rtg)), 1.0))
    algo = train_transformer(arr, seed, dt_steps, rtg_scale)
    t_dt = time.perf_counter() - t0
    critic, cmetrics = train_critic(arr, seed + 1, critic_steps)
    tensors = export_tensors(algo.impl.modules.transformer, critic)
    tensors["obs_mean"] = arr.mean.astype(np.float32)
    tensors["obs_std"] = arr.std.astype(np.float32)
    metrics = {"dt_steps": dt_steps, "dt_seconds": round(t_dt, 2),
               # mean cross-entropy over the last tenth of the steps (ln 3 = 1.0986 is chance)
               "dt_loss": algo.final_loss,
               "train_seconds": round(time.perf_counter() - t0, 2),
               "transitions": int(len(arr.obs)), "rtg_scale": rtg_scale, **cmetrics}
    meta = {"agent": AGENT, "seed": seed, "quick": quick, "data": data_meta or {},
            "metrics": metrics, "context": CONTEXT, "n_heads": N_HEADS, "n_layers": 1,
            "embed": EMBED, "max_timestep": SESSION_STEPS, "session_steps": SESSION_STEPS,
            "bars_per_year": BARS_PER_YEAR, "rtg_scale": rtg_scale, "obs_clip": OBS_CLIP,
            "lcb_k": 1.0, "critic_members": CRITIC_MEMBERS, "critic_hidden": CRITIC_HIDDEN,
            "gamma": GAMMA, "tau": TAU}
    if data is not None:
        from himari.decision.nets.cgdt import CGDTAgent

        metrics.update(valid_rollout(CGDTAgent(with_identity_stats(tensors), meta), data))
    save_checkpoint(Path(out_dir), name, tensors, meta)
    return metrics


def train(data: Any, out_dir: Path, seed: int, quick: bool) -> dict[str, Any]:
    """`himari train` entry point: offline trajectories from `data`, checkpoint "cgdt"."""
    arr, data_meta = offline_arrays(data, seed)
    return train_arrays(arr, out_dir, seed, quick, data_meta=data_meta, data=data)
