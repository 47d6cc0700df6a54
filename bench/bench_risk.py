"""Latency of `RiskEngine.validate` (spec 1.11: pre-trade check < 100 us; our target p99 <= 10 us).

Each call is timed alone with `time.perf_counter_ns` after `warmup()`, garbage collection left on as
in the daemon. Scenarios:
- sized:  quantity-0 market intent -> ATR stop/target + Kelly sizing + every check, approved;
- fixed:  1-lot limit intent inside the collar -> every check, approved;
- reject: 9-lot intent -> rejected by max_order_qty (rejection path: reason string, counters);
- working: the fixed intent with 1 lot of working buys counted in the worst case;
- exit:   a 9-lot sell against a 9-lot long (an exit: no size limit), approved;
- portf:  the sized intent through `PortfolioRisk` with a gross-notional limit over two
          instruments (the exact Decimal headroom, then the same single numba call).
The baseline is an empty Python function with three arguments, timed the same way in the same
process; `x base` is each p50 over the baseline p50. Event time advances 1 s per call, so the
60-orders-per-minute window admits every call (and the run crosses a UTC day boundary once).

Run: .venv/bin/python bench/bench_risk.py [--n 100000]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from decimal import Decimal

import numpy as np

from himari.daemon.events import Bar, OrderIntent
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.risk.config import PortfolioRiskConfig, RiskConfig
from himari.daemon.risk.engine import RiskEngine
from himari.daemon.risk.portfolio import PortfolioRisk

SECOND = 1_000_000_000


ES = Instrument(id="ES", tick_size=Decimal("0.25"), multiplier=Decimal(50))
NQ = Instrument(id="NQ", tick_size=Decimal("0.25"), multiplier=Decimal(20))


def _engine() -> RiskEngine:
    engine = RiskEngine(RiskConfig(), ES, IdSource())
    engine.warmup()
    engine.on_last_tick(20_000, 0)
    for i in range(20):
        engine.on_bar(Bar(event_id=f"B{i}", ts_ns=i, instrument_id="ES", spec="5m", ts_open=i,
                          ts_close=i, open=20_000, high=20_004 + i % 3, low=19_996, close=20_000,
                          volume=10, n_ticks=10))
    return engine


def _portfolio() -> PortfolioRisk:
    cfg = RiskConfig(portfolio=PortfolioRiskConfig(max_gross_notional=Decimal(2_000_000)))
    p = PortfolioRisk(cfg, [ES, NQ], IdSource())
    p.warmup()
    p.on_last_tick("ES", 20_000, 0)
    p.on_last_tick("NQ", 70_000, 0)
    for i in range(20):
        p.on_bar(Bar(event_id=f"B{i}", ts_ns=i, instrument_id="ES", spec="5m", ts_open=i,
                     ts_close=i, open=20_000, high=20_004 + i % 3, low=19_996, close=20_000,
                     volume=10, n_ticks=10))
    return p


def _time(call: Callable[[int], object], n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        call(i)
        out[i] = clock() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="calls per scenario")
    n = ap.parse_args().n

    def mk(qty: int, order_type: str = "market", price: int | None = None) -> OrderIntent:
        return OrderIntent(event_id="I", ts_ns=0, decision_id="D", strategy_id="S",
                           instrument_id="ES", side=1, quantity=qty, order_type=order_type,
                           price=price)

    def empty(a: object, b: int, c: int) -> None:
        return None

    scenarios: list[tuple[str, Callable[[int], object]]] = []
    sized, fixed, rejected = mk(0), mk(1, "limit", 19_990), mk(9)
    for name, intent in (("sized", sized), ("fixed", fixed), ("reject", rejected)):
        engine = _engine()
        check = engine.validate(intent, 0, SECOND)
        assert check.approved == (name != "reject"), check
        scenarios.append((name, lambda i, e=engine, it=intent: e.validate(it, 0, (i + 2) * SECOND)))
    engine = _engine()
    assert engine.validate(fixed, 0, SECOND, 1, 0).approved
    scenarios.append(("working", lambda i, e=engine: e.validate(fixed, 0, (i + 2) * SECOND, 1, 0)))
    exit_ = OrderIntent(event_id="I", ts_ns=0, decision_id="D", strategy_id="S",
                        instrument_id="ES", side=-1, quantity=9)
    engine = _engine()
    assert engine.validate(exit_, 9, SECOND).approved
    scenarios.append(("exit", lambda i, e=engine: e.validate(exit_, 9, (i + 2) * SECOND)))
    port = _portfolio()

    def book(iid: str) -> tuple[int, int, int]:
        return (2, 1, 0) if iid == "NQ" else (0, 0, 0)

    assert port.validate(sized, 0, SECOND, 0, 0, book).approved
    scenarios.append(("portf", lambda i, p=port: p.validate(sized, 0, (i + 2) * SECOND, 0, 0,
                                                            book)))
    scenarios.insert(0, ("baseline", lambda i: empty(sized, 0, i)))

    rows = []
    for name, call in scenarios:
        _time(call, min(n, 5_000))  # settle caches and branch predictors
        ns = _time(call, n)
        rows.append((name, float(np.percentile(ns, 50)), float(np.percentile(ns, 99)),
                     float(np.percentile(ns, 99.9)), float(ns.mean()), float(ns.max())))
    base_p50 = rows[0][1]
    print(f"RiskEngine.validate latency, {n:,} calls per row, {platform.python_implementation()} "
          f"{platform.python_version()} on {platform.machine()} ({platform.processor() or 'cpu'})")
    print(f"{'scenario':<9} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'mean us':>8} "
          f"{'max us':>8} {'calls/s':>10} {'x base':>7}")
    for name, p50, p99, p999, mean, mx in rows:
        print(f"{name:<9} {p50 / 1e3:8.2f} {p99 / 1e3:8.2f} {p999 / 1e3:9.2f} {mean / 1e3:8.2f} "
              f"{mx / 1e3:8.1f} {1e9 / mean:10,.0f} {p50 / base_p50:7.1f}")
    worst = max(r[2] for r in rows[1:])
    print(f"target p99 <= 10 us: {'met' if worst <= 10_000 else 'NOT met'} (worst p99 "
          f"{worst / 1e3:.2f} us)")


if __name__ == "__main__":
    main()
