"""D2 critic-guided decision transformer at run time (spec decision.md D2, G34, G39), in Numba
from safetensors weights (no torch, no d3rlpy).

The transformer is d3rlpy's `DiscreteDecisionTransformer` (trained by `training/cgdt.py`) with
ONE GPT2 block, the SIMPLE (per-timestep) position encoding and a linear state encoder. Tokens per
step: (return-to-go, state, action); logits are read at the newest state token. One layer makes
the inference incremental and exact: a token's key and value depend on that token alone, so each
bar pushes its new tokens into a per-instrument key/value ring of the last `context` steps and
runs one query: O(context) work instead of the whole window.

Return conditioning (G39): a session starts with RTG_0 = target Sharpe x T / sqrt(B) (T =
`session_steps` bars in a session, B = bars per year; the target Sharpe comes in
`inp.target_sharpe`) and `observe` subtracts each realised reward r~. Training cut trajectories
into sessions of T bars, so a session here also ends after T bars (history, RTG and timestep
start over), keeping the timestep and RTG inputs in the range the model saw.

`observe(inp, action, reward)` records the action token the way the training data writes it: a
HOLD while a position is open (`inp.position`, before the bar's action) becomes that position's
direction (BUY while long, SELL while short).

Critic masking (G34), `lcb_mask`: LCB(a) = mean Q(a) - 1.0 x std Q(a) over 3 Q members (sample
std); HOLD is always admissible; BUY/SELL only if LCB(a) >= LCB(HOLD); the admissible
probabilities are renormalised. Q members: Linear(257 + 3 -> H), GELU, Linear(H -> 1) on the
normalised state and the action one-hot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from himari.decision.agent import AgentInput, Vote
from himari.decision.checkpoint import DEFAULT_DIR, CheckpointError, load_checkpoint
from himari.decision.layout import BUY, FEATURE_DIM, HOLD, N_ACTIONS, SELL
from himari.decision.nets.ppo_lstm import check_x, require
from himari.decision.nets.seqkernels import cgdt_step, pack

AGENT = "cgdt"
LCB_K = 1.0


def lcb_mask(probs: Sequence[float], q_mean: Sequence[float], q_std: Sequence[float],
             k: float = LCB_K) -> tuple[tuple[float, float, float], tuple[bool, bool, bool]]:
    """The G34 rule: (renormalised probabilities, admissible flags) in SELL/HOLD/BUY order."""
    lcb_hold = q_mean[HOLD] - k * q_std[HOLD]
    adm = [True, True, True]
    for a in (SELL, BUY):
        adm[a] = (q_mean[a] - k * q_std[a]) >= lcb_hold
    p = [float(probs[a]) if adm[a] else 0.0 for a in range(N_ACTIONS)]
    total = p[0] + p[1] + p[2]
    if not total > 0.0 or not math.isfinite(total):
        out = (0.0, 1.0, 0.0)  # only HOLD left with no mass: HOLD
    else:
        out = (p[0] / total, p[1] / total, p[2] / total)
    return out, (adm[0], adm[1], adm[2])


class _Session:
    """One instrument's history: key/value ring, step count, return-to-go, pending action."""

    __slots__ = ("keys", "values", "written", "steps", "rtg", "pending")

    def __init__(self, cap: int, emb: int) -> None:
        self.keys = np.zeros((cap, emb), np.float32)
        self.values = np.zeros((cap, emb), np.float32)
        self.written = 0
        self.steps = 0
        self.rtg = 0.0
        self.pending = HOLD

    def clear(self) -> None:
        self.written = 0
        self.steps = 0
        self.rtg = 0.0
        self.pending = HOLD


