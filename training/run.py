"""`himari train`: build the training data once, then train every agent in order.

Order: the strategic team, the tactical team, then the D-agents (cql, sac, ppo_lstm, cgdt). Each
trainer is `himari.training.<name>:train(data: TrainingData, out_dir: Path, seed: int,
quick: bool) -> dict` (metrics); a trainer whose module is missing is reported and skipped, one
that raises is reported as failed (the others still train; the exit status is then 1). Per-agent
wall time and metrics are printed and written to `<out>/train_report.json`.

`TrainingData` (prepared by `prepare`): the training split of `training/sources.py` (synthetic
segments + the first 60% of the BTC month), cut into `train` (the first 80% of each part, by time)
and `valid` (the last 20%: model selection / early stopping only; it is still training data,
never the held-out data of `himari evaluate`); the crisis threshold (95th percentile of
volatility_30 over the ready training bars); the regime of every bar by the rule of
decision/regime.py: crisis or neutral at first, then, once the strategic team has trained in this
run, relabelled with its ensemble (`relabel_regimes`: the offline data and statistics are rebuilt,
so the D-agents train on the regime inputs they will see at run time); the z-score statistics (fitted on the
behaviour-policy rows of `offline()`, position slots included); the env config (fee 1 bp +
slippage 1 bp); `meta` for checkpoint metadata ("data": parts, ranges, labels, notes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from himari.decision.checkpoint import DEFAULT_DIR
from himari.decision.features import FeatureStats, strategic_inputs_batch
from himari.decision.layout import LAYOUT_VERSION, REGIMES
from himari.decision.regime import crisis_threshold, regimes
from himari.training.dataset import DATASET_VERSION, DEFAULT_CACHE, BarDataset, concat
from himari.training.env import EnvConfig, TradingEnv
from himari.training.offline import BehaviourConfig, OfflineData, build_offline
from himari.training.sources import load_part, split_parts, time_range

AGENTS = ("strategic", "tactical", "cql", "sac", "ppo_lstm", "cgdt")
VALID_FRACTION = 0.2
QUICK_OFFLINE_STEPS = 20_000


@dataclass
class TrainingData:
    train: BarDataset
    valid: BarDataset | None
    stats: FeatureStats
    crisis_threshold: float
    regime_train: np.ndarray  # (len(train),) int64
    regime_valid: np.ndarray | None
    env: EnvConfig
    fee: float
    seed: int
    quick: bool
    meta: dict[str, Any]
    offline_data: OfflineData  # behaviour trajectories on `train` (z-scored with `stats`)
    _valid_offline: OfflineData | None = field(default=None, repr=False)

    @property
    def regime(self) -> np.ndarray:
        """The training bars' regimes (alias of `regime_train`)."""
        return self.regime_train

    @property
    def dataset(self) -> BarDataset:
        """The training bars (alias of `train`)."""
        return self.train

    def offline(self) -> OfflineData:
        """Behaviour trajectories on `train` (z-scored with `stats`, regimes `regime_train`)."""
        return self.offline_data

    def offline_valid(self) -> OfflineData | None:
        """Behaviour trajectories on `valid` (same stats), built on first use."""
        if self._valid_offline is None and self.valid is not None and self.valid.ready.any():
            self._valid_offline = build_offline(
                self.valid, self.regime_valid, self.seed + 1, stats=self.stats, env=self.env,
                behaviour=BehaviourConfig(max_steps=QUICK_OFFLINE_STEPS if self.quick else 0))
        return self._valid_offline

    def make_env(self, split: str = "train", seed: int | None = None,
                 env: EnvConfig | None = None) -> TradingEnv:
        ds, reg = (self.train, self.regime_train) if split == "train" else \
            (self.valid, self.regime_valid)
        if ds is None:
            raise ValueError(f"no {split!r} data")
        return TradingEnv(ds, self.stats, env or self.env, regime=reg, seed=seed)

    def features(self, ds: BarDataset, index: Any, regime: np.ndarray,
                 position: np.ndarray | None = None) -> np.ndarray:
        """z-scored x rows for bars `index` of ds (flat position unless given)."""
        from himari.decision.features import feature_matrix

        idx = np.asarray(index)
        return self.stats.normalize(feature_matrix(ds, idx, regime=regime[idx], position=position))

    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint's JSON should carry about its data (`"data": ...`)."""
        return self.meta


