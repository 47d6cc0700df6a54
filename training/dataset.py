"""Training data from the replay pipeline itself: one record per closed 5-minute bar.

`build_dataset(spec)` runs the project's own pipeline over one source (`SourceSpec`; the run itself
is training/pipeline.py): the data source's tick batches (the seeded synthetic generator, or a file
feed; bar files are replayed as bars-as-ticks by that feed, and labelled so) -> the 5-minute
`BarBuilder` kernel (one call per tick batch, no Python per tick) -> `MatrixStage` (tactical 60x7,
strategic 48x13, synergy detector) on a private bus. Matrices and synergies are read from the bus
events, exactly what a replay's strategy would see, so training and trading cannot disagree.

Storage is compact: a matrix row is computed once and never revised (daemon/matrices), so the
dataset keeps each published row once (`tac_rows`, `strat_rows`) and, per bar, the index of its
newest row. `ds.tactical` / `ds.strategic` are `WindowView`s that gather the (60, 7) / (48, 13)
windows on indexing (a full (N, 48, 13) copy of 150k bars would be 370 MB). Each segment's rows
start with padding (zeros for tactical, the neutral row for strategic, as the assemblers do), so a
window never reaches into the previous segment. `strategic` at a bar is the latest strategic matrix
published at or before it (ready or not, see `strategic_ready`); before the first one it is the
neutral matrix.

Per-bar fields: ts_ns (bar close, UTC ns), open/high/low/close/volume (price units, lots),
atr14 (Wilder ATR(14) on 5-minute bars, price units, tactical context), volatility_30 (v_rel of the
latest strategic matrix; 1.0 until valid), tactical_ready, strategic_ready, synergy_type (0 none,
1..4 for TYPE_1..TYPE_4, at the bar whose processing emitted it; the strongest if several),
synergy_dir (+1/-1, 0 none), synergy_conf, segment (episode index: a new one per source).

Built datasets are cached as `.npz` (allow_pickle=False) under a cache dir, keyed by a hash of the
source spec, the file's content, the matrices config and `DATASET_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from himari.decision.layout import STRATEGIC_COLS, STRATEGIC_ROWS, TACTICAL_COLS, TACTICAL_ROWS

DATASET_VERSION = 1
DEFAULT_CACHE = Path(os.environ.get("HIMARI_CACHE", Path.home() / ".cache" / "himari" / "datasets"))
SYNERGY_TYPES = {"TYPE_1": 1, "TYPE_2": 2, "TYPE_3": 3, "TYPE_4": 4}
# The strategic assemblers' neutral row (spec features.md 3: 0 everywhere, 1 for lvn_distance).
STRATEGIC_NEUTRAL = np.zeros(STRATEGIC_COLS, np.float32)
STRATEGIC_NEUTRAL[4] = 1.0

PER_BAR = ("ts_ns", "open", "high", "low", "close", "volume", "atr14", "volatility_30",
           "tactical_ready", "strategic_ready", "synergy_type", "synergy_dir", "synergy_conf",
           "segment", "tac_index", "strat_index")
_DTYPES = {"ts_ns": np.int64, "open": np.float64, "high": np.float64, "low": np.float64,
           "close": np.float64, "volume": np.float64, "atr14": np.float64,
           "volatility_30": np.float64, "tactical_ready": np.bool_, "strategic_ready": np.bool_,
           "synergy_type": np.int8, "synergy_dir": np.int8, "synergy_conf": np.float32,
           "segment": np.int32, "tac_index": np.int64, "strat_index": np.int64}


class SourceSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One continuous source = one segment (episode boundary at its start)."""

    name: str
    kind: str  # "synthetic" | "file"
    path: str = ""  # file sources
    instrument_id: str = ""
    synthetic: dict[str, Any] = {}  # overrides of [feed.synthetic] keys
    label: str = ""  # what the data honestly is (bars replayed as ticks say so)

    def __post_init__(self) -> None:
        if self.kind not in ("synthetic", "file"):
            raise ValueError(f"SourceSpec {self.name!r}: kind = {self.kind!r}, "
                             "expected 'synthetic' or 'file'")
        if self.kind == "file" and not self.path:
            raise ValueError(f"SourceSpec {self.name!r}: a file source needs a path")