class CGDTAgent:
    """The D2 agent (decision/agent.py protocol)."""

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict[str, Any],
                 name: str = AGENT) -> None:
        self.name = name
        w = repr(name)
        try:
            self.context = int(meta["context"])
            self.n_heads = int(meta["n_heads"])
            self.max_timestep = int(meta["max_timestep"])
            self.session_steps = int(meta["session_steps"])
            self.bars_per_year = float(meta["bars_per_year"])
            self.rtg_scale = float(meta["rtg_scale"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {w} metadata lacks or garbles {exc}") from None
        if int(meta.get("n_layers", 1)) != 1:
            raise CheckpointError(f"checkpoint {w} has n_layers={meta.get('n_layers')}; the "
                                  "incremental run-time forward supports exactly 1")
        enc = tensors.get("enc.w")
        if enc is None or enc.ndim != 2:
            raise CheckpointError(f"checkpoint {w} lacks tensor 'enc.w'")
        e = enc.shape[0]
        if self.context < 1 or self.n_heads < 1 or e % self.n_heads:
            raise CheckpointError(f"checkpoint {w}: embedding {e} with n_heads={self.n_heads}, "
                                  f"context={self.context} is not usable")
        self.emb = e
        r = lambda key, shape: require(tensors, key, shape, w)  # noqa: E731
        std = r("obs_std", (FEATURE_DIM,))
        if np.any(std <= 0):
            raise CheckpointError(f"checkpoint {w}: obs_std has non-positive entries")
        self._clip = float(meta.get("obs_clip", 10.0))
        pe = tensors.get("pos_emb")
        rows = pe.shape[0] if pe is not None and pe.ndim == 2 else 0
        if rows <= self.max_timestep:  # d3rlpy's table has max_timestep + 2 rows
            raise CheckpointError(f"checkpoint {w}: pos_emb has {rows} rows, needs more than "
                                  f"max_timestep={self.max_timestep}")
        cw1 = tensors.get("critic.w1")
        if cw1 is None or cw1.ndim != 3 or cw1.shape[2] != FEATURE_DIM + N_ACTIONS:
            raise CheckpointError(f"checkpoint {w}: critic.w1 missing or not "
                                  f"(members, hidden, {FEATURE_DIM + N_ACTIONS})")
        m, hc = cw1.shape[0], cw1.shape[1]
        if m < 2:
            raise CheckpointError(f"checkpoint {w}: critic has {m} member(s), needs >= 2")
        # order fixed by seqkernels.cgdt_step
        self._w, self._off = pack([r("obs_mean", (FEATURE_DIM,)),
                                   (1.0 / std).astype(np.float32)] + [
            r(k, sh) for k, sh in (
                ("enc.w", (e, FEATURE_DIM)), ("enc.b", (e,)), ("rtg.w", (e, 1)), ("rtg.b", (e,)),
                ("act_emb", (N_ACTIONS, e)), ("pos_emb", (rows, e)),
                ("ln1.g", (e,)), ("ln1.b", (e,)), ("attn.wq", (e, e)), ("attn.bq", (e,)),
                ("attn.wk", (e, e)), ("attn.bk", (e,)), ("attn.wv", (e, e)), ("attn.bv", (e,)),
                ("attn.wp", (e, e)), ("attn.bp", (e,)), ("ln2.g", (e,)), ("ln2.b", (e,)),
                ("mlp.w1", (4 * e, e)), ("mlp.b1", (4 * e,)), ("mlp.w2", (e, 4 * e)),
                ("mlp.b2", (e,)), ("lnf.g", (e,)), ("lnf.b", (e,)), ("out.w", (N_ACTIONS, e)),
                ("critic.w1", (m, hc, FEATURE_DIM + N_ACTIONS)), ("critic.b1", (m, hc)),
                ("critic.w2", (m, hc)), ("critic.b2", (m,)))])
        self._cap = 3 * self.context - 1  # the window's tokens; the newest action is not known yet
        self._dims = np.array([FEATURE_DIM, e, self.n_heads, self._cap, m, hc], np.int64)
        self.meta = meta
        self._scratch = np.zeros(FEATURE_DIM + 12 * e + self._cap + hc + 3 * m + 3, np.float32)
        self._out = np.zeros(9, np.float64)  # raw probs, mean Q, std Q
        self._sessions: dict[str, _Session] = {}

    # -- protocol ---------------------------------------------------------------------------
    def reset(self) -> None:
        self._sessions.clear()

    def act(self, inp: AgentInput) -> Vote:
        x = check_x(inp.x)
        sharpe = float(inp.target_sharpe)
        if not math.isfinite(sharpe):
            raise ValueError(f"target_sharpe is {inp.target_sharpe!r}")
        s = self._sessions.get(inp.instrument_id)
        if s is None:
            s = self._sessions[inp.instrument_id] = _Session(self._cap, self.emb)
        if s.steps >= self.session_steps:
            s.clear()
        if s.steps == 0:
            s.rtg = sharpe * self.session_steps / math.sqrt(self.bars_per_year)
        t_prev = min(s.steps, self.max_timestep) if s.steps > 0 else -1
        written = cgdt_step(x, self._clip, self._w, self._off, self._dims, s.keys, s.values,
                            s.written, min(s.steps + 1, self.max_timestep), t_prev, s.pending,
                            s.rtg * self.rtg_scale, self._scratch, self._out)
        if written < 0:
            raise ValueError("feature vector x holds NaN or inf")  # session left untouched
        s.written = written
        o = self._out
        probs, adm = lcb_mask((o[0], o[1], o[2]), (o[3], o[4], o[5]), (o[6], o[7], o[8]))
        s.steps += 1
        s.pending = HOLD  # until observe tells the action taken
        return Vote(probs=probs, confidence=max(probs),
                    info={"rtg": s.rtg, "masked": [a for a in range(N_ACTIONS) if not adm[a]]})

    def observe(self, inp: AgentInput, action: int, reward: float) -> None:
        s = self._sessions.get(inp.instrument_id)
        if s is None or s.steps == 0:
            return
        if action not in (SELL, HOLD, BUY):
            raise ValueError(f"action {action!r} is not a canonical index 0..2")
        if action == HOLD and inp.position != 0:
            # the training trajectories (training/offline.py) express a held position by its
            # direction: HOLD there means "flat and staying flat"
            action = BUY if inp.position > 0 else SELL
        s.pending = int(action)
        if math.isfinite(reward):
            s.rtg -= float(reward)

    def raw_probs(self) -> np.ndarray:
        """The transformer's probabilities of the last `act`, before masking (tests, records)."""
        return self._out[0:3].copy()

    def q_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sample std) of the Q members per action, of the last `act`."""
        return self._out[3:6].copy(), self._out[6:9].copy()


def load(directory: Path = DEFAULT_DIR, name: str = AGENT) -> CGDTAgent:
    """The CGDT agent from checkpoint `<directory>/<name>`; CheckpointError (exit 2) on a bad
    file, CheckpointMissing when absent."""
    tensors, meta = load_checkpoint(Path(directory), name, AGENT)
    return CGDTAgent(tensors, meta, name=name)
