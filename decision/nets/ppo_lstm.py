"""D5 PPO-LSTM at run time (spec decision.md D5, G36): the actor path of sb3-contrib's recurrent
policy, one LSTM step per closed 5-minute bar, in Numba from safetensors weights (no torch).

Trained by `training/ppo_lstm.py` (RecurrentPPO, "MlpLstmPolicy", separate actor and critic
LSTMs); only the actor LSTM and the actor head are exported: x -> z-score (training statistics,
clipped) -> LSTM(257 -> hidden) -> Linear + Tanh -> Linear(-> 3) -> softmax, in the canonical
SELL/HOLD/BUY order (the training env's action index is the canonical index).

The recurrent state (h, c) is kept per instrument and cleared by `reset()` at session start, as
sb3 clears it at an episode start. `act` advances the state; `observe` has nothing to add (the
LSTM sees the bar's features, the action taken is not an input).

Checkpoint "ppo_lstm" (agent kind "ppo_lstm"): obs_mean, obs_std (257), lstm.w_ih (4H, 257),
lstm.w_hh (4H, H), lstm.b (4H, = b_ih + b_hh), pi.w1 (P, H), pi.b1 (P), pi.w2 (3, P), pi.b2 (3);
metadata `obs_clip` (default 10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from himari.decision.agent import AgentInput, Vote
from himari.decision.checkpoint import DEFAULT_DIR, CheckpointError, load_checkpoint
from himari.decision.layout import FEATURE_DIM, N_ACTIONS
from himari.decision.nets.seqkernels import lstm_act, pack

AGENT = "ppo_lstm"


def require(tensors: dict[str, np.ndarray], key: str, shape: tuple[int, ...],
            where: str) -> np.ndarray:
    """Tensor `key` as contiguous float32 of exactly `shape`, or CheckpointError naming both."""
    if key not in tensors:
        raise CheckpointError(f"checkpoint {where} lacks tensor {key!r}")
    arr = tensors[key]
    if arr.shape != shape:
        raise CheckpointError(f"checkpoint {where}: tensor {key!r} has shape {arr.shape}, "
                              f"expected {shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise CheckpointError(f"checkpoint {where}: tensor {key!r} holds non-finite values")
    return arr


def check_x(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.shape != (FEATURE_DIM,):
        raise ValueError(f"feature vector x has shape {x.shape}, expected ({FEATURE_DIM},)")
    return x


class PPOLSTMAgent:
    """The D5 agent (decision/agent.py protocol)."""

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict[str, Any],
                 name: str = AGENT) -> None:
        self.name = name
        where = repr(name)
        w_ih = tensors.get("lstm.w_ih")
        hid = 0 if w_ih is None or w_ih.ndim != 2 else w_ih.shape[0] // 4
        p1 = tensors["pi.w1"].shape[0] if "pi.w1" in tensors and tensors["pi.w1"].ndim == 2 else 0
        if hid <= 0 or p1 <= 0:
            raise CheckpointError(f"checkpoint {where} lacks usable lstm.w_ih / pi.w1 tensors")
        self.hidden = hid
        mean = require(tensors, "obs_mean", (FEATURE_DIM,), where)
        std = require(tensors, "obs_std", (FEATURE_DIM,), where)
        if np.any(std <= 0):
            raise CheckpointError(f"checkpoint {where}: obs_std has non-positive entries")
        self._clip = float(meta.get("obs_clip", 10.0))
        self._w, self._off = pack([
            mean, (1.0 / std).astype(np.float32),
            require(tensors, "lstm.w_ih", (4 * hid, FEATURE_DIM), where),
            require(tensors, "lstm.w_hh", (4 * hid, hid), where),
            require(tensors, "lstm.b", (4 * hid,), where),
            require(tensors, "pi.w1", (p1, hid), where), require(tensors, "pi.b1", (p1,), where),
            require(tensors, "pi.w2", (N_ACTIONS, p1), where),
            require(tensors, "pi.b2", (N_ACTIONS,), where)])
        self._dims = np.array([FEATURE_DIM, hid, p1], np.int64)
        self.meta = meta
        self._scratch = np.zeros(FEATURE_DIM + 4 * hid + p1 + N_ACTIONS, np.float32)
        self._probs = np.zeros(N_ACTIONS, np.float64)
        self._states: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def reset(self) -> None:
        self._states.clear()

    def state(self, instrument_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(h, c) of an instrument, zero before its first bar of the session."""
        st = self._states.get(instrument_id)
        if st is None:
            st = (np.zeros(self.hidden, np.float32), np.zeros(self.hidden, np.float32))
            self._states[instrument_id] = st
        return st

    def act(self, inp: AgentInput) -> Vote:
        x = check_x(inp.x)
        h, c = self.state(inp.instrument_id)
        if not lstm_act(x, self._clip, self._w, self._off, self._dims, h, c, self._scratch,
                        self._probs):
            raise ValueError("feature vector x holds NaN or inf")  # state left untouched
        probs = (float(self._probs[0]), float(self._probs[1]), float(self._probs[2]))
        return Vote(probs=probs, confidence=max(probs))

    def observe(self, inp: AgentInput, action: int, reward: float) -> None:
        return None


def load(directory: Path = DEFAULT_DIR, name: str = AGENT) -> PPOLSTMAgent:
    """The PPO-LSTM agent from checkpoint `<directory>/<name>`; CheckpointError (exit 2) on a bad
    file, CheckpointMissing when absent."""
    tensors, meta = load_checkpoint(Path(directory), name, AGENT)
    return PPOLSTMAgent(tensors, meta, name=name)
