"""Strategic team at run time: MLMI, NW-RQK and regime policies from safetensors (spec 3.1-3.3).

Each agent is a small MLP ("Linear, ReLU, Dropout, LayerNorm" per hidden layer, 3 logits) with a
learned temperature tau = softplus(rho) + 0.05 (G24); the regime agent's logits are multiplied by
clamp(1 / volatility_30, 0.5, 2.0) (G31). Inputs are the raw 10 / 10 / 9 values of spec 3.1 (the
agent's column means over the 48 rows followed by the 6 shared-context values, see
`decision/features.py` `strategic_inputs`); each agent z-scores them with the statistics frozen in
its checkpoint (slots stored with mean 0, std 1 pass through unchanged). The ensemble weights are
softmax(omega) (G25). The team only produces probabilities; confidence, uncertainty and
should_proceed (3.3) live in decision/aggregate.py.

Numba, float64, preallocated buffers, one kernel call per decision (a few microseconds); no torch
here (training/torch_nets.py holds the torch modules and a test checks both agree).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from himari.decision.checkpoint import DEFAULT_DIR, CheckpointError, load_checkpoint
from himari.decision.nets.numeric import mlp_ln_forward, pack_mlp_ln, softmax

AGENT_KIND = "strategic_team"
NAME = "strategic_team"
AGENTS = ("mlmi", "nwrqk", "regime")
N_INPUTS = (10, 10, 9)
TAU_MIN = 0.05


@njit(cache=True)
def _policy(x, mean, std, flat, dims, xbuf, work, logits):  # pragma: no cover - numba
    n_in = dims[0]
    if x.shape[0] != n_in:
        return False
    for i in range(n_in):
        v = x[i]
        if not math.isfinite(v):
            return False
        xbuf[i] = (v - mean[i]) / std[i]
    mlp_ln_forward(xbuf, flat, dims, work, logits)
    return True


@njit(cache=True)
def _team_forward(x0, x1, x2, vol, flat, offs, dims, mean, std, tau, xbuf, work, logits,
                  probs):  # pragma: no cover - numba
    """Fills probs (3, 3); returns 0, or 1 + agent index for a bad input, or 4 for a bad vol."""
    if not math.isfinite(vol):
        return 4
    for a in range(3):
        x = x0 if a == 0 else (x1 if a == 1 else x2)
        ok = _policy(x, mean[a], std[a], flat[offs[a]:offs[a + 1]], dims[a], xbuf, work, logits)
        if not ok:
            return 1 + a
        scale = 1.0 / tau[a]
        if a == 2:  # regime: clamp(1 / volatility_30, 0.5, 2.0); vol <= 0 counts as tiny
            f = 2.0 if vol <= 1e-12 else 1.0 / vol
            scale *= min(max(f, 0.5), 2.0)
        for k in range(3):
            logits[k] *= scale
        softmax(logits, probs[a])
    return 0


class StrategicTeam:
    """The three strategic policies and the ensemble weights, ready for batch-of-one inference."""

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        self.meta = dict(meta or {})
        flats, dims, means, stds, taus = [], [], [], [], []
        try:
            for name, n_in in zip(AGENTS, N_INPUTS):
                layers: list[tuple[np.ndarray, ...]] = []
                k = 0
                while f"{name}.l{k}.weight" in tensors:
                    layers.append(tuple(tensors[f"{name}.l{k}.{p}"]
                                        for p in ("weight", "bias", "ln_weight", "ln_bias")))
                    k += 1
                layers.append((tensors[f"{name}.out.weight"], tensors[f"{name}.out.bias"]))
                flat, d = pack_mlp_ln(layers)
                if d[0] != n_in or d[-1] != 3:
                    raise ValueError(f"{name}: {d[0]} inputs and {d[-1]} outputs, "
                                     f"expected {n_in} and 3")
                flats.append(flat)
                dims.append(d)
                mean = np.asarray(tensors[f"{name}.norm_mean"], dtype=np.float64).ravel()
                std = np.asarray(tensors[f"{name}.norm_std"], dtype=np.float64).ravel()
                if mean.shape != (n_in,) or std.shape != (n_in,) or not np.all(std > 0):
                    raise ValueError(f"{name}: normalisation statistics must be {n_in} values "
                                     f"with std > 0")
                means.append(mean)
                stds.append(std)
                rho = float(np.asarray(tensors[f"{name}.rho"]).ravel()[0])
                taus.append(math.log1p(math.exp(rho)) + TAU_MIN if rho < 30 else rho + TAU_MIN)
            omega = np.asarray(tensors["omega"], dtype=np.float64).ravel()
            if omega.shape != (3,):
                raise ValueError(f"omega has shape {omega.shape}, expected (3,)")
        except KeyError as exc:
            raise CheckpointError(f"strategic team checkpoint lacks tensor {exc}") from None
        except ValueError as exc:
            raise CheckpointError(f"strategic team checkpoint is malformed: {exc}") from None
        if len({len(d) for d in dims}) != 1:
            raise CheckpointError("strategic team checkpoint: the agents have different depths")
        width = max(int(d.max()) for d in dims)
        self._flat = np.concatenate(flats)
        self._offs = np.cumsum([0] + [f.size for f in flats]).astype(np.int64)
        self._dims = np.stack(dims)
        self._mean = np.zeros((3, max(N_INPUTS)))
        self._std = np.ones((3, max(N_INPUTS)))
        for a in range(3):
            self._mean[a, :N_INPUTS[a]] = means[a]
            self._std[a, :N_INPUTS[a]] = stds[a]
        self.tau = np.asarray(taus, dtype=np.float64)
        e = np.exp(omega - omega.max())
        self.weights = e / e.sum()
        self.hidden = [int(h) for h in self._dims[0, 1:-1]]
        self._xbuf = np.zeros(width)
        self._work = np.zeros((2, width))
        self._logits = np.zeros(3)
        self._probs = np.zeros((3, 3))
        self.probs(np.zeros(10), np.zeros(10), np.zeros(9), 1.0)  # compile / load the kernel now

    def probs(self, mlmi_in: np.ndarray, nwrqk_in: np.ndarray, regime_in: np.ndarray,
              volatility_30: float) -> tuple[np.ndarray, np.ndarray]:
        """(P (3 agents x SELL/HOLD/BUY) float64, ensemble weights (3,)), fresh arrays.

        Raises ValueError for a non-finite or wrongly sized input (the engine's guard counts it).
        """
        code = _team_forward(_f64(mlmi_in), _f64(nwrqk_in), _f64(regime_in),
                             float(volatility_30), self._flat, self._offs, self._dims,
                             self._mean, self._std, self.tau, self._xbuf, self._work,
                             self._logits, self._probs)
        if code:
            if code == 4:
                raise ValueError(f"strategic team: volatility_30={volatility_30!r} is not finite")
            a = code - 1
            x = (mlmi_in, nwrqk_in, regime_in)[a]
            raise ValueError(f"strategic team: {AGENTS[a]} input must be {N_INPUTS[a]} finite "
                             f"values, got shape {np.shape(x)}: {np.asarray(x).tolist()}")
        return self._probs.copy(), self.weights.copy()

    def ensemble(self, probs: np.ndarray) -> np.ndarray:
        """P_ensemble = sum_i softmax(omega)_i P_i (spec 3.3)."""
        return self.weights @ probs


def _f64(x: np.ndarray) -> np.ndarray:
    if (isinstance(x, np.ndarray) and x.dtype == np.float64 and x.ndim == 1
            and x.flags.c_contiguous):
        return x
    return np.ascontiguousarray(x, dtype=np.float64).reshape(-1)


def load(directory: Path | None = None, name: str = NAME) -> StrategicTeam:
    """The shipped (or `directory`'s) strategic team; CheckpointError / CheckpointMissing."""
    tensors, meta = load_checkpoint(Path(directory) if directory else DEFAULT_DIR, name,
                                    AGENT_KIND)
    return StrategicTeam(tensors, meta)
