"""Train the strategic team (spec decision.md 3.2-3.5): PPO, one-step episodes, centralised critic.

Decision points. Synergy events are rare in the data (a few per week), so the team is trained on
every new 30-minute strategic matrix (`BarDataset.strategic_bars`), with the synergy context when an
event falls on that bar (zeros otherwise). Each decision is a one-step episode (G29): the agents'
sampled actions are held for the next 30 minutes (6 five-minute bars) and A = r - V.

Reward per agent (spec 3.5, simplified and said so in the metadata):
    r_i = tanh(pnl_i / sigma) + 0.2 * conf * alignment(a_i, synergy direction)
    pnl_i = v_i * (C_{t+6} - C_t) / C_t - 2 fee |v_i|,   v_i = a_i - 1
sigma = std of the 30-minute forward returns over the training decision points (frozen, mu = 0: the
spec's running mean/deviation estimate, with a stationary target). Each agent is credited for its
own action (its own reward stream; the seed's "ensemble majority" alignment would blur it), so the
critic has one value head per agent. R_risk (drawdown > 15 %) never triggers in a 30-minute one-step
episode and is dropped; R_exploration is left to the 0.01 entropy bonus of the loss.

PPO per iteration: a rollout of `rollout` decision points sampled from the training set, behaviour
probabilities in eval mode (no dropout), then up to `epochs` epochs of minibatch updates with ratio
clip 0.2, entropy 0.01, grad-norm clip 0.5, stopping when the rollout's mean (log pi_old -
log pi_new) > target_kl 0.01; the critic (input 28 = 13 column means + 6 context + 9 agent probs;
G29) takes 4 epochs of clipped value loss. The ensemble weights omega take one Adam step per
iteration towards softmax(2 perf), perf_i = mean (P_i(BUY) - P_i(SELL)) tanh(R_fwd / sigma) (G28).

Sizes: hidden [32, 32] per agent (the seed's [256, 128, 64] has ~45k parameters per agent for 10
inputs and a few thousand decisions per month of data: it would memorise, and cost ~10x the
inference time); critic [64, 64].
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from himari.decision.checkpoint import save_checkpoint
from himari.training.torch_nets import (STRATEGIC_AGENTS, StrategicCritic, StrategicTeamNet,
                                        strategic_tensors)

NAME = "strategic_team"
STD_FLOOR = 1e-3
# Input slots z-scored with training statistics: the agent's column means and ln(volatility_30);
# synergy confidence / direction, sin/cos hour and weekday / 6 pass through (mean 0, std 1).
N_FEATURES = (4, 4, 3)
LOG_VOL_SLOT = 2  # position of ln(volatility_30) inside the 6 context values


@dataclass
class StrategicConfig:
    hidden: tuple[int, ...] = (32, 32)
    critic_hidden: tuple[int, ...] = (64, 64)
    dropout: tuple[float, float, float] = (0.1, 0.1, 0.15)
    lr: tuple[float, float, float] = (3e-4, 3e-4, 2e-4)
    critic_lr: float = 1e-3
    omega_lr: float = 1e-3
    omega_weight_decay: float = 1e-4
    iterations: int = 30
    rollout: int = 2048
    epochs: int = 10
    critic_epochs: int = 4
    batch: int = 256
    clip: float = 0.2
    value_clip: float = 0.2
    entropy: float = 0.01
    target_kl: float = 0.01
    grad_clip: float = 0.5
    horizon_bars: int = 6
    synergy_weight: float = 0.2
    fee: float = 2e-4

    @staticmethod
    def quick() -> StrategicConfig:
        return StrategicConfig(iterations=4, rollout=256, epochs=4, batch=128)


@dataclass
class StrategicArrays:
    """Everything the trainer reads, one row per decision point (tests build these directly)."""

    inputs: tuple[np.ndarray, np.ndarray, np.ndarray]   # raw (n, 10), (n, 10), (n, 9)
    col_means: np.ndarray                                # (n, 13) raw column means
    volatility_30: np.ndarray                            # (n,)
    fwd_return: np.ndarray                               # (n,) (C_{t+h} - C_t) / C_t
    synergy_conf: np.ndarray                             # (n,)
    synergy_dir: np.ndarray                              # (n,)
    ts_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.fwd_return)


def decision_arrays(ds: Any, horizon_bars: int = 6) -> StrategicArrays:
    """Decision points of a BarDataset: each new ready strategic matrix with a close
    `horizon_bars` later in the same segment."""
    from himari.decision.features import strategic_inputs_batch

    idx = ds.strategic_bars()
    idx = idx[ds.strategic_ready[idx] & (idx + horizon_bars < len(ds))]
    idx = idx[ds.segment[idx + horizon_bars] == ds.segment[idx]]
    strat = np.asarray(ds.strategic[idx], dtype=np.float32)
    conf = ds.synergy_conf[idx].astype(np.float64)
    direction = ds.synergy_dir[idx].astype(np.float64)
    m, n, r = strategic_inputs_batch(strat, conf, direction, ds.ts_ns[idx])
    close = ds.close.astype(np.float64)
    fwd = (close[idx + horizon_bars] - close[idx]) / close[idx]
    return StrategicArrays((m, n, r), strat.mean(axis=1, dtype=np.float64),
                           ds.volatility_30[idx].astype(np.float64), fwd, conf, direction,
                           ds.ts_ns[idx].astype(np.int64))


def fit_input_stats(inputs: tuple[np.ndarray, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    means, stds = [], []
    for x, k in zip(inputs, N_FEATURES):
        x = np.asarray(x, np.float64)
        mean = np.zeros(x.shape[1])
        std = np.ones(x.shape[1])
        cols = list(range(k)) + [k + LOG_VOL_SLOT]
        mean[cols] = x[:, cols].mean(axis=0)
        std[cols] = np.maximum(x[:, cols].std(axis=0), STD_FLOOR)
        means.append(mean.astype(np.float32))
        stds.append(std.astype(np.float32))
    return means, stds


def alignment(action: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Spec 3.5: bullish synergy 1 / 0.5 / 0 for BUY / HOLD / SELL, mirrored for bearish; no
    direction: 1 for HOLD, else 0.5."""
    v = action.astype(np.float64) - 1.0
    d = np.sign(direction)
    directed = np.where(v == 0, 0.5, np.where(v == d, 1.0, 0.0))
    undirected = np.where(v == 0, 1.0, 0.5)
    return np.where(d != 0, directed, undirected)