class WindowView:
    """Lazy (N, rows, cols) windows over a row table: item i = rows[index[i]-rows+1 : index[i]+1].

    Supports `len`, `shape`, `dtype`, `ndim`, integer / slice / integer-array / boolean indexing
    on the first axis (a tuple key applies the rest to the gathered result) and `np.asarray`."""

    def __init__(self, table: np.ndarray, index: np.ndarray, rows: int) -> None:
        self.table = table
        self.index = index
        self.rows = rows
        self._offsets = np.arange(-rows + 1, 1, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.index), self.rows, self.table.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.table.dtype

    ndim = 3

    def __len__(self) -> int:
        return len(self.index)

    def tail(self, key: Any, rows: int) -> np.ndarray:
        """The newest `rows` rows of the selected windows (cheaper than gathering all)."""
        idx = np.asarray(self.index[key])
        return self.table[idx[..., None] + np.arange(-rows + 1, 1, dtype=np.int64)]

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        idx = np.asarray(self.index[key])
        out = self.table[idx[..., None] + self._offsets]
        if rest:
            out = out[(slice(None),) * idx.ndim + rest]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class BarDataset:
    """Per closed 5-minute bar arrays (see the module docstring), plus compact matrix rows."""

    def __init__(self, arrays: dict[str, np.ndarray], tac_rows: np.ndarray,
                 strat_rows: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        n = len(arrays["ts_ns"])
        for k in PER_BAR:
            a = np.asarray(arrays[k])
            if a.shape != (n,):
                raise ValueError(f"BarDataset field {k!r} has shape {a.shape}, expected ({n},)")
            setattr(self, k, a.astype(_DTYPES[k], copy=False))
        if tac_rows.ndim != 2 or tac_rows.shape[1] != TACTICAL_COLS:
            raise ValueError(f"tac_rows shape {tac_rows.shape}, expected (R, {TACTICAL_COLS})")
        if strat_rows.ndim != 2 or strat_rows.shape[1] != STRATEGIC_COLS:
            raise ValueError(f"strat_rows shape {strat_rows.shape}, expected (Q, {STRATEGIC_COLS})")
        self.tac_rows = np.asarray(tac_rows, np.float32)
        self.strat_rows = np.asarray(strat_rows, np.float32)
        if n and (self.tac_index.min() < TACTICAL_ROWS - 1
                  or self.tac_index.max() >= len(self.tac_rows)
                  or self.strat_index.min() < STRATEGIC_ROWS - 1
                  or self.strat_index.max() >= len(self.strat_rows)):
            raise ValueError("BarDataset row indices out of range of the row tables")
        self.meta: dict[str, Any] = dict(meta or {})

    ts_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    atr14: np.ndarray
    volatility_30: np.ndarray
    tactical_ready: np.ndarray
    strategic_ready: np.ndarray
    synergy_type: np.ndarray
    synergy_dir: np.ndarray
    synergy_conf: np.ndarray
    segment: np.ndarray
    tac_index: np.ndarray
    strat_index: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_ns)

    def __repr__(self) -> str:
        return (f"BarDataset({len(self)} bars, {len(self.segments())} segments, "
                f"ready {int(self.ready.sum())})")

    @property
    def tactical(self) -> WindowView:
        """(N, 60, 7) float32 tactical matrices, gathered on indexing."""
        return WindowView(self.tac_rows, self.tac_index, TACTICAL_ROWS)

    @property
    def strategic(self) -> WindowView:
        """(N, 48, 13) float32 latest strategic matrix as of each bar, gathered on indexing."""
        return WindowView(self.strat_rows, self.strat_index, STRATEGIC_ROWS)

    @property
    def ready(self) -> np.ndarray:
        """Both matrices ready: the bars a decision is made on."""
        return self.tactical_ready & self.strategic_ready

    def strategic_bars(self) -> np.ndarray:
        """Indices of the bars at which a new strategic (30-minute) matrix became the latest."""
        if len(self) == 0:
            return np.zeros(0, np.int64)
        new = np.ones(len(self), bool)
        new[1:] = (self.strat_index[1:] != self.strat_index[:-1]) | \
                  (self.segment[1:] != self.segment[:-1])
        return np.flatnonzero(new & (self.strat_index >= STRATEGIC_ROWS))  # not the neutral pad

    def segments(self) -> list[tuple[int, int]]:
        """[start, stop) bar ranges of the segments (episodes), in order."""
        if len(self) == 0:
            return []
        cut = np.flatnonzero(self.segment[1:] != self.segment[:-1]) + 1
        starts = np.concatenate([[0], cut])
        stops = np.concatenate([cut, [len(self)]])
        return list(zip(starts.tolist(), stops.tolist()))

    def slice(self, start: int, stop: int) -> BarDataset:
        """Bars [start, stop) (row tables shared, not copied)."""
        arrays = {k: getattr(self, k)[start:stop] for k in PER_BAR}
        return BarDataset(arrays, self.tac_rows, self.strat_rows, self.meta)

    def select(self, mask: np.ndarray) -> BarDataset:
        arrays = {k: getattr(self, k)[mask] for k in PER_BAR}
        return BarDataset(arrays, self.tac_rows, self.strat_rows, self.meta)

    def time_slice(self, ts_from: int | None, ts_to: int | None) -> BarDataset:
        """Bars with ts_from <= ts_ns < ts_to (None = open end), for a one-source dataset (its
        ts_ns strictly increase; a concatenation's do not and is refused)."""
        if len(self) > 1 and not np.all(self.ts_ns[1:] > self.ts_ns[:-1]):
            raise ValueError("time_slice needs strictly increasing ts_ns (one source); slice a "
                             "concatenated dataset per segment instead")
        lo = 0 if ts_from is None else int(np.searchsorted(self.ts_ns, ts_from, "left"))
        hi = len(self) if ts_to is None else int(np.searchsorted(self.ts_ns, ts_to, "left"))
        return self.slice(lo, max(lo, hi))

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in PER_BAR}
        out["tac_rows"] = self.tac_rows
        out["strat_rows"] = self.strat_rows
        return out


