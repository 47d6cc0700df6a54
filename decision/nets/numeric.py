"""Numba kernels for the small networks' inference: linear, ReLU, LayerNorm, softmax, Conv1d, pooling.

Run-time inference of the team policies (decision/nets/strategic.py, tactical.py) runs these on
float64 copies of the float32 safetensors weights, batch of one, into caller-owned buffers (no
allocation per call). Layouts follow torch so exported weights are used as they are:
- Linear weight (out, in), y = W x + b;
- LayerNorm over the last axis with the biased variance and eps inside the square root;
- Conv1d weight (out_ch, in_ch, k), input (in_ch, length), zero padding (k - 1) / 2 ("same");
- AdaptiveAvgPool1d bins [floor(i L / P), ceil((i + 1) L / P)).

`mlp_ln_forward` runs a whole "Linear, ReLU, (Dropout), LayerNorm" stack from one flat parameter
array (see `pack_mlp_ln`), so a policy is one kernel call whatever its depth.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LN_EPS = 1e-5  # torch.nn.LayerNorm's default


@njit(cache=True)
def linear(x, w, b, out):  # pragma: no cover - numba
    """out = w @ x + b; w (n_out, n_in)."""
    n_out, n_in = w.shape
    for i in range(n_out):
        acc = b[i]
        for j in range(n_in):
            acc += w[i, j] * x[j]
        out[i] = acc


@njit(cache=True)
def relu(x):  # pragma: no cover - numba
    for i in range(x.shape[0]):
        if x[i] < 0.0:
            x[i] = 0.0


@njit(cache=True)
def layernorm(x, gamma, beta, eps):  # pragma: no cover - numba
    """In place over the whole 1-D x (torch.nn.LayerNorm with a 1-D normalized_shape)."""
    n = x.shape[0]
    mean = 0.0
    for i in range(n):
        mean += x[i]
    mean /= n
    var = 0.0
    for i in range(n):
        d = x[i] - mean
        var += d * d
    inv = 1.0 / math.sqrt(var / n + eps)
    for i in range(n):
        x[i] = (x[i] - mean) * inv * gamma[i] + beta[i]


@njit(cache=True)
def softmax(z, out):  # pragma: no cover - numba
    """Stable softmax of a 1-D vector (max subtracted first)."""
    m = z[0]
    for i in range(1, z.shape[0]):
        if z[i] > m:
            m = z[i]
    s = 0.0
    for i in range(z.shape[0]):
        e = math.exp(z[i] - m)
        out[i] = e
        s += e
    for i in range(z.shape[0]):
        out[i] /= s


@njit(cache=True)
def conv1d_same(x, w, b, out):  # pragma: no cover - numba
    """out (c_out, L) = Conv1d(x (c_in, L)) with odd kernel k and zero padding (k - 1) / 2."""
    c_out, c_in, k = w.shape
    length = x.shape[1]
    pad = (k - 1) // 2
    for o in range(c_out):
        for t in range(length):
            out[o, t] = b[o]
        for i in range(c_in):
            for j in range(k):
                wij = w[o, i, j]
                shift = j - pad
                lo = 0 if shift >= 0 else -shift
                hi = length if shift <= 0 else length - shift
                for t in range(lo, hi):
                    out[o, t] += wij * x[i, t + shift]


@njit(cache=True)
def adaptive_avg_pool1d(x, out):  # pragma: no cover - numba
    """out (C, P) = AdaptiveAvgPool1d(P)(x (C, L)), torch's bin edges."""
    c, length = x.shape
    p = out.shape[1]
    for i in range(p):
        start = (i * length) // p
        end = -((-(i + 1) * length) // p)  # ceil
        for ch in range(c):
            acc = 0.0
            for t in range(start, end):
                acc += x[ch, t]
            out[ch, i] = acc / (end - start)


@njit(cache=True)
def mlp_ln_forward(x, flat, dims, work, out):  # pragma: no cover - numba
    """A "Linear, ReLU, LayerNorm" stack then a Linear head, from `pack_mlp_ln`'s flat layout.

    dims = (n_in, h_1, ..., h_k, n_out); work (2, max width) scratch; out (n_out,) logits.
    Per layer the flat array holds W transposed (n_in x n_out, row-major), b, then for hidden
    layers the LayerNorm gamma and beta.
    Dropout is the identity at inference.
    """
    n_layers = dims.shape[0] - 1
    src = work[0]
    dst = work[1]
    for i in range(dims[0]):
        src[i] = x[i]
    pos = 0
    for layer in range(n_layers):
        n_in = dims[layer]
        n_out = dims[layer + 1]
        last = layer == n_layers - 1
        target = out if last else dst
        bias = pos + n_in * n_out
        for o in range(n_out):
            target[o] = flat[bias + o]
        # weights stored transposed (in, out): the inner loop is independent across outputs, so
        # it vectorises instead of waiting on one long chain of dependent additions
        for i in range(n_in):
            xi = src[i]
            row = pos + i * n_out
            for o in range(n_out):
                target[o] += flat[row + o] * xi
        pos = bias + n_out
        if not last:
            relu(dst[:n_out])
            layernorm(dst[:n_out], flat[pos:pos + n_out], flat[pos + n_out:pos + 2 * n_out],
                      LN_EPS)
            pos += 2 * n_out
            src, dst = dst, src


def pack_mlp_ln(layers: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 parameters and dims for `mlp_ln_forward`.

    `layers` = [(W, b, gamma, beta) per hidden layer ..., (W_out, b_out)]; W in torch's
    (out, in) layout. Checks that the shapes chain, so a corrupt checkpoint fails here with the
    offending layer named, not as an index error inside the kernel.
    """
    parts: list[np.ndarray] = []
    dims = [int(np.shape(layers[0][0])[1])]
    for k, layer in enumerate(layers):
        w = np.asarray(layer[0], dtype=np.float64)
        hidden = k < len(layers) - 1
        expected = 4 if hidden else 2
        if len(layer) != expected or w.ndim != 2 or w.shape[1] != dims[-1]:
            raise ValueError(f"layer {k}: weight shape {w.shape} does not follow width {dims[-1]}"
                             f" (or {len(layer)} arrays where {expected} are expected)")
        n_out = w.shape[0]
        parts.append(w.T.ravel())  # (in, out) order, see mlp_ln_forward
        for extra in layer[1:]:
            v = np.asarray(extra, dtype=np.float64).ravel()
            if v.shape != (n_out,):
                raise ValueError(f"layer {k}: vector of shape {v.shape}, expected ({n_out},)")
            parts.append(v)
        dims.append(n_out)
    return np.concatenate(parts), np.asarray(dims, dtype=np.int64)
