"""What the replay loop does to a simulated venue, for tests that drive one by hand."""

from __future__ import annotations

from typing import Any

from himari.daemon.clock import ReplayClock
from himari.daemon.events import TickBatch


def run_clocked(venue: Any, clock: ReplayClock, batch: TickBatch) -> None:
    """Advance the clock to each executing tick, execute it, and end at the batch's last tick."""
    p = 0
    while p < len(batch):
        k = venue.next_execution(batch, p, len(batch))
        if k >= len(batch):
            break
        clock.advance_to(int(batch.ts_ns[k]))
        venue.execute_at(batch, k)
        p = k + 1
    clock.advance_to(int(batch.ts_ns[-1]))
