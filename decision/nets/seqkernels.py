"""Numba kernels for the sequence agents: one LSTM step with a small MLP head (D5, PPO-LSTM), one
incremental step of a one-layer causal transformer with a key/value cache (D2, CGDT), and the
Q-critic ensemble. Run time only: no torch here.

Every kernel works on float32 arrays laid out exactly as torch stores them (nn.Linear weight is
(out, in)), writes into caller-owned buffers and allocates nothing. An agent's weights are packed
into ONE flat float32 array with an offsets table (`pack`): Numba's dispatcher costs ~0.2 us per
array argument, so a kernel taking 30 weight arrays would spend more time being called than
computing. Each agent makes one kernel call per decision. Reassociation (`_FM`) lets LLVM
vectorise the dot products; the result differs from torch by rounding only (the agreement tests
use a 1e-5 tolerance).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_SQRT1_2 = 0.7071067811865476
# fastmath without 'nnan'/'ninf': reassociation lets the dot products vectorise, while the
# NaN/inf check on the input must survive optimisation
_FM = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, fastmath=_FM)
def _matvec(w: np.ndarray, b: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out = w @ x + b, w (n, m)."""
    n, m = w.shape
    for j in range(n):
        s = np.float32(0.0)
        for k in range(m):
            s += w[j, k] * x[k]
        out[j] = s + b[j]


@njit(cache=True)
def _sigmoid(v: float) -> float:
    if v >= 0.0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@njit(cache=True)
def _gelu(v: float) -> float:
    # exact (erf) GELU, torch.nn.GELU()'s default
    return 0.5 * v * (1.0 + math.erf(v * _SQRT1_2))


@njit(cache=True)
def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float, out: np.ndarray) -> None:
    n = x.shape[0]
    mu = 0.0
    for i in range(n):
        mu += x[i]
    mu /= n
    var = 0.0
    for i in range(n):
        d = x[i] - mu
        var += d * d
    var /= n  # biased, as torch.nn.LayerNorm
    inv = 1.0 / math.sqrt(var + eps)
    for i in range(n):
        out[i] = (x[i] - mu) * inv * g[i] + b[i]


@njit(cache=True)
def normalize_into(x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, clip: float,
                   out: np.ndarray) -> bool:
    """out = clip((x - mean) * inv_std); False if x holds a non-finite value (out is then junk)."""
    ok = True
    for i in range(x.shape[0]):
        v = x[i]
        if not np.isfinite(v):
            ok = False
            v = 0.0
        z = (v - mean[i]) * inv_std[i]
        if z > clip:
            z = clip
        elif z < -clip:
            z = -clip
        out[i] = z
    return ok


@njit(cache=True)
def softmax_into(logits: np.ndarray, out: np.ndarray) -> None:
    m = logits[0]
    for i in range(1, logits.shape[0]):
        if logits[i] > m:
            m = logits[i]
    s = 0.0
    for i in range(logits.shape[0]):
        e = math.exp(logits[i] - m)
        out[i] = e
        s += e
    for i in range(logits.shape[0]):
        out[i] /= s


@njit(cache=True, fastmath=_FM)
def dt_push_token(e: np.ndarray, ln1_g: np.ndarray, ln1_b: np.ndarray,
                  wk: np.ndarray, bk: np.ndarray, wv: np.ndarray, bv: np.ndarray,
                  keys: np.ndarray, values: np.ndarray, slot: int, tmp: np.ndarray) -> None:
    """Cache one token's key and value (from LayerNorm1 of its embedding) in ring slot `slot`.
    With a single transformer layer a token's key/value never change once written, so a step
    costs O(context) instead of re-running the whole window."""
    _layer_norm(e, ln1_g, ln1_b, 0.003, tmp)
    _matvec(wk, bk, tmp, keys[slot])
    _matvec(wv, bv, tmp, values[slot])


