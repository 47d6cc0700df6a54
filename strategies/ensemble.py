"""The `ensemble` strategy: the learned decision engine (decision/engine.py) trading one instrument.

It follows the matrix stage's events for its instrument and decides once per closed 5-minute bar,
on the `Bar` itself (order 50), i.e. after the matrix stage (order 20) has published everything of
that bar: its tactical matrix, a strategic matrix when a 30-minute bar closed, a synergy. So a
decision sees the same "latest strategic matrix at or before the bar" as the training dataset
(training/dataset.py), never the previous one at a 30-minute boundary. Per bar:
1. a new ready strategic matrix refreshes the strategic ensemble that sets the regime (with the
   bar's synergy context, as training labels regimes);
2. the ensemble decides (only on a ready tactical matrix and, with `wait_for_strategic`, once a
   ready strategic matrix exists: the agents were trained on such bars only);
3. the bar's strongest synergy, when accepted (confidence >= 0.5), runs the strategic ensemble; a
   decision that proceeds lets the tactical team vote on the next 6 five-minute bars.
BUY / SELL aim for +1 / -1 unit of `quantity`; the opposite action on an open position closes it
(no reversal in one step); HOLD keeps the aim (spec decision.md section 0). Every decision is
published as a `Decision` with the per-agent breakdown in `details` (the record in
decisions.jsonl carries `agents`, `disagreement`, `scale`, ...), whether or not the target moves;
orders follow only a new target (strategies/base.py).

Config (`strategy.params`): `agents` (default: every registered agent and both teams), `required`
(refuse to start, exit 2, when one is unavailable), `checkpoint_dir` ("" = the shipped
checkpoints), `quantity`, `time_budget_us` (default: off in replay, 500 us in paper / live, so a
replay's decisions never depend on machine speed), `fee_bps` (cost per unit of position changed in
r~: the voting's shadow returns, the agents' `observe` rewards and the drawdown slot; 2 = the
training env's 1 bp fee + 1 bp slippage), `wait_for_strategic` (default true).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import msgspec
import structlog

from himari.daemon.bus import Bus
from himari.daemon.cache import Cache
from himari.daemon.clock import Clock, ReplayClock
from himari.daemon.configbase import ConfigError, check_range
from himari.daemon.events import Bar, Decision, FeatureMatrix, SynergyDetected
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.decision.engine import STRATEGIC, TACTICAL, DecisionEngine, EngineConfig
from himari.decision.guard import DEFAULT_BUDGET_US
from himari.decision.layout import BUY, SELL
from himari.decision.registry import AGENTS, ALL_VOTERS, RegistryError, checkpoint_dir, load_all
from himari.strategies.base import Strategy, quantity_lots

log = structlog.get_logger("himari.strategy.ensemble")
BAR_SPEC = "5m"  # the tactical matrix's bars (daemon/matrices/stage.py)
NEEDS_MATRICES = True  # decides on FeatureMatrix events: matrices.enabled = false refuses to start


class EnsembleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    agents: list[str] = msgspec.field(default_factory=lambda: list(ALL_VOTERS))
    required: list[str] = []
    checkpoint_dir: str = ""
    quantity: Decimal = Decimal(1)
    time_budget_us: int | None = None  # None: 0 (off) in replay, DEFAULT_BUDGET_US otherwise
    fee_bps: float = 2.0  # 1 bp fee + 1 bp slippage: training/env.py's cost per unit changed
    wait_for_strategic: bool = True

    def __post_init__(self) -> None:
        known = set(ALL_VOTERS)
        for key, names in (("strategy.params.agents", self.agents),
                           ("strategy.params.required", self.required)):
            bad = [n for n in names if n not in known]
            if bad:
                raise ConfigError(key, bad, f"names from {', '.join(ALL_VOTERS)}")
        if not self.agents:
            raise ConfigError("strategy.params.agents", self.agents, "at least one agent")
        missing = [n for n in self.required if n not in self.agents]
        if missing:
            raise ConfigError("strategy.params.required", missing,
                              "agents that are also listed in strategy.params.agents")
        if not self.quantity.is_finite() or self.quantity <= 0:
            raise ConfigError("strategy.params.quantity", str(self.quantity), "a positive number")
        if self.time_budget_us is not None:
            check_range("strategy.params.time_budget_us", self.time_budget_us, 0, 10_000_000)
        check_range("strategy.params.fee_bps", self.fee_bps, 0.0, 1000.0)


class PositionTracker:
    """x's position slots as training/env.py builds them, from the strategy's own position: entry
    at the close of the bar the position was decided on, bars since then, and the drawdown buffer
    1 - (peak - equity) / 0.05 of the cumulative per-unit net return (fee on each change),
    restarted every `episode_bars` bars as the env's episodes are."""

    def __init__(self, fee: float, max_drawdown: float = 0.05, episode_bars: int = 1024) -> None:
        self.fee, self.max_dd, self.episode_bars = fee, max_drawdown, episode_bars
        self.sign = 0
        self.close = math.nan
        self.entry = 0.0
        self.bars = 0
        self.equity = self.peak = 0.0
        self.steps = 0

    def update(self, position: int, close: float, atr: float) -> tuple[float, int, float]:
        """At a decision bar: (unrealised PnL / ATR, bars in position, drawdown buffer)."""
        sign = (position > 0) - (position < 0)
        if math.isfinite(self.close) and self.close > 0 and math.isfinite(close):
            self.equity += sign * (close - self.close) / self.close \
                - self.fee * abs(sign - self.sign)
            self.peak = max(self.peak, self.equity)
            if sign != 0 and sign != self.sign:
                self.entry, self.bars = self.close, 0
            self.bars += 1
            self.steps += 1
            if self.steps % self.episode_bars == 0:
                self.equity = self.peak = 0.0
        if math.isfinite(close):
            self.close = close
        self.sign = sign
        upnl = (close - self.entry) * sign / atr if sign and atr > 0 else 0.0
        buffer = 1.0 - (self.peak - self.equity) / self.max_dd if self.max_dd > 0 else 1.0
        return (upnl if math.isfinite(upnl) else 0.0), (self.bars if sign else 0), buffer