def env_config_from(cfg: Any) -> EnvConfig:
    """The env's costs from the daemon config: the simulated venue's taker fee (default 1 bp) plus
    a 1 bp slippage allowance (bars-as-ticks and the synthetic stream have no book to walk)."""
    fee_bps = 1.0
    if cfg is not None and cfg.venue.name == "sim":
        from himari.daemon import plugins

        fee_bps = float(plugins.venue_config(cfg).taker_fee_bps)
    return EnvConfig(fee_bps=fee_bps, slippage_bps=1.0)


def prepare(seed: int = 0, quick: bool = False, data_dir: Path | None = None,
            cache_dir: Path | None = DEFAULT_CACHE, env: EnvConfig | None = None,
            log: Any = print, cfg: Any = None) -> TrainingData:
    """`cfg` (HimariConfig, default: the embedded defaults) sets the matrices (the features must
    be the ones the daemon computes) and the fee."""
    env = env or env_config_from(cfg)
    split = split_parts(data_dir, quick)
    for note in split.notes:
        log(f"train: note: {note}")
    trains, valids, parts_meta = [], [], []
    for part in split.train:
        t0 = time.perf_counter()
        ds = load_part(part, cache_dir, cfg)
        cut_from, cut_to = time_range(ds, 0.0, 1.0 - VALID_FRACTION)
        tr = ds.time_slice(cut_from, cut_to)
        va = ds.time_slice(cut_to, None)
        trains.append(tr)
        valids.append(va)
        src = ds.meta["sources"][0]
        parts_meta.append({"part": part.name, "label": src.get("label", ""),
                           "path": src.get("path", ""), "ts_from": src["ts_from"],
                           "ts_to": src["ts_to"], "valid_from": cut_to, "bars": len(ds),
                           "train_ready": int(tr.ready.sum()), "valid_ready": int(va.ready.sum())})
        log(f"train: data {part.name}: {len(ds):,} bars ({int(ds.ready.sum()):,} ready) in "
            f"{time.perf_counter() - t0:.1f} s")
    train = concat(trains)
    valid_parts = [v for v in valids if len(v)]
    valid = concat(valid_parts) if valid_parts else None
    thr = crisis_threshold(train.volatility_30[train.ready])
    reg_train = regimes(train.volatility_30, thr)
    reg_valid = regimes(valid.volatility_30, thr) if valid is not None else None
    t0 = time.perf_counter()
    offline = build_offline(train, reg_train, seed, env=env,
                            behaviour=BehaviourConfig(max_steps=QUICK_OFFLINE_STEPS if quick else 0))
    log(f"train: offline trajectories: {len(offline):,} steps, {len(offline.episode_starts)} "
        f"episodes in {time.perf_counter() - t0:.1f} s")
    meta = {"layout_version": LAYOUT_VERSION, "dataset_version": DATASET_VERSION,
            "split": "training/sources.py split_parts: synthetic + first 60% of the BTC month; "
                     "valid = last 20% of each training part",
            "parts": parts_meta, "notes": list(split.notes), "quick": quick,
            "crisis_threshold": thr, "train_bars": len(train),
            "train_ready": int(train.ready.sum()),
            "valid_ready": int(valid.ready.sum()) if valid is not None else 0,
            "fee": env.fee, "synthetic_only": not any(p["part"].startswith("btc") for p in parts_meta),
            "regimes": {"source": "crisis rule only (no strategic ensemble yet)"}}
    return TrainingData(train, valid, offline.stats, thr, reg_train, reg_valid, env, env.fee, seed,
                        quick, meta, offline)


