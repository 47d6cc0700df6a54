"""Which data trains and which is held out (issue 14): one named split, reused by `himari evaluate`.

`split_parts(data_dir, quick)` is THE split:
- training: seeded synthetic streams (`synthetic_specs`: 8 segments of 60 days, 5-minute bars from
  30,000 ticks a day, each with its own seed and volatility regime: calm, default, turbulent,
  clustered, jumpy, slow mean-reverting, crypto-like; the generator has no drift parameter, so no
  synthetic segment has a trend) plus the FIRST 60% (by time) of the BTC perpetual month;
- held out, never trained on: the LAST 40% of the BTC month and the whole GBP/USD month.
Both real files are 1-minute bars replayed as four ticks each by the file feed (labelled so).

A file's time split is on the file's own timestamps (`split_ns`): t_split = lo + floor(f (hi - lo))
with lo, hi the first and last timestamp in the file, the boundary `himari evaluate` replays from
(its `replay.history_s` = t_split - lo warms the features; the first traded bar closes after it).
Training keeps the 5-minute bars that close at or before t_split (every tick in them is earlier),
held-out the bars that close after it: no bar is in both, and no training reward reads a held-out
price (a training episode's last reward uses the last training bar's close). The held-out part is
built from the whole file, so its first matrices are warmed by the earlier bars (features look
only backwards), as in the walk-forward replay.
Real data absent -> the split holds synthetic data only and `notes` says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from himari.training.dataset import DEFAULT_CACHE, BarDataset, SourceSpec, build_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("HIMARI_DATA_DIR", PROJECT_ROOT / ".." / "shared" / "data"))
BTC_FILE = "btc-perp-20211231-20220201_1m.csv"
GBP_FILE = "gbpusd-m1-bid-2012.csv"
BTC_TRAIN_FRACTION = 0.6
TRAIN_FRACTION = BTC_TRAIN_FRACTION  # names training/evaluate.py reads
GBPUSD_FILE = GBP_FILE
BAR_NS = 300_000_000_000

BTC_LABEL = ("BTC perpetual future, 1-minute OHLCV bars 2021-12-31..2022-02-01 replayed as ticks "
             "(open/high/low/close as four ticks per bar), 5-minute bars built from them")
GBP_LABEL = ("GBP/USD spot, 1-minute bid bars February 2012 replayed as ticks (four per bar, no "
             "volume), 5-minute bars built from them")

# (seed, overrides): volatility regimes across segments (see daemon/feeds/synthetic.py)
_SYNTHETIC = [
    ("calm", 101, {"daily_vol": 0.01, "vol_of_vol": 0.8, "jumps_per_day": 0.5}),
    ("default", 102, {}),
    ("turbulent", 103, {"daily_vol": 0.04, "vol_of_vol": 2.0, "jumps_per_day": 2.0}),
    ("clustered", 104, {"daily_vol": 0.02, "vol_of_vol": 2.5, "vol_mean_reversion": 2.0,
                        "leverage": -0.8}),
    ("jumpy", 105, {"daily_vol": 0.03, "jumps_per_day": 4.0, "jump_std": 0.01}),
    ("slow", 106, {"daily_vol": 0.015, "vol_of_vol": 1.0, "vol_mean_reversion": 1.0,
                   "jumps_per_day": 0.2}),
    ("crypto", 107, {"daily_vol": 0.05, "vol_of_vol": 1.5, "jumps_per_day": 1.0,
                     "start_price": "40000.00"}),
    ("default2", 108, {"side_persistence": 0.5, "flow_impact": 0.6}),
]
SYNTHETIC_DAYS = 60
QUICK_DAYS = 16
TICKS_PER_DAY = 30_000


@dataclass(frozen=True)
class DataPart:
    """A time range [fraction_from, fraction_to) of one source, with its role."""

    name: str
    role: str  # "train" | "heldout"
    spec: SourceSpec
    fraction_from: float = 0.0
    fraction_to: float = 1.0


@dataclass
class Split:
    train: list[DataPart]
    heldout: list[DataPart]
    notes: list[str] = field(default_factory=list)


def synthetic_specs(quick: bool = False) -> list[SourceSpec]:
    days = QUICK_DAYS if quick else SYNTHETIC_DAYS
    chosen = _SYNTHETIC[:2] if quick else _SYNTHETIC
    out = []
    for k, (name, seed, over) in enumerate(chosen):
        start = np.datetime64("2024-01-01T00:00:00") + np.timedelta64(61 * k, "D")
        syn = {"seed": seed, "n_ticks": days * TICKS_PER_DAY, "ticks_per_day": float(TICKS_PER_DAY),
               "start": f"{start}Z", **over}
        out.append(SourceSpec(name=f"synthetic-{name}-{days}d", kind="synthetic", synthetic=syn,
                              instrument_id="SYN",
                              label=f"seeded synthetic trade ticks, seed {seed}, regime '{name}' "
                                    f"({days} days, {TICKS_PER_DAY:,} ticks/day)"))
    return out


def real_spec(data_dir: Path, which: str) -> SourceSpec | None:
    file, inst, label = {"btc": (BTC_FILE, "BTC-PERP", BTC_LABEL),
                         "gbpusd": (GBP_FILE, "GBPUSD", GBP_LABEL)}[which]
    path = Path(data_dir) / file
    if not path.is_file():
        return None
    return SourceSpec(name=which, kind="file", path=str(path.resolve()), instrument_id=inst,
                      label=label)


def split_parts(data_dir: Path | None = None, quick: bool = False) -> Split:
    """THE training / held-out split (module docstring). `himari evaluate` uses `.heldout`."""
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    split = Split(train=[DataPart(s.name, "train", s) for s in synthetic_specs(quick)], heldout=[])
    btc = real_spec(data_dir, "btc")
    if btc is None:
        split.notes.append(f"BTC perpetual data not found at {data_dir / BTC_FILE}: training on "
                           "synthetic data only, and no BTC held-out part")
    else:
        split.train.append(DataPart("btc-train", "train", btc, 0.0, BTC_TRAIN_FRACTION))
        split.heldout.append(DataPart("btc-heldout", "heldout", btc, BTC_TRAIN_FRACTION, 1.0))
    gbp = real_spec(data_dir, "gbpusd")
    if gbp is None:
        split.notes.append(f"GBP/USD data not found at {data_dir / GBP_FILE}: no GBP/USD "
                           "held-out part")
    else:
        split.heldout.append(DataPart("gbpusd-heldout", "heldout", gbp, 0.0, 1.0))
    return split


def time_range(ds: BarDataset, fraction_from: float, fraction_to: float) -> tuple[int, int]:
    """[ts_from, ts_to) of a whole-source dataset for a fraction range (module docstring)."""
    if not (0.0 <= fraction_from <= fraction_to <= 1.0):
        raise ValueError(f"fractions {fraction_from}, {fraction_to} must satisfy 0 <= from <= to <= 1")
    t0, t1 = int(ds.ts_ns[0]), int(ds.ts_ns[-1])

    def at(f: float) -> int:
        return t1 + 1 if f >= 1.0 else t0 + int(np.floor(f * (t1 - t0)))

    return at(fraction_from), at(fraction_to)


def file_span_ns(path: Path) -> tuple[int, int]:
    """First and last timestamp of a bars CSV (a `timestamp` column), epoch ns (UTC)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pacsv

    col = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        include_columns=["timestamp"]))["timestamp"]
    if not pa.types.is_timestamp(col.type):
        raise ValueError(f"{path}: column 'timestamp' is {col.type}, not a timestamp")
    ns = pc.cast(col, pa.timestamp("ns", col.type.tz)).cast(pa.int64())
    return int(pc.min(ns).as_py()), int(pc.max(ns).as_py())


