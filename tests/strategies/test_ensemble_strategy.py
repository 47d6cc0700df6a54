"""The `ensemble` strategy plug-in: config, loading rules, bus flow, decision records, replay."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pytest
import structlog

from himari.daemon import plugins
from himari.daemon.bus import Bus
from himari.daemon.cli import main
from himari.daemon.clock import LiveClock, ReplayClock
from himari.daemon.configbase import ConfigError
from himari.daemon.events import Bar, Decision, FeatureMatrix, OrderIntent, SynergyDetected
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.recorder import decision_line
from himari.decision import registry
from himari.decision.agent import Vote
from himari.decision.checkpoint import CheckpointError, CheckpointMissing
from himari.strategies import ensemble
from himari.strategies.ensemble import EnsembleConfig

T0 = 1_704_182_400 * 10**9 + 9 * 3600 * 10**9
BAR = 300 * 10**9


class Agent:
    def __init__(self, name: str, probs=(0.1, 0.2, 0.7)) -> None:
        self.name, self.probs = name, probs

    def reset(self) -> None:
        pass

    def act(self, inp):
        return Vote(probs=self.probs, confidence=max(self.probs))

    def observe(self, inp, action, reward) -> None:
        pass


class Tactical:
    def probs(self, tactical):
        return np.array([0, 0, 1.0]), np.array([0, 0, 1.0]), np.array([0, 1.0, 0])


class Strategic:
    weights = (0.4, 0.35, 0.25)

    def probs(self, mlmi_in, nwrqk_in, regime_in, volatility_30):
        return np.array([[0.05, 0.15, 0.8]] * 3), np.array(self.weights)


def fake_loaders(monkeypatch, available: dict[str, object], broken: dict[str, Exception] = {}):
    """Route the registry's import paths to in-test loaders."""

    def resolve(path: str):
        name = next(n for n, p in {**registry.AGENTS, **registry.TEAMS}.items() if p == path)
        if name in broken:
            def fail(*args):
                raise broken[name]
            return fail
        if name not in available:
            raise ImportError(f"No module named {path.split(':')[0]!r}")
        obj = available[name]
        return lambda *args: obj

    monkeypatch.setattr(registry, "resolve", resolve)


INST = Instrument(id="X", tick_size=Decimal("0.01"), lot_size=Decimal(1))


def build(cfg: EnsembleConfig, clock=None, warm=True):
    bus = Bus()
    strat = ensemble.build(cfg, instrument=INST, bus=bus, clock=clock or ReplayClock(),
                           ids=IdSource())
    strat.on_start()
    decisions: list[Decision] = []
    intents: list[OrderIntent] = []
    bus.subscribe(Decision, decisions.append, name="t.d", order=100)
    bus.subscribe(OrderIntent, intents.append, name="t.i", order=100)
    if warm:
        bus.publish(sm(0))  # a ready strategic matrix exists
    return strat, bus, decisions, intents


def tm(k: int, ready=True, inst="X", shape=(60, 7)) -> FeatureMatrix:
    return FeatureMatrix(event_id=f"TM{k}", ts_ns=T0 + k * BAR, instrument_id=inst,
                         kind="tactical", bar_id=f"B{k}", values=np.zeros(shape, np.float32),
                         ready=ready, context={"close": 100.0 + k, "atr14": 1.0})


def sm(k: int, ready=True) -> FeatureMatrix:
    return FeatureMatrix(event_id=f"SM{k}", ts_ns=T0 + k * BAR, instrument_id="X",
                         kind="strategic", bar_id=f"B{k}", values=np.zeros((48, 13), np.float32),
                         ready=ready, context={"volatility_30": 1.2, "volatility_30_valid": 1.0})


def bar(k: int, inst="X") -> Bar:
    return Bar(event_id=f"B{k}", ts_ns=T0 + k * BAR, instrument_id=inst, spec="5m", open=1,
               high=1, low=1, close=1, volume=1, n_ticks=1, ts_open=T0 + (k - 1) * BAR,
               ts_close=T0 + k * BAR)


def step(bus, k: int, *, strategic: bool = False, synergy: SynergyDetected | None = None,
         **kw) -> None:
    """One 5-minute bar as the matrix stage publishes it, then the Bar reaches the strategy."""
    bus.publish(tm(k, **kw))
    if strategic:
        bus.publish(sm(k))
    if synergy is not None:
        bus.publish(synergy)
    bus.publish(bar(k))


