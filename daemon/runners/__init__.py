"""Runners: who owns the clock and the data. `replay.py` drives the core from recorded or
synthetic ticks on event time; `live.py` on the wall clock from a data client, with timers."""