class EnsembleStrategy(Strategy):
    def __init__(self, engine: DecisionEngine, instrument_id: str, lots: int, bus: Bus,
                 clock: Clock, ids: IdSource, cache: Cache | None = None,
                 strategy_id: str = "ensemble", disabled: dict[str, str] | None = None,
                 wait_for_strategic: bool = True) -> None:
        super().__init__(strategy_id, instrument_id, bus, clock, ids, cache)
        self.engine = engine
        self.lots = lots
        self.disabled = dict(disabled or {})
        self.wait_for_strategic = wait_for_strategic
        self._strategic: Any = None       # latest strategic matrix values (ready or not)
        self._strategic_ready = False
        self._new_strategic: FeatureMatrix | None = None  # arrived during the current bar
        self._tactical: FeatureMatrix | None = None
        self._synergy: SynergyDetected | None = None
        self._vol30 = 1.0
        self._pos_state = PositionTracker(engine.cfg.fee)
        self._last_source = ""
        self.errors = 0
        self.warmup_bars = 0
        self.actions = {"SELL": 0, "HOLD": 0, "BUY": 0}

    @property
    def subscriptions(self) -> list[str]:
        return [BAR_SPEC]

    def on_start(self, order: int = 50) -> None:
        super().on_start(order)
        self.engine.reset()
        sub = self.bus.subscribe
        sub(FeatureMatrix, self.on_matrix, name=f"{self.strategy_id}.matrix", order=order)
        sub(SynergyDetected, self.on_synergy, name=f"{self.strategy_id}.synergy", order=order)
        sub(Bar, self.on_bar, name=f"{self.strategy_id}.bar", order=order)

    def on_matrix(self, ev: FeatureMatrix) -> None:
        if ev.instrument_id != self.instrument_id:
            return
        if ev.kind == "tactical":
            self._tactical = ev
        elif ev.kind == "strategic":
            self._strategic = ev.values
            ctx = ev.context
            self._vol30 = (float(ctx.get("volatility_30", 1.0))
                           if ctx.get("volatility_30_valid", 0.0) > 0 else 1.0)
            if ev.ready:
                self._strategic_ready = True
                self._new_strategic = ev

    def on_synergy(self, ev: SynergyDetected) -> None:
        if ev.instrument_id == self.instrument_id and (
                self._synergy is None or ev.confidence > self._synergy.confidence):
            self._synergy = ev  # the strongest of the bar, as the training dataset keeps it

    def on_bar(self, bar: Bar) -> None:
        """End of a 5-minute bar's processing: regime, decision, then the bar's synergy."""
        if bar.spec != BAR_SPEC or bar.instrument_id != self.instrument_id:
            return
        tac, syn, new_strat = self._tactical, self._synergy, self._new_strategic
        self._tactical = self._synergy = self._new_strategic = None
        engine = self.engine
        if new_strat is not None:
            engine.on_strategic(new_strat.ts_ns, new_strat.values, self._vol30,
                                syn.confidence if syn is not None else 0.0,
                                syn.direction if syn is not None else 0)
        if tac is not None and tac.bar_id == bar.event_id and tac.ready:
            if self._strategic_ready or not self.wait_for_strategic:
                self._decide(tac)
            else:
                self.warmup_bars += 1
        if syn is not None:
            kind = syn.synergy_type.rsplit("_", 1)[-1]
            engine.on_synergy(syn.ts_ns, self._strategic, int(kind) if kind.isdigit() else 0,
                              syn.direction, syn.confidence)

    def _decide(self, ev: FeatureMatrix) -> None:
        ctx = ev.context
        close = float(ctx.get("close", float("nan")))
        pos = self.position
        upnl_atr, bars_in, dd_buffer = self._pos_state.update(pos, close,
                                                              float(ctx.get("atr14", 0.0)))
        try:
            dec = self.engine.decide(ev.ts_ns, ev.values, self._strategic, close=close,
                                     position=pos, unrealized_atr=upnl_atr,
                                     bars_in_position=bars_in, drawdown_buffer=dd_buffer)
        except Exception:  # noqa: BLE001 - an engine bug must not stop the session: hold
            self.errors += 1
            log.exception("ensemble_decide_failed", bar_id=ev.bar_id)
            return
        self.actions[dec.action_name] += 1
        aim = self._target if self._target is not None else pos
        if dec.action == BUY:
            target = 0 if aim < 0 else self.lots
        elif dec.action == SELL:
            target = 0 if aim > 0 else -self.lots
        else:
            target = aim
        self._last_source = ev.bar_id
        self._publish(target, ev.bar_id, dec.reason, dec.confidence, dec.details())

    def _publish(self, target: int, source_id: str, reason: str, confidence: float,
                 details: dict[str, Any]) -> None:
        """Strategy.order_towards, but every decision is recorded (with its breakdown), and only
        a new target leads to orders."""
        moves = not (target == self._target or (self._target is None and target == self.position
                                                and not self._in_flight))
        decision = Decision(event_id=self.ids.next("D"), ts_ns=self.clock.now_ns(),
                            strategy_id=self.strategy_id, instrument_id=self.instrument_id,
                            source_id=source_id, target_position=target, confidence=confidence,
                            reason=reason, details=details)
        self.decisions += 1
        self.bus.publish(decision)
        if moves:
            self._target = target
            self._decision_id = decision.event_id
            self._intent_fields = {}
            self._act()

    def on_stop(self) -> None:
        self.flatten(self._last_source or "stop")

    def report(self) -> dict[str, Any]:
        """For report.json's "strategy" section: agents used / disabled, counters, guard stats."""
        return {"agents": list(self.engine.names), "disabled": self.disabled,
                "actions": dict(self.actions), "errors": self.errors,
                "warmup_bars": self.warmup_bars, **self.engine.stats()}