def test_registered_as_a_short_name():
    assert plugins.resolve(plugins.STRATEGIES, "strategy.name", "ensemble") is ensemble


@pytest.mark.parametrize("kw,key", [
    ({"agents": ["nope"]}, "strategy.params.agents"),
    ({"agents": []}, "strategy.params.agents"),
    ({"agents": ["cql"], "required": ["sac"]}, "strategy.params.required"),
    ({"quantity": Decimal(0)}, "strategy.params.quantity"),
    ({"time_budget_us": -1}, "strategy.params.time_budget_us"),
])
def test_config_errors_name_the_key(kw, key):
    with pytest.raises(ConfigError) as err:
        EnsembleConfig(**kw)
    assert err.value.key == key


def test_missing_agents_are_disabled_required_ones_refused(monkeypatch):
    fake_loaders(monkeypatch, {"cql": Agent("cql")},
                 broken={"sac": CheckpointMissing("checkpoint 'sac' not found")})
    strat, *_ = build(EnsembleConfig())
    assert strat.engine.names == ("cql",)
    assert set(strat.disabled) == {"cgdt", "ppo_lstm", "sac", "tactical", "strategic"}
    with pytest.raises(ConfigError) as err:
        build(EnsembleConfig(required=["sac"]))
    assert err.value.key == "strategy.params.required" and "not found" in str(err.value)
    fake_loaders(monkeypatch, {})
    with pytest.raises(ConfigError, match="at least one available agent"):
        build(EnsembleConfig(agents=["cql"]))


def test_a_wrong_layout_checkpoint_refuses_to_start(monkeypatch):
    fake_loaders(monkeypatch, {"cql": Agent("cql")},
                 broken={"sac": CheckpointError("layout_version='old'")})
    with pytest.raises(ConfigError) as err:
        build(EnsembleConfig(agents=["cql", "sac"]))
    assert err.value.key == "strategy.params.checkpoint_dir" and "layout_version" in str(err.value)


def test_time_budget_off_in_replay_on_in_paper(monkeypatch):
    fake_loaders(monkeypatch, {"cql": Agent("cql")})
    strat, *_ = build(EnsembleConfig(agents=["cql"]))
    assert strat.engine.cfg.time_budget_us == 0
    strat, *_ = build(EnsembleConfig(agents=["cql"]), clock=LiveClock())
    assert strat.engine.cfg.time_budget_us == 500
    strat, *_ = build(EnsembleConfig(agents=["cql"], time_budget_us=50), clock=LiveClock())
    assert strat.engine.cfg.time_budget_us == 50


def test_every_ready_bar_is_a_recorded_decision_orders_only_on_new_targets(monkeypatch):
    buy = Agent("cql")
    fake_loaders(monkeypatch, {"cql": buy})
    strat, bus, decisions, intents = build(EnsembleConfig(agents=["cql"], quantity=Decimal(2)))
    step(bus, 0, ready=False)
    bus.publish(tm(0, inst="Y"))
    bus.publish(bar(0, inst="Y"))
    assert decisions == []
    step(bus, 1)
    assert len(decisions) == 1 and decisions[0].target_position == 2
    assert len(intents) == 1 and intents[0].side == 1 and intents[0].quantity == 2
    assert intents[0].decision_id == decisions[0].event_id
    d = decisions[0].details
    assert d["agents"][0]["name"] == "cql" and d["agents"][0]["vote"] == "BUY"
    assert {"disagreement", "scale", "abstained", "regime", "target_sharpe"} <= set(d)
    step(bus, 2)  # BUY again: recorded, no new order
    assert len(decisions) == 2 and len(intents) == 1
    # the record has agents / disagreement / scale at the top level
    rec = json.loads(decision_line(decisions[0]))
    assert rec["type"] == "Decision" and rec["agents"][0]["weight"] == 1.0
    assert "disagreement" in rec and "scale" in rec and "details" not in rec


