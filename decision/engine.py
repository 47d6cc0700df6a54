"""The ensemble decision engine at run time (spec decision.md section 1, D7-D9, 7).

Per instrument, on each closed 5-minute bar (event time) `decide(...)`:
1. checks the matrices (`guard.check_matrix`): a bad tactical matrix gives a neutral HOLD with the
   reason; a bad strategic matrix is treated as absent;
2. credits every voter's shadow position with the step that just closed (D7) and hands the agents
   the ensemble's own reward of that step (`Agent.observe`);
3. sets the regime (crisis when volatility_30 reaches the training 95th percentile, else the
   strategic ensemble's argmax when its confidence > 0.65, else neutral) and D9's target Sharpe;
4. builds x once, asks every active D-agent (guarded: failures, time budget, bench), the tactical
   team when a strategic go-ahead is valid (6 five-minute bars after an accepted synergy event
   with confidence >= 0.5 whose strategic decision proceeds), and the strategic ensemble while its
   decision is valid;
5. combines them with D7 weights renormalised over the voters present, D8 scaling and abstention.

The result is one `EnsembleDecision`; its per-agent breakdown is built only when asked for
(`agents()` / `details()`), so the hot path allocates a handful of small objects per decision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
import numpy as np

from himari.decision.agent import Agent, AgentInput
from himari.decision.aggregate import StrategicResult, aggregate_tactical, strategic_ensemble
from himari.decision.features import strategic_inputs
from himari.decision.features_rt import fill_vector, new_vector
from himari.decision.guard import (BENCH_AFTER, COOLDOWN_NS, AgentGuard, InputError, check_matrix,
                                   check_probs)
from himari.decision.layout import (HOLD, STRATEGIC_COLS, STRATEGIC_ROWS, TACTICAL_COLS,
                                    TACTICAL_ROWS)
from himari.decision.regime import regime_from
from himari.decision.result import (_BENCHED, _ENSEMBLE_REASON, _FAILED, _OK, _SKIPPED, _TIMEOUT,
                                    EnsembleDecision, _argmax3)
from himari.decision.voting import SharpeVoting, target_sharpe

TACTICAL, STRATEGIC = "tactical", "strategic"


class TacticalTeamLike(Protocol):
    def probs(self, tactical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (FVG, momentum, entry) probabilities, each (3,) in canonical order."""


class StrategicTeamLike(Protocol):
    def probs(self, mlmi_in: np.ndarray, nwrqk_in: np.ndarray, regime_in: np.ndarray,
              volatility_30: float) -> tuple[np.ndarray, np.ndarray]:
        """-> (3 agents x 3 probs: MLMI, NW-RQK, regime; ensemble weights softmax(omega) (3,)).
        Inputs from `decision.features.strategic_inputs` (spec 3.1)."""


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    time_budget_us: int = 0          # 0 = off (replay); see decision/guard.py
    bench_after: int = BENCH_AFTER
    cooldown_ns: int = COOLDOWN_NS
    fee: float = 2e-4                # per unit of turnover: 1 bp fee + 1 bp slippage, as the env
    go_ahead_bars: int = 6
    synergy_min_confidence: float = 0.5
    crisis_volatility: float | None = None  # volatility_30 95th training percentile; None: never