def _crisis_threshold(loaded: dict[str, Any]) -> float | None:
    """The training crisis threshold (95th percentile of volatility_30, decision/regime.py) from
    the checkpoints' metadata (`crisis_threshold`, top level or under `data`); None = no crisis
    regime (no checkpoint says)."""
    for obj in loaded.values():
        meta = getattr(obj, "meta", None) or {}
        for where in (meta, meta.get("data") or {}):
            value = where.get("crisis_threshold") if isinstance(where, dict) else None
            if isinstance(value, (int, float)) and value == value:
                return float(value)
    return None


# ---- plugin interface (daemon/plugins.py)

CONFIG = EnsembleConfig


def build(cfg: EnsembleConfig, *, instrument: Instrument, bus: Bus, clock: Clock,
          ids: IdSource, cache: Cache | None = None,
          strategy_id: str = "ensemble") -> EnsembleStrategy:
    lots = quantity_lots(instrument, cfg.quantity)
    directory = checkpoint_dir(cfg.checkpoint_dir)
    # The strategic team is loaded even when it does not vote: it sets the regime (spec 4.0).
    extra = [STRATEGIC] if STRATEGIC not in cfg.agents else []
    try:
        loaded, disabled = load_all(cfg.agents, directory, cfg.required, extra=extra)
    except RegistryError as exc:
        key = {"required": "strategy.params.required", "unknown": "strategy.params.agents"}.get(
            exc.reason, "strategy.params.checkpoint_dir")
        raise ConfigError(key, exc.name, str(exc)) from None
    budget = cfg.time_budget_us
    if budget is None:
        budget = 0 if isinstance(clock, ReplayClock) else DEFAULT_BUDGET_US
    strategic_team = loaded.get(STRATEGIC)
    crisis = _crisis_threshold(loaded)
    engine_cfg = EngineConfig(time_budget_us=budget, fee=cfg.fee_bps / 10_000.0,
                              crisis_volatility=crisis)
    agents = {n: a for n, a in loaded.items() if n in AGENTS}
    voters = [n for n in cfg.agents if n in loaded]
    if not voters:
        raise ConfigError("strategy.params.agents", cfg.agents,
                          f"at least one available agent (checkpoints in {directory}); "
                          f"unavailable: {disabled}")
    engine = DecisionEngine(agents, voters=voters,
                            tactical_team=loaded.get(TACTICAL),
                            strategic_team=strategic_team,
                            cfg=engine_cfg, instrument_id=instrument.id)
    engine.warm_up()  # compile / first calls now, in start-up, not in the first decision
    log.info("ensemble_ready", voters=voters, disabled=sorted(disabled), time_budget_us=budget,
             checkpoint_dir=str(directory))
    return EnsembleStrategy(engine, instrument.id, lots, bus, clock, ids, cache, strategy_id,
                            disabled, cfg.wait_for_strategic)