def test_opposite_action_closes_then_opens_hold_keeps(monkeypatch):
    agent = Agent("cql")
    fake_loaders(monkeypatch, {"cql": agent})
    strat, bus, decisions, intents = build(EnsembleConfig(agents=["cql"]))
    strat.position = 1  # as if long already
    agent.probs = (0.7, 0.2, 0.1)
    step(bus, 1)
    assert decisions[-1].target_position == 0  # SELL while long closes, no reversal
    strat._target, strat._in_flight, strat.position = None, {}, 0
    step(bus, 2)
    assert decisions[-1].target_position == -1  # SELL while flat opens short
    strat._target, strat._in_flight, strat.position = None, {}, -1
    agent.probs = (0.2, 0.6, 0.2)
    n = len(intents)
    step(bus, 3)
    assert decisions[-1].target_position == -1 and len(intents) == n  # HOLD keeps


def test_synergy_gives_the_tactical_team_a_vote(monkeypatch):
    fake_loaders(monkeypatch, {"cql": Agent("cql", (0.3, 0.4, 0.3)), "tactical": Tactical(),
                               "strategic": Strategic()})
    strat, bus, decisions, _ = build(EnsembleConfig(agents=["cql", "tactical", "strategic"]))
    syn = SynergyDetected(event_id="SY1", ts_ns=T0, instrument_id="X", synergy_type="TYPE_2",
                          direction=1, confidence=0.9, synergy_strength=1.0, signal_sequence=[],
                          metadata={}, market_context={}, tactical_matrix_id="TM0",
                          strategic_matrix_id="SM1")
    step(bus, 1, strategic=True, synergy=syn)
    rows = {r["name"]: r for r in decisions[-1].details["agents"]}
    assert rows["tactical"]["status"] == "skipped"  # the synergy counts from the next bar
    step(bus, 2)
    rows = {r["name"]: r for r in decisions[-1].details["agents"]}
    assert rows["tactical"]["status"] == "ok" and rows["tactical"]["vote"] == "BUY"
    assert decisions[-1].details["tactical"]["execute"] is True
    assert decisions[-1].details["strategic"]["dominant_signal"] == "consensus"
    assert decisions[-1].details["regime"] == "bullish"  # the strategic ensemble, conf 0.8
    assert strat.report()["synergies_accepted"] == 1


def test_decides_at_the_end_of_the_bar_with_that_bars_strategic_matrix(monkeypatch):
    seen = []

    class Spy(Agent):
        def act(self, inp):
            seen.append(inp.strategic is not None and inp.strategic[0, 0] == 7.0)
            return super().act(inp)

    fake_loaders(monkeypatch, {"cql": Spy("cql")})
    strat, bus, decisions, _ = build(EnsembleConfig(agents=["cql"]))
    seen.clear()  # the build's warm-up call
    bus.publish(tm(1))
    newer = msgspec.structs.replace(sm(1), values=np.full((48, 13), 7.0, np.float32))
    bus.publish(newer)  # the 30-minute matrix of the same bar comes after the tactical one
    assert decisions == []
    bus.publish(bar(1))
    assert seen == [True] and len(decisions) == 1


def test_waits_for_a_ready_strategic_matrix(monkeypatch):
    fake_loaders(monkeypatch, {"cql": Agent("cql")})
    strat, bus, decisions, _ = build(EnsembleConfig(agents=["cql"]), warm=False)
    step(bus, 1)
    assert decisions == [] and strat.warmup_bars == 1
    bus.publish(sm(1, ready=False))
    step(bus, 2)
    assert decisions == []
    step(bus, 3, strategic=True)
    assert len(decisions) == 1
    strat, bus, decisions, _ = build(EnsembleConfig(agents=["cql"], wait_for_strategic=False),
                                     warm=False)
    step(bus, 1)
    assert len(decisions) == 1


def test_a_wrong_shape_matrix_decides_neutral_without_crashing(monkeypatch):
    fake_loaders(monkeypatch, {"cql": Agent("cql")})
    strat, bus, decisions, intents = build(EnsembleConfig(agents=["cql"]))
    step(bus, 1, shape=(30, 7))
    assert decisions[-1].target_position == 0 and "shape (30, 7)" in decisions[-1].reason
    assert intents == [] and strat.report()["invalid_tactical"] == 1


@pytest.fixture
def _restore_logging():
    yield
    structlog.reset_defaults()


