"""The trading core, wired once for every mode: what a bar triggers, in one place.

`build_core` composes the components that do not care whether they run in a replay, against the
simulator on the wall clock, or against a remote broker: the bus, the cache, the execution client
(a plug-in), the order manager, pre-trade risk, the portfolio, one strategy instance per
instrument, the feature matrices and the decision records. A runner (`runners/replay.py`,
`runners/live.py`) owns the clock and the data, and drives this core.

Hot-path handlers, in the order the bus runs them (lower `order` first; the test
tests/core/test_engine_wiring.py keeps this table true):

    Bar             10 portfolio (ATR, mark, equity -> risk, equity curve)
                    20 matrices (tactical / strategic rows, synergy; ready matrices only)
                    50 <strategy>.bar (decides; publishes Decision, OrderIntent)
    OrderIntent     10 risk_gate (verdict; an approved intent goes to the order manager)
    OrderSubmitted   0 risk_gate.working (working orders count against limits at once)
                    50 <strategy>.submitted
    RiskVerdict     50 <strategy>.verdict (a refusal drops the target)
    OrderFilled / OrderCancelled / OrderRejected / OrderExpired
                    50 <strategy>.order_done
    PositionUpdate  10 portfolio.trades (closed round trips -> risk's Kelly inputs)
                    50 <strategy>.position (the next intent of a flip)
    Fill           200 report.fills
    slow queue         decision records (decisions.jsonl): decisions, intents, verdicts, order
                       events, fills, synergies, execution discrepancies
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from himari.daemon import bars as bars_mod
from himari.daemon import plugins
from himari.daemon.bars import BarBuilder, BarSpec, BarSpecError
from himari.daemon.bus import Bus
from himari.daemon.cache import Cache
from himari.daemon.config import HimariConfig
from himari.daemon.configbase import ConfigError
from himari.daemon.events import Bar, Fill, TickBatch
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.orders.journal import Journal
from himari.daemon.orders.manager import OrderManager
from himari.daemon.pipeline import RiskGate
from himari.daemon.portfolio import Portfolio
from himari.daemon.recorder import DecisionRecorder
from himari.daemon.risk.engine import RiskEngine
from himari.daemon.risk.portfolio import PortfolioRisk
from himari.daemon.stagetimer import StageTimer

log = structlog.get_logger("himari.engine")

MATRIX_BAR_SPEC = "5m"


@dataclass
class TradingCore:
    cfg: HimariConfig
    instruments: dict[str, Instrument]
    bus: Bus
    clock: Any
    ids: IdSource
    timer: StageTimer
    cache: Cache
    client: Any  # the execution client
    om: OrderManager
    risk: PortfolioRisk
    gate: RiskGate
    portfolio: Portfolio
    strategies: list[Any]
    builders: dict[str, list[BarBuilder]]
    matrices: list[Any]
    recorder: DecisionRecorder | None
    journal: Journal | None
    primary_spec: str
    fills: list[Fill] = field(default_factory=list)

    @property
    def risks(self) -> dict[str, RiskEngine]:
        return self.risk.engines

    @property
    def matching(self) -> Any:
        """What the runner drives with ticks: the simulated exchange's client, which forwards to
        its matching engine and also stops at the ticks where a delayed acknowledgement or fill
        is due; None for a remote venue (its fills arrive over the network)."""
        return self.client if hasattr(self.client, "next_execution") else None

    def on_tick(self, instrument_id: str, price_ticks: int, ts_ns: int) -> None:
        """The last tick seen of an instrument (called by the runner before each bar it publishes
        and at the end of each batch): the reference price and the stale-data clock."""
        self.cache.on_tick(instrument_id, price_ticks, ts_ns)
        self.risk.on_last_tick(instrument_id, price_ticks, ts_ns)

    def restore(self, state: Any) -> None:
        """Adopt the state rebuilt from the journal, before any order (paper and live)."""
        unknown = sorted(set(state.instruments) - set(self.instruments))
        if unknown:
            from himari.daemon.statedir import StartupError

            raise StartupError(f"the state directory's journal holds orders or positions of "
                               f"{', '.join(unknown)}, which this config does not trade; "
                               f"configure them or use another state directory")
        self.om.restore(state)
        self.portfolio.restored()
        self.gate.resync_working()

    def warm_matrices(self, history: Iterable[TickBatch]) -> int:
        """Build 5-minute bars from history ticks and run them through the matrices without
        publishing (the MLMI neighbour store and every rolling state warm up; no synergy comes
        from history). Returns the bars used; the ticks are read even when matrices are off."""
        ids = IdSource("H")
        builders = {i: BarBuilder(BarSpec.parse(MATRIX_BAR_SPEC), i, ids) for i in self.instruments}
        bars: dict[str, list[Bar]] = {i: [] for i in builders}
        for batch in history:
            if not self.matrices:
                continue
            b = builders[batch.instrument_id]
            b.start_batch(batch)
            while b.pending_gap >= 0:
                bar = b.take_bar()
                if bar is not None:
                    bars[batch.instrument_id].append(bar)
        used = sum(stage.prewarm(bars[stage.instrument.id]) for stage in self.matrices)
        for stage in self.matrices:
            got = len(bars[stage.instrument.id])
            if got and not stage.ready:  # history was given but too short: say how short
                log.warning("matrices_not_ready_after_history", instrument=stage.instrument.id,
                            bars=got, needed=stage.bars_needed())
        return used

    def warmup(self) -> None:
        """Compile every kernel before the session reports ready (Numba caches them on disk)."""
        bars_mod.warmup()
        self.risk.warmup()
        for obj in (self.matching, *self.matrices):
            fn = getattr(obj, "warmup", None)
            if fn is not None:
                fn()

    def start(self) -> None:
        for strategy in self.strategies:
            strategy.on_start()

    def stop_strategies(self) -> None:
        for strategy in self.strategies:
            strategy.on_stop()


def build_core(cfg: HimariConfig, instruments: dict[str, Instrument], clock: Any, ids: IdSource,
               *, out_dir: Path | None, journal: Journal | None = None) -> TradingCore:
    timer = StageTimer()
    bus = Bus(timer=timer)
    cache = Cache(instruments)

    venue_mod = plugins.venue_module(cfg)
    client = venue_mod.build(plugins.venue_config(cfg), instruments, clock=clock,
                             session=ids.session)
    om = OrderManager(bus, clock, ids, instruments, client, journal=journal)
    cache.attach_orders(om)  # the manager writes orders and positions; everyone reads the cache

    risk = PortfolioRisk(cfg.risk, instruments.values(), ids)  # one engine per instrument
    gate = RiskGate(bus, risk, om, timer)
    gate.market_open = lambda: getattr(client, "market_open", None)  # a broker's clock, if any
    gate.attach()

    strategy_mod = plugins.strategy_module(cfg)
    strategy_cfg = plugins.strategy_config(cfg)
    strategies = []
    for inst_id, inst in instruments.items():
        sid = strategy_mod.__name__.rsplit(".", 1)[-1] if cfg.strategy.name not in plugins.STRATEGIES \
            else cfg.strategy.name
        if len(instruments) > 1:
            sid = f"{sid}.{inst_id}"
        strategies.append(strategy_mod.build(strategy_cfg, instrument=inst, bus=bus, clock=clock,
                                             ids=ids, cache=cache, strategy_id=sid))

    specs = list(dict.fromkeys(list(strategies[0].subscriptions)
                               + ([MATRIX_BAR_SPEC] if cfg.matrices.enabled else [])))
    try:
        builders = {inst_id: [BarBuilder(BarSpec.parse(s), inst_id, ids) for s in specs]
                    for inst_id in instruments}
    except BarSpecError as exc:
        raise ConfigError("strategy.params.bar_spec", specs, str(exc)) from None

    portfolio = Portfolio(bus, cache, starting_cash=cfg.account.starting_cash,
                          currency=cfg.account.currency, fx_rates=dict(cfg.account.fx_rates),
                          curve_spec=specs[0], risk=risk)

    matrices = []
    if cfg.matrices.enabled:
        from himari.daemon.matrices.stage import MatrixStage

        for inst in instruments.values():
            matrices.append(MatrixStage(bus, ids, inst, cfg.matrices.tactical,
                                        cfg.matrices.strategic, plugins.synergy_detector(cfg, ids)))

    core = TradingCore(cfg, instruments, bus, clock, ids, timer, cache, client, om, risk, gate,
                       portfolio, strategies, builders, matrices, None, journal, specs[0])
    bus.subscribe(Fill, core.fills.append, name="report.fills", order=200)
    if cfg.report.decision_log and out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        core.recorder = DecisionRecorder(bus, out_dir / "decisions.jsonl")
    return core