def strategic_probs(ds: BarDataset, probs_fn: Any) -> np.ndarray:
    """(N, 3) P_ensemble of the latest ready strategic matrix at each bar (NaN where none).
    probs_fn(mlmi_in, nwrqk_in, regime_in, volatility_30) -> P_ensemble (3,)."""
    out = np.full((len(ds), 3), np.nan)
    bars = ds.strategic_bars()
    bars = bars[ds.strategic_ready[bars]]
    if len(bars) == 0:
        return out
    m, w, r = strategic_inputs_batch(ds.strategic[bars], ds.synergy_conf[bars],
                                     ds.synergy_dir[bars], ds.ts_ns[bars])
    for k, b in enumerate(bars.tolist()):
        out[b] = probs_fn(m[k], w[k], r[k], float(ds.volatility_30[b]))
    # forward fill within each segment: the latest strategic matrix holds until the next one
    have = ~np.isnan(out[:, 0])
    last = np.maximum.accumulate(np.where(have, np.arange(len(ds)), -1))
    seg_start = np.r_[0, np.flatnonzero(ds.segment[1:] != ds.segment[:-1]) + 1]
    first_of_seg = np.repeat(seg_start, np.diff(np.r_[seg_start, len(ds)]))
    ok = last >= first_of_seg
    filled = np.full_like(out, np.nan)
    filled[ok] = out[last[ok]]
    return filled


def relabel_regimes(data: TrainingData, probs_fn: Any) -> dict[str, Any]:
    """Regimes from the rule WITH the strategic ensemble (spec 4.0), then the offline data and
    statistics rebuilt on them, so D-agents train on the regime inputs they will see."""
    p_train = strategic_probs(data.train, probs_fn)
    data.regime_train = regimes(data.train.volatility_30, data.crisis_threshold, p_train)
    if data.valid is not None:
        data.regime_valid = regimes(data.valid.volatility_30, data.crisis_threshold,
                                    strategic_probs(data.valid, probs_fn))
    data.offline_data = build_offline(
        data.train, data.regime_train, data.seed, env=data.env,
        behaviour=BehaviourConfig(max_steps=QUICK_OFFLINE_STEPS if data.quick else 0))
    data.stats = data.offline_data.stats
    data._valid_offline = None
    ready = data.train.ready
    share = np.bincount(data.regime_train[ready], minlength=4) / max(1, int(ready.sum()))
    data.meta["regimes"] = {"source": "strategic ensemble + crisis rule",
                            "share": dict(zip(REGIMES, share.round(4).tolist()))}
    return data.meta["regimes"]


def _team_probs_fn(out_dir: Path) -> Any:
    from himari.decision.nets.strategic import load

    team = load(out_dir)

    def fn(m: np.ndarray, w: np.ndarray, r: np.ndarray, vol: float) -> np.ndarray:
        probs, weights = team.probs(m, w, r, vol)
        return np.asarray(weights) @ np.asarray(probs)

    return fn