def test_replay_with_the_ensemble_records_agents_and_reports_them(monkeypatch, tmp_path: Path,
                                                                  _restore_logging):
    fake_loaders(monkeypatch, {"cql": Agent("cql", (0.3, 0.3, 0.4)),
                               "sac": Agent("sac", (0.4, 0.3, 0.3))})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[feed.synthetic]\nn_ticks = 200000\n[strategy]\nname = "ensemble"\n'
                   '[strategy.params]\nagents = ["cql", "sac"]\nwait_for_strategic = false\n'
                   '[log]\nlevel = "warning"\n')
    out = tmp_path / "out"
    assert main(["replay", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["strategy"]["name"] == "ensemble"
    det = report["strategy"]["details"][0]
    assert det["agents"] == ["cql", "sac"] and det["guards"]["cql"]["ok"] > 0
    recs = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    decs = [r for r in recs if r["type"] == "Decision" and "agents" in r]
    assert decs and det["decisions"] == len(decs)
    assert {a["name"] for a in decs[0]["agents"]} == {"cql", "sac"}
    assert all("disagreement" in r and "scale" in r for r in decs)


def test_position_tracker_mirrors_the_training_env():
    """Same slots as training/env.py's _simulate for the same positions and closes."""
    from himari.strategies.ensemble import PositionTracker
    from himari.training.env import _simulate

    closes = np.array([100.0, 101.0, 99.0, 98.0, 100.0, 103.0, 102.0])
    atr = np.full(len(closes), 2.0)
    actions = np.array([2, 1, 1, 0, 0, 1])  # BUY, hold, hold, SELL (close), SELL (short), hold
    pos, _, state = _simulate(actions, closes, atr, np.ones(len(closes)), 2e-4, 0.05, 0)
    tracker = PositionTracker(2e-4)
    held = 0
    for k in range(len(actions)):
        upnl, bars, buffer = tracker.update(held, closes[k], atr[k])
        assert state[k, 0] == held
        assert upnl == pytest.approx(state[k, 1])
        assert bars == state[k, 2]
        assert buffer == pytest.approx(state[k, 3])
        held = int(pos[k])


def test_paper_session_with_the_ensemble(monkeypatch, tmp_path: Path, _restore_logging):
    """`himari run` in paper mode (simulated exchange, live clock sped up, matrices warmed from
    history): the ensemble decides with the time budget on and the session ends cleanly."""
    fake_loaders(monkeypatch, {"cql": Agent("cql", (0.3, 0.3, 0.4)),
                               "sac": Agent("sac", (0.5, 0.2, 0.3))})
    cfg = tmp_path / "paper.toml"
    cfg.write_text('[daemon]\nmode = "paper"\n[feed.synthetic]\nseed = 11\nn_ticks = 300000\n'
                   '[live]\nspeed = 200000.0\nhistory_s = 86400.0\n[matrices]\nenabled = true\n'
                   '[strategy]\nname = "ensemble"\n[strategy.params]\nagents = ["cql", "sac"]\n'
                   'wait_for_strategic = false\n[log]\nlevel = "warning"\n')
    out = tmp_path / "out"
    assert main(["run", "--config", str(cfg), "--out", str(out), "--state-dir",
                 str(tmp_path / "state")]) == 0
    rep = json.loads((out / "report.json").read_text())
    det = rep["strategy"]["details"][0]
    assert rep["mode"] == "paper" and det["decisions"] > 0
    g = det["guards"]["cql"]  # a busy machine may push a call past the 500 us budget: counted
    assert g["calls"] == det["decisions"] and g["ok"] + g["timeouts"] == g["calls"]
    assert rep["final_position_lots"] == 0  # flattened at the stop


def test_a_wrong_layout_checkpoint_exits_2_from_the_command_line(monkeypatch, tmp_path: Path,
                                                                  capsys, _restore_logging):
    from himari.decision.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "ck", "cql", {"w": np.zeros(3, np.float32)},
                    {"agent": "cql", "layout_version": "himari-decision-v0"})

    def resolve(path: str):
        def load(directory, name):  # the real checkpoint check, as every agent's load() does
            load_checkpoint(directory, name, name)
            return Agent(name)
        return load

    monkeypatch.setattr(registry, "resolve", resolve)
    rc = main(["replay", "--quiet", "--out", str(tmp_path / "o"), "--set",
               'strategy.name="ensemble"', "--set", 'strategy.params.agents=["cql"]', "--set",
               f'strategy.params.checkpoint_dir="{tmp_path / "ck"}"', "--set",
               "feed.synthetic.n_ticks=1000"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "layout_version='himari-decision-v0'" in err and "retrain" in err
