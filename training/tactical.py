"""Train the tactical team (spec decision.md 2.3-2.6): MAPPO with a centralised critic.

Episodes are trading days (UTC) inside the environment's runs of ready bars (`training/env.py`
`episode_runs`); one step = one closed 5-minute bar. The actors see only the 60x7 matrix, so a
rollout is vectorised: all three actors' probabilities for every bar of the sampled days in one
forward pass, actions sampled from softmax(logits / T_agent) (exploration temperatures 1.0, 1.2,
0.8; spec 2.2) with a seeded generator.

Rewards (each agent its own stream, G14; simplified from 2.6 and said so in the metadata):
- team: the aggregated action (spec 2.4 with the bar's synergy context, threshold 0.65, 0.7
  penalty) stepped through the environment's `simulate` (section 0 transitions, fees) gives
  r~_t of spec 4.0; every agent gets 0.5 x team r~.
- FVG and momentum: plus their own vote held as a shadow position (SELL/HOLD/BUY -> -1/0/+1 for
  one bar): (p_t ret_{t+1} - fee |p_t - p_{t-1}|) / sigma_t. The team executes rarely (0.65 of a
  score whose weights sum to 1), so without this an untrained team earns 0 everywhere and learns
  nothing.
- entry: plus e x (d_t ret_{t+1} - fee [d_t != 0]) / sigma_t, e = 0 / 1 / 1.5 for WAIT / EXECUTE /
  AGGRESSIVE and d_t the direction the FVG and momentum votes give (sign of S[BUY] - S[SELL]).
The seed's distance-to-FVG, mitigation and counter-trend shapings (2.6, G18) are not used.

Critic: input 428 (flattened matrix 420, synergy type one-hot 4, direction, confidence, team
position sign, unrealised PnL / ATR; G13), 3 value heads; GAE gamma 0.99, lambda 0.95 per agent,
bootstrapped with V at the day's last bar (truncation); PPO clip 0.2, entropy 0.01, 4 epochs
(G20), Adam 3e-4 (actors) / 1e-3 (critic, value coefficient 0.5), grad-norm clip 0.5.

Sizes (scaled down, say why): Conv1d 7->16->16, pool 8, Linear 128->64, head 64->32->3: ~11k
parameters per actor instead of ~300k. A month of 5-minute bars is ~8k decisions; the seed's size
would memorise it, trains ~20x slower on 2 cores, and costs ~1 ms per team call at run time. Critic
hidden [128, 64] instead of [512, 256, 128].
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from himari.decision.checkpoint import save_checkpoint
from himari.training.torch_nets import (TACTICAL_AGENTS, TacticalCritic, TacticalTeamNet,
                                        tactical_tensors)

NAME = "tactical_team"
DAY_NS = 86_400_000_000_000
SYNERGY_WEIGHTS = np.array([  # spec 2.4: (FVG, momentum, entry) per synergy type 0 (none) .. 4
    [0.33, 0.33, 0.34], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.3, 0.5, 0.2], [0.35, 0.35, 0.3]])
EXECUTION_THRESHOLD = 0.65
MISMATCH_PENALTY = 0.7
SYNERGY_VALID_BARS = 6  # a synergy's context holds for the next 6 five-minute bars (spec 1)
ENTRY_SCALE = np.array([0.0, 1.0, 1.5])


@dataclass
class TacticalConfig:
    channels: tuple[int, int] = (16, 16)
    pool: int = 8
    fc: int = 64
    head: int = 32
    critic_hidden: tuple[int, ...] = (128, 64)
    temperatures: tuple[float, float, float] = (1.0, 1.2, 0.8)
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    value_coef: float = 0.5
    iterations: int = 20
    days_per_iteration: int = 10
    epochs: int = 4
    batch: int = 256
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    entropy: float = 0.01
    grad_clip: float = 0.5
    team_weight: float = 0.5

    @staticmethod
    def quick() -> TacticalConfig:
        return TacticalConfig(iterations=2, days_per_iteration=2, epochs=2)


def trading_days(ds: Any, runs: list[tuple[int, int]], min_bars: int = 8) -> list[tuple[int, int]]:
    """Split [start, stop) runs at UTC midnight (event time); drop stubs shorter than min_bars."""
    out = []
    for a, b in runs:
        day = ds.ts_ns[a:b] // DAY_NS
        cuts = np.flatnonzero(np.diff(day)) + 1 + a
        edges = [a, *cuts.tolist(), b]
        out += [(s, e) for s, e in zip(edges[:-1], edges[1:]) if e - s >= min_bars]
    return out


def synergy_context(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bar (type 0..4, direction, confidence) of the latest synergy within the last 6 bars of
    the same segment (0 when none)."""
    n = len(ds)
    typ = np.zeros(n, np.int64)
    direction = np.zeros(n)
    conf = np.zeros(n)
    for k in np.flatnonzero(ds.synergy_type > 0):
        end = min(n, k + SYNERGY_VALID_BARS)
        end = k + int(np.argmax(ds.segment[k:end] != ds.segment[k])) if np.any(
            ds.segment[k:end] != ds.segment[k]) else end
        typ[k:end] = ds.synergy_type[k]
        direction[k:end] = np.sign(ds.synergy_dir[k])
        conf[k:end] = ds.synergy_conf[k]
    return typ, direction, conf