def concat(parts: Sequence[BarDataset]) -> BarDataset:
    """One dataset from several; every part's segments stay separate episodes (renumbered)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("concat of no non-empty datasets")
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in PER_BAR}
    tac, strat = [], []
    t_off = s_off = seg_off = 0
    for p in parts:
        _, seg = np.unique(p.segment, return_inverse=True)  # renumber 0.. in order of ids
        for k in PER_BAR:
            arrays[k].append(getattr(p, k))
        arrays["tac_index"][-1] = p.tac_index + t_off
        arrays["strat_index"][-1] = p.strat_index + s_off
        arrays["segment"][-1] = seg.astype(np.int32) + seg_off
        tac.append(p.tac_rows)
        strat.append(p.strat_rows)
        t_off += len(p.tac_rows)
        s_off += len(p.strat_rows)
        seg_off += int(seg.max()) + 1
    meta = {"sources": [m for p in parts for m in p.meta.get("sources", [])]}
    return BarDataset({k: np.concatenate(v) for k, v in arrays.items()},
                      np.concatenate(tac), np.concatenate(strat), meta)


def random_dataset(n: int = 3000, segments: int = 2, seed: int = 0) -> BarDataset:
    """A small dataset of random values with the real shapes (fast unit tests, not training):
    a geometric random walk for prices, every bar ready after the first 10 of each segment."""
    rng = np.random.default_rng(seed)
    seg = np.repeat(np.arange(segments), -(-n // segments))[:n].astype(np.int32)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    start = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    pos_in_seg = np.arange(n) - np.repeat(start, np.diff(np.r_[start, n]))
    n_strat = n // 6 + 1
    tac_rows = np.concatenate([np.zeros((TACTICAL_ROWS - 1, TACTICAL_COLS), np.float32),
                               rng.uniform(-1, 1, (n, TACTICAL_COLS)).astype(np.float32)])
    strat_rows = np.concatenate([np.tile(STRATEGIC_NEUTRAL, (STRATEGIC_ROWS, 1)),
                                 rng.uniform(-1, 1, (n_strat, STRATEGIC_COLS)).astype(np.float32)])
    syn = rng.random(n) < 0.01
    arrays = {
        "ts_ns": 1_704_153_600_000_000_000 + 300_000_000_000 * (np.arange(n) + 1),
        "open": close, "high": close * 1.001, "low": close * 0.999, "close": close,
        "volume": rng.integers(1, 100, n).astype(float), "atr14": close * 2e-3,
        "volatility_30": np.exp(rng.normal(0, 0.3, n)),
        "tactical_ready": pos_in_seg >= 10, "strategic_ready": pos_in_seg >= 10,
        "synergy_type": np.where(syn, rng.integers(1, 5, n), 0),
        "synergy_dir": np.where(syn, rng.choice([-1, 1], n), 0),
        "synergy_conf": np.where(syn, rng.uniform(0.5, 1, n), 0.0), "segment": seg,
        "tac_index": np.arange(n) + TACTICAL_ROWS - 1,
        "strat_index": np.arange(n) // 6 + STRATEGIC_ROWS}
    return BarDataset(arrays, tac_rows, strat_rows, {"sources": [{"name": "random"}]})


# ---------------------------------------------------------------------------------------------
# Building from the pipeline


def _cfg_for(spec: SourceSpec, base: Any) -> Any:
    from himari.daemon.config import HimariConfig

    cfg: HimariConfig = base
    if spec.kind == "synthetic":
        raw = msgspec.to_builtins(cfg.feed.synthetic)
        unknown = set(spec.synthetic) - set(raw)
        if unknown:
            raise ValueError(f"SourceSpec {spec.name!r}: unknown feed.synthetic keys "
                             f"{sorted(unknown)}")
        raw.update(spec.synthetic)
        syn = msgspec.convert(raw, type(cfg.feed.synthetic))
        return msgspec.structs.replace(cfg, feed=msgspec.structs.replace(cfg.feed, synthetic=syn))
    return cfg


def cache_key(spec: SourceSpec, cfg: Any) -> str:
    h = hashlib.sha256()
    h.update(f"v{DATASET_VERSION}".encode())
    h.update(msgspec.json.encode(spec))
    h.update(msgspec.json.encode(cfg.matrices))
    if spec.kind == "synthetic":
        h.update(msgspec.json.encode(cfg.feed.synthetic))
    else:
        with open(spec.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:20]


def build_dataset(spec: SourceSpec | Sequence[SourceSpec], *, cache_dir: Path | None = DEFAULT_CACHE,
                  cfg: Any = None, refresh: bool = False) -> BarDataset:
    """The dataset of one source (one segment), or of several concatenated; cached as .npz."""
    if not isinstance(spec, SourceSpec):
        return concat([build_dataset(s, cache_dir=cache_dir, cfg=cfg, refresh=refresh)
                       for s in spec])
    from himari.daemon.config import default_config

    cfg = _cfg_for(spec, cfg if cfg is not None else default_config())
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{spec.name}-{cache_key(spec, cfg)}.npz"
        if path.exists() and not refresh:
            try:
                return load_npz(path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # a damaged cache entry (an interrupted write elsewhere): rebuild it
    from himari.training.pipeline import run_pipeline

    ds = run_pipeline(spec, cfg)
    if path is not None:
        save_npz(ds, path)
    return ds


def save_npz(ds: BarDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    meta = np.frombuffer(json.dumps(ds.meta, sort_keys=True).encode(), dtype=np.uint8)
    np.savez(tmp, meta_json=meta, **ds.to_arrays())
    os.replace(tmp, path)


def load_npz(path: Path) -> BarDataset:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta_json").tobytes().decode())
    return BarDataset(arrays, arrays.pop("tac_rows"), arrays.pop("strat_rows"), meta)