@njit(cache=True, fastmath=_FM)
def dt_query(e: np.ndarray, n_valid: int, n_heads: int,
             ln1_g: np.ndarray, ln1_b: np.ndarray, wq: np.ndarray, bq: np.ndarray,
             wp: np.ndarray, bp: np.ndarray, ln2_g: np.ndarray, ln2_b: np.ndarray,
             w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
             lnf_g: np.ndarray, lnf_b: np.ndarray, w_out: np.ndarray,
             keys: np.ndarray, values: np.ndarray,
             tmp: np.ndarray, q: np.ndarray, att: np.ndarray, scores: np.ndarray,
             x1: np.ndarray, hid: np.ndarray, logits: np.ndarray) -> None:
    """Logits at the newest state token `e` (its key/value already cached), attending to the
    first `n_valid` cache slots: d3rlpy's GPT2 block (pre-LN, eps 0.003) and output head."""
    emb = e.shape[0]
    dh = emb // n_heads
    scale = 1.0 / math.sqrt(dh)
    _layer_norm(e, ln1_g, ln1_b, 0.003, tmp)
    _matvec(wq, bq, tmp, q)
    for hh in range(n_heads):
        o = hh * dh
        m = -1e30
        for t in range(n_valid):
            s = 0.0
            for k in range(dh):
                s += q[o + k] * keys[t, o + k]
            s *= scale
            scores[t] = s
            if s > m:
                m = s
        tot = 0.0
        for t in range(n_valid):
            w = math.exp(scores[t] - m)
            scores[t] = w
            tot += w
        for k in range(dh):
            acc = 0.0
            for t in range(n_valid):
                acc += scores[t] * values[t, o + k]
            att[o + k] = acc / tot
    _matvec(wp, bp, att, x1)
    for i in range(emb):
        x1[i] += e[i]
    _layer_norm(x1, ln2_g, ln2_b, 0.003, tmp)
    _matvec(w1, b1, tmp, hid)
    for i in range(hid.shape[0]):
        hid[i] = _gelu(hid[i])
    _matvec(w2, b2, hid, q)  # q reused as the MLP output
    for i in range(emb):
        x1[i] += q[i]
    _layer_norm(x1, lnf_g, lnf_b, 0.003, tmp)
    for a in range(logits.shape[0]):
        s = 0.0
        for k in range(emb):
            s += w_out[a, k] * tmp[k]
        logits[a] = s


@njit(cache=True, fastmath=_FM)
def q_ensemble(xn: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
               base: np.ndarray, q: np.ndarray) -> None:
    """q[m, a] = w2[m] . gelu(w1[m] @ [xn, onehot(a)] + b1[m]) + b2[m] for M members, A actions;
    w1 (M, H, D + A). The state part of the first layer is shared by the A actions."""
    n_mem, hid, _ = w1.shape
    d = xn.shape[0]
    n_act = q.shape[1]
    for m in range(n_mem):
        for j in range(hid):
            s = np.float32(0.0)
            for k in range(d):
                s += w1[m, j, k] * xn[k]
            base[j] = s + b1[m, j]
        for a in range(n_act):
            s = 0.0
            for j in range(hid):
                s += w2[m, j] * _gelu(base[j] + w1[m, j, d + a])
            q[m, a] = s + b2[m]


@njit(cache=True, fastmath=_FM)
def embed_token(w: np.ndarray, b: np.ndarray, x: np.ndarray, pos: np.ndarray,
                out: np.ndarray) -> None:
    """out = tanh(w @ x + b) + pos: a DT token (d3rlpy applies the tanh embedding activation to
    the return, state and action embeddings, then adds the timestep embedding)."""
    _matvec(w, b, x, out)
    for i in range(out.shape[0]):
        out[i] = math.tanh(out[i]) + pos[i]