def run_train(out_dir: Path, agents: list[str], seed: int, quick: bool,
              data_dir: Path | None = None, cache_dir: Path | None = DEFAULT_CACHE,
              log: Any = print, data: TrainingData | None = None,
              cfg: Any = None) -> tuple[int, dict[str, Any]]:
    t_start = time.perf_counter()
    if data is None:
        data = prepare(seed, quick, data_dir, cache_dir, log=log, cfg=cfg)
    t_data = time.perf_counter() - t_start
    report: dict[str, Any] = {"seed": seed, "quick": quick, "out_dir": str(out_dir),
                              "data_seconds": round(t_data, 2), "data": data.meta, "agents": {}}
    failed = False
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in agents:
        try:
            mod = importlib.import_module(f"himari.training.{name}")
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith(f"himari.training.{name}"):
                log(f"train: {name}: skipped (no module himari.training.{name})")
                report["agents"][name] = {"status": "skipped", "reason": "trainer module not found"}
                continue
            raise
        fn = getattr(mod, "train", None)
        if fn is None:
            log(f"train: {name}: skipped (himari.training.{name} has no train())")
            report["agents"][name] = {"status": "skipped", "reason": "no train() in the module"}
            continue
        t0 = time.perf_counter()
        try:
            metrics = fn(data, out_dir, seed, quick)
        except Exception as exc:  # noqa: BLE001 - one trainer failing must not stop the rest
            wall = time.perf_counter() - t0
            failed = True
            log(f"train: {name}: FAILED after {wall:.1f} s: {type(exc).__name__}: {exc}")
            report["agents"][name] = {"status": "failed", "seconds": round(wall, 2),
                                      "error": f"{type(exc).__name__}: {exc}",
                                      "traceback": traceback.format_exc(limit=5)}
            continue
        wall = time.perf_counter() - t0
        report["agents"][name] = {"status": "trained", "seconds": round(wall, 2),
                                  "metrics": _jsonable(metrics or {})}
        log(f"train: {name}: {wall:.1f} s, metrics {json.dumps(_jsonable(metrics or {}))}")
        if name == "strategic" and any(a in agents for a in AGENTS[2:]):
            try:  # the D-agents' regime input comes from the ensemble just trained
                info = relabel_regimes(data, _team_probs_fn(out_dir))
                log(f"train: regimes from the strategic ensemble: {info['share']}")
            except Exception as exc:  # noqa: BLE001 - keep the crisis-or-neutral labels
                data.meta["regimes"] = {"source": "crisis rule only (strategic ensemble "
                                        f"unavailable: {type(exc).__name__}: {exc})"}
                log(f"train: regimes stay crisis-or-neutral: {data.meta['regimes']['source']}")
            report["data"] = data.meta
    report["total_seconds"] = round(time.perf_counter() - t_start, 2)
    (out_dir / "train_report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    log(f"train: done in {report['total_seconds']:.1f} s; report {out_dir / 'train_report.json'}")
    return (1 if failed else 0), report


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def add_parser(sub: Any) -> None:
    t = sub.add_parser("train", help="train the decision agents on the pipeline's own features "
                       "(synthetic streams + the first 60%% of the BTC month)")
    t.add_argument("--out", default=None,
                   help=f"checkpoint directory (default: the shipped {DEFAULT_DIR})")
    t.add_argument("--agents", default=",".join(AGENTS),
                   help=f"comma-separated, in this order: {','.join(AGENTS)}")
    t.add_argument("--quick", action="store_true", help="small data and short training (tests)")
    t.add_argument("--seed", type=int, default=0, help="seed of data behaviour and training")
    t.add_argument("--data-dir", default=None, help="real data directory (default ../shared/data)")
    t.add_argument("--config", default=None, help="TOML config whose [matrices] and venue fee "
                   "the training data uses (default: the embedded defaults, as `himari replay`)")
    t.add_argument("--cache-dir", default=None,
                   help=f"dataset cache (default {DEFAULT_CACHE}; 'none' = no cache)")


def main(args: argparse.Namespace) -> int:
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    unknown = [a for a in agents if a not in AGENTS]
    if unknown or not agents:
        print(f"himari train: --agents {args.agents!r}: unknown {unknown}; choose from "
              f"{','.join(AGENTS)}", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"himari train: --seed {args.seed}: must be >= 0", file=sys.stderr)
        return 2
    agents = [a for a in AGENTS if a in agents]  # always the dependency order
    out = Path(args.out) if args.out else DEFAULT_DIR
    cache = None if args.cache_dir == "none" else (Path(args.cache_dir) if args.cache_dir
                                                   else DEFAULT_CACHE)
    data_dir = Path(args.data_dir) if args.data_dir else None
    from himari.daemon.config import load_config

    cfg = load_config(args.config)  # a bad file: ConfigError, exit 2 (daemon/cli.py)

    def log(msg: str) -> None:
        print(msg, flush=True)

    rc, _ = run_train(out, agents, args.seed, args.quick, data_dir, cache, log=log, cfg=cfg)
    return rc
