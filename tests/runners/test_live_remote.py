"""The live runner against a remote venue: no matching in process, outcomes arrive from the event
loop (as from a socket), the data client comes from the venue plug-in, and the client's links are
opened before the first order and closed at the stop."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from himari.daemon.config import load_config

PLUGIN = '''
import asyncio, math, time
from decimal import Decimal
import msgspec
import numpy as np
from himari.daemon.events import TickBatch

class CONFIG(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fill_price_ticks: int = 10000

EVENTS = []

class Remote:
    """Answers on a later turn of the event loop, like a broker's stream."""
    def __init__(self, cfg):
        self.cfg, self.listener, self.n, self.connected = cfg, None, 0, False
    def set_listener(self, listener): self.listener = listener
    async def connect(self): self.connected = True; EVENTS.append("connect")
    async def close(self): self.connected = False; EVENTS.append("close")
    def submit(self, req):
        EVENTS.append(("submit", req.client_order_id))
        loop = asyncio.get_running_loop()
        def answer():
            self.n += 1
            now = time.time_ns()
            self.listener.on_accepted(req.client_order_id, f"B-{self.n}", now)
            self.listener.on_fill(req.client_order_id, f"X-{self.n}", req.quantity,
                                  self.cfg.fill_price_ticks, Decimal(0), "taker", now,
                                  instrument_id=req.instrument_id, side=req.side)
        loop.call_soon(answer)
    def cancel(self, coid, ts): pass
    async def query_order(self, coid): return None
    async def open_orders(self): return []
    async def fills_since(self, ts): return []
    async def positions(self): return []

class Data:
    """Ticks stamped with the wall clock, a few at a time, then the feed ends."""
    def __init__(self, instruments): self.inst = next(iter(instruments)); self.connected = False
    async def connect(self): self.connected = True
    def subscribe(self, inst, kinds=("trades",)): pass
    def history(self): return iter(())
    async def stream(self):
        for i in range(400):
            await asyncio.sleep(0.001)
            now = time.time_ns()
            px = 10000 + int(25 * math.sin(i / 12)) + i % 3  # crosses, never a flat bar
            yield TickBatch.from_trades(self.inst, np.array([now]), np.array([px]), np.array([1]))
    async def close(self): self.connected = False

def build(cfg, instruments, clock=None, session=""):
    return Remote(cfg)

def build_data(cfg, instruments, clock=None):
    return Data(instruments)
'''


def test_live_runner_drives_a_remote_venue_and_its_data_client(tmp_path: Path, monkeypatch):
    from himari.daemon.runners.live import run_live

    (tmp_path / "himari_test_remote_venue.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, [
        "daemon.mode=\"paper\"", "feed.kind=\"broker\"", "instrument.id=\"ABC\"",
        "instrument.tick_size=\"0.01\"", "instrument.lot_size=\"1\"",
        "venue.name=\"himari_test_remote_venue\"", "matrices.enabled=false",
        "strategy.name=\"ema_cross\"",  # it trades on 400 ticks; the default ensemble would not
        "strategy.params.bar_spec=\"10t\"", "strategy.params.fast=2", "strategy.params.slow=3",
        "log.level=\"warning\""])
    rep = asyncio.run(run_live(cfg, tmp_path / "out"))
    events = sys.modules["himari_test_remote_venue"].EVENTS
    assert events[0] == "connect" and events[-1] == "close"  # links open before, close after
    submits = [e for e in events if isinstance(e, tuple)]
    assert rep["stopped_by"] == "data_end" and rep["ticks"] == 400
    assert rep["orders"] == len(submits) > 0 and rep["fills"] == rep["orders"]
    assert rep["final_position_lots"] == 0  # flattened at the stop, filled by the remote venue
    assert rep["inputs"][0]["input"] == "himari_test_remote_venue market data stream"