@njit(cache=True)
def column_mean_std(q: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Per column of q (members, actions): mean and sample standard deviation (ddof 1)."""
    n, a = q.shape
    for j in range(a):
        s = 0.0
        for i in range(n):
            s += q[i, j]
        mu = s / n
        v = 0.0
        for i in range(n):
            d = q[i, j] - mu
            v += d * d
        mean[j] = mu
        std[j] = math.sqrt(v / (n - 1)) if n > 1 else 0.0


def pack(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(flat float32 weights, int64 start offsets, one more entry for the end) of `arrays`."""
    off = np.zeros(len(arrays) + 1, np.int64)
    for i, a in enumerate(arrays):
        off[i + 1] = off[i] + a.size
    flat = np.empty(int(off[-1]), np.float32)
    for i, a in enumerate(arrays):
        flat[off[i]:off[i + 1]] = np.ascontiguousarray(a, dtype=np.float32).ravel()
    return flat, off


@njit(cache=True)
def _vec(w: np.ndarray, off: np.ndarray, i: int) -> np.ndarray:
    return w[off[i]:off[i + 1]]


@njit(cache=True)
def _mat(w: np.ndarray, off: np.ndarray, i: int, rows: int) -> np.ndarray:
    n = off[i + 1] - off[i]
    return w[off[i]:off[i + 1]].reshape((rows, n // rows))


# PPO-LSTM packed order: mean, inv_std, w_ih (4H, D), w_hh (4H, H), b (4H), w1 (P, H), b1,
# w2 (3, P), b2.  dims = (D, H, P).  scratch float32 >= D + 4H + P + 3.
@njit(cache=True, fastmath=_FM)
def lstm_act(x: np.ndarray, clip: float, w: np.ndarray, off: np.ndarray, dims: np.ndarray,
             h: np.ndarray, c: np.ndarray, scratch: np.ndarray, probs: np.ndarray) -> bool:
    """z-score x, one torch.nn.LSTM step (gate order i, f, g, o; b = b_ih + b_hh) updating h, c
    in place, then the actor head softmax(w2 @ tanh(w1 @ h + b1) + b2) (sb3's MlpExtractor uses
    Tanh). Returns False, state untouched, when x holds NaN or inf."""
    d, hid, p1 = dims[0], dims[1], dims[2]
    xn = scratch[:d]
    gates = scratch[d:d + 4 * hid]
    z1 = scratch[d + 4 * hid:d + 4 * hid + p1]
    logits = scratch[d + 4 * hid + p1:d + 4 * hid + p1 + 3]
    if not normalize_into(x, _vec(w, off, 0), _vec(w, off, 1), clip, xn):
        return False
    w_ih = _mat(w, off, 2, 4 * hid)
    w_hh = _mat(w, off, 3, 4 * hid)
    b = _vec(w, off, 4)
    for j in range(4 * hid):
        s = np.float32(0.0)
        for k in range(d):
            s += w_ih[j, k] * xn[k]
        for k in range(hid):
            s += w_hh[j, k] * h[k]
        gates[j] = s + b[j]
    for j in range(hid):
        i_g = _sigmoid(gates[j])
        f_g = _sigmoid(gates[hid + j])
        g_g = math.tanh(gates[2 * hid + j])
        o_g = _sigmoid(gates[3 * hid + j])
        c[j] = f_g * c[j] + i_g * g_g
        h[j] = o_g * math.tanh(c[j])
    _matvec(_mat(w, off, 5, p1), _vec(w, off, 6), h, z1)
    for j in range(p1):
        z1[j] = math.tanh(z1[j])
    _matvec(_mat(w, off, 7, 3), _vec(w, off, 8), z1, logits)
    softmax_into(logits, probs)
    return True


# CGDT packed order (indices used below):
#  0 mean  1 inv_std  2 enc.w (E, D)  3 enc.b  4 rtg.w (E, 1)  5 rtg.b  6 act_emb (3, E)
#  7 pos_emb (rows, E)  8 ln1.g  9 ln1.b  10 wq 11 bq 12 wk 13 bk 14 wv 15 bv 16 wp 17 bp
#  18 ln2.g 19 ln2.b  20 mlp.w1 (4E, E) 21 mlp.b1  22 mlp.w2 (E, 4E) 23 mlp.b2  24 lnf.g 25 lnf.b
#  26 out.w (3, E)  27 critic.w1 (M, Hc, D + 3)  28 critic.b1 (M, Hc)  29 critic.w2 (M, Hc)
#  30 critic.b2 (M)
# dims = (D, E, heads, cap, M, Hc).  scratch float32 >= D + 8E + 4E + cap + Hc + 3M + 3.
# out float64 (9): raw probs, mean Q, sample-std Q (per action).
@njit(cache=True, fastmath=_FM)
def cgdt_step(x: np.ndarray, clip: float, w: np.ndarray, off: np.ndarray, dims: np.ndarray,
              keys: np.ndarray, values: np.ndarray, written: int, t_new: int, t_prev: int,
              prev_action: int, rtg_scaled: float, scratch: np.ndarray, out: np.ndarray) -> int:
    """One CGDT decision: push the previous step's action token (when t_prev >= 0), this step's
    return-to-go and state tokens into the key/value ring, query at the state token, and
    evaluate the Q ensemble. Returns the new `written` count, or -1 (nothing written) when x
    holds NaN or inf."""
    d, e, heads, cap, n_mem, hc = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]
    o = 0
    xn = scratch[o:o + d]; o += d
    tok = scratch[o:o + e]; o += e
    stok = scratch[o:o + e]; o += e
    tmp = scratch[o:o + e]; o += e
    q = scratch[o:o + e]; o += e
    att = scratch[o:o + e]; o += e
    x1 = scratch[o:o + e]; o += e
    one = scratch[o:o + 1]; o += e
    hid = scratch[o:o + 4 * e]; o += 4 * e
    scores = scratch[o:o + cap]; o += cap
    cbase = scratch[o:o + hc]; o += hc
    qv = scratch[o:o + 3 * n_mem].reshape((n_mem, 3)); o += 3 * n_mem
    logits = scratch[o:o + 3]
    if not normalize_into(x, _vec(w, off, 0), _vec(w, off, 1), clip, xn):
        return -1
    pos = _mat(w, off, 7, (off[8] - off[7]) // e)
    ln1g, ln1b = _vec(w, off, 8), _vec(w, off, 9)
    wk, bk = _mat(w, off, 12, e), _vec(w, off, 13)
    wv, bv = _mat(w, off, 14, e), _vec(w, off, 15)
    if t_prev >= 0:
        act = _mat(w, off, 6, 3)
        for i in range(e):
            tok[i] = math.tanh(act[prev_action, i]) + pos[t_prev, i]
        dt_push_token(tok, ln1g, ln1b, wk, bk, wv, bv, keys, values, written % cap, tmp)
        written += 1
    one[0] = rtg_scaled
    embed_token(_mat(w, off, 4, e), _vec(w, off, 5), one, pos[t_new], tok)
    dt_push_token(tok, ln1g, ln1b, wk, bk, wv, bv, keys, values, written % cap, tmp)
    written += 1
    embed_token(_mat(w, off, 2, e), _vec(w, off, 3), xn, pos[t_new], stok)
    dt_push_token(stok, ln1g, ln1b, wk, bk, wv, bv, keys, values, written % cap, tmp)
    written += 1
    dt_query(stok, min(written, cap), heads, ln1g, ln1b, _mat(w, off, 10, e), _vec(w, off, 11),
             _mat(w, off, 16, e), _vec(w, off, 17), _vec(w, off, 18), _vec(w, off, 19),
             _mat(w, off, 20, 4 * e), _vec(w, off, 21), _mat(w, off, 22, e), _vec(w, off, 23),
             _vec(w, off, 24), _vec(w, off, 25), _mat(w, off, 26, 3), keys, values,
             tmp, q, att, scores, x1, hid, logits)
    softmax_into(logits, out[0:3])
    cw1 = w[off[27]:off[28]].reshape((n_mem, hc, d + 3))
    q_ensemble(xn, cw1, _mat(w, off, 28, n_mem), _mat(w, off, 29, n_mem), _vec(w, off, 30),
               cbase, qv)
    column_mean_std(qv, out[3:6], out[6:9])
    return written
