"""training/dataset.py: the pipeline's per-bar records, compact windows, cache, concat/slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from himari.daemon.config import default_config
from himari.training import dataset as D
from himari.training.dataset import BarDataset, SourceSpec, build_dataset, concat, random_dataset

SMALL = {"n_ticks": 200_000, "ticks_per_day": 20_000.0, "seed": 3}  # ~2,900 bars, ~860 ready
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def small() -> BarDataset:
    spec = SourceSpec(name="small", kind="synthetic", synthetic=SMALL)
    # check=True: at every bar the stored rows rebuild the published matrices exactly
    from himari.training.pipeline import run_pipeline

    return run_pipeline(spec, D._cfg_for(spec, default_config()), check=True)


def test_pipeline_fields_shapes_and_readiness(small: BarDataset) -> None:
    n = len(small)
    assert 2500 < n < 3300
    assert small.tactical.shape == (n, 60, 7) and small.strategic.shape == (n, 48, 13)
    assert small.tactical[5].dtype == np.float32
    assert np.all(np.diff(small.ts_ns) > 0)
    assert np.all(small.ts_ns % 300_000_000_000 == 0)  # 5-minute closes
    assert np.all(small.close > 0) and np.all(small.high >= small.low)
    assert np.all((small.close <= small.high) & (small.close >= small.low))
    # the strategic matrix needs 336 thirty-minute bars (7 days): not ready before
    first_ready = int(np.argmax(small.strategic_ready))
    assert 2000 <= first_ready <= 2100 and small.strategic_ready[first_ready:].all()
    assert small.ready.sum() == n - first_ready
    assert np.isfinite(small.atr14).all() and (small.atr14[first_ready:] > 0).all()
    assert (small.volatility_30[:1400] == 1.0).all()  # v_rel valid from 30-minute bar 240
    assert (small.volatility_30[first_ready:] != 1.0).mean() > 0.99
    assert set(np.unique(small.synergy_type)) <= {0, 1, 2, 3, 4}
    has = small.synergy_type > 0
    assert np.array_equal(has, small.synergy_dir != 0) and np.all(small.synergy_conf[~has] == 0)
    assert small.meta["sources"][0]["synergies"] == int(has.sum())
    assert small.segments() == [(0, n)]


def test_strategic_changes_every_six_bars(small: BarDataset) -> None:
    bars = small.strategic_bars()
    assert len(bars) > 400
    assert np.median(np.diff(bars)) == 6
    # before the first strategic matrix: the neutral matrix (lvn_distance 1, rest 0)
    first = int(bars[0])
    assert first > 0 and np.array_equal(small.strategic[0][:, 4], np.ones(48, np.float32))


def test_window_view_indexing(small: BarDataset) -> None:
    tv = small.tactical
    i = 2500
    assert np.array_equal(tv[i], small.tac_rows[small.tac_index[i] - 59: small.tac_index[i] + 1])
    assert np.array_equal(tv[[i, i + 1]][1], tv[i + 1])
    assert np.array_equal(tv[i:i + 3][2], tv[i + 2])
    assert np.array_equal(tv[i, -1, 5], tv[i][-1, 5])
    assert np.array_equal(tv[i:i + 3, :, 6], np.stack([tv[k][:, 6] for k in range(i, i + 3)]))
    assert np.array_equal(tv.tail([i], 20)[0], tv[i][-20:])
    assert np.asarray(small.slice(0, 10).strategic).shape == (10, 48, 13)
    # row i of the tactical window is the previous bar's window shifted by one row
    assert np.array_equal(tv[i][:-1], tv[i - 1][1:])


def test_cache_roundtrip_and_key(tmp_path: Path) -> None:
    spec = SourceSpec(name="tiny", kind="synthetic",
                      synthetic={"n_ticks": 20_000, "ticks_per_day": 20_000.0, "seed": 5})
    a = build_dataset(spec, cache_dir=tmp_path)
    files = list(tmp_path.glob("tiny-*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as z:  # no object arrays inside
        assert "tac_rows" in z.files
    b = build_dataset(spec, cache_dir=tmp_path)  # from the cache
    for k in D.PER_BAR:
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert np.array_equal(a.tac_rows, b.tac_rows) and b.meta == a.meta
    files[0].write_bytes(b"not a zip file")  # a damaged cache entry is rebuilt, not fatal
    c = build_dataset(spec, cache_dir=tmp_path)
    assert np.array_equal(c.close, a.close) and np.load(files[0], allow_pickle=False) is not None
    other = SourceSpec(name="tiny", kind="synthetic",
                       synthetic={"n_ticks": 20_000, "ticks_per_day": 20_000.0, "seed": 6})
    cfg = default_config()
    assert D.cache_key(spec, D._cfg_for(spec, cfg)) != D.cache_key(other, D._cfg_for(other, cfg))


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        SourceSpec(name="x", kind="ftp")
    with pytest.raises(ValueError, match="unknown feed.synthetic keys"):
        D._cfg_for(SourceSpec(name="x", kind="synthetic", synthetic={"drift": 1.0}),
                   default_config())


def test_concat_renumbers_segments_and_keeps_windows_apart() -> None:
    a, b = random_dataset(300, 2, seed=1), random_dataset(200, 1, seed=2)
    c = concat([a, b])
    assert len(c) == 500 and c.segments() == [(0, 150), (150, 300), (300, 500)]
    assert np.array_equal(c.tactical[310], b.tactical[10])
    assert np.array_equal(c.strategic[499], b.strategic[199])
    # the first window of the appended part is its own zero padding, not a's last rows
    assert np.array_equal(c.tactical[300][:-1], np.zeros((59, 7), np.float32))


def test_slice_and_time_slice() -> None:
    ds = random_dataset(400, 1, seed=3)
    s = ds.slice(100, 200)
    assert len(s) == 100 and np.array_equal(s.tactical[0], ds.tactical[100])
    t = ds.time_slice(int(ds.ts_ns[50]), int(ds.ts_ns[60]))
    assert len(t) == 10 and t.ts_ns[0] == ds.ts_ns[50]
    with pytest.raises(ValueError, match="strictly increasing"):
        concat([ds, ds]).time_slice(0, None)


def test_bad_arrays_are_refused() -> None:
    ds = random_dataset(50, 1)
    arrays = {k: getattr(ds, k) for k in D.PER_BAR}
    arrays["close"] = arrays["close"][:10]
    with pytest.raises(ValueError, match="close"):
        BarDataset(arrays, ds.tac_rows, ds.strat_rows)


@pytest.mark.skipif(not (DATA / "btc-perp-20211231-20220201_1m.csv").exists(),
                    reason="real data ../shared/data not present (BTC perpetual 1-minute bars)")
def test_real_btc_bars_as_ticks(tmp_path: Path) -> None:
    spec = SourceSpec(name="btc", kind="file", path=str(DATA / "btc-perp-20211231-20220201_1m.csv"),
                      instrument_id="BTC-PERP", label="BTC perpetual 1-minute bars replayed as ticks")
    ds = build_dataset(spec, cache_dir=tmp_path)
    assert 8800 < len(ds) < 9100  # a month of 5-minute bars
    assert ds.ready.sum() > 6000 and 30_000 < np.median(ds.close) < 60_000
    assert "as ticks" in ds.meta["sources"][0]["label"]


# ---- training/sources.py: the split


def test_time_range_halves_do_not_overlap_and_cover_everything() -> None:
    from himari.training.sources import time_range

    ds = random_dataset(1000, 1, seed=7)
    a0, a1 = time_range(ds, 0.0, 0.6)
    b0, b1 = time_range(ds, 0.6, 1.0)
    assert a1 == b0 and a0 == ds.ts_ns[0] and b1 == ds.ts_ns[-1] + 1
    train, held = ds.time_slice(a0, a1), ds.time_slice(b0, b1)
    assert len(train) + len(held) == len(ds) and train.ts_ns[-1] < held.ts_ns[0]
    assert len(train) == pytest.approx(600, abs=2)
    with pytest.raises(ValueError, match="fractions"):
        time_range(ds, 0.7, 0.6)


def test_split_without_real_data_is_synthetic_only(tmp_path: Path) -> None:
    from himari.training.sources import split_parts

    split = split_parts(tmp_path)
    assert split.heldout == [] and all(p.spec.kind == "synthetic" for p in split.train)
    assert len(split.train) == 8 and len({p.spec.synthetic["seed"] for p in split.train}) == 8
    assert any("BTC" in n and "synthetic data only" in n for n in split.notes)
    assert any("GBP/USD" in n for n in split.notes)


@pytest.mark.skipif(not (DATA / "btc-perp-20211231-20220201_1m.csv").exists()
                    or not (DATA / "gbpusd-m1-bid-2012.csv").exists(),
                    reason="real data ../shared/data not present (BTC and GBP/USD 1-minute bars)")
def test_real_split_train_and_heldout_never_overlap(tmp_path: Path) -> None:
    from himari.training.sources import load_part, split_parts

    split = split_parts(DATA)
    real_train = [p for p in split.train if p.spec.kind == "file"]
    assert [p.name for p in real_train] == ["btc-train"]
    assert sorted(p.name for p in split.heldout) == ["btc-heldout", "gbpusd-heldout"]
    assert all(p.spec.kind == "file" for p in split.heldout)
    assert not any(p.spec.path.endswith("gbpusd-m1-bid-2012.csv") for p in split.train)
    train = load_part(real_train[0], tmp_path)
    held = load_part(next(p for p in split.heldout if p.name == "btc-heldout"), tmp_path)
    assert train.ts_ns[-1] < held.ts_ns[0]  # disjoint in time
    assert len(train) + len(held) == len(build_dataset(real_train[0].spec, cache_dir=tmp_path))
    span = held.ts_ns[-1] - train.ts_ns[0]
    assert (held.ts_ns[0] - train.ts_ns[0]) / span == pytest.approx(0.6, abs=0.002)
    assert held.ready.all()  # warmed by the earlier bars: features only look back
    assert held.meta["sources"][0]["role"] == "heldout"
    # the boundary is the one the walk-forward replays from (its warm-up window ends there)
    from himari.training.sources import file_span_ns, split_ns

    path = Path(real_train[0].spec.path)
    cut = split_ns(path)
    assert train.ts_ns[-1] <= cut < held.ts_ns[0]
    lo, hi = file_span_ns(path)
    assert lo < cut < hi and cut - lo == int(0.6 * (hi - lo))
    try:
        from himari.training.evaluate import heldout_sets
    except ImportError:
        return
    btc = next(s for s in heldout_sets(DATA) if s.path.name == path.name)
    t_end = lo + int(btc.history_s * 1e9)  # the replay trades bars closing after this
    assert train.ts_ns[-1] <= t_end < held.ts_ns[0]
    gbp = [p for p in split.heldout if p.name == "gbpusd-heldout"][0]
    assert gbp.fraction_from == 0.0 and gbp.fraction_to == 1.0