def rewards(actions: np.ndarray, fwd: np.ndarray, sigma: float, conf: np.ndarray,
            direction: np.ndarray, cfg: StrategicConfig) -> np.ndarray:
    """(n, 3) rewards for (n, 3) actions (canonical indices)."""
    v = actions.astype(np.float64) - 1.0
    pnl = v * fwd[:, None] - 2.0 * cfg.fee * np.abs(v)
    r_pnl = np.tanh(pnl / sigma)
    r_syn = conf[:, None] * alignment(actions, direction[:, None])
    return np.clip(r_pnl + cfg.synergy_weight * r_syn, -10.0, 10.0)


def _critic_input(col_z: torch.Tensor, ctx: torch.Tensor, probs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([col_z, ctx] + probs, dim=1)


def evaluate(team: StrategicTeamNet, means: list[np.ndarray], stds: list[np.ndarray],
             arr: StrategicArrays, sigma: float, cfg: StrategicConfig) -> dict[str, float]:
    """Greedy (argmax) rewards of each agent and of the weighted ensemble over `arr`."""
    team.eval()
    xs = [torch.from_numpy(((np.asarray(x, np.float64) - m) / s).astype(np.float32))
          for x, m, s in zip(arr.inputs, means, stds)]
    fwd = np.asarray(arr.fwd_return, np.float64)
    with torch.no_grad():
        probs = [torch.softmax(z, -1) for z in
                 team(xs, torch.from_numpy(np.asarray(arr.volatility_30, np.float32)))]
        ens_p = sum(w * p for w, p in zip(team.weights(), probs))
    acts = np.stack([p.argmax(-1).numpy() for p in probs], axis=1)
    ens = ens_p.argmax(-1).numpy()
    r = rewards(np.concatenate([acts, ens[:, None]], 1), fwd, sigma,
                np.asarray(arr.synergy_conf, np.float64), np.asarray(arr.synergy_dir, np.float64),
                cfg)
    out = {f"{a}_greedy_reward": float(r[:, i].mean()) for i, a in enumerate(STRATEGIC_AGENTS)}
    out["ensemble_greedy_reward"] = float(r[:, 3].mean())
    traded = ens != 1
    hits = np.sign(ens[traded] - 1) == np.sign(fwd[traded])
    out["ensemble_trade_share"] = float(traded.mean())
    out["ensemble_hit_rate"] = float(hits.mean()) if traded.any() else 0.0
    out["ensemble_proceed_share"] = float(((ens_p.max(-1).values > 0.65).numpy() & traded).mean())
    return out


def train_arrays(arr: StrategicArrays, seed: int, cfg: StrategicConfig,
                 valid: StrategicArrays | None = None
                 ) -> tuple[StrategicTeamNet, list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    """PPO on prepared decision points; returns the team, its input statistics and metrics
    (greedy rewards before and after on the training points, and after on `valid` if given)."""
    if len(arr) < 8:
        raise ValueError(f"strategic training needs decision points, got {len(arr)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    means, stds = fit_input_stats(arr.inputs)
    xs = [torch.from_numpy(((np.asarray(x, np.float64) - m) / s).astype(np.float32))
          for x, m, s in zip(arr.inputs, means, stds)]
    cm = np.asarray(arr.col_means, np.float64)
    col_z = torch.from_numpy(((cm - cm.mean(0)) / np.maximum(cm.std(0), STD_FLOOR))
                             .astype(np.float32))
    ctx = xs[0][:, 4:]  # the 6 shared-context values, normalised like the agents see them
    vol = torch.from_numpy(np.asarray(arr.volatility_30, np.float32))
    fwd = np.asarray(arr.fwd_return, np.float64)
    sigma = max(float(fwd.std()), 1e-9)
    conf = np.asarray(arr.synergy_conf, np.float64)
    direction = np.asarray(arr.synergy_dir, np.float64)

    team = StrategicTeamNet(cfg.hidden, cfg.dropout)
    critic = StrategicCritic(cfg.critic_hidden)
    opts = [torch.optim.Adam(p.parameters(), lr=lr) for p, lr in zip(team.policies, cfg.lr)]
    c_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
    w_opt = torch.optim.Adam([team.omega], lr=cfg.omega_lr, weight_decay=cfg.omega_weight_decay)

    def greedy() -> dict[str, float]:
        return evaluate(team, means, stds, arr, sigma, cfg)

    before = greedy()
    history: list[dict[str, float]] = []
    n = len(arr)
    for it in range(cfg.iterations):
        idx = torch.from_numpy(rng.choice(n, size=min(cfg.rollout, n), replace=False))
        bx = [x[idx] for x in xs]
        bvol, bcol, bctx = vol[idx], col_z[idx], ctx[idx]
        team.eval()
        critic.eval()
        with torch.no_grad():
            logp_all_old = [F.log_softmax(z, -1) for z in team(bx, bvol)]
            probs_old = [lp.exp() for lp in logp_all_old]
            acts = torch.stack([torch.multinomial(p, 1, generator=gen)[:, 0] for p in probs_old], 1)
            logp_old = torch.stack([lp.gather(1, acts[:, i:i + 1])[:, 0]
                                    for i, lp in enumerate(logp_all_old)], 1)
            c_in = _critic_input(bcol, bctx, probs_old)
            v_old = critic(c_in)
        r = torch.from_numpy(rewards(acts.numpy(), fwd[idx.numpy()], sigma, conf[idx.numpy()],
                                     direction[idx.numpy()], cfg).astype(np.float32))
        adv = r - v_old
        adv = (adv - adv.mean(0)) / (adv.std(0) + 1e-8)

        team.train()
        epochs_done = 0
        kl = 0.0
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(idx), generator=gen)
            for s in range(0, len(idx), cfg.batch):
                mb = perm[s:s + cfg.batch]
                logits = team([x[mb] for x in bx], bvol[mb])
                loss = torch.zeros(())
                for i, z in enumerate(logits):  # disjoint parameters: one backward for all three
                    lp_all = F.log_softmax(z, -1)
                    lp = lp_all.gather(1, acts[mb, i:i + 1])[:, 0]
                    ratio = torch.exp(lp - logp_old[mb, i])
                    a = adv[mb, i]
                    surr = torch.min(ratio * a, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * a)
                    ent = -(lp_all.exp() * lp_all).sum(-1)
                    loss = loss - surr.mean() - cfg.entropy * ent.mean()
                for opt in opts:
                    opt.zero_grad()
                loss.backward()
                for pol, opt in zip(team.policies, opts):
                    torch.nn.utils.clip_grad_norm_(pol.parameters(), cfg.grad_clip)
                    opt.step()
            epochs_done += 1
            team.eval()
            with torch.no_grad():
                lp_new = torch.stack([F.log_softmax(z, -1).gather(1, acts[:, i:i + 1])[:, 0]
                                      for i, z in enumerate(team(bx, bvol))], 1)
            kl = float((logp_old - lp_new).mean())
            team.train()
            if kl > cfg.target_kl:
                break

        critic.train()
        for _ in range(cfg.critic_epochs):
            perm = torch.randperm(len(idx), generator=gen)
            for s in range(0, len(idx), cfg.batch):
                mb = perm[s:s + cfg.batch]
                v = critic(c_in[mb])
                v_clip = v_old[mb] + torch.clamp(v - v_old[mb], -cfg.value_clip, cfg.value_clip)
                loss = torch.max((v - r[mb]) ** 2, (v_clip - r[mb]) ** 2).mean()
                c_opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.grad_clip)
                c_opt.step()

        # G28: perf_i = mean (P_i(bull) - P_i(bear)) tanh(R_fwd / sigma); omega -> softmax(2 perf)
        tf = torch.from_numpy(np.tanh(fwd[idx.numpy()] / sigma).astype(np.float32))
        perf = torch.stack([((p[:, 2] - p[:, 0]) * tf).mean() for p in probs_old])
        target = torch.softmax(2.0 * perf, 0)
        w_loss = F.mse_loss(torch.softmax(team.omega, 0), target)
        w_opt.zero_grad()
        w_loss.backward()
        w_opt.step()
        history.append({"iteration": it, "mean_reward": float(r.mean()), "kl": kl,
                        "epochs": epochs_done})

    team.eval()
    after = greedy()
    metrics: dict[str, Any] = {
        "valid": (evaluate(team, means, stds, valid, sigma, cfg)
                  if valid is not None and len(valid) else None),
        "decision_points": n, "iterations": cfg.iterations, "sigma_fwd": sigma,
        "before": before, "after": after,
        "last_mean_sampled_reward": history[-1]["mean_reward"] if history else None,
        "mean_epochs": float(np.mean([h["epochs"] for h in history])) if history else 0.0,
        "weights": team.weights().detach().numpy().round(6).tolist(),
        "tau": [float(p.tau().detach()) for p in team.policies],
    }
    return team, means, stds, metrics


def train(data: Any, out_dir: Path, seed: int, quick: bool) -> dict[str, Any]:
    """`himari train` entry: train on data's training BarDataset, write the checkpoint."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = StrategicConfig.quick() if quick else StrategicConfig()
    cfg.fee = _fee(data, cfg.fee)
    ds = _training_dataset(data)
    arr = decision_arrays(ds, cfg.horizon_bars)
    valid_ds = getattr(data, "valid", None)
    valid = decision_arrays(valid_ds, cfg.horizon_bars) if valid_ds is not None and len(
        valid_ds) else None
    team, means, stds, metrics = train_arrays(arr, seed, cfg, valid)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 2)
    meta = {
        "agent": NAME, "seed": seed, "quick": quick, "config": asdict(cfg),
        "hidden": list(cfg.hidden), "agents": list(STRATEGIC_AGENTS),
        "data": {**_data_range(ds, arr), **_split_meta(data)},
        "feature_stats": {a: {"mean": m.tolist(), "std": s.tolist()}
                          for a, m, s in zip(STRATEGIC_AGENTS, means, stds)},
        "metrics": metrics,
        "notes": ("trained on every new 30-minute matrix (synergy context when present); "
                  "reward tanh(pnl/sigma) + 0.2 synergy alignment per agent; R_risk and "
                  "R_exploration dropped (see training/strategic.py)"),
    }
    save_checkpoint(Path(out_dir), NAME, strategic_tensors(team, means, stds), meta)
    return metrics


def _training_dataset(data: Any) -> Any:
    """The BarDataset to train on from whatever `himari train` passes (TrainingData or a
    BarDataset)."""
    for attr in ("train",):
        ds = getattr(data, attr, None)
        if ds is not None and hasattr(ds, "strategic_bars"):
            return ds
    if hasattr(data, "strategic_bars"):
        return data
    raise TypeError(f"cannot find a training BarDataset in {type(data).__name__}")


def _fee(data: Any, default: float) -> float:
    """Cost per unit of position changed from TrainingData (`fee`, else `env.fee`), or default."""
    fee = getattr(data, "fee", None)
    if fee is None:
        fee = getattr(getattr(data, "env", None), "fee", None)
    return float(fee) if fee is not None else default


def _split_meta(data: Any) -> dict[str, Any]:
    """TrainingData's own description of the split (parts, validation cut), when it has one."""
    fn = getattr(data, "checkpoint_meta", None)
    return {"split": fn()} if callable(fn) else {}


def _data_range_bars(ds: Any) -> dict[str, Any]:
    ts = ds.ts_ns
    return {"bars": int(len(ds)), "ts_from": int(ts.min()) if len(ts) else None,
            "ts_to": int(ts.max()) if len(ts) else None,
            "sources": list(getattr(ds, "meta", {}).get("sources", []))}


def _data_range(ds: Any, arr: StrategicArrays) -> dict[str, Any]:
    ts = arr.ts_ns
    return {"bars": int(len(ds)), "decision_points": int(len(arr)),
            "ts_from": int(ts.min()) if len(ts) else None,
            "ts_to": int(ts.max()) if len(ts) else None,
            "sources": list(getattr(ds, "meta", {}).get("sources", []))}