class DecisionEngine:
    def __init__(self, agents: dict[str, Agent], *, voters: Sequence[str] | None = None,
                 tactical_team: TacticalTeamLike | None = None,
                 strategic_team: StrategicTeamLike | None = None,
                 cfg: EngineConfig | None = None, instrument_id: str = "",
                 feature_fn: Callable[..., np.ndarray] | None = None) -> None:
        """`agents`: loaded D-agents by name. `voters`: who votes, in order (default: every agent,
        then "tactical" / "strategic" when that team is given). A team not in `voters` still runs
        for its side job (the strategic team sets the regime)."""
        self.cfg = cfg or EngineConfig()
        self.instrument_id = instrument_id
        self.agents = dict(agents)
        self.tactical_team = tactical_team
        self.strategic_team = strategic_team
        if voters is None:
            voters = [*self.agents, *([TACTICAL] if tactical_team is not None else []),
                      *([STRATEGIC] if strategic_team is not None else [])]
        for v in voters:
            if v not in self.agents and not (v == TACTICAL and tactical_team is not None) \
                    and not (v == STRATEGIC and strategic_team is not None):
                raise ValueError(f"voter {v!r} has no loaded agent or team")
        self.names = tuple(voters)
        n = len(self.names)
        self._agent_list = [self.agents.get(nm) for nm in self.names]
        self._idx_tac = self.names.index(TACTICAL) if TACTICAL in self.names else -1
        self._idx_str = self.names.index(STRATEGIC) if STRATEGIC in self.names else -1
        c = self.cfg
        self.guards = [AgentGuard(nm, c.time_budget_us, c.bench_after, c.cooldown_ns)
                       for nm in self.names]
        self.team_guards = {TACTICAL: AgentGuard(TACTICAL, 0, c.bench_after, c.cooldown_ns),
                            STRATEGIC: AgentGuard(STRATEGIC, 0, c.bench_after, c.cooldown_ns)}
        self.voting = SharpeVoting(self.names, fee=c.fee)
        self.feature_fn = feature_fn or fill_vector
        self._n = n
        self._zero3 = [0.0, 0.0, 0.0]
        self._p = np.zeros((n, 3))   # the vote's inputs, reused (the breakdown keeps lists)
        self._m = np.zeros(n)
        self.counters = {"decisions": 0, "invalid_tactical": 0, "invalid_strategic": 0,
                         "abstained": 0, "no_voters": 0, "synergies_accepted": 0,
                         "synergies_ignored": 0, "go_aheads": 0, "observe_errors": 0}
        self.reset()

    def reset(self) -> None:
        """Session start: clear recurrent state, the go-ahead and the previous step."""
        for agent in self.agents.values():
            agent.reset()
        self._strategic_result: StrategicResult | None = None  # latest, for the regime
        self._go_ahead: StrategicResult | None = None
        self._go_synergy = (0, 0)  # type, direction
        self._go_left = 0
        self._vol30 = 1.0
        self._regime = self._regime_now()
        self._strat_seen: Any = None
        self._strat_ok: np.ndarray | None = None
        self._prev_inp: AgentInput | None = None
        self._prev_action = HOLD
        self._prev_close: float | None = None
        self._prev_pos = 0

    def warm_up(self) -> None:
        """One call of every agent and team on neutral inputs, then `reset()`: JIT compilation
        and first-call costs land in start-up, not in the first live decision (a failure here is
        left to the guarded calls later)."""
        from himari.decision.features import STRATEGIC_NEUTRAL

        tac = np.zeros((TACTICAL_ROWS, TACTICAL_COLS), np.float32)
        strat = np.tile(STRATEGIC_NEUTRAL, (STRATEGIC_ROWS, 1)).astype(np.float32)
        # The matrix stage publishes read-only arrays, another Numba type than writable ones:
        # compile both, and the guard's scan and the vote, so nothing compiles on a live bar.
        ro_tac, ro_strat = tac.copy(), strat.copy()
        ro_tac.flags.writeable = False
        ro_strat.flags.writeable = False
        for t, m in ((tac, strat), (ro_tac, ro_strat)):
            check_matrix(t, TACTICAL_ROWS, TACTICAL_COLS, TACTICAL)
            check_matrix(m, STRATEGIC_ROWS, STRATEGIC_COLS, STRATEGIC)
            x = fill_vector(new_vector(), 0, t, m, 2, 2.0, 0, 0.0, 0, 1.0)
            inp = AgentInput(ts_ns=0, instrument_id=self.instrument_id, x=x, tactical=t,
                             strategic=m, regime=2, target_sharpe=2.0, position=0)
            for agent in self.agents.values():
                try:
                    agent.act(inp)
                    agent.observe(inp, HOLD, 0.0)
                except Exception:  # noqa: BLE001 - counted when it happens in a real decision
                    pass
            for call in (lambda: self.tactical_team.probs(t) if self.tactical_team else None,
                         lambda: self.strategic_team.probs(*strategic_inputs(m, None, 0), 1.0)
                         if self.strategic_team else None):
                try:
                    call()
                except Exception:  # noqa: BLE001
                    pass
        n = len(self.names)
        self.voting.combine_arrays(np.full((n, 3), 1.0 / 3.0), np.ones(n))
        self.reset()

    # ---- 30-minute side: strategic matrix, synergy events

    def on_strategic(self, ts_ns: int, values: Any, volatility_30: float = 1.0,
                     synergy_conf: float = 0.0, synergy_dir: int = 0) -> None:
        """A new ready strategic matrix (with the synergy of its bar, if any): refresh the
        strategic ensemble that sets the regime (spec 4.0), as training labels it."""
        self._vol30 = volatility_30 if math.isfinite(volatility_30) else 1.0
        try:
            m = check_matrix(values, STRATEGIC_ROWS, STRATEGIC_COLS, STRATEGIC)
        except InputError:
            self.counters["invalid_strategic"] += 1
            self._strategic_result = None
        else:
            self._strategic_result = self._run_strategic(ts_ns, m, synergy_conf, synergy_dir)
        self._regime = self._regime_now()

    def on_synergy(self, ts_ns: int, strategic: Any, synergy_type: int, direction: int,
                   confidence: float) -> StrategicResult | None:
        """An accepted synergy (confidence >= 0.5) runs the strategic ensemble with its context;
        its decision is valid for the next `go_ahead_bars` decisions."""
        if not confidence >= self.cfg.synergy_min_confidence:
            self.counters["synergies_ignored"] += 1
            return None
        self.counters["synergies_accepted"] += 1
        try:
            m = check_matrix(strategic, STRATEGIC_ROWS, STRATEGIC_COLS, STRATEGIC)
        except InputError:
            self.counters["invalid_strategic"] += 1
            return None
        res = self._run_strategic(ts_ns, m, confidence, direction)
        if res is None:
            return None
        self._go_ahead = res
        self._go_synergy = (int(synergy_type), int(direction))
        self._go_left = self.cfg.go_ahead_bars
        if res.should_proceed:
            self.counters["go_aheads"] += 1
        return res

    def _run_strategic(self, ts_ns: int, m: np.ndarray, syn_conf: float,
                       syn_dir: int) -> StrategicResult | None:
        team = self.strategic_team
        guard = self.team_guards[STRATEGIC]
        if team is None or not guard.available(ts_ns):
            return None
        try:
            mlmi, nwrqk, reg = strategic_inputs(m, (syn_dir, syn_conf), ts_ns)
            p, w = team.probs(mlmi, nwrqk, reg, self._vol30)
            res = strategic_ensemble(p, None, w)
            if not (math.isfinite(res.confidence) and math.isfinite(res.uncertainty)):
                raise ValueError("non-finite strategic probabilities")
        except Exception as exc:  # noqa: BLE001 - a failing team is counted, never raised
            guard.failure(ts_ns, f"{type(exc).__name__}: {exc}")
            return None
        guard.success()
        return res

    # ---- 5-minute decision

    def regime(self) -> int:
        """The regime decisions use now (it changes only with a new strategic matrix)."""
        return self._regime

    def _regime_now(self) -> int:
        """decision/regime.py's rule on the latest strategic ensemble (crisis only with a
        threshold from training)."""
        res = self._strategic_result
        thr = self.cfg.crisis_volatility
        return regime_from(self._vol30, math.inf if thr is None else thr,
                           None if res is None else res.probs)

    def _check_strategic(self, strategic: Any) -> np.ndarray | None:
        """The strategic matrix checked once per matrix object (it changes every 6 bars)."""
        if strategic is self._strat_seen:
            return self._strat_ok
        self._strat_seen = strategic
        try:
            self._strat_ok = check_matrix(strategic, STRATEGIC_ROWS, STRATEGIC_COLS, STRATEGIC)
        except InputError:
            self.counters["invalid_strategic"] += 1
            self._strat_ok = None
        return self._strat_ok

    def decide(self, ts_ns: int, tactical: Any, strategic: Any = None, *, close: float = math.nan,
               position: int = 0, unrealized_atr: float = 0.0, bars_in_position: int = 0,
               drawdown_buffer: float = 1.0,
               target_sharpe_override: float | None = None) -> EnsembleDecision:
        """One ensemble decision for the closed 5-minute bar ending at `ts_ns`."""
        self.counters["decisions"] += 1
        regime = self.regime()
        sharpe = target_sharpe(regime, target_sharpe_override)
        dec = EnsembleDecision(HOLD, 0.5, "", regime, sharpe)
        n = self._n
        # Fresh per decision (the decision owns its breakdown): plain lists, a few voters.
        dec._names = self.names
        dec._probs = probs = [self._zero3] * n
        dec._conf = conf = [0.0] * n
        dec._lat = lat = [0] * n
        dec._status = status = [_SKIPPED] * n
        dec._weights = [0.0] * n
        try:
            tac = check_matrix(tactical, TACTICAL_ROWS, TACTICAL_COLS, TACTICAL)
        except InputError as exc:
            self.counters["invalid_tactical"] += 1
            dec.reason = f"neutral: {exc}"
            return dec
        strat = self._check_strategic(strategic) if strategic is not None else None
        self._step_rewards(ts_ns, close, position)

        x = new_vector()  # fresh per bar: sequence agents may keep the previous input
        self.feature_fn(x, ts_ns, tac, strat, regime, sharpe, position, unrealized_atr,
                        bars_in_position, drawdown_buffer)
        inp = AgentInput(ts_ns=ts_ns, instrument_id=self.instrument_id, x=x, tactical=tac,
                         strategic=strat, regime=regime, target_sharpe=sharpe, position=position)
        perf = time.perf_counter_ns
        guards = self.guards
        for i, agent in enumerate(self._agent_list):
            if agent is None:
                continue
            guard = guards[i]
            if not guard.available(ts_ns):
                status[i] = _BENCHED
                continue
            t0 = perf()
            try:
                vote = agent.act(inp)
                p = check_probs(vote.probs)
                c = float(vote.confidence)
                if not math.isfinite(c):
                    raise ValueError(f"confidence {c!r}")
            except Exception as exc:  # noqa: BLE001 - one agent's failure is not the ensemble's
                lat[i] = perf() - t0
                guard.failure(ts_ns, f"{type(exc).__name__}: {exc}")
                status[i] = _FAILED
                continue
            elapsed = lat[i] = perf() - t0
            if guard.over_budget(elapsed):
                guard.failure(ts_ns, f"took {elapsed // 1000} us", timeout=True)
                status[i] = _TIMEOUT
                continue
            guard.success()
            probs[i] = p
            conf[i] = min(max(c, 0.0), 1.0)
            status[i] = _OK

        self._team_votes(ts_ns, tac, dec)
        pa, m = self._p, self._m
        voters = 0
        for i in range(n):
            if status[i] == _OK:
                voters += 1
                m[i] = 1.0
                pa[i, 0], pa[i, 1], pa[i, 2] = probs[i]
            else:
                m[i] = 0.0
        if not voters:
            self.counters["no_voters"] += 1
            dec.reason = "neutral: no voter available"
        else:
            comb = self.voting.combine_arrays(pa, m)
            dec._weights = comb.weights
            dec.action, dec.confidence = comb.action, comb.confidence
            dec.base_confidence, dec.disagreement = comb.base_confidence, comb.disagreement
            dec.scale, dec.abstained = comb.scale, comb.abstained
            if comb.abstained:
                self.counters["abstained"] += 1
                dec.reason = f"abstain: disagreement {comb.disagreement:.2f}"
            else:
                dec.reason = _ENSEMBLE_REASON[comb.action]
            self.voting.record_votes([_argmax3(p) for p in probs], m)
        self._prev_inp, self._prev_action = inp, dec.action
        return dec

    def _team_votes(self, ts_ns: int, tac: np.ndarray, dec: EnsembleDecision) -> None:
        go = self._go_ahead if self._go_left > 0 else None
        if self._go_left > 0:
            self._go_left -= 1
        dec.strategic = go
        i = self._idx_str
        if go is not None and i >= 0:
            dec._probs[i] = list(go.probs)
            dec._conf[i] = go.confidence
            dec._status[i] = _OK
        i = self._idx_tac
        if go is None or not go.should_proceed or self.tactical_team is None:
            return
        guard = self.team_guards[TACTICAL]
        if not guard.available(ts_ns):
            if i >= 0:
                dec._status[i] = _BENCHED
            return
        t0 = time.perf_counter_ns()
        try:
            f, m, e = self.tactical_team.probs(tac)
            res = aggregate_tactical(np.asarray(f), np.asarray(m), np.asarray(e), *self._go_synergy)
            if not math.isfinite(res.confidence):
                raise ValueError("non-finite tactical score")
        except Exception as exc:  # noqa: BLE001
            guard.failure(ts_ns, f"{type(exc).__name__}: {exc}")
            if i >= 0:
                dec._status[i] = _FAILED
                dec._lat[i] = time.perf_counter_ns() - t0
            return
        guard.success()
        dec.tactical = res
        if i >= 0:
            dec._lat[i] = time.perf_counter_ns() - t0
            dec._probs[i] = list(res.vote_probs())
            dec._conf[i] = res.confidence
            dec._status[i] = _OK

    def _step_rewards(self, ts_ns: int, close: float, position: int) -> None:
        """D7's shadow returns, then the ensemble's own r~ of the step that just closed (held
        `position`, which the previous decision's orders led to) to every agent's `observe`."""
        sigma = self.voting._sigma()  # from returns before this one, as r~ of spec 4.0
        self.voting.on_bar(ts_ns, close)
        held = (position > 0) - (position < 0)
        before, self._prev_pos = self._prev_pos, held
        prev_close = self._prev_close
        if math.isfinite(close) and close > 0:
            self._prev_close = close
        prev = self._prev_inp
        if prev is None or prev_close is None or not self._prev_close == close:
            return
        ret = (close - prev_close) / prev_close
        reward = (held * ret - self.cfg.fee * abs(held - before)) / sigma
        for agent in self.agents.values():
            try:
                agent.observe(prev, self._prev_action, reward)
            except Exception:  # noqa: BLE001 - history bookkeeping must not stop the decision
                self.counters["observe_errors"] += 1

    # ---- report

    def stats(self) -> dict[str, Any]:
        return {"voters": list(self.names), **self.counters,
                "weights": {n: round(float(w), 6) for n, w in zip(self.names, self.voting.weights)},
                "sharpe": {n: round(float(s), 6) for n, s in zip(self.names, self.voting.sharpe)},
                "weight_updates": self.voting.updates, "days": self.voting.days,
                "guards": {g.name: g.stats() for g in self.guards},
                "teams": {k: g.stats() for k, g in self.team_guards.items()}}