def split_ns(path: Path, fraction: float = TRAIN_FRACTION) -> int:
    """THE boundary of a real file: lo + floor(fraction (hi - lo)) of its timestamps (ns)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"split fraction {fraction} must be in [0, 1]")
    lo, hi = file_span_ns(Path(path))
    return lo + int(np.floor(fraction * (hi - lo)))


def part_range(part: DataPart, whole: BarDataset) -> tuple[int | None, int | None]:
    """[ts_from, ts_to) on bar close times for a part of its whole-source dataset. File parts:
    bars closing in (split(from), split(to)] (module docstring); synthetic: `time_range`."""
    if part.spec.kind != "file":
        return time_range(whole, part.fraction_from, part.fraction_to)
    lo = None if part.fraction_from <= 0 else split_ns(Path(part.spec.path), part.fraction_from) + 1
    hi = None if part.fraction_to >= 1 else split_ns(Path(part.spec.path), part.fraction_to) + 1
    return lo, hi


def load_part(part: DataPart, cache_dir: Path | None = DEFAULT_CACHE,
              cfg: Any = None) -> BarDataset:
    """The part's bars (the whole source is built once and cached; the range cut afterwards)."""
    whole = build_dataset(part.spec, cache_dir=cache_dir, cfg=cfg)
    if len(whole) == 0:
        raise ValueError(f"data part {part.name}: the source produced no 5-minute bars")
    ts_from, ts_to = part_range(part, whole)
    ds = whole.time_slice(ts_from, ts_to)
    src = dict(whole.meta["sources"][0])
    src.update({"part": part.name, "role": part.role, "ts_from": ts_from, "ts_to": ts_to,
                "fraction": [part.fraction_from, part.fraction_to], "bars": len(ds),
                "synergies": int((ds.synergy_type > 0).sum()),
                "ready": int(ds.ready.sum())})
    ds.meta = {"sources": [src]}
    return ds


def load_parts(parts: list[DataPart], cache_dir: Path | None = DEFAULT_CACHE,
               cfg: Any = None) -> list[tuple[DataPart, BarDataset]]:
    return [(p, load_part(p, cache_dir, cfg)) for p in parts]
