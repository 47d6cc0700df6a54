"""Run one source through the project's own pipeline and record every closed 5-minute bar.

Feed (the seeded synthetic generator, or a file feed; bar files are replayed as bars-as-ticks by
that feed and labelled so) -> the 5-minute `BarBuilder` kernel (one call per tick batch, no Python
per tick) -> `MatrixStage` (tactical 60x7, strategic 48x13, synergy detector) on a private bus.
Matrices and synergies are read from the bus events, exactly what a replay's strategy sees; each
published matrix's newest row is kept once (rows are never revised), see training/dataset.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from himari.decision.layout import STRATEGIC_ROWS, TACTICAL_COLS, TACTICAL_ROWS
from himari.training.dataset import (_DTYPES, PER_BAR, STRATEGIC_NEUTRAL, SYNERGY_TYPES,
                                     BarDataset, SourceSpec)


def open_feed(spec: SourceSpec, cfg: Any) -> Any:
    if spec.kind == "synthetic":
        from himari.daemon.feeds.synthetic import SyntheticFeed

        return SyntheticFeed(cfg.feed, spec.instrument_id or "SYN")
    from himari.daemon.catalog import open_cached  # the replay's path: streamed, cataloged

    return open_cached(spec.path, cfg.feed, spec.instrument_id or Path(spec.path).stem)


class _Recorder:
    """Bus subscriber: keeps every published matrix row and the synergy of the current bar."""

    def __init__(self) -> None:
        self.tac_rows: list[np.ndarray] = [np.zeros((TACTICAL_ROWS - 1, TACTICAL_COLS), np.float32)]
        self.strat_rows: list[np.ndarray] = [np.tile(STRATEGIC_NEUTRAL, (STRATEGIC_ROWS, 1))]
        self.n_tac = TACTICAL_ROWS - 1
        self.n_strat = STRATEGIC_ROWS  # index STRATEGIC_ROWS - 1 = the all-neutral window
        self.tac: Any = None
        self.strat: Any = None
        self.synergy: Any = None

    def on_matrix(self, ev: Any) -> None:
        if ev.kind == "tactical":
            self.tac_rows.append(np.asarray(ev.values[-1:], np.float32))
            self.n_tac += 1
            self.tac = ev
        elif ev.kind == "strategic":
            self.strat_rows.append(np.asarray(ev.values[-1:], np.float32))
            self.n_strat += 1
            self.strat = ev

    def on_synergy(self, ev: Any) -> None:
        if self.synergy is None or ev.confidence > self.synergy.confidence:
            self.synergy = ev


def run_pipeline(spec: SourceSpec, cfg: Any, check: bool = False) -> BarDataset:
    """Feed -> 5-minute bar kernel -> MatrixStage (+ synergy detector) on a private bus."""
    from himari.daemon import plugins
    from himari.daemon.bars import BarBuilder, BarSpec
    from himari.daemon.bus import Bus
    from himari.daemon.events import FeatureMatrix, SynergyDetected
    from himari.daemon.ids import IdSource
    from himari.daemon.matrices.stage import MatrixStage

    feed = open_feed(spec, cfg)
    inst = feed.instrument
    if spec.instrument_id and inst.id != spec.instrument_id:
        inst = msgspec.structs.replace(inst, id=spec.instrument_id)
    tick = float(inst.tick_size)
    lot = float(inst.lot_size)
    ids = IdSource("D")
    bus = Bus()
    stage = MatrixStage(bus, ids, inst, cfg.matrices.tactical, cfg.matrices.strategic,
                        plugins.synergy_detector(cfg, ids))
    rec = _Recorder()
    bus.subscribe(FeatureMatrix, rec.on_matrix, name="dataset.matrix", order=100)
    bus.subscribe(SynergyDetected, rec.on_synergy, name="dataset.synergy", order=100)
    builder = BarBuilder(BarSpec.parse("5m"), inst.id, ids)
    cols: dict[str, list[Any]] = {k: [] for k in PER_BAR}
    for batch in feed.batches():
        if len(batch) == 0:
            continue
        if batch.instrument_id != inst.id:
            batch = msgspec.structs.replace(batch, instrument_id=inst.id)
        builder.start_batch(batch)  # every 5-minute close of the batch in one kernel call
        while builder.pending_gap >= 0:
            bar = builder.take_bar()
            if bar is None:
                continue
            rec.tac = rec.synergy = None
            stage.on_bar(bar)
            if rec.tac is None:  # dropped by the stage (out of order): no decision on it
                continue
            _append_bar(cols, bar, rec, tick, lot, check)
    builder.finish()
    if bus.handler_errors:
        raise RuntimeError(f"{spec.name}: pipeline handlers failed: {dict(bus.handler_errors)}")
    arrays = {k: np.asarray(v, dtype=_DTYPES[k]) for k, v in cols.items()}
    meta = {"sources": [{"name": spec.name, "kind": spec.kind, "path": spec.path,
                         "label": spec.label or getattr(feed, "describe", ""),
                         "feed": getattr(feed, "describe", ""), "bars": len(arrays["ts_ns"]),
                         "synergies": int((arrays["synergy_type"] > 0).sum()),
                         "ready": int((arrays["tactical_ready"] & arrays["strategic_ready"]).sum()),
                         "stage": stage.stats()}]}
    return BarDataset(arrays, np.concatenate(rec.tac_rows), np.concatenate(rec.strat_rows), meta)


def _append_bar(cols: dict[str, list[Any]], bar: Any, rec: _Recorder, tick: float, lot: float,
                check: bool) -> None:
    tac, strat, syn = rec.tac, rec.strat, rec.synergy
    cols["ts_ns"].append(bar.ts_close)
    cols["open"].append(bar.open * tick)
    cols["high"].append(bar.high * tick)
    cols["low"].append(bar.low * tick)
    cols["close"].append(bar.close * tick)
    cols["volume"].append(bar.volume * lot)
    cols["atr14"].append(tac.context.get("atr14", 0.0))
    vol = strat.context.get("volatility_30", 1.0) if strat is not None else 1.0
    valid = strat is not None and strat.context.get("volatility_30_valid", 0.0) > 0
    cols["volatility_30"].append(vol if valid else 1.0)
    cols["tactical_ready"].append(tac.ready)
    cols["strategic_ready"].append(strat is not None and strat.ready)
    cols["synergy_type"].append(SYNERGY_TYPES.get(syn.synergy_type, 0) if syn else 0)
    cols["synergy_dir"].append(syn.direction if syn else 0)
    cols["synergy_conf"].append(syn.confidence if syn else 0.0)
    cols["segment"].append(0)
    cols["tac_index"].append(rec.n_tac - 1)
    cols["strat_index"].append(rec.n_strat - 1)
    if check and len(cols["ts_ns"]) % 7 == 0:  # tests: stored rows rebuild the published matrices
        t = np.concatenate(rec.tac_rows)[rec.n_tac - TACTICAL_ROWS:rec.n_tac]
        if not np.array_equal(t, tac.values):
            raise AssertionError(f"tactical window differs at bar {bar.ts_close}")
        if strat is not None:
            s = np.concatenate(rec.strat_rows)[rec.n_strat - STRATEGIC_ROWS:rec.n_strat]
            if not np.array_equal(s, strat.values):
                raise AssertionError(f"strategic window differs at bar {bar.ts_close}")