def aggregate(p_f: np.ndarray, p_m: np.ndarray, p_e: np.ndarray, syn_type: np.ndarray,
              syn_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spec 2.4 vectorised over bars (votes given as probability rows; argmax and max taken here).

    Returns (action (n,) canonical, score (n,), direction d (n,) = sign(S[BUY] - S[SELL]) before
    the entry vote). decision/aggregate.py is the run-time version; this one serves training.
    """
    n = len(p_f)
    w = SYNERGY_WEIGHTS[np.clip(syn_type, 0, 4)]
    s = np.zeros((n, 3))
    rows = np.arange(n)
    for col, p in ((0, p_f), (1, p_m)):
        np.add.at(s, (rows, p.argmax(1)), w[:, col] * p.max(1))
    d = np.sign(s[:, 2] - s[:, 0])
    a_e, c_e = p_e.argmax(1), p_e.max(1)
    bump = w[:, 2] * c_e
    target = np.where(a_e == 0, 1, np.where(s[:, 2] > s[:, 0], 2,
                                            np.where(s[:, 0] > s[:, 2], 0, 1)))
    # both direction buckets 0 (or tied): the entry vote goes to HOLD
    target = np.where((a_e != 0) & (s[:, 0] == 0) & (s[:, 2] == 0), 1, target)
    s[rows, target] += bump
    best = np.where((s[:, 0] > s[:, 1]) & (s[:, 0] > s[:, 2]), 0,
                    np.where((s[:, 2] > s[:, 1]) & (s[:, 2] > s[:, 0]), 2, 1))  # ties -> HOLD
    score = s[rows, best]
    mismatch = (best != 1) & (syn_dir != 0) & (np.sign(best - 1) != syn_dir)
    score = np.where(mismatch, score * MISMATCH_PENALTY, score)
    action = np.where((best != 1) & (score >= EXECUTION_THRESHOLD), best, 1)
    return action, score, d


def _gae(r: np.ndarray, v: np.ndarray, v_last: np.ndarray, gamma: float, lam: float
         ) -> np.ndarray:
    """GAE over one truncated episode: r (T, k), v (T, k), bootstrap v_last (k,)."""
    adv = np.zeros_like(r)
    nxt = v_last
    acc = np.zeros(r.shape[1])
    for t in range(len(r) - 1, -1, -1):
        delta = r[t] + gamma * nxt - v[t]
        acc = delta + gamma * lam * acc
        adv[t] = acc
        nxt = v[t]
    return adv


class _Episodes:
    """Per-bar arrays the rollouts gather from (built once)."""

    def __init__(self, ds: Any, fee: float, sigma: np.ndarray, env_cfg: Any) -> None:
        self.ds = ds
        self.env_cfg = env_cfg
        self.fee = fee
        self.sigma = sigma
        self.close = ds.close.astype(np.float64)
        self.atr = ds.atr14.astype(np.float64)
        self.syn_type, self.syn_dir, self.syn_conf = synergy_context(ds)

    def matrices(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.ds.tactical[idx], dtype=np.float32))

    def critic_input(self, idx: np.ndarray, m: torch.Tensor, pos_state: np.ndarray
                     ) -> torch.Tensor:
        extra = np.zeros((len(idx), 8), np.float32)
        t = self.syn_type[idx]
        extra[np.flatnonzero(t > 0), t[t > 0] - 1] = 1.0
        extra[:, 4] = self.syn_dir[idx]
        extra[:, 5] = self.syn_conf[idx]
        extra[:, 6] = np.sign(pos_state[:, 0])
        extra[:, 7] = np.clip(pos_state[:, 1], -20.0, 20.0)
        return torch.cat([m.reshape(len(idx), -1), torch.from_numpy(extra)], 1)

    def rewards(self, s: int, e: int, acts: np.ndarray, probs: list[np.ndarray],
                cfg: TacticalConfig) -> tuple[np.ndarray, np.ndarray]:
        """(rewards (T, 3), position state (T + 1, 4)) for a day [s, e): T = e - s - 1 steps."""
        from himari.training.env import simulate

        steps = e - s - 1
        sl = slice(s, s + steps)
        team_act, _, d = aggregate(*[p[:steps] for p in probs], self.syn_type[sl],
                                   self.syn_dir[sl])
        pos, team_r, pos_state = simulate(team_act, self.close[s:e], self.atr[sl], self.sigma[sl],
                                         self.env_cfg)
        ret = (self.close[s + 1:e] - self.close[sl]) / self.close[sl]
        sig = self.sigma[sl]
        r = np.zeros((steps, 3))
        for i in (0, 1):
            p = acts[:steps, i].astype(np.float64) - 1.0
            prev = np.concatenate([[0.0], p[:-1]])
            r[:, i] = (p * ret - self.fee * np.abs(p - prev)) / sig
        e_scale = ENTRY_SCALE[acts[:steps, 2]]
        r[:, 2] = e_scale * (d * ret - self.fee * (d != 0)) / sig
        r += cfg.team_weight * team_r[:, None]
        # the position state seen at the day's last bar (for the critic's bootstrap value)
        last = np.zeros((1, 4))
        last[0, 0] = pos[-1] if steps else 0  # upnl left 0: the day is over
        return r, np.concatenate([pos_state, last])


def evaluate(team: TacticalTeamNet, ep: _Episodes, days: list[tuple[int, int]]
             ) -> dict[str, float]:
    """Greedy (argmax) per-agent shadow rewards and the aggregated team's env reward r~, per
    step, over `days`."""
    from himari.training.env import simulate

    team.eval()
    tot = np.zeros(3)
    team_r = 0.0
    executed = 0
    steps = 0
    for s, e in days:
        idx = np.arange(s, e)
        with torch.no_grad():
            probs = [torch.softmax(z, -1).numpy() for z in team(ep.matrices(idx))]
        acts = np.stack([p.argmax(1) for p in probs], 1)
        r, _ = ep.rewards(s, e, acts, probs, TacticalConfig(team_weight=0.0))
        tot += r.sum(0)
        team_act = aggregate(*[p[:-1] for p in probs], ep.syn_type[s:e - 1],
                             ep.syn_dir[s:e - 1])[0]
        team_r += float(simulate(team_act, ep.close[s:e], ep.atr[s:e - 1],
                                 ep.sigma[s:e - 1], ep.env_cfg)[1].sum())
        executed += int((team_act != 1).sum())
        steps += e - s - 1
    steps = max(steps, 1)
    out = {f"{a}_greedy_reward": float(tot[i] / steps) for i, a in enumerate(TACTICAL_AGENTS)}
    out["team_greedy_reward"] = team_r / steps
    out["team_execute_share"] = executed / steps
    return out


def _spread(days: list[tuple[int, int]], k: int) -> list[tuple[int, int]]:
    """At most k days, evenly spread (the greedy evaluation's sample; no randomness)."""
    if len(days) <= k:
        return days
    return [days[i] for i in np.linspace(0, len(days) - 1, k).round().astype(int)]


def _episodes(ds: Any, fee: float, env_cfg: Any) -> tuple[_Episodes, list[tuple[int, int]]]:
    from himari.training.env import episode_runs, ewma_sigma

    sigma = ewma_sigma(ds.close.astype(np.float64), ds.segment, env_cfg.sigma_span,
                       env_cfg.sigma_floor)
    return _Episodes(ds, fee, sigma, env_cfg), trading_days(ds, episode_runs(ds))


def train_dataset(ds: Any, seed: int, cfg: TacticalConfig, fee: float = 2e-4,
                  env_cfg: Any = None, valid: Any = None
                  ) -> tuple[TacticalTeamNet, dict[str, Any]]:
    """MAPPO on a BarDataset's trading days; metrics before/after (and on `valid` if given)."""
    from himari.training.env import EnvConfig

    env_cfg = env_cfg or EnvConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    ep, days = _episodes(ds, fee, env_cfg)
    if not days:
        raise ValueError("tactical training: no trading day of ready bars in the data")
    team = TacticalTeamNet(cfg.channels, cfg.pool, cfg.fc, cfg.head)
    critic = TacticalCritic(cfg.critic_hidden)
    opts = [torch.optim.Adam(a.parameters(), lr=cfg.actor_lr) for a in team.actors]
    c_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
    temps = torch.tensor(cfg.temperatures).reshape(3, 1, 1)

    eval_days = _spread(days, 40)

    def greedy() -> dict[str, float]:
        return evaluate(team, ep, eval_days)

    before = greedy()
    history = []
    for it in range(cfg.iterations):
        chosen = rng.choice(len(days), size=min(cfg.days_per_iteration, len(days)), replace=False)
        mats, c_ins, acts_l, logp_l, adv_l, ret_l, rew_l = [], [], [], [], [], [], []
        team.eval()
        critic.eval()
        for k in sorted(chosen.tolist()):
            s, e = days[k]
            idx = np.arange(s, e)
            m = ep.matrices(idx)
            with torch.no_grad():
                logits = torch.stack(team(m)) / temps            # (3, T+1, 3)
                logp_all = F.log_softmax(logits, -1)
                acts = torch.multinomial(logp_all.exp().reshape(-1, 3), 1, generator=gen
                                         ).reshape(3, -1).T        # (T+1, 3)
                logp = logp_all.gather(2, acts.T.unsqueeze(-1))[..., 0].T
            probs = [torch.softmax(z, -1).numpy() for z in logits * temps]
            r, pos_state = ep.rewards(s, e, acts.numpy(), probs, cfg)
            c_in = ep.critic_input(idx, m, pos_state)
            with torch.no_grad():
                v = critic(c_in).numpy()
            adv = _gae(r, v[:-1], v[-1], cfg.gamma, cfg.lam)
            steps = len(r)
            mats.append(m[:steps])
            c_ins.append(c_in[:steps])
            acts_l.append(acts[:steps])
            logp_l.append(logp[:steps])
            adv_l.append(adv)
            ret_l.append(adv + v[:-1])
            rew_l.append(r)
        m_all = torch.cat(mats)
        c_all = torch.cat(c_ins)
        a_all = torch.cat(acts_l)
        lp_old = torch.cat(logp_l)
        adv_np = np.concatenate(adv_l)
        ret_all = torch.from_numpy(np.concatenate(ret_l).astype(np.float32))
        adv_all = torch.from_numpy(((adv_np - adv_np.mean(0)) / (adv_np.std(0) + 1e-8))
                                   .astype(np.float32))
        team.train()
        critic.train()
        n = len(a_all)
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen)
            for b in range(0, n, cfg.batch):
                mb = perm[b:b + cfg.batch]
                loss = torch.zeros(())
                for i, z in enumerate(team(m_all[mb])):
                    lp_all = F.log_softmax(z / cfg.temperatures[i], -1)
                    lp = lp_all.gather(1, a_all[mb, i:i + 1])[:, 0]
                    ratio = torch.exp(lp - lp_old[mb, i])
                    a = adv_all[mb, i]
                    surr = torch.min(ratio * a, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * a)
                    ent = -(lp_all.exp() * lp_all).sum(-1)
                    loss = loss - surr.mean() - cfg.entropy * ent.mean()
                v_loss = cfg.value_coef * F.mse_loss(critic(c_all[mb]), ret_all[mb])
                for opt in (*opts, c_opt):
                    opt.zero_grad()
                (loss + v_loss).backward()  # disjoint parameter sets: one backward for all
                for actor, opt in zip(team.actors, opts):
                    torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.grad_clip)
                    opt.step()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.grad_clip)
                c_opt.step()
        history.append({"iteration": it, "transitions": n,
                        "mean_reward": np.concatenate(rew_l).mean(0).round(6).tolist()})
    team.eval()
    after = greedy()
    valid_metrics = None
    if valid is not None and len(valid):
        v_ep, v_days = _episodes(valid, fee, env_cfg)
        valid_metrics = evaluate(team, v_ep, _spread(v_days, 60)) if v_days else None
    metrics = {"days": len(days), "valid": valid_metrics, "iterations": cfg.iterations,
               "transitions_seen": int(sum(h["transitions"] for h in history)),
               "last_mean_sampled_reward": history[-1]["mean_reward"] if history else None,
               "before": before, "after": after}
    return team, metrics


def train(data: Any, out_dir: Path, seed: int, quick: bool) -> dict[str, Any]:
    """`himari train` entry: MAPPO on data's training BarDataset, write the checkpoint."""
    from himari.training.strategic import (_data_range_bars, _fee, _split_meta,
                                            _training_dataset)

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = TacticalConfig.quick() if quick else TacticalConfig()
    env_cfg = getattr(data, "env", None)
    ds = _training_dataset(data)
    team, metrics = train_dataset(ds, seed, cfg, _fee(data, 2e-4), env_cfg,
                                  getattr(data, "valid", None))
    metrics["train_seconds"] = round(time.perf_counter() - t0, 2)
    meta = {
        "agent": NAME, "seed": seed, "quick": quick, "config": asdict(cfg),
        "sizes": team.sizes, "agents": list(TACTICAL_AGENTS), "data": {**_data_range_bars(ds), **_split_meta(data)},
        "metrics": metrics,
        "notes": ("MAPPO on trading days; per-agent rewards = own shadow vote (entry: timing of "
                  "the FVG/momentum direction) + 0.5 team r~ of the aggregated action; see "
                  "training/tactical.py"),
    }
    save_checkpoint(Path(out_dir), NAME, tactical_tensors(team), meta)
    return metrics
