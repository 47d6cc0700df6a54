"""Small-MLP inference in Numba, shared by the offline agents (CQL D3, discrete SAC D6).

Both agents are trained with d3rlpy, whose vector networks are `Linear -> [LayerNorm] -> ReLU ->
Linear -> ReLU` encoders followed by a `Linear` head. At run time we re-run exactly that, for an
ensemble of E same-shaped networks (CQL's two critics, SAC's single actor), in one fused Numba
kernel that also normalises the raw 257-value feature vector: no torch, no per-call allocation
(the caller owns the buffers in `MLPBuffers`).

Weights are stored stacked along a leading ensemble axis (`w1` (E, H1, D), `b1` (E, H1), `ln_g`
/ `ln_b` (E, H1), `w2` (E, H2, H1), `b2` (E, H2), `w3` (E, A, H2), `b3` (E, A)), plus the affine
normalisation `z = clip(x * feat_scale + feat_offset, -z_clip, z_clip)`: any per-slot affine
z-scoring (the unscaled one-hot and sin/cos slots have scale 1, offset 0) is written that way, and
the clip keeps extreme inputs from producing extreme outputs (training applies the same clip).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np
from numba import njit

from himari.decision.checkpoint import CheckpointError

LN_EPS = 1e-5  # torch.nn.LayerNorm's default
MLP_KEYS = ("w1", "b1", "ln_g", "ln_b", "w2", "b2", "w3", "b3")
FEATURE_KEYS = ("feat_scale", "feat_offset")


class MLPArch(msgspec.Struct, frozen=True, kw_only=True):
    """What a checkpoint's metadata says about the network (checked against the weights)."""

    n_members: int          # ensemble size E
    in_dim: int             # D (257)
    hidden: tuple[int, int]  # H1, H2
    out_dim: int            # A (3)
    layer_norm: bool        # LayerNorm after the first Linear, before its ReLU
    z_clip: float           # clip of the normalised input


# fastmath without nnan/ninf: the isfinite check must survive; reassoc lets the dots vectorise
@njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _forward(x, params, dims, z_clip, scratch, out, res):  # pragma: no cover - compiled
    """Normalise x, run every member, write (E, A) to `out` and the min over members to `res`.

    Returns -1, or the index of the first non-finite input (nothing computed then). One flat
    parameter array keeps Numba's per-argument call overhead (~0.2 us each) small."""
    n_members, d, n1, n2, n_out, use_ln = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]
    for i in range(d):
        if not np.isfinite(x[i]):
            return i
    z = scratch[:d]
    h1 = scratch[d:d + n1]
    h2 = scratch[d + n1:d + n1 + n2]
    for i in range(d):
        v = x[i] * params[i] + params[d + i]
        if v > z_clip:
            v = z_clip
        elif v < -z_clip:
            v = -z_clip
        z[i] = v
    per_member = n1 * d + 3 * n1 + n2 * n1 + n2 + n_out * n2 + n_out
    for e in range(n_members):
        p = 2 * d + e * per_member
        b1 = p + n1 * d
        g = b1 + n1
        beta = g + n1
        w2 = beta + n1
        b2 = w2 + n2 * n1
        w3 = b2 + n2
        b3 = w3 + n_out * n2
        for j in range(n1):
            w = params[p + j * d:p + (j + 1) * d]  # a slice: the loop vectorises (no wraparound)
            s = 0.0
            for i in range(d):
                s += w[i] * z[i]
            h1[j] = s + params[b1 + j]
        if use_ln:
            mean = 0.0
            for j in range(n1):
                mean += h1[j]
            mean /= n1
            var = 0.0
            for j in range(n1):
                var += (h1[j] - mean) * (h1[j] - mean)
            inv = 1.0 / np.sqrt(var / n1 + LN_EPS)
            for j in range(n1):
                h1[j] = (h1[j] - mean) * inv * params[g + j] + params[beta + j]
        for j in range(n1):
            if h1[j] < 0.0:
                h1[j] = 0.0
        for k in range(n2):
            w = params[w2 + k * n1:w2 + (k + 1) * n1]
            s = 0.0
            for j in range(n1):
                s += w[j] * h1[j]
            s += params[b2 + k]
            h2[k] = s if s > 0.0 else 0.0
        for a in range(n_out):
            w = params[w3 + a * n2:w3 + (a + 1) * n2]
            s = 0.0
            for k in range(n2):
                s += w[k] * h2[k]
            out[e, a] = s + params[b3 + a]
    for a in range(n_out):
        m = out[0, a]
        for e in range(1, n_members):
            if out[e, a] < m:
                m = out[e, a]
        res[a] = m
    return -1


class MLPEnsemble:
    """E small MLPs evaluated on one raw feature vector.

    `forward(x)` returns -1 or the index of the first non-finite input; afterwards `out` holds
    the members' outputs (E, A) and `res` their element-wise minimum (A,)."""

    def __init__(self, arch: MLPArch, tensors: Mapping[str, np.ndarray], source: str) -> None:
        self.arch = arch
        e, d, (n1, n2), a = arch.n_members, arch.in_dim, arch.hidden, arch.out_dim
        expected = {"w1": (e, n1, d), "b1": (e, n1), "ln_g": (e, n1), "ln_b": (e, n1),
                    "w2": (e, n2, n1), "b2": (e, n2), "w3": (e, a, n2), "b3": (e, a),
                    "feat_scale": (d,), "feat_offset": (d,)}
        arrays: dict[str, np.ndarray] = {}
        for key, shape in expected.items():
            if key not in tensors:
                raise CheckpointError(f"checkpoint {source} lacks tensor {key!r}")
            arr = np.asarray(tensors[key], dtype=np.float64)
            if arr.shape != shape:
                raise CheckpointError(f"checkpoint {source} tensor {key!r} has shape "
                                      f"{arr.shape}, expected {shape} for {arch}")
            if not np.all(np.isfinite(arr)):
                raise CheckpointError(f"checkpoint {source} tensor {key!r} is not finite")
            arrays[key] = arr
        if not (math.isfinite(arch.z_clip) and arch.z_clip > 0):
            raise CheckpointError(f"checkpoint {source} has z_clip={arch.z_clip!r}, "
                                  "expected a positive number")
        parts = [arrays["feat_scale"], arrays["feat_offset"]]
        for m in range(e):
            parts += [arrays[k][m].ravel() for k in MLP_KEYS]
        self.scale, self.offset = arrays["feat_scale"], arrays["feat_offset"]
        self._params = np.ascontiguousarray(np.concatenate(parts))
        self._dims = np.array([e, d, n1, n2, a, int(arch.layer_norm)], dtype=np.int64)
        self._z_clip = float(arch.z_clip)
        self._scratch = np.zeros(d + n1 + n2, dtype=np.float64)
        self.out = np.zeros((e, a), dtype=np.float64)
        self.res = np.zeros(a, dtype=np.float64)
        for dtype in (np.float32, np.float64):  # compile (or load the cache) now, not on a bar
            self.forward(np.zeros(d, dtype=dtype))

    def forward(self, x: np.ndarray) -> int:
        """Run on the raw vector `x` (D,); -1 when done, else the first non-finite index."""
        if x.shape != (self.arch.in_dim,):
            raise ValueError(f"feature vector x has shape {x.shape}, "
                             f"expected ({self.arch.in_dim},)")
        return _forward(x, self._params, self._dims, self._z_clip, self._scratch, self.out,
                        self.res)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """The clipped normalised input the network sees (vectorised; training uses the same)."""
        return normalise(x, self.scale, self.offset, self._z_clip)


def normalise(x: np.ndarray, scale: np.ndarray, offset: np.ndarray, z_clip: float) -> np.ndarray:
    """`clip(x * scale + offset, -z_clip, z_clip)` for one vector (D,) or rows (N, D), float32."""
    z = np.asarray(x, dtype=np.float64) * scale + offset
    return np.clip(z, -z_clip, z_clip).astype(np.float32)


def affine_from_stats(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) with x * scale + offset == (x - mean) / std (decision/features.py's
    FeatureStats, whose std is already floored and 1 on the unscaled slots)."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if mean.shape != std.shape or not (np.isfinite(mean).all() and np.isfinite(std).all()
                                       and (std > 0).all()):
        raise ValueError(f"feature statistics must be finite, equal-shaped, std > 0 (mean "
                         f"{mean.shape}, std {std.shape})")
    scale = 1.0 / std
    return scale, -mean * scale


def pack_d3rlpy(state_dicts: Sequence[Mapping[str, np.ndarray]], layer_norm: bool
                ) -> dict[str, np.ndarray]:
    """Stack d3rlpy vector-network state dicts (as numpy) into this file's tensors.

    Each state dict is one `DiscreteMeanQFunction` or `CategoricalPolicy`: `_encoder._layers.<i>`
    Linear (and LayerNorm) entries, then `_fc`. The Linear layers are the entries with a 2-D
    weight, in order; a LayerNorm, when present, is the 1-D weight right after the first Linear.
    """
    members = []
    for sd in state_dicts:
        layer_ids = sorted({int(k.split(".")[2]) for k in sd if k.startswith("_encoder._layers.")})
        linears = [i for i in layer_ids if np.ndim(sd[f"_encoder._layers.{i}.weight"]) == 2]
        norms = [i for i in layer_ids if np.ndim(sd[f"_encoder._layers.{i}.weight"]) == 1]
        if len(linears) != 2 or len(norms) != (1 if layer_norm else 0):
            raise ValueError(f"expected 2 encoder Linear layers and {int(layer_norm)} LayerNorm, "
                             f"got layers {layer_ids} (linear {linears}, norm {norms})")
        l1, l2 = (f"_encoder._layers.{i}" for i in linears)
        n1 = sd[f"{l1}.weight"].shape[0]
        if layer_norm:
            ln = f"_encoder._layers.{norms[0]}"
            g, b = sd[f"{ln}.weight"], sd[f"{ln}.bias"]
        else:
            g, b = np.ones(n1), np.zeros(n1)
        members.append({"w1": sd[f"{l1}.weight"], "b1": sd[f"{l1}.bias"], "ln_g": g, "ln_b": b,
                        "w2": sd[f"{l2}.weight"], "b2": sd[f"{l2}.bias"],
                        "w3": sd["_fc.weight"], "b3": sd["_fc.bias"]})
    return {k: np.stack([np.asarray(m[k], dtype=np.float32) for m in members]) for k in MLP_KEYS}


def softmax3(v0: float, v1: float, v2: float) -> tuple[float, float, float]:
    """Stable softmax of three values as Python floats."""
    m = max(v0, v1, v2)
    e0, e1, e2 = math.exp(v0 - m), math.exp(v1 - m), math.exp(v2 - m)
    s = e0 + e1 + e2
    return e0 / s, e1 / s, e2 / s
